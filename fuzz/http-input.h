/* The input format of the fuzz targets for HTTP answers (fuzz-api-response.c, fuzz-kbevent.c): the
 * status as 2 bytes little-endian, then the body. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct FuzzHttpInput {
        long status;
        const char *body;       /* not NUL-terminated */
        size_t len;
} FuzzHttpInput;

/* Splits 'data'; false when it is too short to hold a status. */
bool fuzz_http_input(const uint8_t *data, size_t size, FuzzHttpInput *ret);
