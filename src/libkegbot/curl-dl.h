/* libcurl, loaded with dlopen() when a process first makes an HTTP request, so that a process that
 * never does (a standalone core, lcd_daemon without --api_url) never maps libcurl and the ~30
 * libraries it pulls in (TLS, Kerberos, LDAP, ...). Only http.c and its tests include this header.
 *
 * Functions are called through the sym_* pointers. Options are set only through the typed setters
 * below: the variadic curl_easy_setopt() cannot check its argument, and curl's own type-checking
 * macros only wrap directly linked calls. Each setter's prototype fixes the value's type, and a
 * compile-time assertion checks that the option takes that type (for long options from the option
 * number, where curl encodes it; for the others from a list, which test-curl-dl.c checks against
 * libcurl's own option table). Handing an option a value of the wrong type is a compile error. */
#pragma once

#include <curl/curl.h>

#include "macro.h"

#define CURL_DL_SONAME "libcurl.so.4"

/* Loads libcurl (once; later calls return 0) and runs curl_global_init(). On failure logs an error
 * naming the library and what is missing, and returns -EOPNOTSUPP (no usable library) or -EIO. */
int curl_dl_open(void);
/* The same with another file name (tests: the failure paths). */
int curl_dl_open_soname(const char *soname);

#define CURL_DL_FUNCS(X)                \
        X(curl_easy_init)               \
        X(curl_easy_cleanup)            \
        X(curl_easy_strerror)           \
        X(curl_slist_append)            \
        X(curl_slist_free_all)          \
        X(curl_multi_init)              \
        X(curl_multi_cleanup)           \
        X(curl_multi_assign)            \
        X(curl_multi_add_handle)        \
        X(curl_multi_remove_handle)     \
        X(curl_multi_socket_action)     \
        X(curl_multi_info_read)

#define CURL_DL_DECLARE(name) extern __typeof__(name) *sym_##name;
CURL_DL_FUNCS(CURL_DL_DECLARE)
#undef CURL_DL_DECLARE

/* The options each setter accepts besides its prototype's type. X(option) per entry. */
#define CURL_DL_STRING_OPTIONS(X) X(CURLOPT_URL) X(CURLOPT_USERAGENT) X(CURLOPT_PROTOCOLS_STR) X(CURLOPT_CUSTOMREQUEST)
#define CURL_DL_SLIST_OPTIONS(X) X(CURLOPT_HTTPHEADER)
#define CURL_DL_POINTER_OPTIONS(X) X(CURLOPT_PRIVATE) X(CURLOPT_WRITEDATA) X(CURLOPT_ERRORBUFFER) X(CURLOPT_COPYPOSTFIELDS)
#define CURL_DL_WRITE_CB_OPTIONS(X) X(CURLOPT_WRITEFUNCTION)
#define CURL_DL_MULTI_POINTER_OPTIONS(X) X(CURLMOPT_SOCKETDATA) X(CURLMOPT_TIMERDATA)
#define CURL_DL_POINTER_INFOS(X) X(CURLINFO_PRIVATE)

/* Long options: curl numbers them below CURLOPTTYPE_OBJECTPOINT; long infos carry CURLINFO_LONG.
 * Multi function options are numbered from CURLOPTTYPE_FUNCTIONPOINT, and each multi callback type
 * belongs to one option, so the prototype of its setter does the rest. */
#define CURL_DL_IS_LONG_OPTION(o) ((o) > CURLOPTTYPE_LONG && (o) < CURLOPTTYPE_OBJECTPOINT)
#define CURL_DL_IS_FUNCTION_OPTION(o) ((o) > CURLOPTTYPE_FUNCTIONPOINT && (o) < CURLOPTTYPE_OFF_T)
#define CURL_DL_IS_LONG_INFO(i) (((i) & CURLINFO_TYPEMASK) == CURLINFO_LONG)

