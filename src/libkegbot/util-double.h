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
