/* test_notify.c — the sd_notify messages, read from a unix datagram
 * socket standing in for systemd's $NOTIFY_SOCKET; and silence without it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/notify.h"

static int bind_socket(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/relay-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void next(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
}

static void test_messages(void **state)
{
    char path[108], buf[256];
    (void)state;
    int fd = bind_socket(path, sizeof path);
    setenv("NOTIFY_SOCKET", path, 1);
    notify_ready("serving");
    next(fd, buf, sizeof buf);
    assert_string_equal(buf, "READY=1\nSTATUS=serving");
    notify_reloading();
    next(fd, buf, sizeof buf);
    assert_int_equal(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27), 0);
    assert_non_null(strstr(buf, "\nSTATUS=reloading"));
    notify_stopping();
    next(fd, buf, sizeof buf);
    assert_string_equal(buf, "STOPPING=1\nSTATUS=draining");
    unsetenv("NOTIFY_SOCKET");
    notify_ready("serving"); /* not under systemd: nothing is sent */
    assert_int_equal(recv(fd, buf, sizeof buf, 0), -1);
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
