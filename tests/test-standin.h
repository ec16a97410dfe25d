/* The stand-in Kegbot Server (tests/standin/kegbot_server.py) for the C tests of the HTTP and API
 * clients: start and stop it, and call its control API over an HttpClient on a private loop.
 * Header-only, for single-file test programs that include test-util.h first. */
#pragma once

#include <jansson.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "http.h"

#define STANDIN_KEY "0123456789abcdef0123456789abcdef"

static pid_t standin_pid;
static int standin_api_port, standin_control_port;

/* 0, or -ENOENT when python3 or the stand-in is missing (the caller skips). */
static inline int standin_start(void) {
        const char *src = getenv("KEGBOT_SOURCE_DIR") ?: ".";
        char path[PATH_MAX], line[256] = "";
        int pfd[2];
        FILE *f;

        snprintf(path, sizeof path, "%s/tests/standin/kegbot_server.py", src);
        if (access(path, R_OK) < 0 || access("/usr/bin/python3", X_OK) < 0)
                return -ENOENT;
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return -errno;
        standin_pid = fork();
        if (standin_pid < 0)
                return -errno;
        if (standin_pid == 0) {
                dup2(pfd[1], STDOUT_FILENO);
                execl("/usr/bin/python3", "python3", path, "--api-key", STANDIN_KEY, (char *) NULL);
                _exit(127);
        }
        close(pfd[1]);
        f = fdopen(pfd[0], "r");
        if (!f || !fgets(line, sizeof line, f) ||
            sscanf(line, "PORT %d CONTROL %d", &standin_api_port, &standin_control_port) != 2) {
                if (f)
                        fclose(f);
                return -EIO;
        }
        fclose(f);
        return 0;
}

static inline void standin_stop(void) {
        if (standin_pid > 0) {
                kill(standin_pid, SIGTERM);
                waitpid(standin_pid, NULL, 0);
                standin_pid = 0;
        }
}

static inline uint64_t test_now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Runs the loop until *done or the timeout; returns *done. */
static inline bool run_until_done(sd_event *e, const bool *done, double timeout_sec) {
        uint64_t end = test_now_usec() + (uint64_t) (timeout_sec * 1e6);
        while (!*done && test_now_usec() < end)
                (void) sd_event_run(e, 20 * USEC_PER_MSEC);
        return *done;
}

typedef struct StandinReply {
        bool done;
        long status;
        json_t *root;
} StandinReply;

static inline void on_standin_reply(HttpClient *c, const HttpResponse *r, void *userdata) {
        StandinReply *s = userdata;
        s->done = true;
        s->status = r->status;
        s->root = r->error ? NULL : json_loadb(r->body, r->size, 0, NULL);
}

/* A control call (JSON body or none); returns the parsed answer (caller json_decref()s). */
static inline json_t *standin_control(sd_event *e, HttpClient *http, const char *method, const char *what,
                                      const char *json) {
        static const char * const headers[] = { "Content-Type: application/json", NULL };
        StandinReply reply = {};
        char url[256];

        snprintf(url, sizeof url, "http://127.0.0.1:%d/_control/%s", standin_control_port, what);
        HttpRequestSpec spec = {
                .method = method,
                .url = url,
                .headers = headers,
                .body = json,
                .body_size = json ? strlen(json) : 0,
                .timeout_usec = 10 * USEC_PER_SEC,
        };
        check(http_client_start(http, &spec, on_standin_reply, &reply, NULL) == 0);
        check(run_until_done(e, &reply.done, 10));
        check(reply.status == 200);
        return reply.root;
}

/* The last request the stand-in's API port recorded whose path is 'path' (a new reference), or NULL. */
static inline json_t *standin_last_request(sd_event *e, HttpClient *http, const char *path) {
        json_t *reqs = standin_control(e, http, "GET", "requests", NULL), *last = NULL, *it;
        size_t i;

        json_array_foreach(reqs, i, it)
                if (streq_ptr(json_string_value(json_object_get(it, "path")), path))
                        last = it;
        json_incref(last);
        json_decref(reqs);
        return last;
}
