/* dlopen() of libcurl and its typed setters: see curl-dl.h. */
#include <dlfcn.h>
#include <errno.h>

#define LOG_COMPONENT "http"
#include "log.h"

#include "curl-dl.h"

ELF_NOTE_DLOPEN(curl_dl_note, "http",
                "HTTP client: Kegbot Server API in server mode, lcd_daemon and sound_server polls",
                "recommended", CURL_DL_SONAME);

#define CURL_DL_DEFINE(name) __typeof__(name) *sym_##name;
CURL_DL_FUNCS(CURL_DL_DEFINE)
#undef CURL_DL_DEFINE

/* The variadic entry points stay here: everything else goes through the typed setters. */
#define CURL_DL_PRIVATE_FUNCS(X)        \
        X(curl_global_init)             \
        X(curl_easy_setopt)             \
        X(curl_easy_getinfo)            \
        X(curl_multi_setopt)            \
        X(curl_version_info)

#define CURL_DL_DEFINE_STATIC(name) static __typeof__(name) *sym_##name;
CURL_DL_PRIVATE_FUNCS(CURL_DL_DEFINE_STATIC)
#undef CURL_DL_DEFINE_STATIC

static void *curl_dl_handle;

static void curl_dl_forget(void) {
#define CURL_DL_RESET(name) sym_##name = NULL;
        CURL_DL_FUNCS(CURL_DL_RESET)
        CURL_DL_PRIVATE_FUNCS(CURL_DL_RESET)
#undef CURL_DL_RESET
}

int curl_dl_open_soname(const char *soname) {
        void *h;

        assert_return(soname, -EINVAL);
        if (curl_dl_handle)
                return 0;

        h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
        if (!h)
                return log_error_errno(-EOPNOTSUPP, "HTTP requests need %s, which cannot be loaded "
                                       "(Debian package libcurl4): %s", soname, dlerror());

#define CURL_DL_RESOLVE(name)                                                                   \
        sym_##name = (__typeof__(name) *) dlsym(h, #name);                                      \
        if (!sym_##name) {                                                                      \
                log_error("%s lacks %s, which HTTP requests need: %s", soname, #name, dlerror()); \
                curl_dl_forget();                                                               \
                (void) dlclose(h);                                                              \
                return -EOPNOTSUPP;                                                             \
        }
        CURL_DL_FUNCS(CURL_DL_RESOLVE)
        CURL_DL_PRIVATE_FUNCS(CURL_DL_RESOLVE)
#undef CURL_DL_RESOLVE

        if (sym_curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                curl_dl_forget();
                (void) dlclose(h);
                return log_error_errno(-EIO, "Cannot initialise %s.", soname);
        }

        /* Without the threaded (or c-ares) resolver every name lookup would block the event loop. */
        const curl_version_info_data *info = sym_curl_version_info(CURLVERSION_NOW);
        if (!info || !(info->features & CURL_VERSION_ASYNCHDNS))
                log_warning("%s resolves host names synchronously: a slow DNS server would stall this "
                            "program; use an IP address in the URL", soname);

        curl_dl_handle = h;
        return 0;
}

int curl_dl_open(void) {
        return curl_dl_open_soname(CURL_DL_SONAME);
}

CURLcode (curl_dl_easy_setopt_long)(CURL *e, CURLoption opt, long v) {
        return sym_curl_easy_setopt(e, opt, v);
}

CURLcode (curl_dl_easy_setopt_string)(CURL *e, CURLoption opt, const char *v) {
        return sym_curl_easy_setopt(e, opt, v);
}

CURLcode (curl_dl_easy_setopt_slist)(CURL *e, CURLoption opt, struct curl_slist *v) {
        return sym_curl_easy_setopt(e, opt, v);
}

CURLcode (curl_dl_easy_setopt_pointer)(CURL *e, CURLoption opt, const void *v) {
        return sym_curl_easy_setopt(e, opt, v);
}

CURLcode (curl_dl_easy_setopt_write_cb)(CURL *e, CURLoption opt, curl_write_callback v) {
        return sym_curl_easy_setopt(e, opt, v);
}

CURLMcode (curl_dl_multi_setopt_pointer)(CURLM *m, CURLMoption opt, void *v) {
        return sym_curl_multi_setopt(m, opt, v);
}

CURLMcode (curl_dl_multi_setopt_socket_cb)(CURLM *m, CURLMoption opt, curl_socket_callback v) {
        return sym_curl_multi_setopt(m, opt, v);
}

CURLMcode (curl_dl_multi_setopt_timer_cb)(CURLM *m, CURLMoption opt, curl_multi_timer_callback v) {
        return sym_curl_multi_setopt(m, opt, v);
}

CURLcode (curl_dl_easy_getinfo_long)(CURL *e, CURLINFO info, long *ret) {
        return sym_curl_easy_getinfo(e, info, ret);
}

CURLcode (curl_dl_easy_getinfo_pointer)(CURL *e, CURLINFO info, void **ret) {
        return sym_curl_easy_getinfo(e, info, ret);
}

int curl_dl_code_to_errno(CURLcode code) {
        switch (code) {
        case CURLE_OK:
                return 0;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_UNKNOWN_OPTION:
        case CURLE_NOT_BUILT_IN:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EOPNOTSUPP;
        case CURLE_BAD_FUNCTION_ARGUMENT:
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        default:
                return -EIO;
        }
}
