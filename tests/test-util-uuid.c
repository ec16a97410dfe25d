/* Unit tests of the UUID helpers (util-uuid.h) and their one case rule: written lowercase, read in
 * either case. */
#include "test-util.h"
#include "util-uuid.h"

static void test_generate(void) {
        char a[UUID_STRING_MAX], b[UUID_STRING_MAX];

        check_int(uuid_generate(a), 0);
        check_int(uuid_generate(b), 0);
        check_int(strlen(a), 36);
        check(!streq(a, b));
        check(a[14] == '4');                            /* version 4 */
        check(strchr("89ab", a[19]) != NULL);           /* RFC 4122 variant */
        check(uuid_is_canonical(a));
        for (const char *p = a; *p; p++)
                check(*p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
}

static void test_parse(void) {
        char c[UUID_STRING_MAX];
        sd_id128_t x, y;

        check_int(uuid_from_string("3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10", &x), 0);
        check_int(uuid_from_string("3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10", &y), 0);
        check(sd_id128_equal(x, y));
        check_int(uuid_from_string("3f1C2a9E-8d4b-4C1e-9a57-0b6D2e4f7A10", NULL), 0);
        check_streq(uuid_to_string(x, c), "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");

        check_int(uuid_normalize("3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10", c), 0);
        check_streq(c, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");
        check(uuid_is_canonical("3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"));
        check(!uuid_is_canonical("3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10"));
        check(!uuid_is_canonical(NULL));

        static const char *const bad[] = {
                "", "3f1c2a9e8d4b4c1e9a570b6d2e4f7a10",         /* the plain form is no UUID */
                "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a1", "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a100",
                "3f1c2a9e-8d4b-4c1e-9a570-b6d2e4f7a10", "3f1c2a9e-8d4b-4c1e-9a57+0b6d2e4f7a10",
                "3g1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10", " 3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a1",
                "{3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                check_int(uuid_from_string(bad[i], &x), -EINVAL);
                check_int(uuid_normalize(bad[i], c), -EINVAL);
        }
        check_int(uuid_from_string(NULL, &x), -EINVAL);

        /* Boot ids: the plain form, either case. */
        check_int(uuid_from_plain_string("6d1f0c1e1c0a4b5e9b3a2f7e5d4c3b2a", &x), 0);
        check_int(uuid_from_plain_string("6D1F0C1E1C0A4B5E9B3A2F7E5D4C3B2A", &y), 0);
        check(sd_id128_equal(x, y));
        check_int(uuid_from_plain_string("6d1f0c1e-1c0a-4b5e-9b3a-2f7e5d4c3b2a", &x), -EINVAL);
        check_int(uuid_from_plain_string("6d1f0c1e1c0a4b5e9b3a2f7e5d4c3b2", &x), -EINVAL);
        check_int(uuid_from_plain_string("", &x), -EINVAL);
}

int main(void) {
        test_run(test_generate);
        test_run(test_parse);
        return test_result();
}
