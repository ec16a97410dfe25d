/* Standalone mode's tokens file (--tokens_file, INI), standing in for the server's auth-token
 * lookups. One section per token, named "<auth_device>:<token_value>":
 *
 *     [core.rfid:0415ab23cd]
 *     username = mikey
 *     enabled = true          ; optional, default true
 *
 * Values of core.onewire and core.rfid are matched case-insensitively (normalised like the wire).
 * The file must be valid UTF-8 (ini.h): a username the core could not carry is refused with the
 * file and line, never passed on. */
#pragma once

#include <stddef.h>

#include "macro.h"

typedef struct Tokens Tokens;

typedef enum TokensAnswer {
        TOKENS_NOT_ASSIGNED,
        TOKENS_DISABLED,
        TOKENS_OK,
} TokensAnswer;

/* -ENOENT when the file does not exist; other errors with a message in *ret_error
 * ("<file>:<line>: <what>"). */
int tokens_load(const char *path, Tokens **ret, char **ret_error);
Tokens *tokens_free(Tokens *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Tokens *, tokens_free);
size_t tokens_size(const Tokens *t);
/* *ret_username (for TOKENS_OK) is borrowed from t. */
TokensAnswer tokens_lookup(const Tokens *t, const char *device, const char *value, const char **ret_username);
