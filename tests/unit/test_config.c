/* test_config.c — flag parsing follows Go's `flag` package (both dash
 * styles, "=value" and separate values, bare booleans, help, the exact
 * error sentences, where parsing stops), defaults and usage text match the
 * table, validation names the flag, and durations parse and print like Go's
 * time package. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "base/config.h"

#define MAX_ARGS 8

/* Runs config_parse on a NULL-terminated argument list; captures err. */
struct run {
    struct config cfg;
    enum config_result rc;
    char *err; /* the usage text (-h) */
    size_t err_len;
    struct config_error e;
};

static void run_args(struct run *r, const char *const *args)
{
    char *argv[MAX_ARGS + 2] = {"pyrycode-relay"};
    int argc = 1;
    for (; args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    FILE *err = open_memstream(&r->err, &r->err_len);
    config_defaults(&r->cfg, "/home/op");
    r->rc = config_parse(&r->cfg, argc, argv, err, &r->e);
    fclose(err);
}

static void done(struct run *r)
{
    free(r->err);
}

/* The refusal's sentence. */
static const char *first_line(const struct run *r)
{
    return r->e.err;
}

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c, "/home/op");
    assert_string_equal(c.domain, "");
    assert_string_equal(c.cert_cache, "/home/op/.pyrycode-relay/certs");
    assert_string_equal(c.insecure_listen, "");
    assert_string_equal(c.https_listen, ":443");
    assert_string_equal(c.http_listen, ":80");
    assert_string_equal(c.metrics_listen, "127.0.0.1:9090");
    assert_false(c.trust_x_forwarded_for);
    assert_false(c.https_proxy_protocol);
    assert_int_equal(c.max_connections, 20);
    assert_false(c.version);
    assert_string_equal(c.log_format, "text");
    assert_int_equal(c.max_message_bytes, 262144);
    assert_int_equal(c.max_header_bytes, 1048576);
    assert_int_equal(c.max_phones_per_server, 16);
    assert_int_equal(c.phone_backlog_bytes, 4194304);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.message_deadline_ns, 30 * NS_PER_S);
    assert_int_equal(c.heartbeat_interval_ns, 30 * NS_PER_S);
    assert_int_equal(c.heartbeat_timeout_ns, 30 * NS_PER_S);
    assert_int_equal(c.write_timeout_ns, 10 * NS_PER_S);
    assert_int_equal(c.drain_timeout_ns, 10 * NS_PER_S);
    assert_int_equal(c.grace_period_ns, 30 * NS_PER_S);
    assert_int_equal(c.conflict_probe_timeout_ns, 10 * NS_PER_S);
    assert_int_equal(c.header_timeout_ns, 5 * NS_PER_S);
    assert_int_equal(c.request_timeout_ns, 60 * NS_PER_S);
    assert_int_equal(c.idle_timeout_ns, 120 * NS_PER_S);
    assert_int_equal(c.close_timeout_ns, 5 * NS_PER_S);
    assert_false(c.check_config);
    assert_string_equal(c.cluster_nats_ca, "");
    assert_string_equal(c.cluster_nats_cert, "");
    assert_string_equal(c.cluster_nats_key, "");
    assert_int_equal(c.cluster_ctl_threads, 1);
    assert_int_equal(c.explicit_mask, 0);
    struct config_error ce;
    assert_int_equal(config_validate(&c, &ce), 0);

    config_defaults(&c, NULL);
    assert_string_equal(c.cert_cache, ".pyrycode-relay/certs");
    config_defaults(&c, "");
    assert_string_equal(c.cert_cache, ".pyrycode-relay/certs");
}

