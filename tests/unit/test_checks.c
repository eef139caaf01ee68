/* test_checks.c — the reference's startup check matrices (docs/operations.md): env contract,
 * single instance, CapEff parsing and allowlist, metrics loopback rule,
 * listener port allowlist. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops/checks.h"
#include "base/util.h"

/* A fake environment: pairs of name/value, NULL value = unset. */
static const char *const *g_env;

static const char *fake_get(const char *name)
{
    for (size_t i = 0; g_env && g_env[i]; i += 2)
        if (strcmp(g_env[i], name) == 0)
            return g_env[i + 1];
    return NULL;
}

static void test_env_valid_and_unknown_ignored(void **state)
{
    static const char *const env[] = {"PYRYCODE_RELAY_PRODUCTION", "1", "SOMETHING_ELSE", "x",
                                      NULL};
    struct env_failure f;
    (void)state;
    g_env = env;
    assert_int_equal(checks_env(fake_get, &f), 0);
    g_env = NULL;
    assert_int_equal(checks_env(fake_get, &f), 0);
}

static void test_env_malformed_values(void **state)
{
    static const struct {
        const char *value, *got;
    } rows[] = {{"true", "\"true\""}, {"0", "\"0\""},     {"yes", "\"yes\""},
                {" 1", "\" 1\""},     {"1 ", "\"1 \""},   {"PRODUCTION", "\"PRODUCTION\""},
                {"", "\"\""},         {"1\n", "\"1\\n\""}};
    static const char *const keys[] = {"PYRYCODE_RELAY_PRODUCTION",
                                       "PYRYCODE_RELAY_SINGLE_INSTANCE"};
    (void)state;
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
            const char *env[] = {keys[k], rows[i].value, NULL};
            struct env_failure f;
            char want[256];
            g_env = env;
            assert_int_equal(checks_env(fake_get, &f), -1);
            assert_string_equal(f.key, keys[k]);
            snprintf(want, sizeof want, "malformed-value: expected \"1\" or unset, got %s",
                     rows[i].got);
            assert_string_equal(f.reason, want);
            snprintf(want, sizeof want, "relay: invalid env-var config: %s: %s", keys[k], f.reason);
            assert_string_equal(f.err, want);
        }
    }
}

static void test_env_first_failure_wins(void **state)
{
    static const char *const env[] = {"PYRYCODE_RELAY_SINGLE_INSTANCE", "x",
                                      "PYRYCODE_RELAY_PRODUCTION", "y", NULL};
    struct env_failure f;
    (void)state;
    g_env = env;
    assert_int_equal(checks_env(fake_get, &f), -1);
    assert_string_equal(f.key, "PYRYCODE_RELAY_PRODUCTION");
}

static void test_env_fcm_withheld(void **state)
{
    static const char *const env[] = {
        "PYRYCODE_RELAY_FCM_CREDENTIALS",
        "{\"type\":\"service_account\",\"private_key\":\"TOPSECRET\"}", NULL};
    struct env_failure f;
    (void)state;
    g_env = env;
    assert_int_equal(checks_env(fake_get, &f), -1);
    assert_string_equal(f.reason, "malformed-value: not a service-account JSON key (value "
                                  "withheld)");
    assert_null(strstr(f.err, "TOPSECRET"));
    assert_false(checks_fcm_credentials_valid("{}"));
    assert_false(checks_fcm_credentials_valid("not json"));
    assert_false(checks_fcm_credentials_valid("[]"));
}

static void test_single_instance_matrix(void **state)
{
    static const struct {
        const char *fly, *bypass;
        int want;
    } rows[] = {{NULL, NULL, 0},  {"", NULL, 0},       {"app", NULL, -1}, {"app", "1", 0},
                {"app", "0", -1}, {"app", "true", -1}, {NULL, "1", 0}};
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        const char *env[] = {"FLY_APP_NAME", rows[i].fly, "PYRYCODE_RELAY_SINGLE_INSTANCE",
                             rows[i].bypass, NULL};
        char err[256] = "";
        g_env = env;
        assert_int_equal(checks_single_instance(fake_get, err, sizeof err), rows[i].want);
        if (rows[i].want) {
            assert_non_null(strstr(err, "multi-instance deploy detected"));
            assert_non_null(strstr(err, "PYRYCODE_RELAY_SINGLE_INSTANCE"));
        }
    }
}

