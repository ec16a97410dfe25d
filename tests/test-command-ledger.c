/* The command ledger of kegboard-event-protocol.md section 6.2 (scenario 5 of section 17): a
 * duplicate id is not applied again, it is acknowledged again only when no ack is queued, the ledger
 * is seeded from the acks still spooled, and the 257th id evicts the oldest. */

#include "command-ledger.h"
#include "kbevent.h"
#include "test-util.h"

static void test_duplicate_not_reapplied(void) {
        _cleanup_(command_ledger_freep) CommandLedger *l = NULL;
        const CommandLedgerItem *it = NULL;

        check_int(command_ledger_new(&l), 0);
        check_int(command_ledger_decide(l, "c1", false, &it), COMMAND_LEDGER_APPLY);
        check(!it);
        check_int(command_ledger_add(l, "c1", "error", "unknown meter 9"), 1);
        /* Sent again: never applied a second time, whatever the queue holds. */
        check_int(command_ledger_decide(l, "c1", false, &it), COMMAND_LEDGER_REACK);
        check(it);
        check_streq(it->result, "error");
        check_streq(it->message, "unknown meter 9");
        check_int(command_ledger_decide(l, "c1", true, &it), COMMAND_LEDGER_SKIP);
        check_streq(it->id, "c1");
        /* A second add of a known id keeps the first result. */
        check_int(command_ledger_add(l, "c1", "ok", NULL), 0);
        check_streq(command_ledger_find(l, "c1")->result, "error");
        check_int(command_ledger_size(l), 1);
        /* Ids are compared whole. */
        check_int(command_ledger_decide(l, "c", false, NULL), COMMAND_LEDGER_APPLY);
        check_int(command_ledger_decide(l, "c10", false, NULL), COMMAND_LEDGER_APPLY);
}

static void test_reack_only_without_queued_ack(void) {
        _cleanup_(command_ledger_freep) CommandLedger *l = NULL;
        _cleanup_(freep) char *ack = NULL, *other = NULL, *id = NULL, *id2 = NULL;

        check_int(command_ledger_new(&l), 0);
        check_int(command_ledger_add(l, "deny-1", "ok", NULL), 1);
        /* The "ack queued" check reads the payloads the backend queues. */
        check_int(kbevent_command_result_data("deny-1", "ok", NULL, &ack), 0);
        check_int(kbevent_command_result_data("deny-2", "unsupported", "unsupported command type foo", &other), 0);
        id = command_ledger_ack_id(ack);
        id2 = command_ledger_ack_id(other);
        check_streq(id, "deny-1");
        check_streq(id2, "deny-2");
        check(!command_ledger_ack_id("not json"));
        check(!command_ledger_ack_id("{\"command\":7}"));
        check(!command_ledger_ack_id(NULL));
        /* Ack in flight: the re-sent command is dropped; the receiver will see that ack. */
        check_int(command_ledger_decide(l, "deny-1", streq_ptr(id, "deny-1"), NULL), COMMAND_LEDGER_SKIP);
        /* Only another command's ack queued: acknowledged again with the recorded result. */
        check_int(command_ledger_decide(l, "deny-1", streq_ptr(id2, "deny-1"), NULL), COMMAND_LEDGER_REACK);
}

static void test_seeded_from_spool(void) {
        _cleanup_(command_ledger_freep) CommandLedger *l = NULL;
        _cleanup_(freep) char *a1 = NULL, *a2 = NULL;
        const CommandLedgerItem *it;

        check_int(kbevent_command_result_data("auth-1", "error", "presentment expired", &a1), 0);
        check_int(kbevent_command_result_data("auth-2", "ok", "", &a2), 0);
        check_int(command_ledger_new(&l), 0);
        check_int(command_ledger_seed(l, a1), 0);
        check_int(command_ledger_seed(l, a2), 0);
        /* Payloads that are no command_result are passed over. */
        check_int(command_ledger_seed(l, "{\"command\":\"x\"}"), 0);
        check_int(command_ledger_seed(l, "{\"result\":\"ok\"}"), 0);
        check_int(command_ledger_seed(l, "[1,2"), 0);
        check_int(command_ledger_seed(l, NULL), 0);
        check_int(command_ledger_size(l), 2);
        /* After the restart the receiver sends them again: not applied again. */
        check_int(command_ledger_decide(l, "auth-1", true, &it), COMMAND_LEDGER_SKIP);
        check_streq(it->result, "error");
        check_streq(it->message, "presentment expired");
        check_int(command_ledger_decide(l, "auth-2", false, &it), COMMAND_LEDGER_REACK);
        check_streq(it->result, "ok");
        check(!it->message);
}

static void test_eviction(void) {
        _cleanup_(command_ledger_freep) CommandLedger *l = NULL;
        char id[32];

        check_int(command_ledger_new(&l), 0);
        for (unsigned i = 1; i <= COMMAND_LEDGER_MAX; i++) {
                snprintf(id, sizeof id, "cmd-%u", i);
                check_int(command_ledger_add(l, id, "ok", NULL), 1);
        }
        check_int(command_ledger_size(l), 256);
        check(command_ledger_find(l, "cmd-1"));
        /* The 257th id evicts the oldest, and only it. */
        check_int(command_ledger_add(l, "cmd-257", "ok", NULL), 1);
        check_int(command_ledger_size(l), 256);
        check(!command_ledger_find(l, "cmd-1"));
        check_int(command_ledger_decide(l, "cmd-1", false, NULL), COMMAND_LEDGER_APPLY);
        check(command_ledger_find(l, "cmd-2"));
        check(command_ledger_find(l, "cmd-256"));
        check(command_ledger_find(l, "cmd-257"));
        /* Then the next oldest, in order. */
        check_int(command_ledger_add(l, "cmd-258", "ok", NULL), 1);
        check(!command_ledger_find(l, "cmd-2"));
        check(command_ledger_find(l, "cmd-3"));
        /* A known id does not evict anything. */
        check_int(command_ledger_add(l, "cmd-3", "error", "x"), 0);
        check(command_ledger_find(l, "cmd-4"));
        /* A whole second round. */
        for (unsigned i = 259; i <= 258 + COMMAND_LEDGER_MAX; i++) {
                snprintf(id, sizeof id, "cmd-%u", i);
                check_int(command_ledger_add(l, id, "ok", NULL), 1);
        }
        check_int(command_ledger_size(l), 256);
        check(!command_ledger_find(l, "cmd-258"));
        check(command_ledger_find(l, "cmd-259"));
        check(command_ledger_find(l, "cmd-514"));
}

int main(void) {
        test_run(test_duplicate_not_reapplied);
        test_run(test_reack_only_without_queued_ack);
        test_run(test_seeded_from_spool);
        test_run(test_eviction);
        return test_result();
}
