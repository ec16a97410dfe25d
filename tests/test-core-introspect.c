/* Unit tests of the introspection scanner (src/mqtt/introspect.c): members and signatures found in
 * the right interface, method "in" arguments only, comments and the DOCTYPE skipped, and malformed
 * XML refused without a crash. */
#include "introspect.h"
#include "test-util.h"

static const char xml[] =
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n"
        "<!-- <interface name=\"org.kegbot.Core1.Manager\"><signal name=\"Fake\"/></interface> -->\n"
        "<node>\n"
        " <interface name=\"org.kegbot.Core1.Tap\">\n"
        "  <signal name=\"GhostFlow\"><arg type=\"s\"/></signal>\n"
        " </interface>\n"
        " <interface name='org.kegbot.Core1.Manager'>\n"
        "  <property name=\"Version\" type=\"s\" access=\"read\"/>\n"
        "  <method name=\"ClearQuarantine\">\n"
        "   <arg type=\"s\" name=\"meter\" direction=\"in\"/>\n"
        "   <arg type=\"u\" name=\"n\" direction=\"out\"/>\n"
        "  </method>\n"
        "  <method name=\"Sync\"/>\n"
        "  <signal name=\"GhostFlow\">\n"
        "   <arg type=\"s\" name=\"meter\"/><arg type=\"s\" name=\"rule\"/><arg type=\"t\"/><arg type=\"d\"/>\n"
        "   <arg type=\"t\"/><arg type=\"t\"/><arg type=\"t\"/><arg type=\"s\"/><arg type=\"s\"/>\n"
        "  </signal>\n"
        "  <signal name=\"PourFlagged\">\n"
        "   <arg type=\"t\"/><arg type=\"s\"/><arg type=\"as\"/>\n"
        "   <annotation name=\"org.freedesktop.DBus.Deprecated\" value=\"true\"/>\n"
        "  </signal>\n"
        " </interface>\n"
        "</node>\n";

static void check_sig(const char *doc, const char *kind, const char *member, int expect_r, const char *expect) {
        char *sig = NULL;
        int r = introspect_member_signature(doc, "org.kegbot.Core1.Manager", kind, member, &sig);

        check_int(r, expect_r);
        check_streq(sig, expect);
        free(sig);
}

static void test_members(void) {
        check_sig(xml, "signal", "GhostFlow", 1, "sstdtttss");
        check_sig(xml, "signal", "PourFlagged", 1, "tsas");
        check_sig(xml, "method", "ClearQuarantine", 1, "s");
        check_sig(xml, "method", "Sync", 1, "");
        check_sig(xml, "signal", "Fake", 0, NULL);
        check_sig(xml, "signal", "DrinkRecorded", 0, NULL);
        check_sig(xml, "method", "GhostFlow", 0, NULL);
        check_sig("<node/>", "signal", "GhostFlow", 0, NULL);
        check_sig("", "signal", "GhostFlow", 0, NULL);
}

static void test_malformed(void) {
        static const char *const bad[] = {
                "<node><interface name=\"org.kegbot.Core1.Manager\"><signal name=\"GhostFlow\"><arg type=\"s\"",
                "<node><interface name=\"org.kegbot.Core1.Manager\"><signal name=\"GhostFlow\"><arg/></signal>",
                "<node><interface name=\"org.kegbot.Core1.Manager\"><signal name=\"GhostFlow\">",
                "<!-- never closed",
                "<>",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *sig = NULL;
                check_int(introspect_member_signature(bad[i], "org.kegbot.Core1.Manager", "signal", "GhostFlow", &sig),
                          -EBADMSG);
                check(!sig);
        }
        /* Longer than a D-Bus signature may be. */
        char long_xml[4096] = "<node><interface name=\"org.kegbot.Core1.Manager\"><signal name=\"GhostFlow\">";
        for (int i = 0; i < 256; i++)
                strcat(long_xml, "<arg type=\"s\"/>");
        strcat(long_xml, "</signal></interface></node>");
        char *sig = NULL;
        check_int(introspect_member_signature(long_xml, "org.kegbot.Core1.Manager", "signal", "GhostFlow", &sig),
                  -EBADMSG);
        check(!sig);
        /* An unterminated attribute value is no match, not a crash. */
        check_sig("<node><interface name=\"org.kegbot.Core1.Manager><signal name=\"GhostFlow\"/></interface></node>",
                  "signal", "GhostFlow", 0, NULL);
}

int main(void) {
        test_run(test_members);
        test_run(test_malformed);
        return test_result();
}
