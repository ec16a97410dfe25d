/* The one spelling of a double: the shortest decimal that reads back as the same value, laid out as
 * Python's repr() does (positional for exponents -4..15 with at least one fractional digit,
 * "d.ddde+XX" otherwise): 100.0, 4.5, 0.45454545454545453, 1e+16, 1.5e-05. JSON numbers (kegnet,
 * spool, drinks.log), form fields for the server and flag defaults in --help all use it. */
#pragma once

#include "macro.h"

#define DOUBLE_STRING_MAX 32

/* Never fails; non-finite values come out as Python spells them ("nan", "inf", "-inf"), which is
 * not JSON: the JSON writer refuses them before they get here. Returns buf. */
char *double_format(double v, char buf[static DOUBLE_STRING_MAX]);

/* v rounded to 'decimals' decimal places (half away from zero), for values published with a fixed
 * precision (MQTT documents: volumes to 0.1 mL, temperatures to 0.01 degrees). The result is the
 * double nearest to that decimal, so double_format() spells it with at most 'decimals' digits after
 * the point. Values too large to carry a fraction at that precision, and non-finite ones, are
 * returned unchanged. decimals <= 9. */
double double_round(double v, unsigned decimals);
