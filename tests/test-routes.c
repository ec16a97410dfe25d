/* Which backend reports a controller (kegboard-event-protocol.md sections 1.1 and 1.2): the
 * --controller_backends parser with its five flag errors, and the first-match-wins lookup. */

#include "routes.h"
#include "test-util.h"

static void test_lookup(void) {
        _cleanup_(routes_freep) Routes *r = NULL;
        _cleanup_(freep) char *e = NULL;

        check_int(routes_new(" kegboard = legacy , kegboard-1a2b3c4d=event,", true, true, &r, &e), 0);
        check(routes_mixed(r));
        /* Rule 1: the entry. */
        check_int(routes_lookup(r, "kegboard.flow0", false), ROUTE_LEGACY);
        check_int(routes_lookup(r, "kegboard.thermo-28aa", false), ROUTE_LEGACY);
        check_int(routes_lookup(r, "kegboard", true), ROUTE_LEGACY);
        check_int(routes_lookup(r, "kegboard-1a2b3c4d.relay0", false), ROUTE_EVENT);
        /* Only the part before the first '.' names the controller. */
        check_int(routes_lookup(r, "kegboardx.flow0", false), ROUTE_EVENT);
        check_int(routes_lookup(r, "keg.board.flow0", false), ROUTE_EVENT);
        /* Rule 2: --event_url; a name without a '.' has no controller: rule 3. */
        check_int(routes_lookup(r, "other.flow0", false), ROUTE_EVENT);
        check_int(routes_lookup(r, "flow0", false), ROUTE_LEGACY);
}

static void test_defaults(void) {
        _cleanup_(routes_freep) Routes *ev = NULL, *legacy = NULL, *none = NULL;

        check_int(routes_new("", false, true, &ev, NULL), 0);
        check(!routes_mixed(ev));
        check_int(routes_lookup(ev, "kegboard.flow0", false), ROUTE_EVENT);
        check_int(routes_lookup(ev, "flow0", false), ROUTE_STANDALONE);
        check_int(routes_new(NULL, true, false, &legacy, NULL), 0);
        check_int(routes_lookup(legacy, "kegboard.flow0", false), ROUTE_LEGACY);
        check_int(routes_new("", false, false, &none, NULL), 0);
        check_int(routes_lookup(none, "kegboard.flow0", false), ROUTE_STANDALONE);
        check_int(routes_lookup(NULL, "kegboard.flow0", false), ROUTE_STANDALONE);
}

static void check_error(const char *spec, bool legacy, bool event, const char *message) {
        Routes *r = NULL;
        _cleanup_(freep) char *e = NULL;

        check_int(routes_new(spec, legacy, event, &r, &e), -EINVAL);
        check(!r);
        check_streq(e, message);
}

static void test_errors(void) {
        check_error("kegboard", true, true, "'kegboard' is not <controller>=<backend>");
        check_error("=event", true, true, "'=event': not a controller name");
        check_error("kegboard.flow0=event", true, true, "'kegboard.flow0=event': not a controller name");
        check_error("keg board=event", true, true, "'keg board=event': not a controller name");
        check_error("kegboard=cloud", true, true, "'kegboard=cloud': unknown backend (event or legacy)");
        check_error("kegboard=", true, true, "'kegboard=': unknown backend (event or legacy)");
        check_error("kegboard=legacy", false, true, "'kegboard=legacy' needs --api_url");
        check_error("kegboard=event", true, false, "'kegboard=event' needs --event_url");
        check_error("kegboard=event, kegboard =legacy", true, true, "controller kegboard listed twice");
}

int main(void) {
        test_run(test_lookup);
        test_run(test_defaults);
        test_run(test_errors);
        return test_result();
}
