/* Unit tests for the drink spool: the record format (round trip, strict parsing), the write
 * protocol, queue order across reopen and across the bounded window, quarantine of corrupt and
 * truncated files, the failed area and re-queueing, and ENOSPC (on a tiny tmpfs, when permitted). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool.h"
#include "util-uuid.h"
#include "test-util.h"

static void make_uuid(unsigned i, char buf[static UUID_STRING_MAX]) {
        snprintf(buf, UUID_STRING_MAX, "%08x-0000-4000-8000-%012x", i, i * 7u);
}

static Drink *make_drink(unsigned i) {
        Drink *d = calloc(1, sizeof(Drink));
        make_uuid(i, d->uuid);
        d->flow_id = 1795694350u + i;
        d->meter_name = strdup("kegboard.flow0");
        d->username = i % 2 ? strdup("admin") : NULL;
        d->ticks = 1000 + i;
        d->volume_known = i % 3 != 0;
        d->volume_ml = d->ticks * 0.45454545454545453;
        d->start_realtime = 1795694401ull * 1000000ull;
        d->pour_realtime = 1795694409ull * 1000000ull;
        d->duration_sec = 8;
        d->boot_id = SD_ID128_MAKE(6d,1f,0c,1e,1c,0a,4b,5e,9b,3a,2f,7e,5d,4c,3b,2a);
        d->pour_boottime = 81234567ull + i;
        return d;
}

static char *mktemp_dir(void) {
        char tmpl[] = "/tmp/test-spool-XXXXXX";
        char *p = mkdtemp(tmpl);
        return p ? strdup(p) : NULL;
}

static size_t count_files(const char *dir, const char *suffix) {
        DIR *d = opendir(dir);
        size_t n = 0;
        struct dirent *de;
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name), k = strlen(suffix);
                if (de->d_name[0] != '.' && l > k && strcmp(de->d_name + l - k, suffix) == 0)
                        n++;
        }
        closedir(d);
        return n;
}

static size_t count_tmp(const char *dir) {
        DIR *d = opendir(dir);
        size_t n = 0;
        struct dirent *de;
        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp"))
                        n++;
        closedir(d);
        return n;
}

static void test_record_roundtrip(void) {
        Drink *d = make_drink(1), *e = NULL;
        char *json = NULL, *json2 = NULL;

        free(d->username);
        d->username = strdup("a\"b\\c\n\x01");
        d->seq = 12;
        check(spool_drink_to_json(d, &json) == 0);
        check(json && json[strlen(json) - 1] == '\n');
        check(strstr(json, "\"volume_ml\":454.99999999999994") || strstr(json, "\"volume_ml\":"));
        check(strstr(json, "\"start_time\":\"2026-11-26T") != NULL);
        /* The file's units: seconds and nanoseconds. */
        check(strstr(json, "\"pour_time_unix\":1795694409,") != NULL);
        check(strstr(json, "\"boot_id\":\"6d1f0c1e1c0a4b5e9b3a2f7e5d4c3b2a\"") != NULL);
        check(strstr(json, "\"pour_boottime_ns\":81234568000}") != NULL);
        check(spool_drink_from_json(json, strlen(json), &e) == 0);
        check(e != NULL);
        if (e) {
                check_streq(e->uuid, d->uuid);
                check(e->seq == 12);
                check(e->flow_id == d->flow_id);
                check_streq(e->meter_name, "kegboard.flow0");
                check_streq(e->username, d->username);
                check(e->ticks == d->ticks);
                check(e->volume_known && e->volume_ml == d->volume_ml);
                check(e->start_realtime == d->start_realtime);
                check(e->pour_realtime == d->pour_realtime);
                check(e->duration_sec == 8);
                check(sd_id128_equal(e->boot_id, d->boot_id));
                check(e->pour_boottime == d->pour_boottime);
                check(!e->has_failure);
                check(e->flags == 0);
                check(spool_drink_to_json(e, &json2) == 0);
                check_streq(json, json2);
        }
        check(strstr(json, "\"flags\"") == NULL);      /* only when the drink has some */
        free(json);
        free(json2);
        drink_free(e);
        e = NULL;
        json = json2 = NULL;

        /* Flags (ghost-pours.md section 10) after "duration"; unknown names are left out. */
        d->flags = DRINK_FLAG_KICKED | DRINK_FLAG_LONG_POUR;
        check(spool_drink_to_json(d, &json) == 0);
        check(json && strstr(json, "\"duration\":8,\"flags\":[\"kicked\",\"long_pour\"],\"boot_id\""));
        check(spool_drink_from_json(json, strlen(json), &e) == 0);
        check(e && e->flags == (DRINK_FLAG_KICKED | DRINK_FLAG_LONG_POUR));
        drink_free(e);
        e = NULL;
        {
                char *p = json ? strstr(json, "\"long_pour\"") : NULL;
                if (p)
                        memcpy(p, "\"next_pour\"", 11);
                check(spool_drink_from_json(json, strlen(json), &e) == 0);
                check(e && e->flags == DRINK_FLAG_KICKED);
                drink_free(e);
                e = NULL;
        }
        free(json);
        json = NULL;
        d->flags = 0;

        /* Anonymous, unknown volume, with a failure. */
        d->volume_known = false;
        free(d->username);
        d->username = NULL;
        d->has_failure = true;
        d->failure.time_realtime = 1795694500ull * 1000000ull;
        d->failure.http_status = 404;
        d->failure.code = strdup("NotFoundError");
        d->failure.message = strdup("Meter is inactive");
        check(spool_drink_to_json(d, &json) == 0);
        check(strstr(json, "\"volume_ml\":null") != NULL);
        check(strstr(json, "\"username\":null") != NULL);
        check(strstr(json, "\"failure\":{\"time\":\"2026-11-26T") != NULL);
        check(spool_drink_from_json(json, strlen(json), &e) == 0);
        if (e) {
                check(!e->volume_known);
                check(e->username == NULL);
                check(e->has_failure);
                check(e->failure.http_status == 404);
                check_streq(e->failure.code, "NotFoundError");
                check_streq(e->failure.message, "Meter is inactive");
                check(e->failure.time_realtime == d->failure.time_realtime);
        }
        /* The spec's example line parses. */
        static const char example[] =
                "{\"version\":1,\"uuid\":\"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10\",\"seq\":12,\"flow_id\":1795694350,"
                "\"meter_name\":\"kegboard.flow0\",\"ticks\":1440,\"volume_ml\":654.5454545454545,\"username\":\"admin\","
                "\"start_time\":\"2026-11-26T12:00:01Z\",\"pour_time\":\"2026-11-26T12:00:09Z\",\"pour_time_unix\":1795694409,"
                "\"duration\":8,\"boot_id\":\"6d1f0c1e1c0a4b5e9b3a2f7e5d4c3b2a\",\"pour_boottime_ns\":81234567890}\n";
        Drink *x = NULL;
        check(spool_drink_from_json(example, strlen(example), &x) == 0);
        if (x) {
                check(x->ticks == 1440);
                check(x->volume_ml == 654.5454545454545);
                check(x->start_realtime == 1795694401ull * 1000000ull);
                check(x->pour_realtime == 1795694409ull * 1000000ull);
                check(x->pour_boottime == 81234567ull);        /* ns to the drink's usec */
                check(sd_id128_equal(x->boot_id, SD_ID128_MAKE(6d,1f,0c,1e,1c,0a,4b,5e,9b,3a,2f,7e,5d,4c,3b,2a)));
        }
        drink_free(x);
        x = NULL;
        /* An upper-case UUID (or boot id) reads back in lowercase: one case rule. An empty boot id
         * is an unknown one. */
        {
                char up[sizeof example];
                memcpy(up, example, sizeof example);
                char *u = strstr(up, "3f1c2a9e");
                for (char *c = u; c && c < u + 36; c++)
                        *c = (char) toupper((unsigned char) *c);
                char *b = strstr(up, "\"boot_id\":\"6d1f") + 11;
                for (char *c = b; c < b + 32; c++)
                        *c = (char) toupper((unsigned char) *c);
                check(spool_drink_from_json(up, strlen(up), &x) == 0);
                if (x) {
                        check_streq(x->uuid, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");
                        check(sd_id128_equal(x->boot_id, SD_ID128_MAKE(6d,1f,0c,1e,1c,0a,4b,5e,9b,3a,2f,7e,5d,4c,3b,2a)));
                }
                drink_free(x);
                x = NULL;
                char *nob = strstr(up, "\"boot_id\":\"") + 11;
                memmove(nob, nob + 32, strlen(nob + 32) + 1);
                check(spool_drink_from_json(up, strlen(up), &x) == 0);
                if (x)
                        check(sd_id128_is_null(x->boot_id));
        }
        drink_free(x);
        free(json);
        drink_free(e);
        drink_free(d);
}

