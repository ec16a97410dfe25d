/* Unit tests of whole-buffer I/O (util-io.h): everything written, everything read, the size limit,
 * NUL bytes in the data, the errors of a missing file or a closed descriptor, and the atomic file
 * replacement. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "test-util.h"
#include "util-io.h"

static char dir[] = "/tmp/test-util-io-XXXXXX";

static void test_roundtrip(void) {
        char path[PATH_MAX], *buf = NULL, big[100000];
        size_t len = 0;
        int fd;

        snprintf(path, sizeof path, "%s/f", dir);
        for (size_t i = 0; i < sizeof big; i++)
                big[i] = (char) (i % 251);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        check(fd >= 0);
        check_int(io_write_all(fd, big, sizeof big), 0);
        check_int(io_write_all(fd, "", 0), 0);
        close(fd);

        check_int(io_read_file(path, 0, &buf, &len), 0);
        check_int(len, sizeof big);
        check(buf && memcmp(buf, big, sizeof big) == 0 && buf[len] == '\0');
        free(buf);
        buf = NULL;

        /* Exactly at the limit is fine, one byte more is not. */
        check_int(io_read_file(path, sizeof big, &buf, &len), 0);
        free(buf);
        buf = NULL;
        check_int(io_read_file(path, sizeof big - 1, &buf, &len), -EFBIG);
        check(buf == NULL);

        /* From the current position of a descriptor. */
        fd = open(path, O_RDONLY | O_CLOEXEC);
        check(lseek(fd, 99990, SEEK_SET) == 99990);
        check_int(io_read_all(fd, 0, &buf, &len), 0);
        check_int(len, 10);
        check(memcmp(buf, big + 99990, 10) == 0);
        free(buf);
        close(fd);

        /* An empty file: "" and length 0. */
        snprintf(path, sizeof path, "%s/empty", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        close(fd);
        buf = NULL;
        check_int(io_read_file(path, 10, &buf, &len), 0);
        check(buf && buf[0] == '\0' && len == 0);
        free(buf);
}

static void test_errors(void) {
        char path[PATH_MAX], *buf = NULL;
        int p[2];

        snprintf(path, sizeof path, "%s/missing", dir);
        check_int(io_read_file(path, 0, &buf, NULL), -ENOENT);
        check_int(io_read_file(dir, 0, &buf, NULL), -EISDIR);
        check_int(io_write_all(-1, "x", 1), -EBADF);
        check_int(io_read_all(-1, 0, &buf, NULL), -EBADF);
        check_int(io_read_file(NULL, 0, &buf, NULL), -EINVAL);

        /* A pipe whose reader is gone: EPIPE (SIGPIPE ignored), not a hang. */
        check(pipe2(p, O_CLOEXEC) == 0);
        close(p[0]);
        signal(SIGPIPE, SIG_IGN);
        check_int(io_write_all(p[1], "x", 1), -EPIPE);
        close(p[1]);
}

static void test_write_file_atomic(void) {
        char path[PATH_MAX], tmp[PATH_MAX], *buf = NULL;
        struct stat st;
        int d;

        d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        check(d >= 0);
        snprintf(path, sizeof path, "%s/state.json", dir);
        snprintf(tmp, sizeof tmp, "%s/.state.json.tmp", dir);

        check_int(io_write_file_atomic(d, "state.json", "one\n", 4, 0640), 0);
        check_int(io_read_file(path, 0, &buf, NULL), 0);
        check_streq(buf, "one\n");
        free(buf);
        check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);

        /* A leftover temporary file of an earlier failure is replaced; the file is replaced whole. */
        write_file(tmp, "stale");
        check_int(io_write_file_atomic(d, "state.json", "two", 3, 0640), 0);
        check_int(io_read_file(path, 0, &buf, NULL), 0);
        check_streq(buf, "two");
        free(buf);
        check(access(tmp, F_OK) < 0 && errno == ENOENT);

        check_int(io_write_file_atomic(d, "a/b", "x", 1, 0640), -EINVAL);
        check_int(io_write_file_atomic(d, "", "x", 1, 0640), -EINVAL);
        check_int(io_write_file_atomic(-1, "x", "x", 1, 0640), -EINVAL);
        close(d);
}

static void test_secret(void) {
        static const struct {
                const char *content;
                size_t len;
                int r;
                const char *key;
        } cases[] = {
                { " \t s3cr\xc3\xa9t pass \n\n", 18, 0, "s3cr\xc3\xa9t pass" },
                { "\n", 1, 0, "" },                     /* a systemd credential's fallback */
                { "ab\0cd", 5, -EBADMSG, NULL },        /* NUL bytes */
                { "ab\xff", 3, -EBADMSG, NULL },        /* not UTF-8 */
        };
        char path[PATH_MAX], *k = NULL;

        snprintf(path, sizeof path, "%s/secret", dir);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                check_int(io_write_all(fd, cases[i].content, cases[i].len), 0);
                close(fd);
                k = NULL;
                check_int(io_read_secret_file(path, &k), cases[i].r);
                check_streq(k, cases[i].key);
                free(k);
        }
        snprintf(path, sizeof path, "%s/no-such-secret", dir);
        check_int(io_read_secret_file(path, &k), -ENOENT);
}

static void test_mkdir_p(void) {
        char path[PATH_MAX];
        struct stat st;

        snprintf(path, sizeof path, "%s/a/b/c", dir);
        check(io_mkdir_p(path, 0750) == 0);
        check(stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0750);
        check(io_mkdir_p(path, 0750) == 0);             /* there already */
        snprintf(path, sizeof path, "%s/a/b/c/file", dir);
        write_file(path, "x");
        snprintf(path, sizeof path, "%s/a/b/c/file/d", dir);
        check(io_mkdir_p(path, 0750) == -ENOTDIR);
        check(io_mkdir_p("", 0750) == -EINVAL);
        check(io_mkdir_p(NULL, 0750) == -EINVAL);
        snprintf(path, sizeof path, "%s/x/y", dir);
        int fd = io_mkdir_p_open(path, 0700);
        check(fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
        if (fd >= 0)
                close(fd);
}

int main(void) {
        check(mkdtemp(dir) != NULL);
        test_run(test_roundtrip);
        test_run(test_errors);
        test_run(test_write_file_atomic);
        test_run(test_secret);
        test_run(test_mkdir_p);
        test_rm_rf(dir);
        return test_result();
}
