#include "http-input.h"

bool fuzz_http_input(const uint8_t *data, size_t size, FuzzHttpInput *ret) {
        if (size < 2)
                return false;
        *ret = (FuzzHttpInput) {
                .status = data[0] | (long) data[1] << 8,
                .body = (const char *) data + 2,
                .len = size - 2,
        };
        return true;
}