static void test_record_rejects(void) {
        Drink *d = make_drink(2), *e = NULL;
        char *json = NULL;
        check(spool_drink_to_json(d, &json) == 0);
        size_t l = strlen(json);

        /* Every truncation is rejected (the closing brace is gone). */
        for (size_t k = 0; k + 2 < l; k++) {
                e = NULL;
                check(spool_drink_from_json(json, k, &e) == -EBADMSG);
                check(e == NULL);
        }

        static const char *bad[] = {
                "",
                "[]",
                "null",
                "{\"version\":2}",
                "{\"version\":1,\"uuid\":\"3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10\"}",
                /* duplicate key */
                "{\"version\":1,\"version\":1}",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                e = NULL;
                check(spool_drink_from_json(bad[i], strlen(bad[i]), &e) == -EBADMSG);
                check(e == NULL);
        }

        /* Field-level mutations of a valid record. */
        static const struct { const char *from, *to; } mut[] = {
                { "\"ticks\":1002", "\"ticks\":-1" },
                { "\"ticks\":1002", "\"ticks\":1.5" },
                { "\"ticks\":1002", "\"ticks\":\"1002\"" },
                { "\"meter_name\":\"kegboard.flow0\"", "\"meter_name\":\"\"" },
                { "\"meter_name\":\"kegboard.flow0\"", "\"meter_name\":\"a\\u0000b\"" },
                { "\"start_time\":\"2026-11-26T", "\"start_time\":\"2026-13-26T" },
                { "00:01Z\"", "00:01\"" },
                { "\"boot_id\":\"6d1f", "\"boot_id\":\"Xd1f" },
                { "\"duration\":8", "\"duration\":null" },
                { "\"version\":1", "\"version\":true" },
        };
        for (size_t i = 0; i < sizeof mut / sizeof mut[0]; i++) {
                char buf[2048];
                const char *p = strstr(json, mut[i].from);
                check(p != NULL);
                if (!p)
                        continue;
                snprintf(buf, sizeof buf, "%.*s%s%s", (int) (p - json), json, mut[i].to, p + strlen(mut[i].from));
                e = NULL;
                int r = spool_drink_from_json(buf, strlen(buf), &e);
                if (r != -EBADMSG)
                        fprintf(stderr, "mutation %zu accepted: %s\n", i, buf);
                check(r == -EBADMSG);
                drink_free(e);
        }
        /* An unknown key is fine (forward compatibility). */
        {
                char buf[2048];
                snprintf(buf, sizeof buf, "{\"extra\":[1,2],%s", json + 1);
                e = NULL;
                check(spool_drink_from_json(buf, strlen(buf), &e) == 0);
                drink_free(e);
        }
        free(json);
        drink_free(d);
}

