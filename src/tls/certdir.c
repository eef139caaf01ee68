/* certdir.c — the certificate cache directory rules (docs/features/acme.md), with the
 * reference's exact error sentences (Go's os errors: "mkdir <path>:
 * permission denied"). Ownership is judged by stat(2) st_uid against the
 * effective uid (Linux). Also whole-file reads and atomic 0600 writes for
 * the files kept inside. It never deletes anything. */
#include "tls/certdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

const char *certdir_errno_text(int e, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
        buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

/* Copies path into out (cap > 0), cut short if it does not fit. */
static void name_path(char *out, size_t cap, const char *path)
{
    size_t n = strnlen(path, cap - 1);
    memcpy(out, path, n);
    out[n] = '\0';
}

/* Go's os.MkdirAll(dir, 0700): every missing component is created 0700.
 * On failure *failed names the component and the errno is returned. */
static int mkdir_all(const char *dir, char *failed, size_t cap)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n >= sizeof path) {
        name_path(failed, cap, dir);
        return ENAMETOOLONG;
    }
    memcpy(path, dir, n + 1);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        struct stat st;
        if (stat(path, &st) != 0) {
            if (mkdir(path, 0700) != 0 && errno != EEXIST) {
                int e = errno;
                name_path(failed, cap, path);
                return e;
            }
        } else if (!S_ISDIR(st.st_mode)) {
            name_path(failed, cap, path);
            return ENOTDIR;
        }
        path[i] = saved;
    }
    return 0;
}

/* What prepare and check both start with: the arguments, then the
 * directory itself. Returns 1 when it exists (st filled; not a directory
 * is refused), 0 when it does not exist yet, -1 with err set. */
static int look_at(const char *domain, const char *dir, struct stat *st, char *err, size_t err_cap)
{
    char etext[128];
    if (!domain || !domain[0] || !dir || !dir[0]) {
        snprintf(err, err_cap, "relay: domain and cacheDir required");
        return -1;
    }
    if (stat(dir, st) != 0) {
        int e = errno;
        if (e == ENOENT)
            return 0;
        snprintf(err, err_cap, "relay: stat cert cache dir %s: stat %s: %s", dir, dir,
                 certdir_errno_text(e, etext, sizeof etext));
        return -1;
    }
    if (!S_ISDIR(st->st_mode)) {
        snprintf(err, err_cap, "relay: cert cache path is not a directory: %s", dir);
        return -1;
    }
    return 1;
}

/* The refusal for a group- or world-accessible directory we do not own. */
static int insecure(const char *dir, unsigned mode, char *err, size_t err_cap)
{
    snprintf(err, err_cap,
             "relay: cert cache dir has insecure permissions (must be 0700): %s "
             "(mode %o)",
             dir, mode);
    return -1;
}

int certdir_prepare(const char *domain, const char *dir, char *err, size_t err_cap)
{
    char etext[128], failed[4096];
    struct stat st;
    int r = look_at(domain, dir, &st, err, err_cap);
    if (r < 0)
        return -1;
    if (r == 0) {
        int e = mkdir_all(dir, failed, sizeof failed);
        if (e != 0) {
            snprintf(err, err_cap, "relay: creating cert cache dir %s: mkdir %s: %s", dir, failed,
                     certdir_errno_text(e, etext, sizeof etext));
            return -1;
        }
        return 0;
    }
    unsigned mode = (unsigned)(st.st_mode & 0777);
    if ((mode & 0077) == 0)
        return 0;
    if (st.st_uid != geteuid())
        return insecure(dir, mode, err, err_cap);
    if (chmod(dir, 0700) != 0) {
        snprintf(err, err_cap, "relay: tightening cert cache dir %s: chmod %s: %s", dir, dir,
                 certdir_errno_text(errno, etext, sizeof etext));
        return -1;
    }
    char from[16];
    snprintf(from, sizeof from, "%#o", mode);
    LOGF(LOG_INFO, "tightened cert cache dir perms", LOG_STR("path", dir), LOG_STR("from", from),
         LOG_STR("to", "0700"));
    return 0;
}

int certdir_check(const char *domain, const char *dir, char *err, size_t err_cap)
{
    char etext[128], path[4096];
    struct stat st;
    int r = look_at(domain, dir, &st, err, err_cap);
    if (r < 0)
        return -1;
    if (r == 0) {
        /* It would be created: the nearest existing ancestor must let us. */
        snprintf(path, sizeof path, "%s", dir);
        for (;;) {
            char *slash = strrchr(path, '/');
            if (!slash) {
                snprintf(path, sizeof path, ".");
                break;
            }
            *slash = '\0';
            if (path[0] == '\0')
                snprintf(path, sizeof path, "/");
            if (stat(path, &st) == 0 || errno != ENOENT)
                break;
        }
        if (access(path, W_OK | X_OK) != 0) {
            snprintf(err, err_cap, "relay: creating cert cache dir %s: mkdir %s: %s", dir, dir,
                     certdir_errno_text(errno, etext, sizeof etext));
            return -1;
        }
        return 0;
    }
    unsigned mode = (unsigned)(st.st_mode & 0777);
    if ((mode & 0077) != 0 && st.st_uid != geteuid())
        return insecure(dir, mode, err, err_cap);
    return 0;
}

static int join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

char *certdir_read(const char *dir, const char *name, size_t max, size_t *len)
{
    char path[4096];
    struct stat st;
    if (join(path, sizeof path, dir, name) != 0) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        close(fd);
        errno = EFBIG;
        return NULL;
    }
    size_t cap = (size_t)st.st_size, got = 0;
    char *buf = xmalloc(cap + 1);
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

int certdir_write(const char *dir, const char *name, const void *data, size_t len, char *err,
                  size_t err_cap)
{
    char path[4096], tmp[4096], etext[128];
    if (join(path, sizeof path, dir, name) != 0 || join(tmp, sizeof tmp, dir, ".tmp-XXXXXX") != 0) {
        snprintf(err, err_cap, "writing %s/%s: path too long", dir, name);
        return -1;
    }
    int fd = mkostemp(tmp, O_CLOEXEC); /* created 0600 */
    if (fd < 0) {
        snprintf(err, err_cap, "creating a file in %s: %s", dir,
                 certdir_errno_text(errno, etext, sizeof etext));
        return -1;
    }
    const char *p = data;
    size_t off = 0;
    int e = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            e = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    if (e == 0 && (fchmod(fd, 0600) != 0 || fsync(fd) != 0))
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    if (e == 0 && rename(tmp, path) != 0)
        e = errno;
    if (e != 0) {
        unlink(tmp);
        snprintf(err, err_cap, "writing %s: %s", path, certdir_errno_text(e, etext, sizeof etext));
        return -1;
    }
    return 0;
}
