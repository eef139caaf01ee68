/* test_log.c — log lines match Go slog's text format byte for byte (and our
 * JSON format), hostile values can never forge a line or a key, cut lines
 * still end in a newline, and log_event filters by level and writes whole
 * lines to its file descriptor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/log.h"

#define T0 1779616800 /* 2026-05-24T10:00:00Z */

static const struct timespec ts = {T0, 123456789};

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static int setup_utc(void **state)
{
    (void)state;
    set_tz("UTC");
    return 0;
}

static const char *line(enum log_format fmt, enum log_level lvl, const char *msg,
                        const struct log_field *f, size_t n)
{
    static char buf[16384];
    size_t len = log_format_line(buf, sizeof buf - 1, fmt, &ts, lvl, msg, f, n);
    buf[len] = '\0';
    return buf;
}

static void test_text_line_exact(void **state)
{
    (void)state;
    struct log_field f[] = {LOG_STR("server_id", "s1"), LOG_STR("remote", "203.0.113.7")};
    assert_string_equal(line(LOG_FORMAT_TEXT, LOG_INFO, "server_claimed", f, 2),
                        "time=2026-05-24T10:00:00.123Z level=INFO msg=server_claimed "
                        "server_id=s1 remote=203.0.113.7\n");
}

static void test_text_quoted_msg_and_levels(void **state)
{
    (void)state;
    struct log_field f[] = {LOG_STR("fix", "pass a positive connection count"),
                            LOG_NUM("value", -3)};
    assert_string_equal(line(LOG_FORMAT_TEXT, LOG_ERROR, "refusing to start: invalid x", f, 2),
                        "time=2026-05-24T10:00:00.123Z level=ERROR msg=\"refusing to start: "
                        "invalid x\" fix=\"pass a positive connection count\" value=-3\n");
    assert_string_equal(line(LOG_FORMAT_TEXT, LOG_WARN, "rate_limited", NULL, 0),
                        "time=2026-05-24T10:00:00.123Z level=WARN msg=rate_limited\n");
    assert_string_equal(line(LOG_FORMAT_TEXT, LOG_DEBUG, "d", NULL, 0),
                        "time=2026-05-24T10:00:00.123Z level=DEBUG msg=d\n");
}

static void test_json_line_exact(void **state)
{
    (void)state;
    struct log_field f[] = {LOG_STR("server_id", "s1"), LOG_NUM("n", 5),
                            LOG_STR("err", "a \"b\"\\c\n\x01")};
    assert_string_equal(line(LOG_FORMAT_JSON, LOG_INFO, "server_claimed", f, 3),
                        "{\"time\":\"2026-05-24T10:00:00.123Z\",\"level\":\"INFO\","
                        "\"msg\":\"server_claimed\",\"server_id\":\"s1\",\"n\":5,"
                        "\"err\":\"a \\\"b\\\"\\\\c\\n\\u0001\"}\n");
}

static void test_json_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", "\"\""},
        {"tab\there\r", "\"tab\\there\\r\""},
        {"bad\xff\xfe", "\"bad\\ufffd\\ufffd\""},
        {"caf\xc3\xa9 \xe6\x97\xa5", "\"caf\xc3\xa9 \xe6\x97\xa5\""},
        {"ls\xe2\x80\xa8ps\xe2\x80\xa9", "\"ls\\u2028ps\\u2029\""},
        {"del\x7f<&>", "\"del\x7f<&>\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct log_field f[] = {LOG_STR("k", cases[i].in)};
        char want[256];
        snprintf(want, sizeof want,
                 "{\"time\":\"2026-05-24T10:00:00.123Z\",\"level\":\"INFO\",\"msg\":\"m\","
                 "\"k\":%s}\n",
                 cases[i].out);
        assert_string_equal(line(LOG_FORMAT_JSON, LOG_INFO, "m", f, 1), want);
    }
}

