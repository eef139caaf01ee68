/* test_netaddr.c — listen address parsing with Go's host:port rules and
 * resolution of numeric hosts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "base/netaddr.h"
#include "base/util.h"

static void test_split_valid(void **state)
{
    static const struct {
        const char *in, *host;
        int port;
    } rows[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080}, {":443", "", 443},
        {"[::1]:9090", "::1", 9090},           {"example.com:80", "example.com", 80},
        {"0.0.0.0:65535", "0.0.0.0", 65535},   {"[::]:1", "::", 1},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char host[64], err[128];
        int port = 0;
        assert_int_equal(netaddr_split(rows[i].in, host, sizeof host, &port, err, sizeof err), 0);
        assert_string_equal(host, rows[i].host);
        assert_int_equal(port, rows[i].port);
    }
}

static void test_split_invalid(void **state)
{
    static const char *rows[] = {"",           "127.0.0.1", "127.0.0.1:",    "127.0.0.1:0",
                                 "host:65536", "host:-1",   "host:http",     "::1:80",
                                 "[::1:80",    "[::1]x:80", "127.0.0.1:+80", "h:8080x"};
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        char host[64], err[128] = "";
        int port = 0;
        assert_int_equal(netaddr_split(rows[i], host, sizeof host, &port, err, sizeof err), -1);
        assert_true(strlen(err) > 0);
    }
}

static void test_resolve(void **state)
{
    struct sockaddr_storage ss;
    char err[128];
    (void)state;
    assert_int_equal(netaddr_resolve("127.0.0.1:8080", &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    assert_int_equal(netaddr_resolve(":80", &ss, err, sizeof err), 0);
    assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(netaddr_resolve("[::1]:9", &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 9);
    assert_int_equal(netaddr_resolve("no-such-host.invalid:80", &ss, err, sizeof err), -1);
}

static void test_util_strings(void **state)
{
    (void)state;
    assert_true(str_eq("abc", 3, "abc"));
    assert_false(str_eq("abc", 2, "abc"));
    assert_true(str_ieq("UpGrade", 7, "upgrade", 7));
    assert_false(str_ieq("upgrade", 7, "upgrades", 8));
    struct list head, a, b;
    list_init(&head);
    assert_true(list_empty(&head));
    list_push_back(&head, &a);
    list_push_back(&head, &b);
    assert_ptr_equal(head.next, &a);
    list_remove(&a);
    list_remove(&a); /* self-linked after removal: harmless */
    assert_ptr_equal(head.next, &b);
    list_remove(&b);
    assert_true(list_empty(&head));
}

static void test_format(void **state)
{
    struct sockaddr_storage sa;
    char err[64], out[80];
    (void)state;
    assert_int_equal(netaddr_resolve("127.0.0.1:8080", &sa, err, sizeof err), 0);
    netaddr_format((struct sockaddr *)&sa, out, sizeof out);
    assert_string_equal(out, "127.0.0.1:8080");
    assert_int_equal(netaddr_resolve("[::1]:9090", &sa, err, sizeof err), 0);
    netaddr_format((struct sockaddr *)&sa, out, sizeof out);
    assert_string_equal(out, "[::1]:9090");
    assert_int_equal(netaddr_resolve(":443", &sa, err, sizeof err), 0);
    netaddr_format((struct sockaddr *)&sa, out, sizeof out);
    assert_string_equal(out, "0.0.0.0:443");
    sa.ss_family = AF_UNIX;
    netaddr_format((struct sockaddr *)&sa, out, sizeof out);
    assert_string_equal(out, "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_valid),  cmocka_unit_test(test_split_invalid),
        cmocka_unit_test(test_resolve),      cmocka_unit_test(test_format),
        cmocka_unit_test(test_util_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
