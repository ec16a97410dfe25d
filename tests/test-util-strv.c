/* Unit tests of the string arrays (util-strv.h). */
#include "test-util.h"
#include "util-strv.h"

static void test_push_and_query(void) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t n = 0;

        check_int(strv_length(NULL), 0);
        check(!strv_contains(NULL, "a"));
        check_int(strv_push(&l, &n, strdup("a")), 0);
        check_int(strv_extend(&l, &n, "b"), 0);
        check_int(strv_extend(&l, NULL, "c"), 0);      /* without the cached length */
        check_int(n, 2);
        n = strv_length(l);
        check_int(n, 3);
        check_streq(l[0], "a");
        check_streq(l[2], "c");
        check(l[3] == NULL);
        check(strv_contains(l, "b"));
        check(!strv_contains(l, "d"));
        check(!strv_contains(l, NULL));
        /* A failed allocation passed in is reported, not added. */
        check_int(strv_push(&l, &n, NULL), -ENOMEM);
        check_int(strv_length(l), 3);
        check_int(strv_push(NULL, NULL, strdup("x")), -EINVAL);        /* frees what it was given */
        check(strv_free(NULL) == NULL);
}

static void test_split(void) {
        char **l = NULL;

        check_int(strv_split("  aplay  -q  x ", " ", &l), 0);
        check_int(strv_length(l), 3);
        check_streq(l[0], "aplay");
        check_streq(l[1], "-q");
        check_streq(l[2], "x");
        l = strv_free(l);
        check_int(strv_split("a,b;;c", ",;", &l), 0);
        check_int(strv_length(l), 3);
        check_streq(l[2], "c");
        l = strv_free(l);
        check_int(strv_split("   ", " ", &l), 0);
        check(l && l[0] == NULL);
        l = strv_free(l);
        check_int(strv_split("", " ", &l), 0);
        check(l && l[0] == NULL);
        l = strv_free(l);
        check_int(strv_split(NULL, " ", &l), -EINVAL);
}

int main(void) {
        test_run(test_push_and_query);
        test_run(test_split);
        return test_result();
}
