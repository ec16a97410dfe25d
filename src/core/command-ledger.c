/* The command ledger: see command-ledger.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "command-ledger.h"
#include "util-string.h"

struct CommandLedger {
        CommandLedgerItem items[COMMAND_LEDGER_MAX];
        size_t n;
        size_t oldest;                  /* once full: the slot the next id takes */
};

int command_ledger_new(CommandLedger **ret) {
        assert_return(ret, -EINVAL);

        *ret = calloc(1, sizeof **ret);
        return *ret ? 0 : -ENOMEM;
}

static void item_done(CommandLedgerItem *it) {
        free(it->id);
        free(it->result);
        free(it->message);
        *it = (CommandLedgerItem) {};
}

CommandLedger *command_ledger_free(CommandLedger *l) {
        if (!l)
                return NULL;
        for (size_t i = 0; i < l->n; i++)
                item_done(&l->items[i]);
        free(l);
        return NULL;
}

size_t command_ledger_size(const CommandLedger *l) {
        return l ? l->n : 0;
}

const CommandLedgerItem *command_ledger_find(const CommandLedger *l, const char *id) {
        if (!l || !id)
                return NULL;
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->items[i].id, id))
                        return &l->items[i];
        return NULL;
}

int command_ledger_add(CommandLedger *l, const char *id, const char *result, const char *message) {
        CommandLedgerItem n = {}, *it;

        assert_return(l, -EINVAL);
        assert_return(id, -EINVAL);
        assert_return(result, -EINVAL);

        if (command_ledger_find(l, id))
                return 0;
        n.id = strdup(id);
        n.result = strdup(result);
        n.message = message ? strdup(message) : NULL;
        if (!n.id || !n.result || (message && !n.message)) {
                item_done(&n);
                return -ENOMEM;
        }
        if (l->n < COMMAND_LEDGER_MAX)
                it = &l->items[l->n++];
        else {
                it = &l->items[l->oldest];
                l->oldest = (l->oldest + 1) % COMMAND_LEDGER_MAX;
                item_done(it);
        }
        *it = n;
        return 1;
}

int command_ledger_seed(CommandLedger *l, const char *command_result_data) {
        json_t *data;
        const char *id, *result;
        int r = 0;

        assert_return(l, -EINVAL);

        data = command_result_data ? json_loads(command_result_data, 0, NULL) : NULL;
        id = json_string_value(json_object_get(data, "command"));
        result = json_string_value(json_object_get(data, "result"));
        if (id && result)
                r = command_ledger_add(l, id, result, json_string_value(json_object_get(data, "message")));
        json_decref(data);
        return r < 0 ? r : 0;
}

char *command_ledger_ack_id(const char *command_result_data) {
        json_t *data = command_result_data ? json_loads(command_result_data, 0, NULL) : NULL;
        const char *id = json_string_value(json_object_get(data, "command"));
        char *ret = id ? strdup(id) : NULL;

        json_decref(data);
        return ret;
}

CommandLedgerDecision command_ledger_decide(const CommandLedger *l, const char *id, bool ack_queued,
                                            const CommandLedgerItem **ret_item) {
        const CommandLedgerItem *it = command_ledger_find(l, id);

        if (ret_item)
                *ret_item = it;
        if (!it)
                return COMMAND_LEDGER_APPLY;
        return ack_queued ? COMMAND_LEDGER_SKIP : COMMAND_LEDGER_REACK;
}
