/* libcurl, loaded with dlopen() the first time server mode needs it. A standalone core then never
 * maps libcurl and the ~30 libraries it drags in (TLS, Kerberos, LDAP, ...): that is most of the
 * core's memory. Include this instead of <curl/curl.h>; calls go through resolved pointers. */
#pragma once

/* Must precede curl.h: the type-checking macros would clash with the redirections below. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

/* Resolves every function below; idempotent. 0 on success, else a negative errno and a logged
 * error naming the library and what failed. */
int curl_dlopen(void);

#define CURL_DL_FUNCS(X)                \
        X(curl_global_init)             \
        X(curl_easy_init)               \
        X(curl_easy_cleanup)            \
        X(curl_easy_setopt)             \
        X(curl_easy_getinfo)            \
        X(curl_easy_strerror)           \
        X(curl_slist_append)            \
        X(curl_slist_free_all)          \
        X(curl_multi_init)              \
        X(curl_multi_cleanup)           \
        X(curl_multi_setopt)            \
        X(curl_multi_assign)            \
        X(curl_multi_add_handle)        \
        X(curl_multi_remove_handle)     \
        X(curl_multi_socket_action)     \
        X(curl_multi_info_read)

#define CURL_DL_DECLARE(name) extern __typeof__(name) *sym_##name;
CURL_DL_FUNCS(CURL_DL_DECLARE)
#undef CURL_DL_DECLARE

/* curl-dl.c itself needs the real names. */
#ifndef CURL_DL_NO_REDIRECT

/* curl.h defines call-through macros for these three; replace them. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt

#define curl_global_init sym_curl_global_init
#define curl_easy_init sym_curl_easy_init
#define curl_easy_cleanup sym_curl_easy_cleanup
#define curl_easy_setopt sym_curl_easy_setopt
#define curl_easy_getinfo sym_curl_easy_getinfo
#define curl_easy_strerror sym_curl_easy_strerror
#define curl_slist_append sym_curl_slist_append
#define curl_slist_free_all sym_curl_slist_free_all
#define curl_multi_init sym_curl_multi_init
#define curl_multi_cleanup sym_curl_multi_cleanup
#define curl_multi_setopt sym_curl_multi_setopt
#define curl_multi_assign sym_curl_multi_assign
#define curl_multi_add_handle sym_curl_multi_add_handle
#define curl_multi_remove_handle sym_curl_multi_remove_handle
#define curl_multi_socket_action sym_curl_multi_socket_action
#define curl_multi_info_read sym_curl_multi_info_read
#endif
