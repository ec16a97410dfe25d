/* Whole-buffer I/O: see util-io.h. */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util-io.h"
#include "util-utf8.h"

int io_write_all(int fd, const void *p, size_t n) {
        const char *c = p;

        assert_return(fd >= 0, -EBADF);
        assert_return(p || n == 0, -EINVAL);

        while (n > 0) {
                ssize_t k = write(fd, c, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                c += k;
                n -= (size_t) k;
        }
        return 0;
}

int io_read_all(int fd, size_t max, char **ret, size_t *ret_len) {
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0, allocated = 0;

        assert_return(fd >= 0, -EBADF);
        assert_return(ret, -EINVAL);

        for (;;) {
                if (allocated - len < 2) {
                        size_t want = allocated ? allocated * 2 : 4096;
                        if (max > 0 && want > max + 2)
                                want = max + 2;         /* room to notice one byte too many */
                        if (want <= allocated)
                                return -EFBIG;
                        char *t = realloc(buf, want);
                        if (!t)
                                return -ENOMEM;
                        buf = t;
                        allocated = want;
                }
                ssize_t k = read(fd, buf + len, allocated - len - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t) k;
                if (max > 0 && len > max)
                        return -EFBIG;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        if (ret_len)
                *ret_len = len;
        return 0;
}

int io_read_file(const char *path, size_t max, char **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -1;

        assert_return(path, -EINVAL);
        assert_return(ret, -EINVAL);

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        return io_read_all(fd, max, ret, ret_len);
}

int io_read_file_at(int dir_fd, const char *name, size_t max, char **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -1;

        assert_return(name, -EINVAL);
        assert_return(ret, -EINVAL);

        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        return io_read_all(fd, max, ret, ret_len);
}

int io_write_file_atomic(int dir_fd, const char *name, const char *content, size_t len, mode_t mode) {
        _cleanup_(freep) char *tmp = NULL;
        _cleanup_(closep) int fd = -1;
        int r;

        assert_return(dir_fd >= 0, -EINVAL);
        assert_return(!isempty(name) && !strchr(name, '/'), -EINVAL);
        assert_return(content || len == 0, -EINVAL);

        if (asprintf(&tmp, ".%s.tmp", name) < 0)
                return -ENOMEM;
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0 && errno == EEXIST) {
                /* A leftover of an earlier failure; it was never renamed, so it holds nothing. */
                (void) unlinkat(dir_fd, tmp, 0);
                fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        }
        if (fd < 0)
                return -errno;
        r = io_write_all(fd, content, len);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && close(TAKE_FD(fd)) < 0)
                r = -errno;
        if (r >= 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(dir_fd, tmp, 0);
                return r;
        }
        return fsync(dir_fd) < 0 ? -errno : 0;
}

int io_mkdir_p(const char *path, mode_t mode) {
        _cleanup_(freep) char *p = NULL;

        assert_return(!isempty(path), -EINVAL);

        p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *c = p + 1; *c; c++) {
                if (*c != '/')
                        continue;
                *c = 0;
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *c = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int io_mkdir_p_open(const char *path, mode_t mode) {
        int fd, r;

        r = io_mkdir_p(path, mode);
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int io_mkdir_open_at(int dir_fd, const char *name, mode_t mode) {
        int fd;

        assert_return(name, -EINVAL);

        if (mkdirat(dir_fd, name, mode) < 0 && errno != EEXIST)
                return -errno;
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int io_read_secret_file(const char *path, char **ret) {
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0;
        char *a, *b, *k;
        int r;

        assert_return(path, -EINVAL);
        assert_return(ret, -EINVAL);

        r = io_read_file(path, 4095, &buf, &len);
        if (r < 0)
                return r;
        if (strlen(buf) != len || !utf8_is_valid(buf))
                return -EBADMSG;
        a = buf;
        b = buf + len;
        while (a < b && isspace((unsigned char) *a))
                a++;
        while (b > a && isspace((unsigned char) b[-1]))
                b--;
        k = strndup(a, (size_t) (b - a));
        if (!k)
                return -ENOMEM;
        *ret = k;
        return 0;
}