/* Table-driven syntax: each case parses and then checks one field. */
static void test_flag_syntax(void **state)
{
    (void)state;
    static const struct {
        const char *args[MAX_ARGS];
        const char *flag;
        int64_t num;     /* expected int, bool (0/1) or duration */
        const char *str; /* expected string, when the flag is a string */
    } cases[] = {
        {{"-domain", "a.example"}, "domain", 0, "a.example"},
        {{"--domain", "a.example"}, "domain", 0, "a.example"},
        {{"-domain=a.example"}, "domain", 0, "a.example"},
        {{"--domain=a.example"}, "domain", 0, "a.example"},
        {{"--domain=a=b"}, "domain", 0, "a=b"},
        {{"--domain="}, "domain", 0, ""},
        {{"--domain", "-x"}, "domain", 0, "-x"},
        {{"--domain", ""}, "domain", 0, ""},
        {{"--domain=a", "--domain=b"}, "domain", 0, "b"},
        {{"--insecure-listen", "127.0.0.1:8080"}, "insecure-listen", 0, "127.0.0.1:8080"},
        {{"--metrics-listen="}, "metrics-listen", 0, ""},
        {{"--cert-cache", "/var/lib/certs"}, "cert-cache", 0, "/var/lib/certs"},
        {{"--log-format=json"}, "log-format", 0, "json"},
        {{"-version"}, "version", 1, NULL},
        {{"--version"}, "version", 1, NULL},
        {{"--version=true"}, "version", 1, NULL},
        {{"--version=false"}, "version", 0, NULL},
        {{"--version=1"}, "version", 1, NULL},
        {{"--version=0"}, "version", 0, NULL},
        {{"--version=t"}, "version", 1, NULL},
        {{"--version=F"}, "version", 0, NULL},
        {{"--version=TRUE"}, "version", 1, NULL},
        {{"--version=True"}, "version", 1, NULL},
        {{"--version=FALSE"}, "version", 0, NULL},
        {{"--version=False"}, "version", 0, NULL},
        {{"--version", "false"}, "version", 1, NULL}, /* "false" is positional */
        {{"--trust-x-forwarded-for"}, "trust-x-forwarded-for", 1, NULL},
        {{"--https-proxy-protocol"}, "https-proxy-protocol", 1, NULL},
        {{"--check-config"}, "check-config", 1, NULL},
        {{"--max-connections", "50"}, "max-connections", 50, NULL},
        {{"--max-connections=50"}, "max-connections", 50, NULL},
        {{"-max-connections=-5"}, "max-connections", -5, NULL},
        {{"-max-connections=+7"}, "max-connections", 7, NULL},
        {{"-max-connections=0x1F"}, "max-connections", 31, NULL},
        {{"-max-connections=0X1f"}, "max-connections", 31, NULL},
        {{"-max-connections=0o17"}, "max-connections", 15, NULL},
        {{"-max-connections=017"}, "max-connections", 15, NULL},
        {{"-max-connections=0b101"}, "max-connections", 5, NULL},
        {{"-max-connections=0"}, "max-connections", 0, NULL},
        {{"-max-connections=-0"}, "max-connections", 0, NULL},
        {{"-max-connections=1_000"}, "max-connections", 1000, NULL},
        {{"-max-connections=0x_ff_ff"}, "max-connections", 65535, NULL},
        {{"-max-connections=0_7"}, "max-connections", 7, NULL},
        {{"-workers=9223372036854775807"}, "workers", INT64_MAX, NULL},
        {{"-workers=-9223372036854775808"}, "workers", INT64_MIN, NULL},
        {{"-max-message-bytes", "1024"}, "max-message-bytes", 1024, NULL},
        {{"-heartbeat-interval", "5s"}, "heartbeat-interval", 5 * NS_PER_S, NULL},
        {{"-heartbeat-interval=1m30s"}, "heartbeat-interval", 90 * NS_PER_S, NULL},
        {{"--write-timeout=500ms"}, "write-timeout", 500 * NS_PER_MS, NULL},
        {{"--drain-timeout=0"}, "drain-timeout", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        run_args(&r, cases[i].args);
        if (r.rc != CONFIG_OK)
            fail_msg("case %zu (%s): rc %d, err %s", i, cases[i].args[0], r.rc, r.e.err);
        assert_true(config_flag_given(&r.cfg, cases[i].flag));
        const struct config *c = &r.cfg;
        const char *s = NULL;
        int64_t v = 0;
        if (!strcmp(cases[i].flag, "domain"))
            s = c->domain;
        else if (!strcmp(cases[i].flag, "insecure-listen"))
            s = c->insecure_listen;
        else if (!strcmp(cases[i].flag, "metrics-listen"))
            s = c->metrics_listen;
        else if (!strcmp(cases[i].flag, "cert-cache"))
            s = c->cert_cache;
        else if (!strcmp(cases[i].flag, "log-format"))
            s = c->log_format;
        else if (!strcmp(cases[i].flag, "version"))
            v = c->version;
        else if (!strcmp(cases[i].flag, "trust-x-forwarded-for"))
            v = c->trust_x_forwarded_for;
        else if (!strcmp(cases[i].flag, "https-proxy-protocol"))
            v = c->https_proxy_protocol;
        else if (!strcmp(cases[i].flag, "check-config"))
            v = c->check_config;
        else if (!strcmp(cases[i].flag, "max-connections"))
            v = c->max_connections;
        else if (!strcmp(cases[i].flag, "workers"))
            v = c->workers;
        else if (!strcmp(cases[i].flag, "max-message-bytes"))
            v = c->max_message_bytes;
        else if (!strcmp(cases[i].flag, "heartbeat-interval"))
            v = c->heartbeat_interval_ns;
        else if (!strcmp(cases[i].flag, "write-timeout"))
            v = c->write_timeout_ns;
        else if (!strcmp(cases[i].flag, "drain-timeout"))
            v = c->drain_timeout_ns;
        else
            fail_msg("case %zu: no accessor for %s", i, cases[i].flag);
        if (cases[i].str)
            assert_string_equal(s, cases[i].str);
        else if (v != cases[i].num)
            fail_msg("case %zu (%s): got %lld", i, cases[i].args[0], (long long)v);
        done(&r);
    }
}

static void test_explicit_tracking(void **state)
{
    (void)state;
    struct run r;
    run_args(&r, (const char *[]){"--http-listen", ":80", "--insecure-listen=:8080", NULL});
    assert_int_equal(r.rc, CONFIG_OK);
    assert_true(config_flag_given(&r.cfg, "http-listen")); /* even equal to the default */
    assert_true(config_flag_given(&r.cfg, "insecure-listen"));
    assert_false(config_flag_given(&r.cfg, "https-listen"));
    assert_false(config_flag_given(&r.cfg, "https-proxy-protocol"));
    assert_false(config_flag_given(&r.cfg, "no-such-flag"));
    assert_false(config_flag_given(&r.cfg, "--http-listen"));
    done(&r);

    run_args(&r, (const char *[]){"--https-proxy-protocol=false", NULL});
    assert_true(config_flag_given(&r.cfg, "https-proxy-protocol"));
    assert_false(r.cfg.https_proxy_protocol);
    done(&r);
}

static void test_stops(void **state)
{
    (void)state;
    static const char *const cases[][MAX_ARGS] = {
        {"serve", "--domain=a"}, {"--", "--domain=a"}, {"-", "--domain=a"},
        {"", "--domain=a"},      {"x", "--bogus"},     {"--version", "--", "--domain=a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        run_args(&r, cases[i]);
        assert_int_equal(r.rc, CONFIG_OK);
        assert_string_equal(r.cfg.domain, "");
        assert_false(config_flag_given(&r.cfg, "domain"));
        assert_int_equal(r.err_len, 0);
        done(&r);
    }
}

static void test_help(void **state)
{
    (void)state;
    static const char *const cases[][MAX_ARGS] = {
        {"-h"}, {"--h"}, {"-help"}, {"--help"}, {"--help=x"}, {"--domain=a", "-h", "--bogus"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        run_args(&r, cases[i]);
        assert_int_equal(r.rc, CONFIG_HELP);
        assert_int_equal(strncmp(r.err, "Usage of pyrycode-relay:\n", 25), 0);
        done(&r);
    }
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *args[MAX_ARGS];
        const char *msg;
    } cases[] = {
        {{"--bogus"}, "flag provided but not defined: -bogus"},
        {{"-bogus=1"}, "flag provided but not defined: -bogus"},
        {{"--Domain=x"}, "flag provided but not defined: -Domain"},
        {{"---domain=x"}, "bad flag syntax: ---domain=x"},
        {{"-=x"}, "bad flag syntax: -=x"},
        {{"--=x"}, "bad flag syntax: --=x"},
        {{"--domain"}, "flag needs an argument: -domain"},
        {{"-heartbeat-interval"}, "flag needs an argument: -heartbeat-interval"},
        {{"--max-connections=abc"}, "invalid value \"abc\" for flag -max-connections: parse error"},
        {{"--max-connections", ""}, "invalid value \"\" for flag -max-connections: parse error"},
        {{"--max-connections=1.5"}, "invalid value \"1.5\" for flag -max-connections: parse error"},
        {{"--max-connections=08"}, "invalid value \"08\" for flag -max-connections: parse error"},
        {{"--max-connections=0x"}, "invalid value \"0x\" for flag -max-connections: parse error"},
        {{"--max-connections=_1"}, "invalid value \"_1\" for flag -max-connections: parse error"},
        {{"--max-connections=1__0"},
         "invalid value \"1__0\" for flag -max-connections: parse error"},
        {{"--max-connections=1_"}, "invalid value \"1_\" for flag -max-connections: parse error"},
        {{"--max-connections=+"}, "invalid value \"+\" for flag -max-connections: parse error"},
        {{"--max-connections= 1"}, "invalid value \" 1\" for flag -max-connections: parse error"},
        {{"--max-connections=9223372036854775808"},
         "invalid value \"9223372036854775808\" for flag -max-connections: value out of range"},
        {{"--max-connections=-9223372036854775809"},
         "invalid value \"-9223372036854775809\" for flag -max-connections: value out of range"},
        {{"--max-connections=99999999999999999999"},
         "invalid value \"99999999999999999999\" for flag -max-connections: value out of range"},
        {{"--max-connections=9223372036854775808x"},
         "invalid value \"9223372036854775808x\" for flag -max-connections: parse error"},
        {{"--workers=a\tb\\"}, "invalid value \"a\\tb\\\\\" for flag -workers: parse error"},
        {{"--workers=C:\\x"}, "invalid value \"C:\\\\x\" for flag -workers: parse error"},
        {{"--heartbeat-interval=5"},
         "invalid value \"5\" for flag -heartbeat-interval: parse error"},
        {{"--heartbeat-interval", "abc"},
         "invalid value \"abc\" for flag -heartbeat-interval: parse error"},
        {{"--version=yes"}, "invalid boolean value \"yes\" for -version: parse error"},
        {{"--version="}, "invalid boolean value \"\" for -version: parse error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        run_args(&r, cases[i].args);
        assert_int_equal(r.rc, CONFIG_ERROR);
        assert_string_equal(first_line(&r), cases[i].msg);
        assert_true(r.e.fix[0] != '\0'); /* every refusal says what to do */
        assert_int_equal(r.err_len, 0);  /* and no usage dump buries it */
        done(&r);
    }
}

static void test_usage_layout(void **state)
{
    (void)state;
    char *buf;
    size_t len;
    struct config c;
    config_defaults(&c, "/home/op");
    FILE *f = open_memstream(&buf, &len);
    config_usage(f, &c);
    fclose(f);
    assert_int_equal(strncmp(buf, "Usage of pyrycode-relay:\n  -acme-ca-bundle string\n    \t", 55),
                     0);
    assert_non_null(strstr(buf, " (default \"/home/op/.pyrycode-relay/certs\")\n"));
    assert_non_null(strstr(buf, "\n  -insecure-listen string\n    \tplain-HTTP listen address "
                                "(host:port) for behind-proxy mode; disables autocert\n"));
    assert_non_null(strstr(buf, "\n  -version\n    \tprint the version and exit\n"));
    assert_non_null(strstr(buf, "\n  -idle-timeout duration\n"));
    assert_non_null(strstr(buf, " (default 2m0s)\n"));
    assert_non_null(strstr(buf, "\n  -max-connections int\n"));
    assert_non_null(strstr(buf, " (default 20)\n"));
    assert_non_null(strstr(buf, " (default \":443\")\n"));
    assert_null(strstr(buf, "(default false)"));
    assert_null(strstr(buf, "(default 0)"));
    assert_null(strstr(buf, "(default \"\")"));
    /* Every flag, sorted by name, two lines each. */
    char prev[64] = "";
    const char *p = buf;
    int count = 0, lines = 0;
    while ((p = strstr(p, "\n  -")) != NULL) {
        p += 4;
        size_t n = strcspn(p, " \n");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        assert_true(strcmp(prev, name) < 0);
        snprintf(prev, sizeof prev, "%s", name);
        count++;
    }
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    assert_int_equal(count, 58);
    assert_int_equal(lines, 1 + 2 * 58);
    free(buf);

    config_defaults(&c, NULL);
    f = open_memstream(&buf, &len);
    config_usage(f, &c);
    fclose(f);
    assert_non_null(strstr(buf, " (default \".pyrycode-relay/certs\")\n"));
    free(buf);
}

static void test_validate(void **state)
{
    (void)state;
    static const struct {
        const char *args[MAX_ARGS];
        const char *msg; /* NULL: valid */
    } cases[] = {
        {{"--heartbeat-interval=0s"},
         "invalid --heartbeat-interval \"0s\": must be a positive duration"},
        {{"--grace-period=-1m"}, "invalid --grace-period \"-1m0s\": must be a positive duration"},
        {{"--close-timeout=0"}, "invalid --close-timeout \"0s\": must be a positive duration"},
        {{"--max-message-bytes=0"},
         "invalid --max-message-bytes 0: must be a positive number of bytes"},
        {{"--max-header-bytes=-1"},
         "invalid --max-header-bytes -1: must be a positive number of bytes"},
        {{"--phone-backlog-bytes=0"},
         "invalid --phone-backlog-bytes 0: must be a positive number of bytes"},
        {{"--max-header-bytes-total=0"},
         "invalid --max-header-bytes-total 0: must be a positive number of bytes"},
        {{"--max-frames-per-second=-5"},
         "invalid --max-frames-per-second -5: must be 0 (no "
         "limit) or between 1 and 1000000000"},
        {{"--max-frames-per-second=0", "--max-header-bytes-total=4294967296"}, NULL},
        {{"--max-bytes-per-second-per-server=-1"},
         "invalid --max-bytes-per-second-per-server -1: must be 0 (no limit) or positive"},
        {{"--workers=-1"}, "invalid --workers -1: must be between 0 and 256"},
        {{"--workers=257"}, "invalid --workers 257: must be between 0 and 256"},
        {{"--tls-cert=c.pem"},
         "invalid --tls-key: --tls-cert and --tls-key must be given together"},
        {{"--tls-key=k.pem"},
         "invalid --tls-cert: --tls-cert and --tls-key must be given together"},
        {{"--push-timeout=0s"}, "invalid --push-timeout \"0s\": must be a positive duration"},
        {{"--tls-cert=c.pem", "--tls-key=k.pem"}, NULL},
        {{"--log-format=xml"}, "invalid --log-format \"xml\": must be \"text\" or \"json\""},
        {{"--log-format="}, "invalid --log-format \"\": must be \"text\" or \"json\""},
        {{"--workers=256", "--log-format=json", "--heartbeat-interval=1ns"}, NULL},
        {{"--max-connections=0", "--max-phones-per-server=-1"}, NULL},
        {{"--log-level=verbose"},
         "invalid --log-level \"verbose\": must be \"debug\", \"info\", \"warn\" or \"error\""},
        {{"--log-level=debug"}, NULL},
        /* the bus's TLS: cert and key go together; the CA stands alone.
         * Checked with or without --cluster-nats, like the other cluster
         * flags (whether the files can be read: boot step 7, with a bus). */
        {{"--cluster-nats-cert=c.pem"},
         "invalid --cluster-nats-key: --cluster-nats-cert and "
         "--cluster-nats-key must be given together"},
        {{"--cluster-nats=tls://h:4222", "--cluster-nats-key", "k.pem"},
         "invalid --cluster-nats-cert: --cluster-nats-cert and --cluster-nats-key must be given "
         "together"},
        {{"--cluster-nats-ca=ca.pem", "--cluster-nats-cert=c.pem"},
         "invalid --cluster-nats-key: --cluster-nats-cert and --cluster-nats-key must be given "
         "together"},
        {{"--cluster-nats-ca=ca.pem"}, NULL},
        {{"--cluster-nats=tls://h:4222", "--cluster-nats-cert=c.pem", "--cluster-nats-key=k.pem"},
         NULL},
        {{"-cluster-nats-ca", "ca.pem", "-cluster-nats-cert", "c.pem", "-cluster-nats-key",
          "k.pem"},
         NULL},
        {{"--cluster-ctl-threads=0"}, "invalid --cluster-ctl-threads 0: must be from 1 to 16"},
        {{"--cluster-ctl-threads=17"}, "invalid --cluster-ctl-threads 17: must be from 1 to 16"},
        {{"--cluster-ctl-threads", "16"}, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        run_args(&r, cases[i].args);
        assert_int_equal(r.rc, CONFIG_OK);
        struct config_error ce;
        int rc = config_validate(&r.cfg, &ce);
        if (cases[i].msg) {
            assert_int_equal(rc, -1);
            assert_string_equal(ce.err, cases[i].msg);
            assert_true(ce.fix[0] != '\0');
        } else {
            assert_int_equal(rc, 0);
        }
        done(&r);
    }
}

static void test_suggest(void **state)
{
    (void)state;
    static const struct {
        const char *typo, *want;
    } cases[] = {
        {"heartbeat-intervall", "heartbeat-interval"},
        {"insecure-listn", "insecure-listen"},
        {"domian", "domain"},
        {"Domain", "domain"},
        {"max-conections", "max-connections"},
        {"metrics", "metrics-listen"},
        {"log-levle", "log-level"},
        {"zzzzzzzz", NULL},
        {"x", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = config_suggest(cases[i].typo, strlen(cases[i].typo));
        if (!cases[i].want)
            assert_null(got);
        else
            assert_string_equal(got, cases[i].want);
    }
    struct run r;
    run_args(&r, (const char *const[]){"--heartbeat-intervall=5s", NULL});
    assert_int_equal(r.rc, CONFIG_ERROR);
    assert_non_null(strstr(r.e.fix, "did you mean --heartbeat-interval?"));
    done(&r);
    run_args(&r, (const char *const[]){"--heartbeat-interval", "10sec", NULL});
    assert_int_equal(r.rc, CONFIG_ERROR);
    assert_non_null(strstr(r.e.fix, "1m30s"));
    done(&r);
}

static void test_prescan(void **state)
{
    (void)state;
    char *a[] = {"relay", "--log-format", "json", "-log-format=text", "--x", NULL};
    assert_string_equal(config_prescan(5, a, "log-format"), "text");
    char *b[] = {"relay", "--log-format=json", "--", "--log-format=text", NULL};
    assert_string_equal(config_prescan(4, b, "log-format"), "json");
    char *c[] = {"relay", "--log-formats=json", "--log-format", NULL};
    assert_null(config_prescan(3, c, "log-format"));
    char *d[] = {"relay",          "--heartbeat-interval", "0s",
                 "--check-config", "--log-format=json",    NULL};
    assert_string_equal(config_prescan(5, d, "log-format"), "json");
}

/* Writes text to a temporary file; returns its path (static). */
static const char *temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/relay-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_config_file(void **state)
{
    (void)state;
    struct config c;
    struct config_error e;
    config_defaults(&c, "/home/op");
    const char *p = temp_file("# reloadable settings\n\nlog-level = debug\n"
                              "max-connections=50 # inline comment\n"
                              "  rate-limit-refill = \"2s\"\n--max-phones-per-server = 4\n");
    assert_int_equal(config_file_apply(&c, p, &e), 0);
    assert_string_equal(c.log_level, "debug");
    assert_int_equal(c.max_connections, 50);
    assert_int_equal(c.rate_limit_refill_ns, 2 * NS_PER_S);
    assert_int_equal(c.max_phones_per_server, 4);
    assert_int_equal(c.explicit_mask, 0); /* the file does not count as the command line */
    unlink(p);

    static const struct {
        const char *text, *err;
    } bad[] = {
        {"log-level debug\n", ":1: expected name = value"},
        {"\ndomain = x\n", ":2: \"domain\" cannot be set in --config-file"},
        {"max-conections = 5\n", ":1: \"max-conections\" is not a setting"},
        {"log-level = loud\n", ":1: invalid log-level \"loud\""},
        {"max-connections = lots\n", ":1: invalid value \"lots\" for max-connections: parse error"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config_defaults(&c, "/home/op");
        p = temp_file(bad[i].text);
        assert_int_equal(config_file_apply(&c, p, &e), -1);
        if (!strstr(e.err, bad[i].err))
            fail_msg("case %zu: %s", i, e.err);
        assert_true(e.fix[0] != '\0');
        unlink(p);
    }

    /* a setting given on the command line cannot also be in the file */
    struct run r;
    run_args(&r, (const char *const[]){"--max-connections=9", NULL});
    p = temp_file("max-connections = 5\n");
    assert_int_equal(config_file_apply(&r.cfg, p, &e), -1);
    assert_non_null(strstr(e.err, "max-connections is also given on the command line"));
    unlink(p);
    done(&r);

    config_defaults(&c, "/home/op");
    assert_int_equal(config_file_apply(&c, "/nonexistent/relay.conf", &e), -1);
    assert_string_equal(e.err, "--config-file /nonexistent/relay.conf: No such file or directory");
}

static void test_duration_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t ns;
    } ok[] = {
        {"0", 0},
        {"-0", 0},
        {"+0", 0},
        {"0s", 0},
        {"5s", 5 * NS_PER_S},
        {"30s", 30 * NS_PER_S},
        {"1478s", 1478 * NS_PER_S},
        {"-5s", -5 * NS_PER_S},
        {"+5s", 5 * NS_PER_S},
        {"-0s", 0},
        {"5.0s", 5 * NS_PER_S},
        {"5.6s", 5600 * NS_PER_MS},
        {"5.s", 5 * NS_PER_S},
        {".5s", 500 * NS_PER_MS},
        {"1.0s", NS_PER_S},
        {"1.00s", NS_PER_S},
        {"1.004s", 1004 * NS_PER_MS},
        {"1.0040s", 1004 * NS_PER_MS},
        {"100.00100s", 100001 * NS_PER_MS},
        {"10ns", 10},
        {"11us", 11000},
        {"12\xc2\xb5s", 12000},
        {"12\xce\xbcs", 12000},
        {"13ms", 13 * NS_PER_MS},
        {"14s", 14 * NS_PER_S},
        {"15m", 15 * 60 * NS_PER_S},
        {"16h", 16 * 3600 * NS_PER_S},
        {"3h30m", (3 * 60 + 30) * 60 * NS_PER_S},
        {"10.5s4m", 4 * 60 * NS_PER_S + 10500 * NS_PER_MS},
        {"-2m3.4s", -(2 * 60 * NS_PER_S + 3400 * NS_PER_MS)},
        {"1h2m3s4ms5us6ns", 3723004005006LL},
        {"39h9m14.425s", 140954425 * NS_PER_MS},
        {"52763797000ns", 52763797000LL},
        {"0.3333333333333333333h", 20 * 60 * NS_PER_S},
        {"9007199254740993ns", 9007199254740993LL},
        {"9223372036854775807ns", INT64_MAX},
        {"9223372036854775.807us", INT64_MAX},
        {"9223372036s854ms775us807ns", INT64_MAX},
        {"-9223372036854775808ns", INT64_MIN},
        {"-9223372036854775.808us", INT64_MIN},
        {"-9223372036s854ms775us808ns", INT64_MIN},
        {"-2562047h47m16.854775808s", INT64_MIN},
        {"0.100000000000000000000h", 6 * 60 * NS_PER_S},
        {"0.830103483285477580700h", 2988372539827LL},
        {"1.5h", 5400 * NS_PER_S},
        {"-2h45m", -(2 * 3600 + 45 * 60) * NS_PER_S},
        {"1m30s", 90 * NS_PER_S},
        {"9223372036854775807.5ns", INT64_MAX}, /* Go drops the half nanosecond */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = 12345;
        if (duration_parse(ok[i].in, &v) != 0)
            fail_msg("%s: rejected", ok[i].in);
        if (v != ok[i].ns)
            fail_msg("%s: got %lld want %lld", ok[i].in, (long long)v, (long long)ok[i].ns);
    }
    static const char *const bad[] = {
        "",
        "3",
        "-",
        "+",
        "s",
        ".",
        "-.",
        ".s",
        "+.s",
        "1d",
        "1.s.",
        "1s ",
        " 1s",
        "1ss",
        "1S",
        "1e3s",
        "\xb5s",
        "1\xc2\xb5",
        "1\xb5s",
        "0x1s",
        "1s5",
        "-1s-1s",
        "3000000h",
        "9223372036854775808ns",
        "-9223372036854775809ns",
        "9223372036854775.808us",
        "2562048h",
        "106751d",
        "1.5",
        "0.0",
        "18446744073709551616ns",
        "99999999999999999999999999999s",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 777;
        if (duration_parse(bad[i], &v) != -1)
            fail_msg("%s: accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, 777);
    }
}

static void test_duration_format(void **state)
{
    (void)state;
    static const struct {
        int64_t ns;
        const char *out;
    } cases[] = {
        {0, "0s"},
        {1, "1ns"},
        {999, "999ns"},
        {1000, "1\xc2\xb5s"},
        {1100, "1.1\xc2\xb5s"},
        {2200 * 1000, "2.2ms"},
        {500 * NS_PER_MS, "500ms"},
        {3300 * NS_PER_MS, "3.3s"},
        {1500 * NS_PER_MS, "1.5s"},
        {-1500 * NS_PER_MS, "-1.5s"},
        {90 * NS_PER_S, "1m30s"},
        {(4 * 60 + 5) * NS_PER_S, "4m5s"},
        {(4 * 60 + 5) * NS_PER_S + 1000, "4m5.000001s"},
        {(2 * 3600 + 45 * 60) * NS_PER_S, "2h45m0s"},
        {3600 * NS_PER_S, "1h0m0s"},
        {120 * NS_PER_S, "2m0s"},
        {(5 * 3600 + 6 * 60 + 7) * NS_PER_S + 1, "5h6m7.000000001s"},
        {(8 * 3600 + 8 * 60 + 8) * NS_PER_S + 8, "8h8m8.000000008s"},
        {-1, "-1ns"},
        {-1000, "-1\xc2\xb5s"},
        {INT64_MAX, "2562047h47m16.854775807s"},
        {INT64_MIN, "-2562047h47m16.854775808s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        int n = duration_format(buf, sizeof buf, cases[i].ns);
        assert_string_equal(buf, cases[i].out);
        assert_int_equal(n, (int)strlen(cases[i].out));
        int64_t back;
        assert_int_equal(duration_parse(buf, &back), 0);
        assert_int_equal(back, cases[i].ns);
    }
    char small[4];
    assert_int_equal(duration_format(small, sizeof small, 90 * NS_PER_S), 5);
    assert_string_equal(small, "1m3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flag_syntax),
        cmocka_unit_test(test_explicit_tracking),
        cmocka_unit_test(test_stops),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_usage_layout),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_suggest),
        cmocka_unit_test(test_prescan),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_duration_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
