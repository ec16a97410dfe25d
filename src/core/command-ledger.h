/* The command ledger of one event device (kegboard-event-protocol.md section 6.2): the ids of the
 * last 256 commands with their results, so that a command the receiver sends again is never applied
 * twice, and is acknowledged again only when no acknowledgement of it is on its way. Pure: no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define COMMAND_LEDGER_MAX 256

typedef struct CommandLedgerItem {
        char *id;
        char *result;                   /* "ok", "error" or "unsupported" */
        char *message;                  /* NULL = none */
} CommandLedgerItem;

typedef enum CommandLedgerDecision {
        COMMAND_LEDGER_APPLY,           /* unknown id: apply it, then command_ledger_add() */
        COMMAND_LEDGER_REACK,           /* applied before, no ack queued: acknowledge the recorded result */
        COMMAND_LEDGER_SKIP,            /* applied before, an ack is queued or in flight: nothing */
} CommandLedgerDecision;

typedef struct CommandLedger CommandLedger;

int command_ledger_new(CommandLedger **ret);
CommandLedger *command_ledger_free(CommandLedger *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(CommandLedger *, command_ledger_free);

size_t command_ledger_size(const CommandLedger *l);
const CommandLedgerItem *command_ledger_find(const CommandLedger *l, const char *id);
/* Records a command's result; the 257th id evicts the oldest. An id already known keeps its first
 * result (0, nothing changes). -ENOMEM leaves the ledger as it was. */
int command_ledger_add(CommandLedger *l, const char *id, const char *result, const char *message);
/* Seeds the ledger from the data of a command_result event still in the spool (section 6.2): the
 * commands the receiver has not seen acknowledged and will send again. Data that is not a
 * command_result payload is ignored (0). */
int command_ledger_seed(CommandLedger *l, const char *command_result_data);
/* The command id a command_result payload acknowledges, or NULL: for the "ack queued" check. The
 * returned string is malloc'ed. */
char *command_ledger_ack_id(const char *command_result_data);

/* What to do with a command of this id; 'ack_queued' says whether a command_result for it is queued
 * or in flight. *ret_item (optional) is the recorded result for REACK and SKIP. */
CommandLedgerDecision command_ledger_decide(const CommandLedger *l, const char *id, bool ack_queued,
                                            const CommandLedgerItem **ret_item);
