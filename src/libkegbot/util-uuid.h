/* UUIDs and other 128-bit ids (boot ids), through sd_id128.
 *
 * The one case rule: ids are WRITTEN in lowercase, always (drink UUIDs on kegnet, D-Bus, the spool,
 * drinks.log and spool file names; boot ids in the spool). On INPUT the hex digits may be of either
 * case (RFC 9562 says UUIDs compare case-insensitively): a string is parsed into its value and every
 * comparison is of values or of the canonical (lowercase) spelling, so "3F1C..." and "3f1c..." name
 * the same drink wherever a UUID is accepted (D-Bus FailDrink, spool records). File names are the
 * exception: they are matched exactly, and the spool only ever creates lowercase ones. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-id128.h>

#include "macro.h"

#define UUID_STRING_MAX SD_ID128_UUID_STRING_MAX        /* 36 characters + NUL */
#define ID128_STRING_MAX SD_ID128_STRING_MAX            /* 32 hex digits + NUL */

/* A random version 4 UUID, lowercase with dashes. */
int uuid_generate(char buf[static UUID_STRING_MAX]);

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", hex digits of either case; -EINVAL for anything else
 * (also the 32-digit form without dashes). ret may be NULL (validation only). */
int uuid_from_string(const char *s, sd_id128_t *ret);
/* Lowercase with dashes. Returns buf. */
char *uuid_to_string(sd_id128_t id, char buf[static UUID_STRING_MAX]);
/* Parses and writes back the canonical spelling (lowercase). -EINVAL as uuid_from_string(). */
int uuid_normalize(const char *s, char buf[static UUID_STRING_MAX]);
/* Already in the canonical spelling (what this program writes). */
bool uuid_is_canonical(const char *s);

/* The plain 32-digit form of an id128 (boot ids), either case on input; -EINVAL otherwise. */
int uuid_from_plain_string(const char *s, sd_id128_t *ret);
