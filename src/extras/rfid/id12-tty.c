/* ID-12 / ID-20 readers on a tty (rfid-readers.md section 3): raw 8N1 at --id12_speed, bytes into
 * the frame parser, frames into the presence module. The daemon never writes to the reader. */
#include <errno.h>
#include <fcntl.h>

#include "reader-internal.h"
#include "serial.h"

static void on_id12_event(const Id12Event *ev, void *userdata) {
        Reader *r = userdata;

        switch (ev->result) {
        case ID12_READ:
                reader_token_read(r, ev->token);
                break;
        case ID12_NOISE:
                reader_bad(r, READER_BAD_NOISE, "noise");
                break;
        case ID12_STALE:
                reader_bad(r, READER_BAD_STALE, "stale: a partial frame of %u bytes timed out", ev->offset);
                break;
        case ID12_TRUNCATED:
                reader_bad(r, READER_BAD_TRUNCATED, "truncated: STX at offset %u inside a frame", ev->offset);
                break;
        case ID12_BAD_CHARACTER:
                reader_bad(r, READER_BAD_CHARACTER, "bad_character: byte 0x%02x at offset %u", ev->byte, ev->offset);
                break;
        case ID12_BAD_TRAILER:
                reader_bad(r, READER_BAD_TRAILER, "bad_trailer: byte 0x%02x at offset %u", ev->byte, ev->offset);
                break;
        case ID12_BAD_CHECKSUM:
                reader_bad(r, READER_BAD_CHECKSUM, "bad_checksum: card %s, checksum %02X, expected %02X",
                           ev->card, ev->checksum, ev->expected);
                break;
        default:
                break;
        }
}

static int id12_setup(Reader *r, struct udev_device *d, ReaderOpenError *err) {
        int k;

        id12_parser_init(&r->id12, on_id12_event, r);
        k = serial_setup_tty(r->fd, r->settings.id12_speed);
        if (k == -ENOTTY)
                /* A FIFO or another stand-in: bytes are bytes. */
                log_debug("%s: not a terminal; reading it as it is", r->node);
        else if (k < 0) {
                err->status = READER_OPEN_FAILED;
                err->error = k;
                return k;
        }
        reader_set_description(r, "ID-12 serial reader, %d baud", r->settings.id12_speed);
        if (!r->description) {
                err->status = READER_OPEN_FAILED;
                err->error = -ENOMEM;
                return -ENOMEM;
        }
        return 0;
}

static int id12_input(Reader *r) {
        uint8_t buf[256];

        for (unsigned i = 0; i < 64; i++) {
                ssize_t n = reader_read(r, buf, sizeof(buf));
                if (n <= 0)
                        return (int) n;
                id12_parser_feed(&r->id12, buf, (size_t) n, r->now);
        }
        return 0;
}

const ReaderBackendOps reader_id12_ops = {
        .open_flags = O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC,
        .setup = id12_setup,
        .input = id12_input,
};
