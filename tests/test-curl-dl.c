/* Tests for the libcurl loader and its typed setters (src/libkegbot/curl-dl.c): the failure paths
 * (no such library, a library without curl's symbols) end in a clear error and leave nothing
 * half-loaded; the real libcurl loads once; every option list of curl-dl.h agrees with libcurl's
 * own option table; the setters reach libcurl. That misuse does not compile is checked by
 * test-curl-dl-typecheck.py. */
#include <dlfcn.h>
#include <string.h>

#include "test-util.h"

#include "curl-dl.h"
#include "log.h"

static char tmpdir[] = "/tmp/test-curl-dl-XXXXXX";

static void test_missing_library(void) {
        _cleanup_(freep) char *err = NULL;

        capture_begin_in(tmpdir);
        check_int(curl_dl_open_soname("libkegbot-no-such-curl.so.4"), -EOPNOTSUPP);
        err = capture_end();
        check(err && strstr(err, "HTTP requests need libkegbot-no-such-curl.so.4, which cannot be loaded"));
        check(err && strstr(err, "libkegbot-no-such-curl.so.4: cannot open shared object file"));
        check(sym_curl_easy_init == NULL);
}

static void test_library_without_curl(void) {
        _cleanup_(freep) char *err = NULL;

        capture_begin_in(tmpdir);
        check_int(curl_dl_open_soname("libm.so.6"), -EOPNOTSUPP);
        err = capture_end();
        check(err && strstr(err, "libm.so.6 lacks curl_easy_init, which HTTP requests need"));
        /* Nothing is left half-resolved, and it is not kept open. */
        check(sym_curl_easy_init == NULL && sym_curl_multi_init == NULL);
}

static void test_load(void) {
        check_int(curl_dl_open(), 0);
        check(sym_curl_easy_init && sym_curl_multi_info_read && sym_curl_slist_append);
        check_int(curl_dl_open(), 0);
        /* Once loaded, another name changes nothing. */
        check_int(curl_dl_open_soname("libkegbot-no-such-curl.so.4"), 0);
}

typedef const struct curl_easyoption *(*OptionById)(CURLoption id);
typedef const struct curl_easyoption *(*OptionNext)(const struct curl_easyoption *prev);

#define AS_ELEMENT(x) x,

/* libcurl describes every option it knows (curl_easy_option_by_id(), 7.73+): the lists and the
 * long-option rule of curl-dl.h must say the same. */
static void test_option_lists(void) {
        void *h = dlopen(CURL_DL_SONAME, RTLD_NOW | RTLD_NOLOAD);
        check(h != NULL);
        if (!h)
                return;
        OptionById by_id = (OptionById) dlsym(h, "curl_easy_option_by_id");
        OptionNext next = (OptionNext) dlsym(h, "curl_easy_option_next");
        check(by_id && next);
        if (!by_id || !next) {
                dlclose(h);
                return;
        }

        static const CURLoption strings[] = { CURL_DL_STRING_OPTIONS(AS_ELEMENT) };
        static const CURLoption slists[] = { CURL_DL_SLIST_OPTIONS(AS_ELEMENT) };
        static const CURLoption pointers[] = { CURL_DL_POINTER_OPTIONS(AS_ELEMENT) };
        static const CURLoption write_cbs[] = { CURL_DL_WRITE_CB_OPTIONS(AS_ELEMENT) };
        const struct curl_easyoption *o;

        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                o = by_id(strings[i]);
                check(o && o->type == CURLOT_STRING);
        }
        for (size_t i = 0; i < ELEMENTSOF(slists); i++) {
                o = by_id(slists[i]);
                check(o && o->type == CURLOT_SLIST);
        }
        for (size_t i = 0; i < ELEMENTSOF(pointers); i++) {
                o = by_id(pointers[i]);
                check(o && (o->type == CURLOT_OBJECT || o->type == CURLOT_CBPTR));
        }
        for (size_t i = 0; i < ELEMENTSOF(write_cbs); i++) {
                o = by_id(write_cbs[i]);
                check(o && o->type == CURLOT_FUNCTION);
        }

        unsigned n = 0, longs = 0;
        for (o = next(NULL); o; o = next(o)) {
                bool is_long = o->type == CURLOT_LONG || o->type == CURLOT_VALUES;
                if (is_long != CURL_DL_IS_LONG_OPTION(o->id)) {
                        fprintf(stderr, "CURLOPT_%s: libcurl says %s, curl-dl.h says %s\n", o->name,
                                is_long ? "long" : "not long", is_long ? "not long" : "long");
                        failures++;
                }
                n++;
                longs += is_long;
        }
        check(n > 200 && longs > 100);

        /* Multi options have no table: their number carries the type. */
        static const CURLMoption mpointers[] = { CURL_DL_MULTI_POINTER_OPTIONS(AS_ELEMENT) };
        for (size_t i = 0; i < ELEMENTSOF(mpointers); i++)
                check(mpointers[i] > CURLOPTTYPE_OBJECTPOINT && mpointers[i] < CURLOPTTYPE_FUNCTIONPOINT);
        check(CURL_DL_IS_FUNCTION_OPTION(CURLMOPT_TIMERFUNCTION));
        check(!CURL_DL_IS_FUNCTION_OPTION(CURLMOPT_TIMERDATA));
        check(!CURL_DL_IS_FUNCTION_OPTION(CURLMOPT_MAXCONNECTS));
        static const CURLINFO pinfos[] = { CURL_DL_POINTER_INFOS(AS_ELEMENT) };
        for (size_t i = 0; i < ELEMENTSOF(pinfos); i++)
                check((pinfos[i] & CURLINFO_TYPEMASK) == CURLINFO_STRING);
        check(CURL_DL_IS_LONG_INFO(CURLINFO_RESPONSE_CODE));
        check(!CURL_DL_IS_LONG_INFO(CURLINFO_EFFECTIVE_URL));
        dlclose(h);
}

