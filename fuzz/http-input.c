#include "http-input.h"

bool fuzz_http_input(const uint8_t *data, size_t size, long *ret_status, const char **ret_body, size_t *ret_len) {
        if (size < 2)
                return false;
        *ret_status = data[0] | (long) data[1] << 8;
        *ret_body = (const char *) data + 2;
        *ret_len = size - 2;
        return true;
}