static void test_names(void) {
        uint64_t seq = 0;
        char uuid[UUID_STRING_MAX];

        check(spool_name_parse("00000000000000000012-3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10.json", &seq, uuid) == 0);
        check(seq == 12);
        check_streq(uuid, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");
        check(spool_name_parse("0000000000000000012-3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10.json", &seq, uuid) < 0);
        check(spool_name_parse("00000000000000000012-3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10.jso", &seq, uuid) < 0);
        check(spool_name_parse("0000000000000000001x-3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10.json", &seq, uuid) < 0);
        check(spool_name_parse("99999999999999999999-3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10.json", &seq, uuid) < 0);
        check(spool_name_parse("00000000000000000012-3f1c2a9e_8d4b-4c1e-9a57-0b6d2e4f7a10.json", &seq, uuid) < 0);
        /* File names are matched exactly: the spool writes lowercase only. */
        check(spool_name_parse("00000000000000000012-3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10.json", &seq, uuid) < 0);
}

/* The spool reads back every record it writes, whatever the (valid) text; text it could not read
 * back is refused at the door instead of becoming a record that is quarantined on the next load. */
static void test_reads_back_its_own_records(void) {
        static const char *const users[] = {
                "caf\xc3\xa9", "a\"b\\c", "tab\there\nnewline\x01\x1f\x7f", "\xe2\x80\xa8\xf0\x9f\x8d\xba", NULL,
        };
        char *root = mktemp_dir(), dir[2048], failed[4096];
        Spool *s = NULL;

        snprintf(dir, sizeof dir, "%s/spool", root);
        snprintf(failed, sizeof failed, "%s/failed", dir);
        check(spool_open(&s, dir) == 0);
        for (unsigned i = 0; i < ELEMENTSOF(users); i++) {
                Drink *d = make_drink(i + 1);
                free(d->username);
                d->username = users[i] ? strdup(users[i]) : NULL;
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        /* A Latin-1 username: refused, nothing written, no seq used up. */
        Drink *bad = make_drink(99);
        free(bad->username);
        bad->username = strdup("caf\xe9");
        check(spool_put(s, bad) == -EBADMSG);
        drink_free(bad);
        check(spool_n_pending(s) == ELEMENTSOF(users));
        check(spool_last_seq(s) == ELEMENTSOF(users));
        s = spool_free(s);

        check(spool_open(&s, dir) == 0);
        check(spool_n_pending(s) == ELEMENTSOF(users));
        check(count_files(failed, ".corrupt") == 0);
        for (unsigned i = 0; i < ELEMENTSOF(users); i++) {
                Drink *h = NULL;
                check(spool_peek(s, &h) == 1);
                if (!h)
                        break;
                check(h->seq == i + 1);
                check(streq_ptr(h->username, users[i]));
                check(spool_remove(s, h->uuid) == 0);
                drink_free(h);
        }
        check(spool_n_pending(s) == 0);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

/* assert_return(): a wrong call is refused, not a crash. */
static void test_preconditions(void) {
        Drink *h = NULL;
        char u[UUID_STRING_MAX];
        uint64_t seq;

        check(spool_open(NULL, "/tmp") == -EINVAL);
        check(spool_put(NULL, h) == -EINVAL);
        check(spool_peek(NULL, &h) == -EINVAL);
        check(spool_remove(NULL, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10") == -EINVAL);
        check(spool_list(NULL, SPOOL_QUEUED, NULL, NULL) == -EINVAL);
        check(spool_update(NULL, h) == -EINVAL);
        check(spool_contains(NULL, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10") == -EINVAL);
        check(spool_drink_to_json(NULL, NULL) == -EINVAL);
        check(spool_name_parse(NULL, &seq, u) == -EINVAL);
        check(spool_n_pending(NULL) == 0);
        spool_set_window(NULL, 3);
        check(spool_free(NULL) == NULL);
}

/* A drink in doubt (core-behaviour.md 10.5): the mark and the pour_time sent survive in the file;
 * spool_update() rewrites a queued drink in place; spool_contains() finds queued and failed ones. */
static void test_in_doubt_update_contains(void) {
        char *root = mktemp_dir(), dir[2048], u[UUID_STRING_MAX];
        Spool *s = NULL;
        Drink *h = NULL, *d;
        DrinkFailure f = { .time_realtime = UINT64_C(1795694500) * USEC_PER_SEC, .message = (char *) "x" };

        snprintf(dir, sizeof dir, "%s/spool", root);
        check(spool_open(&s, dir) == 0);
        for (unsigned i = 1; i <= 3; i++) {
                d = make_drink(i);
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        check(spool_peek(s, &h) == 1 && h && !h->in_doubt);
        if (h) {
                h->in_doubt = true;
                h->sent_pour_time = 1795694409;
                check(spool_update(s, h) == 0);
                check(count_tmp(dir) == 0);
                drink_free(h);
        }
        h = NULL;
        s = spool_free(s);

        check(spool_open(&s, dir) == 0);
        check(spool_peek(s, &h) == 1 && h && h->seq == 1 && h->in_doubt && h->sent_pour_time == 1795694409);
        if (h) {
                char *json = NULL;
                check(spool_drink_to_json(h, &json) == 0);
                check(json && strstr(json, ",\"in_doubt\":{\"pour_time\":1795694409}}\n"));
                free(json);
                /* Cleared again. */
                h->in_doubt = false;
                check(spool_update(s, h) == 0);
                drink_free(h);
        }
        h = NULL;
        check(spool_peek(s, &h) == 1 && h && !h->in_doubt);
        drink_free(h);

        /* Only a queued drink with its own seq is rewritten. */
        d = make_drink(9);
        check(spool_update(s, d) == -ENOENT);
        drink_free(d);
        d = make_drink(2);
        d->seq = 7;
        check(spool_update(s, d) == -EINVAL);
        drink_free(d);

        make_uuid(2, u);
        check(spool_contains(s, u) == 1);
        check(spool_fail(s, u, &f) == 0);
        check(spool_contains(s, u) == 1);               /* in failed/ */
        make_uuid(8, u);
        check(spool_contains(s, u) == 0);
        check(spool_contains(s, "nope") == -EINVAL);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

static void test_basic_queue(void) {
        char *root = mktemp_dir(), dir[2048], failed[4096], path[4200];
        Spool *s = NULL;
        Drink *h = NULL;
        struct stat st;

        snprintf(dir, sizeof dir, "%s/state/spool", root);
        snprintf(failed, sizeof failed, "%s/failed", dir);
        check(spool_open(&s, dir) == 0);
        check(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0750);
        check(stat(failed, &st) == 0 && S_ISDIR(st.st_mode));
        check(spool_n_pending(s) == 0);
        check(spool_peek(s, &h) == 0 && h == NULL);

        for (unsigned i = 1; i <= 5; i++) {
                Drink *d = make_drink(i);
                check(spool_put(s, d) == 0);
                check(d->seq == i);
                drink_free(d);
        }
        check(spool_n_pending(s) == 5);
        check(count_files(dir, ".json") == 5);
        check(count_tmp(dir) == 0);
        char u[UUID_STRING_MAX];
        make_uuid(3, u);
        snprintf(path, sizeof path, "%s/00000000000000000003-%s.json", dir, u);
        check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);

        check(spool_peek(s, &h) == 1);
        check(h && h->seq == 1);
        make_uuid(1, u);
        check(h && strcmp(h->uuid, u) == 0);
        check(spool_remove(s, u) == 0);
        check(spool_remove(s, u) == -ENOENT);
        drink_free(h);
        h = NULL;
        check(spool_n_pending(s) == 4);
        s = spool_free(s);

        /* Reopen: order kept, seq continues from the highest; leftover tmp removed. */
        snprintf(path, sizeof path, "%s/.00000000000000000099-x.json.tmp", dir);
        write_file(path, "{garbage");
        check(spool_open(&s, dir) == 0);
        check(count_tmp(dir) == 0);
        check(spool_n_pending(s) == 4);
        check(spool_last_seq(s) == 5);
        Drink *d6 = make_drink(6);
        check(spool_put(s, d6) == 0);
        check(d6->seq == 6);
        drink_free(d6);
        for (unsigned want = 2; want <= 6; want++) {
                h = NULL;
                check(spool_peek(s, &h) == 1);
                check(h && h->seq == want);
                if (h)
                        check(spool_remove(s, h->uuid) == 0);
                drink_free(h);
        }
        h = NULL;
        check(spool_peek(s, &h) == 0 && h == NULL);
        check(spool_n_pending(s) == 0);
        check(count_files(dir, ".json") == 0);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

static void test_corrupt(void) {
        char *root = mktemp_dir(), dir[2048], failed[4096], path[4200];
        Spool *s = NULL;
        Drink *h = NULL;
        char u[UUID_STRING_MAX];

        snprintf(dir, sizeof dir, "%s/spool", root);
        snprintf(failed, sizeof failed, "%s/failed", dir);
        check(spool_open(&s, dir) == 0);
        for (unsigned i = 1; i <= 4; i++) {
                Drink *d = make_drink(i);
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        s = spool_free(s);

        /* Truncate #2 (a torn or damaged file), garbage in a validly named #9, a badly named file. */
        make_uuid(2, u);
        snprintf(path, sizeof path, "%s/00000000000000000002-%s.json", dir, u);
        check(truncate(path, 40) == 0);
        make_uuid(9, u);
        snprintf(path, sizeof path, "%s/00000000000000000009-%s.json", dir, u);
        write_file(path, "not json\n");
        snprintf(path, sizeof path, "%s/bogus.json", dir);
        write_file(path, "{}\n");

        check(spool_open(&s, dir) == 0);
        check(spool_n_pending(s) == 3);
        check(spool_n_corrupt(s) == 3);
        check(spool_n_failed(s) == 0);
        check(count_files(failed, ".corrupt") == 3);
        check(spool_last_seq(s) == 4);

        /* Damage after opening: met at the head, quarantined, never blocks the queue. */
        make_uuid(1, u);
        snprintf(path, sizeof path, "%s/00000000000000000001-%s.json", dir, u);
        write_file(path, "{\"version\":1,\"uuid\"");
        check(spool_peek(s, &h) == 1);
        check(h && h->seq == 3);
        drink_free(h);
        check(spool_n_pending(s) == 2);
        check(spool_n_corrupt(s) == 4);
        check(count_files(failed, ".corrupt") == 4);

        /* A vanished head is skipped. */
        make_uuid(3, u);
        snprintf(path, sizeof path, "%s/00000000000000000003-%s.json", dir, u);
        check(unlink(path) == 0);
        h = NULL;
        check(spool_peek(s, &h) == 1);
        check(h && h->seq == 4);
        drink_free(h);
        check(spool_n_pending(s) == 1);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

static int list_cb(const Drink *d, void *userdata) {
        uint64_t *v = userdata;
        v[++v[0]] = d->seq;
        return 0;
}

static void test_failed_area(void) {
        char *root = mktemp_dir(), dir[2048], failed[4096], path[4200];
        Spool *s = NULL;
        Drink *h = NULL;
        char u[UUID_STRING_MAX];

        snprintf(dir, sizeof dir, "%s/spool", root);
        snprintf(failed, sizeof failed, "%s/failed", dir);
        check(spool_open(&s, dir) == 0);
        for (unsigned i = 1; i <= 4; i++) {
                Drink *d = make_drink(i);
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        DrinkFailure f = { .time_realtime = 1795694500ull * 1000000ull, .http_status = 400,
                           .code = (char *) "BadRequestError", .message = (char *) "No active keg at this tap" };
        make_uuid(1, u);
        check(spool_fail(s, u, &f) == 0);
        check(spool_fail(s, u, &f) == -ENOENT);
        make_uuid(3, u);
        check(spool_fail(s, u, &f) == 0);
        check(spool_n_pending(s) == 2);
        check(spool_n_failed(s) == 2);
        check(count_files(failed, ".json") == 2);
        check(count_files(dir, ".json") == 2);

        snprintf(path, sizeof path, "%s/00000000000000000003-%s.json", failed, u);
        FILE *fp = fopen(path, "r");
        char line[4096] = "";
        check(fp != NULL);
        if (fp) {
                check(fgets(line, sizeof line, fp) != NULL);
                fclose(fp);
        }
        check(strstr(line, "\"failure\":{\"time\":\"2026-11-26T") != NULL);
        check(strstr(line, "\"http_status\":400") != NULL);
        check(strstr(line, "\"message\":\"No active keg at this tap\"") != NULL);

        uint64_t seen[16] = {};
        check(spool_list(s, SPOOL_FAILED, list_cb, seen) == 0);
        check(seen[0] == 2 && seen[1] == 1 && seen[2] == 3);
        memset(seen, 0, sizeof seen);
        check(spool_list(s, SPOOL_QUEUED, list_cb, seen) == 0);
        check(seen[0] == 2 && seen[1] == 2 && seen[2] == 4);

        /* Re-queue one: tail, new seq, same uuid, no failure. */
        size_t n = 0;
        check(spool_requeue_failed(s, u, &n) == 0);
        check(n == 1);
        check(spool_requeue_failed(s, u, &n) == -ENOENT);
        check(spool_n_failed(s) == 1);
        check(spool_n_pending(s) == 3);
        s = spool_free(s);

        check(spool_open(&s, dir) == 0);
        check(spool_n_failed(s) == 1);
        unsigned order[] = { 2, 4, 3 };
        uint64_t seqs[] = { 2, 4, 5 };
        for (size_t i = 0; i < 3; i++) {
                h = NULL;
                check(spool_peek(s, &h) == 1);
                make_uuid(order[i], u);
                check(h && strcmp(h->uuid, u) == 0);
                check(h && h->seq == seqs[i]);
                check(h && !h->has_failure);
                if (h)
                        check(spool_remove(s, h->uuid) == 0);
                drink_free(h);
        }
        /* Re-queue all. */
        check(spool_requeue_failed(s, NULL, &n) == 0);
        check(n == 1);
        check(spool_n_failed(s) == 0);
        h = NULL;
        check(spool_peek(s, &h) == 1);
        make_uuid(1, u);
        check(h && strcmp(h->uuid, u) == 0 && h->seq == 6);
        drink_free(h);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

/* A crash between the two steps of a move leaves a drink in both spool/ and failed/. spool_open()
 * finishes the move: an interrupted spool_fail() (same seq in both) keeps only the failed/ copy, an
 * interrupted re-queue (failed/ seq older) keeps only the queued copy. Without that, the drink is
 * uploaded and later re-queued from failed/ again, or uploaded twice: a silent duplicate. */
static void test_interrupted_moves(void) {
        char *root = mktemp_dir(), dir[2048], failed[4096], path[4200], fpath4[4200];
        char u[UUID_STRING_MAX], saved4[8192] = "";
        Spool *s = NULL;
        Drink *h = NULL;
        size_t n = 0;

        snprintf(dir, sizeof dir, "%s/spool", root);
        snprintf(failed, sizeof failed, "%s/failed", dir);
        check(spool_open(&s, dir) == 0);
        for (unsigned i = 1; i <= 4; i++) {
                Drink *d = make_drink(i);
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        DrinkFailure f = { .time_realtime = 1795694500ull * 1000000ull, .http_status = 404,
                           .code = (char *) "NotFoundError", .message = (char *) "Meter is inactive" };
        make_uuid(1, u);
        check(spool_fail(s, u, &f) == 0);
        make_uuid(4, u);
        check(spool_fail(s, u, &f) == 0);
        snprintf(fpath4, sizeof fpath4, "%s/00000000000000000004-%s.json", failed, u);
        FILE *fp = fopen(fpath4, "r");
        check(fp != NULL);
        if (fp) {
                check(fgets(saved4, sizeof saved4, fp) != NULL);
                fclose(fp);
        }
        check(spool_requeue_failed(s, u, &n) == 0 && n == 1);      /* now seq 5 in spool/ */
        s = spool_free(s);

        /* Crash images: drink 1's queued file came back (spool_fail() did not get to unlink it),
         * drink 4's failed file came back (the re-queue did not get to unlink it). */
        Drink *d1 = make_drink(1);
        char *json = NULL;
        d1->seq = 1;
        check(spool_drink_to_json(d1, &json) == 0);
        make_uuid(1, u);
        snprintf(path, sizeof path, "%s/00000000000000000001-%s.json", dir, u);
        write_file(path, json ?: "");
        free(json);
        drink_free(d1);
        write_file(fpath4, saved4);
        check(count_files(dir, ".json") == 4 && count_files(failed, ".json") == 2);

        check(spool_open(&s, dir) == 0);
        check(spool_n_pending(s) == 2 + 1);     /* 2, 3 and re-queued 4 */
        check(spool_n_failed(s) == 1);          /* 1 */
        check(count_files(dir, ".json") == 3);
        check(count_files(failed, ".json") == 1);
        check(access(path, F_OK) < 0);
        check(access(fpath4, F_OK) < 0);
        unsigned order[] = { 2, 3, 4 };
        for (size_t i = 0; i < 3; i++) {
                h = NULL;
                check(spool_peek(s, &h) == 1);
                make_uuid(order[i], u);
                check(h && strcmp(h->uuid, u) == 0);
                if (h)
                        check(spool_remove(s, h->uuid) == 0);
                drink_free(h);
        }
        h = NULL;
        check(spool_peek(s, &h) == 0 && !h);
        /* Re-queueing all brings back drink 1 only, once. */
        check(spool_requeue_failed(s, NULL, &n) == 0 && n == 1);
        check(spool_n_pending(s) == 1 && spool_n_failed(s) == 0);
        spool_free(s);

        /* A damaged failed/ copy is not trusted: the queued copy of an interrupted fail stays. */
        check(spool_open(&s, dir) == 0);
        h = NULL;
        check(spool_peek(s, &h) == 1);
        check(h != NULL);
        if (h) {
                check(spool_fail(s, h->uuid, &f) == 0);
                char fpath[4200];
                snprintf(fpath, sizeof fpath, "%s/%020" PRIu64 "-%s.json", failed, h->seq, h->uuid);
                write_file(fpath, "{\"version\":1,");
                snprintf(path, sizeof path, "%s/%020" PRIu64 "-%s.json", dir, h->seq, h->uuid);
                d1 = NULL;
                check(drink_dup(h, &d1) == 0);
                json = NULL;
                check(d1 && spool_drink_to_json(d1, &json) == 0);
                write_file(path, json ?: "");
                free(json);
                drink_free(d1);
        }
        drink_free(h);
        s = spool_free(s);
        check(spool_open(&s, dir) == 0);
        check(spool_n_pending(s) == 1);
        check(access(path, F_OK) == 0);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

/* The bounded window: many entries, a window of 4, puts while the window is partial, failing an
 * entry beyond the window, and the order is still exact. */
static void test_window(void) {
        char *root = mktemp_dir(), dir[2048];
        Spool *s = NULL;
        char u[UUID_STRING_MAX];
        const unsigned N = 300;

        snprintf(dir, sizeof dir, "%s/spool", root);
        check(spool_open(&s, dir) == 0);
        spool_set_window(s, 4);
        for (unsigned i = 1; i <= N; i++) {
                Drink *d = make_drink(i);
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        s = spool_free(s);
        check(spool_open(&s, dir) == 0);
        spool_set_window(s, 4);
        check(spool_n_pending(s) == N);

        /* Fail #150 (beyond the window). */
        DrinkFailure f = { .time_realtime = 1795694500ull * 1000000ull, .http_status = 404 };
        make_uuid(150, u);
        check(spool_fail(s, u, &f) == 0);

        unsigned expect = 1, extra = N;
        for (unsigned k = 0;; k++) {
                Drink *h = NULL;
                int r = spool_peek(s, &h);
                check(r >= 0);
                if (r <= 0)
                        break;
                if (expect == 150)
                        expect++;
                if (expect <= N) {
                        make_uuid(expect, u);
                        check(strcmp(h->uuid, u) == 0);
                } else
                        check(h->seq > N);
                expect++;
                check(spool_remove(s, h->uuid) == 0);
                drink_free(h);
                if (k % 50 == 0 && extra < N + 10) {
                        /* New drinks join the tail while the window is partial. */
                        Drink *d = make_drink(++extra);
                        check(spool_put(s, d) == 0);
                        drink_free(d);
                }
        }
        check(expect == extra + 1);
        check(spool_n_pending(s) == 0);
        check(spool_n_failed(s) == 1);
        spool_free(s);
        test_rm_rf(root);
        free(root);
}

/* ENOSPC on a 64 KiB tmpfs: loud, nothing already spooled is lost, a drink that cannot be written
 * is refused (the core holds it) without using up a seq, and is written once space is back. */
static void test_enospc(void) {
        char *root = mktemp_dir(), dir[2048], filler[4200];
        Spool *s = NULL;

        if (mount("tmpfs", root, "tmpfs", 0, "size=64k") < 0) {
                test_skip("cannot mount a tmpfs: %s", strerror(errno));
                test_rm_rf(root);
                free(root);
                return;
        }
        snprintf(dir, sizeof dir, "%s/spool", root);
        check(spool_open(&s, dir) == 0);
        for (unsigned i = 1; i <= 3; i++) {
                Drink *d = make_drink(i);
                check(spool_put(s, d) == 0);
                drink_free(d);
        }
        /* Fill the disk. */
        snprintf(filler, sizeof filler, "%s/filler", root);
        int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        check(fd >= 0);
        char block[4096];
        memset(block, 'x', sizeof block);
        while (write(fd, block, sizeof block) > 0)
                ;
        close(fd);

        Drink *late = NULL;
        for (unsigned i = 4; i <= 6; i++) {
                Drink *d = make_drink(i);
                int r = spool_put(s, d);
                check(r == 0 || r == -ENOSPC);
                if (r == -ENOSPC && !late)
                        late = d;
                else
                        drink_free(d);
        }
        check(late);
        size_t written = spool_n_pending(s);
        check(count_files(dir, ".json") == written);
        check(count_tmp(dir) == 0);
        check(spool_last_seq(s) == written);

        /* The first three still load, in order. */
        Drink *h = NULL;
        check(spool_peek(s, &h) == 1 && h && h->seq == 1);
        drink_free(h);

        check(unlink(filler) == 0);
        if (late) {
                check(spool_put(s, late) == 0);
                check(late->seq == written + 1);
                drink_free(late);
        }
        check(count_files(dir, ".json") == written + 1);
        size_t total = written + 1;
        s = spool_free(s);
        check(spool_open(&s, dir) == 0);
        check(spool_n_pending(s) == total);
        for (unsigned want = 1; want <= total; want++) {
                h = NULL;
                check(spool_peek(s, &h) == 1 && h && h->seq == want);
                if (h)
                        check(spool_remove(s, h->uuid) == 0);
                drink_free(h);
        }
        spool_free(s);
        check(umount2(root, MNT_DETACH) == 0);
        test_rm_rf(root);
        free(root);
}

int main(void) {
        log_set_max_level(LOG_WARNING);
        test_run(test_record_roundtrip);
        test_run(test_record_rejects);
        test_run(test_names);
        test_run(test_reads_back_its_own_records);
        test_run(test_preconditions);
        test_run(test_basic_queue);
        test_run(test_in_doubt_update_contains);
        test_run(test_corrupt);
        test_run(test_failed_area);
        test_run(test_interrupted_moves);
        test_run(test_window);
        test_run(test_enospc);
        return test_result();
}
