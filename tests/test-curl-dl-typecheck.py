#!/usr/bin/python3
"""The typed setters of src/libkegbot/curl-dl.h keep curl's option type checks at compile time:
every misuse below must fail to compile (for the expected reason), and the correct uses must
compile. Usage: test-curl-dl-typecheck.py <compiler command...> -- <compile flags...>"""
import os
import subprocess
import sys
import tempfile

PRELUDE = r"""
#include "curl-dl.h"
static size_t good_write(char *d, size_t s, size_t n, void *u) { return s * n; }
static int good_socket(CURL *e, curl_socket_t fd, int what, void *u, void *sp) { return 0; }
static int good_timer(CURLM *m, long t, void *u) { return 0; }
void use(CURL *e, CURLM *m, struct curl_slist *l, char *errbuf, double *dp, int (*badcb)(void));
void use(CURL *e, CURLM *m, struct curl_slist *l, char *errbuf, double *dp, int (*badcb)(void)) {
        long lv = 0;
        void *p = NULL;
        (void) good_write; (void) good_socket; (void) good_timer;
        (void) lv; (void) p; (void) l; (void) errbuf; (void) dp; (void) badcb;
"""

GOOD = r"""
        curl_dl_easy_setopt_string(e, CURLOPT_URL, "http://x/");
        curl_dl_easy_setopt_long(e, CURLOPT_TIMEOUT_MS, 5L);
        curl_dl_easy_setopt_slist(e, CURLOPT_HTTPHEADER, l);
        curl_dl_easy_setopt_pointer(e, CURLOPT_PRIVATE, e);
        curl_dl_easy_setopt_pointer(e, CURLOPT_ERRORBUFFER, errbuf);
        curl_dl_easy_setopt_write_cb(e, CURLOPT_WRITEFUNCTION, good_write);
        curl_dl_multi_setopt_socket_cb(m, CURLMOPT_SOCKETFUNCTION, good_socket);
        curl_dl_multi_setopt_timer_cb(m, CURLMOPT_TIMERFUNCTION, good_timer);
        curl_dl_multi_setopt_pointer(m, CURLMOPT_TIMERDATA, m);
        curl_dl_easy_getinfo_long(e, CURLINFO_RESPONSE_CODE, &lv);
        curl_dl_easy_getinfo_pointer(e, CURLINFO_PRIVATE, &p);
"""

# (what, code, a piece of the expected compiler message)
BAD = [
    ("long setter, string option", 'curl_dl_easy_setopt_long(e, CURLOPT_URL, 1L);', "not a long option"),
    ("string setter, long option", 'curl_dl_easy_setopt_string(e, CURLOPT_TIMEOUT_MS, "5");', "not a string option"),
    ("string setter, long value", 'curl_dl_easy_setopt_string(e, CURLOPT_URL, 5L);', "integer"),
    ("string setter, slist value", 'curl_dl_easy_setopt_string(e, CURLOPT_USERAGENT, l);', "incompatible"),
    ("slist setter, string value", 'curl_dl_easy_setopt_slist(e, CURLOPT_HTTPHEADER, "X: y");', "incompatible"),
    ("slist setter, string option", 'curl_dl_easy_setopt_slist(e, CURLOPT_URL, l);', "not a curl_slist option"),
    ("long setter, pointer value", 'curl_dl_easy_setopt_long(e, CURLOPT_TIMEOUT_MS, "5");', "integer"),
    ("pointer setter, long option", 'curl_dl_easy_setopt_pointer(e, CURLOPT_TIMEOUT_MS, p);', "not a data pointer option"),
    ("pointer setter, function option", 'curl_dl_easy_setopt_pointer(e, CURLOPT_WRITEFUNCTION, p);', "not a data pointer option"),
    ("write callback of another type", 'curl_dl_easy_setopt_write_cb(e, CURLOPT_WRITEFUNCTION, badcb);', "incompatible"),
    ("write setter, other option", 'curl_dl_easy_setopt_write_cb(e, CURLOPT_READFUNCTION, good_write);', "not a write callback option"),
    ("socket callback as timer callback", 'curl_dl_multi_setopt_timer_cb(m, CURLMOPT_TIMERFUNCTION, good_socket);', "incompatible"),
    ("timer callback as socket callback", 'curl_dl_multi_setopt_socket_cb(m, CURLMOPT_SOCKETFUNCTION, good_timer);', "incompatible"),
    ("timer setter, data option", 'curl_dl_multi_setopt_timer_cb(m, CURLMOPT_TIMERDATA, good_timer);', "not a function option"),
    ("long info into a double", 'curl_dl_easy_getinfo_long(e, CURLINFO_RESPONSE_CODE, dp);', "incompatible"),
    ("string info as long", 'curl_dl_easy_getinfo_long(e, CURLINFO_EFFECTIVE_URL, &lv);', "not a long info"),
    ("option not a constant", 'CURLoption o = CURLOPT_URL; curl_dl_easy_setopt_string(e, o, "x");', ""),
]


def compile_snippet(cc, flags, body, tmp):
    src = os.path.join(tmp, "snippet.c")
    with open(src, "w") as f:
        f.write(PRELUDE + body + "\n}\n")
    r = subprocess.run(cc + flags + ["-fsyntax-only", "-Werror", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11", src],
                       capture_output=True, text=True)
    return r.returncode, r.stderr


def main():
    sep = sys.argv.index("--")
    cc, flags = sys.argv[1:sep], sys.argv[sep + 1:]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        rc, err = compile_snippet(cc, flags, GOOD, tmp)
        if rc != 0:
            print("FAIL: the correct uses do not compile:\n" + err)
            failed += 1
        else:
            print("ok: correct uses compile")
        for what, code, expect in BAD:
            rc, err = compile_snippet(cc, flags, code, tmp)
            if rc == 0:
                print("FAIL: compiles, but must not: %s: %s" % (what, code))
                failed += 1
            elif expect not in err:
                print("FAIL: %s fails for another reason than '%s':\n%s" % (what, expect, err))
                failed += 1
            else:
                print("ok: rejected: %s" % what)
    print("%d of %d checks failed" % (failed, len(BAD) + 1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
