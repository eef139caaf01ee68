/* loadgen.c — load generator for the relay benchmark. One epoll loop, no
 * per-connection threads. It opens fake binaries and phones with the real
 * pyrycode headers, speaks masked RFC 6455 frames, and runs one scenario:
 *   rtt     phones send S-byte JSON frames, binaries echo them back through
 *           the envelope; closed loop, or open loop at --rate msgs/s
 *   idle    N connections held open (answering pings); reports relay RSS
 *   churn   connect, upgrade, one message, close, as fast as possible
 *   fanout  one binary streams to 16 phones, one of which never reads
 *   claims  --binaries N binaries with fresh server-ids dialled at once
 *           (128 handshakes in flight at most) and held open (bench/claims.py
 *           reads the relay's claim counter: cluster claims end after the 101)
 * --mode baseline talks to bench/forwarder instead (no HTTP, raw frames
 * echoed by the peer), so every figure has a same-machine reference.
 * Results are printed as one line of key=value pairs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum role { BINARY, PHONE };
enum st { CONNECTING, HANDSHAKE, OPEN, DEAD };

struct lc {
    int fd;
    enum role role;
    enum st st;
    int idx;        /* phone: index; binary: index */
    struct lc *bin; /* phone: its binary */
    char *rbuf;
    size_t rlen, rcap;
    char *wbuf;
    size_t wlen, woff, wcap;
    uint64_t sent_ns;  /* phone: outstanding request */
    uint64_t next_ns;  /* phone, open loop: next send time */
    uint64_t received; /* messages delivered to this conn */
    uint64_t rbytes;
    bool stalled;  /* fanout: never read */
    bool done_msg; /* churn: got its one message through */
};

static struct {
    const char *mode, *scenario;
    int port, binaries, phones, size, conns, pid;
    double duration, rate;
} opt = {"relay", "rtt", 8080, 1, 1, 64, 1000, 0, 5, 0};

static int ep;
/* Setup fails fast: the first reason a connection died, and how many did. */
static char first_failure[160];
static size_t failures;
static uint64_t *lat;
static size_t nlat, caplat;
static uint64_t delivered, sent_total;
static char *payload;
static size_t payload_len;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool baseline(void)
{
    return strcmp(opt.mode, "baseline") == 0;
}