static void test_text_quoting_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain", 5, "plain"},
        {"a b", 3, "\"a b\""},
        {"a=b", 3, "\"a=b\""},
        {"a\"b", 3, "\"a\\\"b\""},
        {"C:\\x", 4, "C:\\x"},
        {"C:\\x y", 6, "\"C:\\\\x y\""},
        {"x\nlevel=ERROR msg=forged", 24, "\"x\\nlevel=ERROR msg=forged\""},
        {"a\tb", 3, "\"a\\tb\""},
        {"\a\b\f\r\v", 5, "\"\\a\\b\\f\\r\\v\""},
        {"esc\x1b[0m", 7, "\"esc\\x1b[0m\""},
        {"del\x7f", 4, "\"del\\x7f\""},
        {"nul\0x", 5, "\"nul\\x00x\""},
        {"bad\xff", 4, "\"bad\\xff\""},
        {"cut\xe6\x97", 5, "\"cut\\xe6\\x97\""},
        {"over\xc0\xaf", 6, "\"over\\xc0\\xaf\""},
        {"sur\xed\xa0\x80", 6, "\"sur\\xed\\xa0\\x80\""},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"\xe6\x97\xa5\xe6\x9c\xac", 6, "\xe6\x97\xa5\xe6\x9c\xac"},
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},
        {"ls\xe2\x80\xa8", 5, "\"ls\\u2028\""},
        {"c1\xc2\x85", 4, "\"c1\\u0085\""},
        {"nb\xc2\xa0sp", 6, "\"nb\\u00a0sp\""},
        {"bom\xef\xbb\xbf", 6, "\"bom\\ufeff\""},
        {"rtl\xe2\x80\xae", 6, "\"rtl\\u202e\""},
        {"pua\xf3\xb0\x80\x80", 7, "\"pua\\U000f0000\""},
        {"rep\xef\xbf\xbd", 6, "\"rep\xef\xbf\xbd\""},
        {"-1.5", 4, "-1.5"},
        {"{\"a\":1}", 7, "\"{\\\"a\\\":1}\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        size_t n = log_text_value(out, sizeof out, cases[i].in, cases[i].len);
        out[n] = '\0';
        assert_string_equal(out, cases[i].out);
    }
}

static void test_injection_stays_one_line(void **state)
{
    (void)state;
    struct log_field f[] = {LOG_STR("device_name", "x\nlevel=ERROR msg=forged"),
                            LOG_STR("binary_version", "1.0\r\ntime=0 a=b")};
    const char *s = line(LOG_FORMAT_TEXT, LOG_INFO, "phone_registered", f, 2);
    assert_non_null(strstr(s, " device_name=\"x\\nlevel=ERROR msg=forged\" "));
    assert_non_null(strstr(s, " binary_version=\"1.0\\r\\ntime=0 a=b\"\n"));
    assert_ptr_equal(strchr(s, '\n'), s + strlen(s) - 1);
    assert_null(strchr(s, '\r'));
}

static void test_numbers(void **state)
{
    (void)state;
    struct log_field f[] = {LOG_NUM("close_code", 1011), LOG_NUM("a", 0), LOG_NUM("b", LLONG_MIN),
                            LOG_NUM("c", LLONG_MAX)};
    assert_string_equal(line(LOG_FORMAT_TEXT, LOG_INFO, "m", f, 4),
                        "time=2026-05-24T10:00:00.123Z level=INFO msg=m close_code=1011 a=0 "
                        "b=-9223372036854775808 c=9223372036854775807\n");
}

static void test_strn_not_terminated(void **state)
{
    (void)state;
    const char buf[] = {'a', 'b', 'c'};
    struct log_field f[] = {LOG_STRN("server_id", buf, 2)};
    assert_string_equal(line(LOG_FORMAT_TEXT, LOG_INFO, "m", f, 1),
                        "time=2026-05-24T10:00:00.123Z level=INFO msg=m server_id=ab\n");
}

