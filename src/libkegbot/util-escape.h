/* Untrusted text made safe for a log line: whatever a peer, a file or a server sends, the line it
 * ends up in stays one line of valid UTF-8 that cannot fake another entry or steer a terminal. */
#pragma once

#include <stddef.h>

#include "macro.h"

/* A malloc'ed copy of s (NULL: "(null)") in which a backslash becomes "\\", \n \r \t become "\n",
 * "\r", "\t", other C0 controls, DEL and every byte that is not part of valid UTF-8 become "\xHH",
 * and the C1 controls, the line/paragraph separators (U+2028/9) and the bidirectional overrides
 * (U+202A..E, U+2066..9) become "\u{HHHH}". Printable ASCII and other valid UTF-8 stay as they
 * are. NULL on allocation failure. */
char *escape_for_log(const char *s);
/* The same for n bytes that need not be NUL-terminated (a NUL byte becomes "\x00"). */
char *escape_for_log_n(const char *s, size_t n);
/* What the log itself does to every message: the same, except that backslashes stay as they are, so
 * that text a caller escaped already (a server's message, a board's serial) is not escaped twice.
 * Nothing that could end or fake a line gets through either way. */
char *escape_for_log_line(const char *s);
