/* forwarder.c — the physical-limit baseline for the benchmark: a minimal
 * epoll TCP forwarder that pairs consecutive accepted connections and
 * copies bytes between them, with no WebSocket, no JSON and no routing.
 * The load generator speaks the same frames through it, so the relay's
 * figures can be read as a fraction of what the machine can move at all.
 * Usage: forwarder PORT */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 1048576
#define BUF   65536

struct end {
    int peer;      /* fd of the paired connection, -1 until paired */
    char *pending; /* bytes the peer could not take yet */
    size_t len, off;
};

static struct end *ends;

static void add(int ep, int fd, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void mod(int ep, int fd, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void drop(int ep, int fd)
{
    int peer = ends[fd].peer;
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(ends[fd].pending);
    memset(&ends[fd], 0, sizeof ends[fd]);
    ends[fd].peer = -1;
    if (peer >= 0 && ends[peer].peer == fd)
        drop(ep, peer);
}

/* Copies what fd has to its peer; stops reading fd while the peer is full. */
static void pump(int ep, int fd)
{
    static char buf[BUF];
    int to = ends[fd].peer;
    if (to < 0 || ends[to].len > ends[to].off)
        return;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            drop(ep, fd);
            return;
        }
        if (n < 0)
            return;
        ssize_t w = write(to, buf, (size_t)n);
        if (w < 0)
            w = 0;
        if (w < n) {
            ends[to].pending = realloc(ends[to].pending, (size_t)(n - w));
            memcpy(ends[to].pending, buf + w, (size_t)(n - w));
            ends[to].len = (size_t)(n - w);
            ends[to].off = 0;
            mod(ep, to, EPOLLIN | EPOLLOUT);
            mod(ep, fd, 0); /* back-pressure: stop reading until flushed */
            return;
        }
    }
}

static void flush(int ep, int fd)
{
    struct end *e = &ends[fd];
    while (e->off < e->len) {
        ssize_t w = write(fd, e->pending + e->off, e->len - e->off);
        if (w <= 0)
            return;
        e->off += (size_t)w;
    }
    e->len = e->off = 0;
    mod(ep, fd, EPOLLIN);
    if (e->peer >= 0) {
        mod(ep, e->peer, EPOLLIN);
        pump(ep, e->peer);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: forwarder PORT\n");
        return 2;
    }
    ends = calloc(MAXFD, sizeof *ends);
    for (int i = 0; i < MAXFD; i++)
        ends[i].peer = -1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1, waiting = -1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 4096) != 0) {
        perror("forwarder: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    add(ep, ls, EPOLLIN);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    add(ep, c, EPOLLIN);
                    if (waiting < 0) {
                        waiting = c; /* pairs form in accept order */
                    } else {
                        ends[c].peer = waiting;
                        ends[waiting].peer = c;
                        waiting = -1;
                    }
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                flush(ep, fd);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                pump(ep, fd);
        }
    }
}
