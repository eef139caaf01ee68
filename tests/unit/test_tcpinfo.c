/* test_tcpinfo.c — the acknowledged-bytes counter grows as a loopback peer
 * reads, and stays put while it does not; non-TCP sockets are refused. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/tcpinfo.h"

/* A connected loopback pair: *a is the client, *b the accepted side. */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &len), 0);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sin, sizeof sin), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
}

static void test_acked_grows_with_reads(void **state)
{
    int a, b;
    uint64_t before, after;
    char buf[4096];
    (void)state;
    tcp_pair(&a, &b);
    assert_int_equal(tcp_bytes_acked(a, &before), 0);
    memset(buf, 'x', sizeof buf);
    assert_int_equal(write(a, buf, sizeof buf), (ssize_t)sizeof buf);
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = read(b, buf, sizeof buf - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    /* loopback acknowledges at once, but give the stack a moment */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(tcp_bytes_acked(a, &after), 0);
        if (after >= before + sizeof buf)
            break;
        usleep(1000);
    }
    assert_true(after >= before + sizeof buf);
    close(a);
    close(b);
}

static void test_not_tcp(void **state)
{
    int sv[2];
    uint64_t acked = 7;
    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(tcp_bytes_acked(sv[0], &acked), -1);
    assert_int_equal(acked, 7);
    assert_int_equal(tcp_bytes_acked(-1, &acked), -1);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acked_grows_with_reads),
        cmocka_unit_test(test_not_tcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
