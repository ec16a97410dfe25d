/* Fuzz target for the kegnet codec: arbitrary bytes through the "\n\n" splitter (chunked as the
 * first byte says) and the decoder; every decoded message must re-encode, and decoding that
 * encoding must give the same bytes again. Also exercises the timestamp and address parsers. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kegnet.h"
#include "util-time.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(const KegnetMessage *m) {
        char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        KegnetMessage again;
        int r;

        r = kegnet_message_encode(m, &a, &na);
        if (r == -E2BIG)
                return;         /* escapes or number spelling may grow a frame past the limit */
        if (r < 0)
                abort();        /* whatever the decoder accepts must be encodable */
        if (na < 2 || a[na - 1] != '\n' || a[na - 2] != '\n' || memchr(a, '\n', na - 2))
                abort();

        r = kegnet_message_parse(a, na - 2, &again, NULL);
        if (r < 0 || again.kind != m->kind)
                abort();
        r = kegnet_message_encode(&again, &b, &nb);
        if (r < 0 || na != nb || memcmp(a, b, na) != 0)
                abort();
        kegnet_message_done(&again);
        free(a);
        free(b);
}

static void handle_frame(const char *f, size_t n) {
        KegnetMessage m;
        char *err = NULL;
        int r;

        r = kegnet_message_parse(f, n, &m, &err);
        (void) kegnet_inbound_verdict(r, &m);
        if (r < 0 && r != -ENODATA && !err)
                abort();        /* every failure comes with a reason */
        if (r == 0 && m.kind != KEGNET_UNKNOWN)
                check_roundtrip(&m);
        if (r == 0 && m.kind == KEGNET_UNKNOWN && !m.event_name)
                abort();
        free(err);
        kegnet_message_done(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KegnetSplitter s = KEGNET_SPLITTER_INIT;
        size_t chunk;

        if (size == 0)
                return 0;
        chunk = (size_t) data[0] + 1;
        if (data[0] == 0xff)
                chunk = size;
        data++;
        size--;

        for (size_t off = 0; off < size; off += chunk) {
                const char *f;
                size_t n;
                int r;

                if (kegnet_splitter_feed(&s, data + off, chunk < size - off ? chunk : size - off) < 0)
                        break;
                while ((r = kegnet_splitter_next(&s, &f, &n)) > 0) {
                        if (n > KEGNET_MAX_FRAME || strlen(f) > n)
                                abort();
                        handle_frame(f, n);
                }
                if (r < 0)
                        break;
        }
        if (kegnet_splitter_pending(&s) > KEGNET_MAX_FRAME + 1)
                abort();
        kegnet_splitter_done(&s);

        /* The whole input as one frame, and as a timestamp / address string. */
        if (size <= KEGNET_MAX_FRAME)
                handle_frame((const char *) data, size);

        if (size < 256) {
                char str[256];
                memcpy(str, data, size);
                str[size] = 0;

                uint64_t t;
                if (time_parse_rfc3339(str, &t) == 0) {
                        char b[TIME_RFC3339_MAX];
                        uint64_t t2;
                        if (time_format_rfc3339(t, b) < 0 || time_parse_rfc3339(b, &t2) < 0 ||
                            t2 != t / 1000000 * 1000000)
                                abort();
                }

                char *host = NULL;
                uint16_t port;
                if (kegnet_address_parse(str, &host, &port) == 0 && !host)
                        abort();
                free(host);
        }
        return 0;
}
