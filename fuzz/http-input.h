/* The input format of the fuzz targets for HTTP answers (fuzz-api-response.c, fuzz-kbevent.c): the
 * status as 2 bytes little-endian, then the body. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Splits 'data'; false when it is too short to hold a status. */
bool fuzz_http_input(const uint8_t *data, size_t size, long *ret_status, const char **ret_body, size_t *ret_len);
