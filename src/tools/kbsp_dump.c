/* kbsp_dump: decode raw Kegboard serial bytes (a capture file or stdin) and print every message,
 * garbage run and framing error on its own line, prefixed with its byte offset. A developer tool:
 * plain argv handling on purpose. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kbsp.h"
#include "log.h"
#include "macro.h"

static void help(FILE *f, const char *argv0) {
        fprintf(f,
                "Usage: %s [--hex] [FILE]\n"
                "Decode Kegboard Serial Protocol (KBSP v1) bytes from FILE (or stdin when FILE is\n"
                "missing or '-') and print one line per message, garbage run or framing error:\n"
                "  <byte offset> <event>\n"
                "\n"
                "  --hex    also print each frame's bytes as hex\n"
                "  --help   show this help\n",
                argv0);
}

static void print_event(const KbspEvent *ev, bool hex) {
        char text[KBSP_TEXT_MAX];

        (void) kbsp_event_format(ev, text, sizeof text);
        printf("%" PRIu64 " %s", ev->offset, text);
        if (hex && ev->type == KBSP_EVENT_FRAME) {
                printf(" hex=");
                for (size_t i = 0; i < ev->frame->size; i++)
                        printf("%02x", ev->frame->data[i]);
        }
        putchar('\n');
}

int main(int argc, char **argv) {
        _cleanup_(closep) int fd = -1;
        const char *path = NULL;
        uint8_t buf[65536];
        KbspDecoder d;
        KbspEvent ev;
        bool hex = false;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        help(stdout, argv[0]);
                        return 0;
                } else if (streq(argv[i], "--hex"))
                        hex = true;
                else if (argv[i][0] == '-' && argv[i][1] != 0) {
                        fprintf(stderr, "Error: unknown option '%s'\n", argv[i]);
                        help(stderr, argv[0]);
                        return 1;
                } else if (path) {
                        fprintf(stderr, "Error: unexpected argument '%s'\n", argv[i]);
                        return 1;
                } else
                        path = argv[i];
        }

        if (!path || streq(path, "-"))
                fd = dup(STDIN_FILENO);
        else
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                log_error_errno(errno, "Failed to open %s: %m", path ?: "stdin");
                return 1;
        }

        kbsp_decoder_init(&d);
        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        log_error_errno(errno, "Failed to read %s: %m", path ?: "stdin");
                        return 1;
                }
                if (n == 0)
                        break;
                (void) kbsp_decoder_feed(&d, buf, (size_t) n);
                while (kbsp_decoder_next(&d, &ev) > 0)
                        print_event(&ev, hex);
        }
        if (kbsp_decoder_finish(&d, &ev) > 0)
                print_event(&ev, hex);
        if (kbsp_decoder_pending(&d) > 0)
                printf("%" PRIu64 " pending bytes=%zu\n", d.stats.bytes - kbsp_decoder_pending(&d),
                       kbsp_decoder_pending(&d));

        if (fflush(stdout) != 0) {
                log_error_errno(errno, "Failed to write output: %m");
                return 1;
        }
        return 0;
}
