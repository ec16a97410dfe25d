/* kegbot_mqtt's state file (mqtt-home-assistant.md section 10): what must survive a restart of the
 * bridge - served totals, last pours, ghost volumes, the drinks already counted, the events the
 * outage queue dropped and the ledger of retained topics - as one JSON object. */
#pragma once

#include <stddef.h>

#include "macro.h"
#include "model.h"
#include "payload.h"

#define STATE_FILE_NAME "state.json"
#define STATE_FILE_MAX (16U * 1024U * 1024U)

/* Reads the document 'text' into the empty model 'm': the groups it names become dormant groups
 * (neither live nor present), the ledger's texts unknown. On any error (-EBADMSG: not the expected
 * document) the model may be partly filled and *ret_reason (caller frees) says what is wrong. */
int state_file_parse(Model *m, const char *text, size_t len, char **ret_reason);

/* The document for 'm' under the settings 's'. */
int state_file_format(const Model *m, const Settings *s, char **ret, size_t *ret_len);
