/* dlopen() of libcurl; see curl-dl.h for why. */
#include <dlfcn.h>
#include <errno.h>

#define CURL_DL_NO_REDIRECT 1
#include "curl-dl.h"

#define LOG_COMPONENT "api-backend"
#include "log.h"

#define CURL_DL_DEFINE(name) __typeof__(name) *sym_##name;
CURL_DL_FUNCS(CURL_DL_DEFINE)
#undef CURL_DL_DEFINE

#define CURL_SONAME "libcurl.so.4"

int curl_dlopen(void) {
        static void *handle;

        if (handle)
                return 0;

        void *h = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                log_error("Server mode needs %s: %s", CURL_SONAME, dlerror());
                return -EOPNOTSUPP;
        }

#define CURL_DL_RESOLVE(name)                                                   \
        sym_##name = (__typeof__(name) *) dlsym(h, #name);                      \
        if (!sym_##name) {                                                      \
                log_error("%s lacks %s: %s", CURL_SONAME, #name, dlerror());    \
                dlclose(h);                                                     \
                return -EOPNOTSUPP;                                             \
        }
        CURL_DL_FUNCS(CURL_DL_RESOLVE)
#undef CURL_DL_RESOLVE

        /* Without the threaded (or c-ares) resolver, every name lookup would block the loop. */
        __typeof__(curl_version_info) *version_info = (__typeof__(curl_version_info) *) dlsym(h, "curl_version_info");
        const curl_version_info_data *info = version_info ? version_info(CURLVERSION_NOW) : NULL;
        if (!info || !(info->features & CURL_VERSION_ASYNCHDNS))
                log_warning("%s resolves host names synchronously: a slow DNS server would stall the core; "
                            "use an IP address in --api_url", CURL_SONAME);

        handle = h;
        return 0;
}