static void test_parse_capeff(void **state)
{
    uint64_t m = 0;
    (void)state;
    assert_int_equal(checks_parse_capeff("Name:\tx\nCapEff:\t0000000000000400\nCapBnd:\t0\n", &m),
                     0);
    assert_true(m == 0x400);
    assert_int_equal(checks_parse_capeff("CapEff:\t000001fffeffffff\n", &m), 0);
    assert_true(m == 0x1fffeffffffULL);
    assert_int_equal(checks_parse_capeff("CapEff: 0 \n", &m), 0);
    assert_int_equal(checks_parse_capeff("CapPrm:\t0\n", &m), -1);                 /* missing */
    assert_int_equal(checks_parse_capeff("CapEff:\t\n", &m), -1);                  /* empty */
    assert_int_equal(checks_parse_capeff("CapEff:\t0x400\n", &m), -1);             /* prefix */
    assert_int_equal(checks_parse_capeff("CapEff:\t12zz\n", &m), -1);              /* junk */
    assert_int_equal(checks_parse_capeff("CapEff:\t00000000000000001\n", &m), -1); /* 17 */
}

static void test_capeff_allowlist(void **state)
{
    char err[1024];
    (void)state;
    assert_int_equal(checks_capeff_allowed(0, err, sizeof err), 0);
    assert_int_equal(checks_capeff_allowed(1ULL << 10, err, sizeof err), 0);
    assert_int_equal(
        checks_capeff_allowed((1ULL << 10) | (1ULL << 21) | 1ULL | (1ULL << 50), err, sizeof err),
        -1);
    assert_string_equal(err, "relay: process has unexpected effective Linux capabilities: "
                             "CAP_CHOWN (bit 0), CAP_SYS_ADMIN (bit 21), bit 50; allowlist: "
                             "[CAP_NET_BIND_SERVICE (bit 10)]; drop with --cap-drop=ALL "
                             "--cap-add=NET_BIND_SERVICE or equivalent");
    assert_string_equal(checks_cap_name(40), "CAP_CHECKPOINT_RESTORE");
    assert_null(checks_cap_name(41));
}

static void test_metrics_addr_matrix(void **state)
{
    static const struct {
        const char *addr;
        int want;
    } rows[] = {
        {"127.0.0.1:9090", 0}, {"127.1.2.3:1", 0}, {"[::1]:9090", 0},      {"", 0},
        {"0.0.0.0:9090", -1},  {":9090", -1},      {"localhost:9090", -1}, {"10.0.0.1:9090", -1},
        {"8.8.8.8:9090", -1},  {"[::]:9090", -1},  {"127.0.0.1:0", -1},    {"127.0.0.1", -1}};
    char err[256];
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        assert_int_equal(checks_metrics_addr(rows[i].addr, err, sizeof err), rows[i].want);
    checks_metrics_addr("0.0.0.0:9090", err, sizeof err);
    assert_non_null(strstr(err, "relay: metrics listener bind address must be a loopback IP "
                                "literal"));
}

static void test_ports(void **state)
{
    int actual[] = {8080, 9999, 443, 9090}, expected[] = {9090, 8080};
    char err[256];
    (void)state;
    assert_int_equal(checks_ports(expected, 2, expected, 2, err, sizeof err), 0);
    assert_int_equal(checks_ports(actual, 4, expected, 2, err, sizeof err), -1);
    assert_string_equal(err, "relay: process is about to bind a TCP port outside the expected "
                             "set: unexpected ports [443 9999]; expected ports [8080 9090]");
}

/* Startup check 7 with a bus: the TLS files of --cluster-nats-ca/-cert/-key. */
static void test_readable_file(void **state)
{
    char err[512], path[] = "/tmp/test_checks-XXXXXX";
    (void)state;
    assert_int_equal(checks_readable_file("--cluster-nats-ca", "", err, sizeof err), 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(checks_readable_file("--cluster-nats-ca", path, err, sizeof err), 0);
    unlink(path);
    assert_int_equal(checks_readable_file("--cluster-nats-ca", path, err, sizeof err), -1);
    char want[512];
    snprintf(want, sizeof want,
             "relay: --cluster-nats-ca %s: cannot read the file: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(checks_readable_file("--cluster-nats-key", "/tmp", err, sizeof err), -1);
    assert_string_equal(err, "relay: --cluster-nats-key /tmp: not a regular file");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readable_file),
        cmocka_unit_test(test_env_valid_and_unknown_ignored),
        cmocka_unit_test(test_env_malformed_values),
        cmocka_unit_test(test_env_first_failure_wins),
        cmocka_unit_test(test_env_fcm_withheld),
        cmocka_unit_test(test_single_instance_matrix),
        cmocka_unit_test(test_parse_capeff),
        cmocka_unit_test(test_capeff_allowlist),
        cmocka_unit_test(test_metrics_addr_matrix),
        cmocka_unit_test(test_ports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