static void wait_events(struct lc *c, bool out)
{
    /* A stalled phone is not polled for input: level-triggered epoll would
     * report it ready on every call and the load generator would spin. */
    struct epoll_event ev = {.events = (c->stalled ? 0u : EPOLLIN) | (out ? EPOLLOUT : 0u),
                             .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void fail_conn(struct lc *c, const char *why);

static void flush(struct lc *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (n < 0) {
            if (errno == EAGAIN)
                break;
            fail_conn(c, strerror(errno));
            return;
        }
        c->woff += (size_t)n;
    }
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    wait_events(c, c->wlen > 0 || c->st == CONNECTING);
}

static void queue(struct lc *c, const void *p, size_t n)
{
    if (c->wlen + n > c->wcap) {
        c->wcap = (c->wlen + n) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

/* A masked client frame of one or more parts. */
static void send_frame(struct lc *c, int op, const void *a, size_t alen, const void *b, size_t blen,
                       const void *d, size_t dlen)
{
    uint8_t h[14], mask[4] = {0x11, 0x22, 0x33, 0x44};
    size_t n = alen + blen + dlen, hl = 2;
    h[0] = (uint8_t)(0x80 | op);
    if (n < 126) {
        h[1] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[1] = 0x80 | 126, h[2] = (uint8_t)(n >> 8), h[3] = (uint8_t)n, hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    memcpy(h + hl, mask, 4);
    queue(c, h, hl + 4);
    size_t start = c->wlen, k = 0;
    queue(c, a, alen);
    if (blen)
        queue(c, b, blen);
    if (dlen)
        queue(c, d, dlen);
    for (size_t i = start; i < c->wlen; i++, k++)
        c->wbuf[i] ^= (char)mask[k & 3];
    flush(c);
}

static void phone_send(struct lc *c)
{
    c->sent_ns = now_ns();
    sent_total++;
    send_frame(c, 1, payload, payload_len, NULL, 0, NULL, 0);
}

static void record(uint64_t ns)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
    }
    lat[nlat++] = ns;
}

/* A binary got a message: echo the frame back to the phone it came from. */
static void fanout_binary_message(const char *m, size_t n);

static void binary_message(struct lc *c, const char *m, size_t n)
{
    if (!strcmp(opt.scenario, "fanout")) {
        fanout_binary_message(m, n);
        return;
    }
    if (baseline()) {
        send_frame(c, 1, m, n, NULL, 0, NULL, 0);
        return;
    }
    const char *id = memmem(m, n, "\"conn_id\":\"", 11);
    const char *fr = memmem(m, n, "\"frame\":", 8);
    if (!id || !fr)
        return; /* a close notice, or something else: not part of the load */
    id += 11;
    const char *idend = memchr(id, '"', (size_t)(m + n - id));
    fr += 8;
    size_t frlen = (size_t)(m + n - 1 - fr);
    char head[160];
    int hl = snprintf(head, sizeof head, "{\"conn_id\":\"%.*s\",\"frame\":", (int)(idend - id), id);
    send_frame(c, 1, head, (size_t)hl, fr, frlen, "}", 1);
}

static void phone_message(struct lc *c, size_t n)
{
    c->received++;
    c->rbytes += n;
    delivered++;
    if (!strcmp(opt.scenario, "rtt")) {
        record(now_ns() - c->sent_ns);
        if (opt.rate == 0)
            phone_send(c); /* closed loop */
    } else if (!strcmp(opt.scenario, "churn")) {
        c->done_msg = true;
    }
}

/* Parses whole frames out of rbuf. */
static void frames(struct lc *c)
{
    size_t off = 0;
    while (c->rlen - off >= 2) {
        uint8_t *p = (uint8_t *)c->rbuf + off;
        int op = p[0] & 0x0F;
        bool masked = p[1] & 0x80;
        uint64_t n = p[1] & 0x7F;
        size_t hl = 2;
        if (n == 126) {
            if (c->rlen - off < 4)
                break;
            n = (uint64_t)p[2] << 8 | p[3], hl = 4;
        } else if (n == 127) {
            if (c->rlen - off < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | p[2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (c->rlen - off < hl + n)
            break;
        char *data = (char *)p + hl;
        if (masked)
            for (uint64_t i = 0; i < n; i++)
                data[i] ^= (char)p[hl - 4 + (i & 3)];
        if (op == 9)
            send_frame(c, 10, data, (size_t)n, NULL, 0, NULL, 0);
        else if (op == 8) {
            char why[64];
            unsigned code = n >= 2 ? (unsigned)((uint8_t)data[0] << 8 | (uint8_t)data[1]) : 0;
            snprintf(why, sizeof why, "closed by the relay with code %u", code);
            fail_conn(c, why);
        } else if (op == 1 || op == 2) {
            if (c->role == BINARY)
                binary_message(c, data, (size_t)n);
            else
                phone_message(c, (size_t)n);
        }
        off += hl + n;
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
}

/* c is finished: out of epoll (a dead socket would report HUP/ERR on every
 * wait and spin the loop), the first reason kept for the setup report. */
static void fail_conn(struct lc *c, const char *why)
{
    if (c->st == DEAD)
        return;
    c->st = DEAD;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (why && !failures++)
        snprintf(first_failure, sizeof first_failure, "%s", why);
}

static void on_readable(struct lc *c)
{
    if (c->stalled) {
        wait_events(c, false);
        return;
    }
    for (;;) {
        if (c->rcap - c->rlen < 65536) {
            c->rcap = c->rcap * 2 + 65536;
            c->rbuf = realloc(c->rbuf, c->rcap);
        }
        ssize_t n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            char why[96];
            snprintf(why, sizeof why, "%s",
                     n == 0 ? "connection closed by the relay" : strerror(errno));
            fail_conn(c, why);
            return;
        }
        if (n < 0)
            return;
        c->rlen += (size_t)n;
        if (c->st == HANDSHAKE) {
            char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
            if (!end)
                continue;
            if (strncmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
                char why[96];
                snprintf(why, sizeof why, "upgrade refused: %.*s", (int)strcspn(c->rbuf, "\r"),
                         c->rbuf);
                fail_conn(c, why);
                return;
            }
            size_t hl = (size_t)(end + 4 - c->rbuf);
            memmove(c->rbuf, c->rbuf + hl, c->rlen - hl);
            c->rlen -= hl;
            c->st = OPEN;
        }
        frames(c);
    }
}

static struct lc *dial(enum role role, int idx, const char *sid, long src)
{
    struct lc *c = calloc(1, sizeof *c);
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    c->role = role;
    c->idx = idx;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* spread sources over 127.0.0.0/8 so a million connections find ports */
    struct sockaddr_in me = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(src % 0xFFFF00))};
    bind(c->fd, (struct sockaddr *)&me, sizeof me);
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)opt.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    connect(c->fd, (struct sockaddr *)&to, sizeof to);
    c->st = baseline() ? OPEN : HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (!baseline()) {
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET /v1/%s HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\nX-Pyrycode-Server: %s\r\n"
                         "X-Pyrycode-Version: bench\r\nX-Pyrycode-Token: bench\r\n"
                         "User-Agent: loadgen\r\n\r\n",
                         role == BINARY ? "server" : "client", sid);
        queue(c, req, (size_t)n);
    }
    return c;
}

static void run_loop(uint64_t until_ns, bool (*done)(void))
{
    struct epoll_event evs[512];
    while (now_ns() < until_ns && !(done && done())) {
        int n = epoll_wait(ep, evs, 512, 1);
        for (int i = 0; i < n; i++) {
            struct lc *c = evs[i].data.ptr;
            if (c->st == DEAD) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                flush(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
    }
}

static struct lc **all;
static size_t nall;
/* Each run takes fresh source addresses, so ports left in TIME_WAIT by
 * the previous run never run this one out of ephemeral ports. */
static long ip_base;

/* Every connection dialled so far is open, or one has died (then waiting
 * longer is pointless: setup_check reports it). */
static bool all_open(void)
{
    for (size_t i = 0; i < nall; i++)
        if (all[i]->st != OPEN && all[i]->st != DEAD)
            return false;
    return true;
}

/* A connection that died during setup means the relay is refusing us (not
 * running, or a limit): fail now with the reason instead of timing out. */
static void setup_check(void)
{
    size_t dead = 0;
    for (size_t i = 0; i < nall; i++)
        dead += all[i]->st == DEAD;
    if (!dead)
        return;
    fprintf(stderr,
            "loadgen: %zu of %zu connections failed during setup (first: %s); is the relay "
            "listening on port %d, and are --max-connections, --max-phones-per-server, "
            "--rate-limit-burst and the fd "
            "limit high enough?\n",
            dead, nall, first_failure[0] ? first_failure : "unknown", opt.port);
    exit(1);
}

/* Dials binaries then their phones; in baseline mode each phone is paired
 * with one binary connection (the forwarder pairs in accept order). */
static void setup(int binaries, int phones_per)
{
    nall = 0;
    all = calloc((size_t)binaries * (size_t)(phones_per + 1) + (size_t)binaries * phones_per,
                 sizeof *all);
    for (int b = 0; b < binaries; b++) {
        char sid[32];
        snprintf(sid, sizeof sid, "bench-%d", b);
        struct lc *bin = NULL;
        for (int p = 0; p < phones_per; p++) {
            if (!bin || baseline()) {
                bin = dial(BINARY, b, sid, ip_base + (long)nall / 20000);
                all[nall++] = bin;
                run_loop(now_ns() + 2000000000ULL, all_open);
                setup_check();
            }
            struct lc *ph = dial(PHONE, b * phones_per + p, sid, ip_base + (long)nall / 20000);
            ph->bin = bin;
            all[nall++] = ph;
            /* clients arrive in waves, not all at once: at most 128
             * handshakes in flight, as a real population would */
            if (baseline() || nall % 128 == 0) {
                run_loop(now_ns() + 10000000000ULL, all_open);
                setup_check();
            }
        }
    }
    run_loop(now_ns() + 10000000000ULL, all_open);
    setup_check();
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1));
    return (double)lat[i] / 1000.0;
}

static long relay_rss_kib(void)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", opt.pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void scenario_rtt(void)
{
    setup(opt.binaries, opt.phones);
    size_t opened = 0;
    for (size_t i = 0; i < nall; i++)
        opened += all[i]->st == OPEN;
    uint64_t start = now_ns(), end = start + (uint64_t)(opt.duration * 1e9);
    if (opt.rate == 0) {
        for (size_t i = 0; i < nall; i++)
            if (all[i]->role == PHONE)
                phone_send(all[i]);
        run_loop(end, NULL);
    } else {
        /* open loop: every phone sends on its own schedule */
        size_t phones = nall - (size_t)(baseline() ? nall / 2 : (size_t)opt.binaries);
        uint64_t gap = (uint64_t)(1e9 * (double)phones / opt.rate);
        for (size_t i = 0; i < nall; i++)
            all[i]->next_ns = start + (uint64_t)(i * 7919) % (gap ? gap : 1);
        while (now_ns() < end) {
            uint64_t t = now_ns();
            for (size_t i = 0; i < nall; i++)
                if (all[i]->role == PHONE && all[i]->st == OPEN && t >= all[i]->next_ns) {
                    phone_send(all[i]);
                    all[i]->next_ns += gap;
                }
            run_loop(t + 200000, NULL);
        }
    }
    double secs = (double)(now_ns() - start) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("scenario=rtt mode=%s size=%d conns=%zu open=%zu rtt_per_s=%.0f msgs_per_s=%.0f "
           "bytes_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f sent=%llu\n",
           opt.mode, opt.size, nall, opened, (double)nlat / secs, 2.0 * (double)nlat / secs,
           2.0 * (double)nlat * (double)payload_len / secs, pct(0.5), pct(0.99), pct(0.999),
           (unsigned long long)sent_total);
}

static void scenario_idle(void)
{
    /* binaries with up to 1000 phones each (the relay runs uncapped) */
    int per = 1000, binaries = (opt.conns + per) / (per + 1);
    long before = relay_rss_kib();
    setup(binaries, per);
    size_t opened = 0;
    for (size_t i = 0; i < nall; i++)
        opened += all[i]->st == OPEN;
    run_loop(now_ns() + (uint64_t)(opt.duration * 1e9), NULL); /* across heartbeats */
    size_t alive = 0;
    for (size_t i = 0; i < nall; i++)
        alive += all[i]->st == OPEN;
    long after = relay_rss_kib();
    printf("scenario=idle conns=%zu open=%zu alive_after=%zu rss_before_kib=%ld rss_after_kib=%ld "
           "bytes_per_conn=%.0f\n",
           nall, opened, alive, before, after,
           alive ? (double)(after - before) * 1024.0 / (double)alive : 0.0);
}

/* claims: N binaries of distinct fresh server-ids, dialled in waves of
 * 128 handshakes, then held open for --duration. */
static void scenario_claims(void)
{
    all = calloc((size_t)opt.binaries, sizeof *all);
    uint64_t start = now_ns();
    for (int b = 0; b < opt.binaries; b++) {
        char sid[48];
        snprintf(sid, sizeof sid, "claim-%d-%d", (int)getpid(), b);
        long src = ip_base + (long)nall / 20000;
        all[nall++] = dial(BINARY, b, sid, src);
        if (nall % 128 == 0) {
            run_loop(now_ns() + 10000000000ULL, all_open);
            setup_check();
        }
    }
    run_loop(now_ns() + 10000000000ULL, all_open);
    setup_check();
    double upgraded = (double)(now_ns() - start) / 1e9;
    run_loop(now_ns() + (uint64_t)(opt.duration * 1e9), NULL);
    size_t alive = 0;
    for (size_t i = 0; i < nall; i++)
        alive += all[i]->st == OPEN;
    printf("scenario=claims binaries=%zu upgraded_s=%.3f alive_after=%zu\n", nall, upgraded, alive);
}

/* churn: 32 phones cycle independently through dial → upgrade → one
 * message through the binary and back → close. */
static void scenario_churn(void)
{
    enum { SLOTS = 32 };
    setup(1, 1);
    struct lc *bin = all[0], *slot[SLOTS] = {0};
    epoll_ctl(ep, EPOLL_CTL_DEL, all[1]->fd, NULL);
    close(all[1]->fd);
    uint64_t start = now_ns(), end = start + (uint64_t)(opt.duration * 1e9), upgrades = 0;
    long src = 1;
    uint64_t churn_failed = 0;
    bool sent[SLOTS] = {0};
    while (now_ns() < end && bin->st == OPEN) {
        for (int i = 0; i < SLOTS; i++) {
            struct lc *ph = slot[i];
            if (ph && ph->st == OPEN && !sent[i]) {
                phone_send(ph);
                sent[i] = true;
            }
            if (ph && !ph->done_msg && ph->st != DEAD)
                continue;
            if (ph) {
                upgrades += ph->done_msg;
                if (!ph->done_msg && ++churn_failed >= 4 * SLOTS && upgrades == 0) {
                    fprintf(stderr,
                            "loadgen: churn: %llu connections failed, none got through "
                            "(first: %s)\n",
                            (unsigned long long)churn_failed, first_failure);
                    exit(1);
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, ph->fd, NULL);
                close(ph->fd);
                free(ph->rbuf);
                free(ph->wbuf);
                free(ph);
            }
            slot[i] = dial(PHONE, i, "bench-0", 1000 + src++); /* a fresh source IP each */
            slot[i]->bin = bin;
            sent[i] = false;
        }
        run_loop(now_ns() + 200000, NULL);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    printf("scenario=churn upgrades=%llu upgrades_per_s=%.0f\n", (unsigned long long)upgrades,
           (double)upgrades / secs);
}

/* fanout: the binary learns each phone's conn id from a hello carrying the
 * phone's index, then streams to all of them round-robin as fast as the
 * relay takes frames. A reading phone is sent at most FAN_WINDOW frames
 * beyond what it has received (a real sender paces to its readers; without
 * this the load generator, which also does the reading, would overrun its
 * own phones). The stalled phone's window is twice the relay's default
 * 4 MiB phone backlog: the relay must cut it loose (1011 "phone backlog
 * full") without its siblings noticing, and the binary then stops sending
 * to it, as a real binary does once it reads the close notice (an unbounded
 * flood would only measure how fast the relay logs unknown conn ids). */
#define FAN_MAX            16
#define FAN_WINDOW         256
#define FAN_STALLED_WINDOW (8 * 1024 * 1024 / 1024)
static char fan_ids[FAN_MAX][96];
static bool fan_alive[FAN_MAX];
static uint64_t fan_sent[FAN_MAX];
static int fan_n;

static void fanout_binary_message(const char *m, size_t n)
{
    const char *id = memmem(m, n, "\"conn_id\":\"", 11);
    if (!id)
        return;
    id += 11;
    const char *e = memchr(id, '"', (size_t)(m + n - id));
    if (!e)
        return;
    size_t len = (size_t)(e - id) < 95 ? (size_t)(e - id) : 95;
    if (memmem(m, n, "\"close_code\"", 12)) { /* a notice: stop sending to it */
        for (int i = 0; i < FAN_MAX; i++)
            if (!strncmp(fan_ids[i], id, len) && fan_ids[i][len] == '\0')
                fan_alive[i] = false;
        return;
    }
    const char *ix = memmem(m, n, "\"i\":", 4);
    if (!ix)
        return;
    int k = atoi(ix + 4);
    if (k < 0 || k >= FAN_MAX || fan_ids[k][0])
        return;
    memcpy(fan_ids[k], id, len);
    fan_ids[k][len] = '\0';
    fan_alive[k] = true;
    fan_n++;
}

static bool fan_known(void)
{
    return fan_n == FAN_MAX;
}

static void scenario_fanout(void)
{
    bool stall = opt.rate > 0; /* --rate 1 marks one phone as never reading */
    setup(1, FAN_MAX);
    struct lc *bin = all[0];
    if (stall)
        all[1]->stalled = true;
    for (size_t i = 1; i < nall; i++) {
        char hello[32];
        int hl = snprintf(hello, sizeof hello, "{\"i\":%zu}", i - 1);
        send_frame(all[i], 1, hello, (size_t)hl, NULL, 0, NULL, 0);
    }
    run_loop(now_ns() + 5000000000ULL, fan_known);
    uint64_t start = now_ns(), end = start + (uint64_t)(opt.duration * 1e9);
    int next = 0;
    char head[160];
    while (now_ns() < end) {
        int skipped = 0;
        while (bin->wlen < 256 * 1024 && skipped < FAN_MAX) {
            int k = next++ % FAN_MAX;
            struct lc *ph = all[k + 1];
            uint64_t window = ph->stalled ? FAN_STALLED_WINDOW : FAN_WINDOW;
            if (!fan_alive[k] || fan_sent[k] - ph->received >= window) {
                skipped++;
                continue;
            }
            skipped = 0;
            int hl = snprintf(head, sizeof head, "{\"conn_id\":\"%s\",\"frame\":", fan_ids[k]);
            send_frame(bin, 1, head, (size_t)hl, payload, payload_len, "}", 1);
            fan_sent[k]++;
        }
        run_loop(now_ns() + 1000000, NULL);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    uint64_t fast = 0;
    for (size_t i = 2; i < nall; i++)
        fast += all[i]->received;
    int alive = 0;
    for (int k = 0; k < FAN_MAX; k++)
        alive += fan_alive[k];
    printf("scenario=fanout stalled=%d phones=%d alive_after=%d sibling_msgs_per_s=%.0f "
           "total_msgs_per_s=%.0f\n",
           stall, fan_n, alive, (double)fast / secs / (double)(nall - 2),
           (double)(fast + all[1]->received) / secs);
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"mode", 1, 0, 'm'},   {"scenario", 1, 0, 's'},
                                          {"port", 1, 0, 'p'},   {"binaries", 1, 0, 'b'},
                                          {"phones", 1, 0, 'n'}, {"size", 1, 0, 'z'},
                                          {"conns", 1, 0, 'c'},  {"duration", 1, 0, 'd'},
                                          {"rate", 1, 0, 'r'},   {"pid", 1, 0, 'P'},
                                          {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'm':
            opt.mode = optarg;
            break;
        case 's':
            opt.scenario = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'b':
            opt.binaries = atoi(optarg);
            break;
        case 'n':
            opt.phones = atoi(optarg);
            break;
        case 'z':
            opt.size = atoi(optarg);
            break;
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'P':
            opt.pid = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    struct rlimit rl = {1 << 20, 1 << 20};
    setrlimit(RLIMIT_NOFILE, &rl);
    ep = epoll_create1(0);
    ip_base = 1 + (long)(getpid() % 4096) * 64;
    /* an S-byte JSON object: {"seq":0,"pad":"xxxx…"} */
    payload_len = (size_t)(opt.size < 24 ? 24 : opt.size);
    payload = malloc(payload_len + 1);
    int h = snprintf(payload, payload_len + 1, "{\"seq\":0,\"pad\":\"");
    memset(payload + h, 'x', payload_len - (size_t)h - 2);
    memcpy(payload + payload_len - 2, "\"}", 2);
    if (!strcmp(opt.scenario, "rtt"))
        scenario_rtt();
    else if (!strcmp(opt.scenario, "idle"))
        scenario_idle();
    else if (!strcmp(opt.scenario, "churn"))
        scenario_churn();
    else if (!strcmp(opt.scenario, "fanout"))
        scenario_fanout();
    else if (!strcmp(opt.scenario, "claims"))
        scenario_claims();
    else
        return 2;
    return 0;
}
