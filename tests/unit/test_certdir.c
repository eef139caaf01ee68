/* test_certdir.c — cert-cache rules (docs/features/acme.md; the reference's tls_test.go rows):
 * created 0700 recursively, secure directory untouched, owned insecure
 * directory tightened with the INFO line, foreign-owned one refused with
 * its mode unchanged (root only), not-a-directory, missing domain or dir,
 * chmod failure; plus the atomic 0600 writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls/certdir.h"
#include "base/log.h"

static char g_root[256];
static char g_logpath[300];
static int g_logfd = -1;

static int setup(void **state)
{
    (void)state;
    snprintf(g_root, sizeof g_root, "/tmp/test_certdir.XXXXXX");
    assert_non_null(mkdtemp(g_root));
    snprintf(g_logpath, sizeof g_logpath, "%s.log", g_root);
    g_logfd = open(g_logpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(g_logfd >= 0);
    log_setup(LOG_FORMAT_TEXT, LOG_INFO, g_logfd);
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];
    (void)state;
    log_setup(LOG_FORMAT_TEXT, LOG_INFO, 2);
    close(g_logfd);
    unlink(g_logpath);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static const char *logged(void)
{
    static char buf[4096];
    ssize_t n = pread(g_logfd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static unsigned mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

static void test_creates_cache_dir_with_0700(void **state)
{
    char dir[400], mid[400], err[512];
    (void)state;
    snprintf(mid, sizeof mid, "%s/a", g_root);
    snprintf(dir, sizeof dir, "%s/a/b/certs", g_root);
    assert_int_equal(certdir_prepare("relay.example.com", dir, err, sizeof err), 0);
    assert_int_equal(mode_of(dir), 0700);
    assert_int_equal(mode_of(mid), 0700);
    assert_string_equal(logged(), "");
}

static void test_existing_secure_dir_is_noop(void **state)
{
    char dir[400], file[450], err[512];
    (void)state;
    snprintf(dir, sizeof dir, "%s/certs", g_root);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(file, sizeof file, "%s/keep", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
    assert_int_equal(certdir_prepare("relay.example.com", dir, err, sizeof err), 0);
    assert_int_equal(mode_of(dir), 0700);
    assert_int_equal(access(file, F_OK), 0);
    assert_string_equal(logged(), "");
}

static void test_owned_insecure_dir_is_tightened(void **state)
{
    char dir[400], err[512], want[600];
    (void)state;
    snprintf(dir, sizeof dir, "%s/certs", g_root);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(certdir_prepare("relay.example.com", dir, err, sizeof err), 0);
    assert_int_equal(mode_of(dir), 0700);
    snprintf(want, sizeof want,
             "level=INFO msg=\"tightened cert cache dir perms\" path=%s from=0755 to=0700\n", dir);
    assert_non_null(strstr(logged(), want));
}

static void test_owned_group_only_dir_is_tightened(void **state)
{
    char dir[400], err[512];
    (void)state;
    snprintf(dir, sizeof dir, "%s/certs", g_root);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0750), 0);
    assert_int_equal(certdir_prepare("relay.example.com", dir, err, sizeof err), 0);
    assert_int_equal(mode_of(dir), 0700);
    assert_non_null(strstr(logged(), "from=0750 to=0700"));
}

static void test_foreign_owned_insecure_dir_rejected(void **state)
{
    char dir[400], err[512], want[600];
    (void)state;
    if (geteuid() != 0)
        skip();
    snprintf(dir, sizeof dir, "%s/certs", g_root);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(chown(dir, 65534, 65534), 0);
    assert_int_equal(certdir_prepare("relay.example.com", dir, err, sizeof err), -1);
    snprintf(want, sizeof want,
             "relay: cert cache dir has insecure permissions (must be 0700): %s (mode 755)", dir);
    assert_string_equal(err, want);
    assert_int_equal(mode_of(dir), 0755);
    assert_string_equal(logged(), "");
}

static void test_foreign_owned_secure_dir_accepted(void **state)
{
    char dir[400], err[512];
    (void)state;
    if (geteuid() != 0)
        skip();
    snprintf(dir, sizeof dir, "%s/certs", g_root);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chown(dir, 65534, 65534), 0);
    assert_int_equal(certdir_prepare("relay.example.com", dir, err, sizeof err), 0);
    assert_int_equal(mode_of(dir), 0700);
}

static void test_cache_dir_path_not_a_directory(void **state)
{
    char path[400], err[512], want[600];
    (void)state;
    snprintf(path, sizeof path, "%s/file", g_root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(certdir_prepare("relay.example.com", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "relay: cert cache path is not a directory: %s", path);
    assert_string_equal(err, want);
}

static void test_parent_not_a_directory(void **state)
{
    char path[500], file[400], err[512], want[1200];
    (void)state;
    snprintf(file, sizeof file, "%s/file", g_root);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/certs", file);
    assert_int_equal(certdir_prepare("relay.example.com", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "relay: stat cert cache dir %s: stat %s: not a directory", path,
             path);
    assert_string_equal(err, want);
}

static void test_requires_domain_and_cache_dir(void **state)
{
    char err[512];
    (void)state;
    assert_int_equal(certdir_prepare("", g_root, err, sizeof err), -1);
    assert_string_equal(err, "relay: domain and cacheDir required");
    assert_int_equal(certdir_prepare("relay.example.com", "", err, sizeof err), -1);
    assert_string_equal(err, "relay: domain and cacheDir required");
    assert_int_equal(certdir_prepare(NULL, NULL, err, sizeof err), -1);
    assert_string_equal(err, "relay: domain and cacheDir required");
}

/* chmod on /proc/<pid> always fails (EPERM), and the directory is ours
 * and 0555: the one insecure, owned directory whose tightening fails. */