static void test_time_offsets(void **state)
{
    (void)state;
    char buf[256];
    struct timespec t = {T0, 999999999};
    set_tz("XYZ-05:30");
    size_t n = log_format_line(buf, sizeof buf, LOG_FORMAT_TEXT, &t, LOG_INFO, "m", NULL, 0);
    buf[n] = '\0';
    assert_string_equal(buf, "time=2026-05-24T15:30:00.999+05:30 level=INFO msg=m\n");
    set_tz("XYZ3");
    t.tv_nsec = 1000000;
    n = log_format_line(buf, sizeof buf, LOG_FORMAT_JSON, &t, LOG_INFO, "m", NULL, 0);
    buf[n] = '\0';
    assert_string_equal(buf, "{\"time\":\"2026-05-24T07:00:00.001-03:00\",\"level\":\"INFO\","
                             "\"msg\":\"m\"}\n");
    set_tz("UTC");
}

/* Every cut keeps quotes balanced and ends with exactly one newline. */
static void check_cut(const char *s, size_t len, size_t cap, enum log_format fmt)
{
    assert_true(len <= cap);
    assert_true(len > 0);
    assert_int_equal(s[len - 1], '\n');
    assert_ptr_equal(memchr(s, '\n', len), s + len - 1);
    size_t quotes = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '"' && (i == 0 || s[i - 1] != '\\'))
            quotes++;
    assert_int_equal(quotes % 2, 0);
    if (fmt == LOG_FORMAT_JSON && len >= 2)
        assert_int_equal(s[len - 2], '}');
}

static void test_truncation(void **state)
{
    (void)state;
    char big[3000], out[9000];
    memset(big, 'x', sizeof big);
    for (size_t i = 0; i < sizeof big; i += 7)
        big[i] = '\n'; /* four output bytes per input byte when escaped */
    struct log_field f[] = {LOG_STRN("err", big, sizeof big), LOG_STR("path", "/v1/server"),
                            LOG_STRN("device_name", big, 5)};
    for (int fmt = LOG_FORMAT_TEXT; fmt <= LOG_FORMAT_JSON; fmt++) {
        for (size_t cap = 1; cap < 1200; cap += (cap < 120 ? 1 : 37)) {
            size_t n = log_format_line(out, cap, fmt, &ts, LOG_INFO, "msg with space", f, 3);
            check_cut(out, n, cap, fmt);
        }
        size_t n = log_format_line(out, 1, fmt, &ts, LOG_INFO, "m", f, 3);
        assert_int_equal(n, 1);
        assert_int_equal(out[0], '\n');
        assert_int_equal(log_format_line(out, 0, fmt, &ts, LOG_INFO, "m", f, 3), 0);
    }
}

static void test_long_value_cut(void **state)
{
    (void)state;
    char big[5000], out[8192];
    memset(big, 'y', sizeof big);
    memcpy(big + 1022, "\xe6\x97\xa5", 3); /* a character across the 1 KiB cut */
    struct log_field f[] = {LOG_STRN("err", big, sizeof big), LOG_STR("path", "/p")};
    size_t n = log_format_line(out, sizeof out, LOG_FORMAT_TEXT, &ts, LOG_INFO, "m", f, 2);
    out[n] = '\0';
    const char *v = strstr(out, "err=") + 4;
    const char *end = strstr(v, " path=/p\n");
    assert_non_null(end);
    assert_int_equal(end - v, 1022); /* cut before the split character */
}