static size_t write_nothing(char *data, size_t size, size_t nmemb, void *userdata) {
        return size * nmemb;
}

static int socket_nothing(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        return 0;
}

static int timer_nothing(CURLM *multi, long timeout_ms, void *userp) {
        return 0;
}

static void test_setters(void) {
        char errbuf[CURL_ERROR_SIZE];
        int marker = 0;
        void *got = NULL;
        long status = -1;

        CURL *e = sym_curl_easy_init();
        check(e != NULL);
        if (!e)
                return;
        struct curl_slist *l = sym_curl_slist_append(NULL, "X-Test: 1");
        check(l != NULL);

        check_int(curl_dl_easy_setopt_string(e, CURLOPT_URL, "http://127.0.0.1:9/"), CURLE_OK);
        check_int(curl_dl_easy_setopt_string(e, CURLOPT_PROTOCOLS_STR, "http,https"), CURLE_OK);
        /* libcurl checks this one's value: the string really arrives. */
        check_int(curl_dl_easy_setopt_string(e, CURLOPT_PROTOCOLS_STR, "no-such-protocol"), CURLE_UNSUPPORTED_PROTOCOL);
        check_int(curl_dl_easy_setopt_long(e, CURLOPT_TIMEOUT_MS, 1500L), CURLE_OK);
        /* ... and this long's range. */
        check_int(curl_dl_easy_setopt_long(e, CURLOPT_MAXREDIRS, -2L), CURLE_BAD_FUNCTION_ARGUMENT);
        check_int(curl_dl_easy_setopt_slist(e, CURLOPT_HTTPHEADER, l), CURLE_OK);
        check_int(curl_dl_easy_setopt_write_cb(e, CURLOPT_WRITEFUNCTION, write_nothing), CURLE_OK);
        check_int(curl_dl_easy_setopt_pointer(e, CURLOPT_ERRORBUFFER, errbuf), CURLE_OK);
        check_int(curl_dl_easy_setopt_pointer(e, CURLOPT_PRIVATE, &marker), CURLE_OK);
        check_int(curl_dl_easy_getinfo_pointer(e, CURLINFO_PRIVATE, &got), CURLE_OK);
        check(got == &marker);
        check_int(curl_dl_easy_getinfo_long(e, CURLINFO_RESPONSE_CODE, &status), CURLE_OK);
        check_int(status, 0);
        sym_curl_easy_cleanup(e);
        sym_curl_slist_free_all(l);

        CURLM *m = sym_curl_multi_init();
        check(m != NULL);
        if (!m)
                return;
        check_int(curl_dl_multi_setopt_socket_cb(m, CURLMOPT_SOCKETFUNCTION, socket_nothing), CURLM_OK);
        check_int(curl_dl_multi_setopt_timer_cb(m, CURLMOPT_TIMERFUNCTION, timer_nothing), CURLM_OK);
        check_int(curl_dl_multi_setopt_pointer(m, CURLMOPT_SOCKETDATA, &marker), CURLM_OK);
        check_int(curl_dl_multi_setopt_pointer(m, CURLMOPT_TIMERDATA, &marker), CURLM_OK);
        sym_curl_multi_cleanup(m);
}

static void test_code_to_errno(void) {
        check_int(curl_dl_code_to_errno(CURLE_OK), 0);
        check_int(curl_dl_code_to_errno(CURLE_OUT_OF_MEMORY), -ENOMEM);
        check_int(curl_dl_code_to_errno(CURLE_UNKNOWN_OPTION), -EOPNOTSUPP);
        check_int(curl_dl_code_to_errno(CURLE_BAD_FUNCTION_ARGUMENT), -EINVAL);
        check_int(curl_dl_code_to_errno(CURLE_COULDNT_CONNECT), -EIO);
}

int main(void) {
        if (!mkdtemp(tmpdir))
                return 1;
        test_run(test_missing_library);
        test_run(test_library_without_curl);
        test_run(test_load);
        test_run(test_option_lists);
        test_run(test_setters);
        test_run(test_code_to_errno);
        (void) unlink(capture_path);
        (void) rmdir(tmpdir);
        return test_result();
}