static void test_chmod_failure_is_reported(void **state)
{
    char err[512];
    struct stat st;
    (void)state;
    if (stat("/proc/self", &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 0077) == 0)
        skip();
    assert_int_equal(certdir_prepare("relay.example.com", "/proc/self", err, sizeof err), -1);
    assert_string_equal(err, "relay: tightening cert cache dir /proc/self: chmod /proc/self: "
                             "operation not permitted");
    assert_null(strstr(logged(), "tightened"));
}

static void test_create_failure_is_reported(void **state)
{
    char err[512];
    (void)state;
    assert_int_equal(certdir_prepare("relay.example.com", "/proc/self/nope/certs", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "relay: creating cert cache dir /proc/self/nope/certs: mkdir "
                                "/proc/self/nope: "));
}

static void test_atomic_write_and_read(void **state)
{
    char err[512], path[400];
    size_t len = 0;
    (void)state;
    assert_int_equal(certdir_write(g_root, "relay.test.key", "secret\n", 7, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/relay.test.key", g_root);
    assert_int_equal(mode_of(path), 0600);
    char *got = certdir_read(g_root, "relay.test.key", 1024, &len);
    assert_non_null(got);
    assert_int_equal(len, 7);
    assert_string_equal(got, "secret\n");
    free(got);
    /* replaced whole */
    assert_int_equal(certdir_write(g_root, "relay.test.key", "two", 3, err, sizeof err), 0);
    got = certdir_read(g_root, "relay.test.key", 1024, &len);
    assert_string_equal(got, "two");
    free(got);
    assert_null(certdir_read(g_root, "relay.test.key", 2, &len)); /* over max */
    assert_null(certdir_read(g_root, "missing", 1024, &len));
    assert_int_equal(certdir_write("/proc/self/nope", "x", "y", 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "/proc/self/nope"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_creates_cache_dir_with_0700, setup, teardown),
        cmocka_unit_test_setup_teardown(test_existing_secure_dir_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owned_insecure_dir_is_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owned_group_only_dir_is_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_owned_insecure_dir_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_owned_secure_dir_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_path_not_a_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parent_not_a_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requires_domain_and_cache_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chmod_failure_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_failure_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_write_and_read, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