static void test_pipe_and_filter(void **state)
{
    (void)state;
    int p[2];
    char buf[9000];
    assert_int_equal(pipe(p), 0);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    log_setup(LOG_FORMAT_TEXT, LOG_WARN, p[1]);
    LOGF(LOG_INFO, "dropped", LOG_STR("server_id", "s1"));
    LOG0(LOG_DEBUG, "dropped");
    assert_int_equal(read(p[0], buf, sizeof buf), -1);
    LOGF(LOG_WARN, "rate_limited", LOG_STR("remote", "203.0.113.7"), LOG_NUM("n", 2));
    ssize_t n = read(p[0], buf, sizeof buf);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, " level=WARN msg=rate_limited remote=203.0.113.7 n=2\n"));
    assert_int_equal(strncmp(buf, "time=2", 6), 0);
    assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);

    char big[20000];
    memset(big, 'z', sizeof big);
    struct log_field f[16];
    for (size_t i = 0; i < 16; i++)
        f[i] = LOG_STRN("err", big, sizeof big);
    log_setup(LOG_FORMAT_JSON, LOG_INFO, p[1]);
    log_event(LOG_WARN, "huge", f, 16);
    n = read(p[0], buf, sizeof buf);
    assert_true(n > 0 && n <= 8192);
    assert_int_equal(buf[n - 1], '\n');
    assert_int_equal(buf[n - 2], '}');

    /* An ERROR line (a boot refusal) is never cut: the whole 3000-byte err
     * and the fix after it arrive. */
    static char whole[40000];
    memset(big, 'e', 3000);
    log_setup(LOG_FORMAT_TEXT, LOG_INFO, p[1]);
    LOGF(LOG_ERROR, "refusing to start: x", LOG_STRN("err", big, 3000), LOG_STR("fix", "do this"));
    n = read(p[0], whole, sizeof whole - 1);
    assert_true(n > 3000);
    whole[n] = '\0';
    assert_non_null(strstr(whole, " fix=\"do this\"\n"));
    log_setup(LOG_FORMAT_TEXT, LOG_INFO, 2);
    close(p[0]);
    close(p[1]);
}

static void test_levels(void **state)
{
    (void)state;
    enum log_level l = LOG_INFO;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOG_DEBUG);
    assert_int_equal(log_level_parse("warn", &l), 0);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("error", &l), 0);
    assert_int_equal(l, LOG_ERROR);
    assert_int_equal(log_level_parse("info", &l), 0);
    assert_int_equal(l, LOG_INFO);
    assert_int_equal(log_level_parse("INFO", &l), -1);
    assert_string_equal(log_level_name(LOG_WARN), "warn");
    log_set_level(LOG_WARN);
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_ERROR));
    log_set_level(LOG_DEBUG);
    assert_true(log_enabled(LOG_DEBUG));
    log_set_level(LOG_INFO);
}

/* A flood of one kind: the first passes, then one per second carrying the
 * count of those dropped in between. */
static void test_limit(void **state)
{
    (void)state;
    struct log_limit l = {0};
    uint64_t sup = 99;
    assert_true(log_limit_allow(&l, 5000, &sup));
    assert_int_equal(sup, 0);
    for (int i = 0; i < 1000; i++)
        assert_false(log_limit_allow(&l, 5000 + (uint64_t)i % 999, &sup));
    assert_true(log_limit_allow(&l, 6000, &sup));
    assert_int_equal(sup, 1000);
    assert_false(log_limit_allow(&l, 6999, &sup));
    assert_true(log_limit_allow(&l, 9000, &sup));
    assert_int_equal(sup, 1);
    struct log_limit z = {0}; /* a loop clock can start at 0 */
    assert_true(log_limit_allow(&z, 0, &sup));
    assert_false(log_limit_allow(&z, 10, &sup));
}

static void test_format_parse(void **state)
{
    (void)state;
    enum log_format f = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("JSON", &f), -1);
    assert_int_equal(log_format_parse("", &f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line_exact),
        cmocka_unit_test(test_text_quoted_msg_and_levels),
        cmocka_unit_test(test_json_line_exact),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_text_quoting_table),
        cmocka_unit_test(test_injection_stays_one_line),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strn_not_terminated),
        cmocka_unit_test(test_time_offsets),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_long_value_cut),
        cmocka_unit_test(test_pipe_and_filter),
        cmocka_unit_test(test_format_parse),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_limit),
    };
    return cmocka_run_group_tests(tests, setup_utc, NULL);
}