#define CURL_DL_IS_(x) ((int) _curl_dl_opt == (int) (x)) ||
#define CURL_DL_CHECKED(list, what, fn, handle, opt, value)                                    \
        __extension__({                                                                         \
                enum { _curl_dl_opt = (opt) };                                                  \
                _Static_assert(list(CURL_DL_IS_) 0, #opt " is not " what);                      \
                (fn)((handle), (opt), (value));                                                 \
        })

#define curl_dl_easy_setopt_long(e, opt, v)                                                     \
        __extension__({                                                                         \
                _Static_assert(CURL_DL_IS_LONG_OPTION(opt), #opt " is not a long option");      \
                (curl_dl_easy_setopt_long)((e), (opt), (v));                                    \
        })
#define curl_dl_easy_setopt_string(e, opt, v) \
        CURL_DL_CHECKED(CURL_DL_STRING_OPTIONS, "a string option", curl_dl_easy_setopt_string, e, opt, v)
#define curl_dl_easy_setopt_slist(e, opt, v) \
        CURL_DL_CHECKED(CURL_DL_SLIST_OPTIONS, "a curl_slist option", curl_dl_easy_setopt_slist, e, opt, v)
#define curl_dl_easy_setopt_pointer(e, opt, v) \
        CURL_DL_CHECKED(CURL_DL_POINTER_OPTIONS, "a data pointer option", curl_dl_easy_setopt_pointer, e, opt, v)
#define curl_dl_easy_setopt_write_cb(e, opt, v) \
        CURL_DL_CHECKED(CURL_DL_WRITE_CB_OPTIONS, "a write callback option", curl_dl_easy_setopt_write_cb, e, opt, v)
#define curl_dl_multi_setopt_pointer(m, opt, v) \
        CURL_DL_CHECKED(CURL_DL_MULTI_POINTER_OPTIONS, "a data pointer option", curl_dl_multi_setopt_pointer, m, opt, v)
#define curl_dl_multi_setopt_socket_cb(m, opt, v)                                               \
        __extension__({                                                                         \
                _Static_assert(CURL_DL_IS_FUNCTION_OPTION(opt), #opt " is not a function option"); \
                (curl_dl_multi_setopt_socket_cb)((m), (opt), (v));                              \
        })
#define curl_dl_multi_setopt_timer_cb(m, opt, v)                                                \
        __extension__({                                                                         \
                _Static_assert(CURL_DL_IS_FUNCTION_OPTION(opt), #opt " is not a function option"); \
                (curl_dl_multi_setopt_timer_cb)((m), (opt), (v));                               \
        })
#define curl_dl_easy_getinfo_long(e, info, ret)                                                 \
        __extension__({                                                                         \
                _Static_assert(CURL_DL_IS_LONG_INFO(info), #info " is not a long info");        \
                (curl_dl_easy_getinfo_long)((e), (info), (ret));                                \
        })
#define curl_dl_easy_getinfo_pointer(e, info, ret) \
        CURL_DL_CHECKED(CURL_DL_POINTER_INFOS, "a pointer info", curl_dl_easy_getinfo_pointer, e, info, ret)

/* The functions behind the macros (call them through the macros). */
CURLcode (curl_dl_easy_setopt_long)(CURL *e, CURLoption opt, long v);
CURLcode (curl_dl_easy_setopt_string)(CURL *e, CURLoption opt, const char *v);
CURLcode (curl_dl_easy_setopt_slist)(CURL *e, CURLoption opt, struct curl_slist *v);
CURLcode (curl_dl_easy_setopt_pointer)(CURL *e, CURLoption opt, const void *v);
CURLcode (curl_dl_easy_setopt_write_cb)(CURL *e, CURLoption opt, curl_write_callback v);
CURLMcode (curl_dl_multi_setopt_pointer)(CURLM *m, CURLMoption opt, void *v);
CURLMcode (curl_dl_multi_setopt_socket_cb)(CURLM *m, CURLMoption opt, curl_socket_callback v);
CURLMcode (curl_dl_multi_setopt_timer_cb)(CURLM *m, CURLMoption opt, curl_multi_timer_callback v);
CURLcode (curl_dl_easy_getinfo_long)(CURL *e, CURLINFO info, long *ret);
CURLcode (curl_dl_easy_getinfo_pointer)(CURL *e, CURLINFO info, void **ret);

/* CURLcode -> negative errno. */
int curl_dl_code_to_errno(CURLcode code);
