/* test_bus.c — a shard's data connection (cluster/bus) against a real
 * nats-server it starts on a free loopback port (nats_testkit.h; skipped
 * without one). Each "node" is a bus on its own loop in its own thread, as
 * shards of different relays would be. Covers: 10,000 messages of 1 B ..
 * 256 KiB + 40 both ways at once, byte-exact and in order; broadcast to
 * every other bus and not the sender (NoEcho); prompt delivery to an idle
 * loop and no message stranded behind the drain budget; publishes that do
 * not wait on a frozen server; DISCONNECTED then RECONNECTED on the loop
 * thread across a server restart; bus_close connected (its buffer is still
 * sent, and acknowledged before the socket closes), from inside on_msg,
 * and disconnected (publishes refused, not buffered), leaving no handle
 * (uv_loop_close 0) and no leak; bad parameters, a dead server, a URL list;
 * -EMSGSIZE; a slow consumer reported once. Every wait has a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <nats/nats.h>

#include "cluster/bus.h"

#include "nats_testkit.h"

#define ALL_SUBJECT "pyry.t.all"
#define BIG         (256 * 1024 + 40)
#define N_SEQ       10000
#define CALL_MS     10000 /* a call posted to a loop must run within this */

struct node;
typedef void (*node_fn)(struct node *n, void *arg);

struct node {
    char name[16];
    char self[64];
    int pending_msgs;
    uv_loop_t loop;
    uv_async_t cmd;
    pthread_t thread;
    pthread_t tid; /* the loop's thread, as it sees itself */
    struct bus *bus;
    int open_rc;
    int close_rc;
    bool closed;   /* bus_close's done ran */
    bool finished; /* the thread's loop ended */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    node_fn fn;
    void *arg;
    bool fn_pending, fn_done;
    bool seq_mode;             /* on_msg checks the sequence content */
    _Atomic bool close_on_msg; /* on_msg calls bus_close */
    _Atomic uint64_t got_self, got_all, bad, last_len;
    _Atomic int64_t last_ms;
    _Atomic bool probed;     /* a "probe" from the test thread arrived */
    _Atomic uint64_t probes; /* how many (counted by the bus, not here) */
    int events[64];
    int nev;
    bool wrong_thread;
    struct pump *pump;
};

static struct {
    struct nats_testsrv ns;
    const char *bin;
    bool skip;
    natsConnection *probe; /* the test thread's own plain connection */
} srv;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the message sequence of test 1 ---- */

static size_t seq_size(uint64_t seq)
{
    if (seq == 0)
        return 1;
    if (seq == 1 || seq == N_SEQ - 1)
        return BIG;
    if (seq % 97 == 0)
        return 40 + (size_t)((seq * 7919) % (256 * 1024 + 1));
    return 1 + (size_t)((seq * 37) % 2000);
}

static void seq_fill(uint64_t seq, uint8_t *buf, size_t len)
{
    for (size_t j = 0; j < len; j++)
        buf[j] = (uint8_t)(seq * 131 + j * 7 + (j >> 9));
}

/* ---- a node: a bus on a loop on a thread ---- */

static void on_closed(void *ud);

static void on_msg(void *ud, const struct bus_msg *m)
{
    struct node *n = ud;
    static _Thread_local uint8_t want[BIG];
    const uint8_t *data = m->data;
    size_t len = m->len;
    bool broadcast = m->broadcast;

    if (!broadcast && len == 5 && memcmp(data, "probe", 5) == 0) {
        atomic_store(&n->probed, true); /* not counted */
        atomic_fetch_add(&n->probes, 1);
        return;
    }
    if (broadcast) {
        atomic_fetch_add(&n->got_all, 1);
    } else {
        uint64_t seq = atomic_load(&n->got_self);
        if (n->seq_mode) {
            size_t wl = seq_size(seq);
            seq_fill(seq, want, wl);
            if (len != wl || memcmp(data, want, len) != 0)
                atomic_fetch_add(&n->bad, 1);
        }
        atomic_store(&n->got_self, seq + 1);
    }
    atomic_store(&n->last_len, len);
    atomic_store(&n->last_ms, now_ms());
    if (atomic_exchange(&n->close_on_msg, false)) {
        bus_close(n->bus, on_closed, n);
        uv_close((uv_handle_t *)&n->cmd, NULL);
    }
}

static void on_event(void *ud, enum bus_event ev)
{
    struct node *n = ud;

    pthread_mutex_lock(&n->mu);
    if (!pthread_equal(pthread_self(), n->tid))
        n->wrong_thread = true;
    if (n->nev < 64)
        n->events[n->nev++] = ev;
    pthread_mutex_unlock(&n->mu);
}

static void on_cmd(uv_async_t *h)
{
    struct node *n = h->data;

    pthread_mutex_lock(&n->mu);
    node_fn fn = n->fn_pending ? n->fn : NULL;
    void *arg = n->arg;
    n->fn_pending = false;
    pthread_mutex_unlock(&n->mu);
    if (fn == NULL)
        return;
    fn(n, arg);
    pthread_mutex_lock(&n->mu);
    n->fn_done = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static void *node_main(void *arg)
{
    struct node *n = arg;
    char err[BUS_ERR_MAX] = "";
    struct bus_params p = {.urls = srv.ns.url,
                           .name = n->name,
                           .self_subject = n->self,
                           .all_subject = ALL_SUBJECT,
                           .pending_msgs = n->pending_msgs};
    struct bus_cbs cbs = {.on_msg = on_msg, .on_event = on_event};

    n->tid = pthread_self();
    uv_loop_init(&n->loop);
    uv_async_init(&n->loop, &n->cmd, on_cmd);
    n->cmd.data = n;
    int rc = bus_open(&n->bus, &n->loop, &p, &cbs, n, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "test_bus: %s: %s\n", n->name, err);
        uv_close((uv_handle_t *)&n->cmd, NULL);
    }
    pthread_mutex_lock(&n->mu);
    n->open_rc = rc;
    n->fn_done = true; /* the open is the first "call" */
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&n->loop);
    pthread_mutex_lock(&n->mu);
    n->close_rc = rc;
    n->finished = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

/* Waits (bounded) for *flag under n->mu. */
static bool wait_flag(struct node *n, bool *flag, int ms)
{
    struct timespec dl;
    bool ok;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&n->mu);
    while (!*flag && pthread_cond_timedwait(&n->cv, &n->mu, &dl) == 0)
        ;
    ok = *flag;
    pthread_mutex_unlock(&n->mu);
    return ok;
}

static struct node *node_start(const char *name, int pending_msgs)
{
    struct node *n = calloc(1, sizeof *n);

    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->self, sizeof n->self, "pyry.t.s.%s.0", name);
    n->pending_msgs = pending_msgs;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    pthread_create(&n->thread, NULL, node_main, n);
    assert_true(wait_flag(n, &n->fn_done, CALL_MS));
    assert_int_equal(n->open_rc, 0);
    /* Until the server applied the SUBs, a peer's messages go nowhere. */
    for (int64_t end = now_ms() + 5000; !atomic_load(&n->probed) && now_ms() < end;) {
        natsConnection_PublishString(srv.probe, n->self, "probe");
        natsConnection_Flush(srv.probe);
        for (int i = 0; i < 20 && !atomic_load(&n->probed); i++)
            usleep(1000);
    }
    assert_true(atomic_load(&n->probed));
    return n;
}

/* Posts fn to n's loop; waits for it to have run when wait. */
static void node_post(struct node *n, node_fn fn, void *arg, bool wait)
{
    pthread_mutex_lock(&n->mu);
    n->fn = fn;
    n->arg = arg;
    n->fn_pending = true;
    n->fn_done = false;
    pthread_mutex_unlock(&n->mu);
    uv_async_send(&n->cmd);
    if (wait)
        assert_true(wait_flag(n, &n->fn_done, CALL_MS));
}

static void node_call(struct node *n, node_fn fn, void *arg)
{
    node_post(n, fn, arg, true);
}

static void on_closed(void *ud)
{
    struct node *n = ud;
    n->closed = true; /* read after the join */
}

static void do_stop(struct node *n, void *arg)
{
    (void)arg;
    bus_close(n->bus, on_closed, n);
    uv_close((uv_handle_t *)&n->cmd, NULL);
}

/* bus_close, then the loop must end by itself with nothing left open. */
static void node_stop(struct node *n)
{
    node_post(n, do_stop, NULL, false);
    assert_true(wait_flag(n, &n->finished, CALL_MS));
    pthread_join(n->thread, NULL);
    assert_true(n->closed);
    assert_int_equal(n->close_rc, 0);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}

static bool wait_count(_Atomic uint64_t *v, uint64_t want, int ms)
{
    int64_t end = now_ms() + ms;

    while (atomic_load(v) < want && now_ms() < end)
        usleep(1000);
    return atomic_load(v) >= want;
}

static int count_events(struct node *n, enum bus_event ev)
{
    int c = 0;

    pthread_mutex_lock(&n->mu);
    for (int i = 0; i < n->nev; i++)
        c += n->events[i] == (int)ev;
    pthread_mutex_unlock(&n->mu);
    return c;
}

/* ---- calls run on a node's loop ---- */

struct pub {
    const char *subject;
    size_t len;    /* bytes each */
    int count;     /* messages */
    int rc;        /* of the last publish */
    int64_t took;  /* ms for all of them */
    int64_t worst; /* ms for the slowest one */
    size_t buffered;
};

static void do_publish(struct node *n, void *arg)
{
    struct pub *p = arg;
    uint8_t *buf = calloc(1, p->len + 1);
    int64_t t0 = now_ms();

    for (int i = 0; i < p->count; i++) {
        struct iovec iov[2] = {{buf, p->len / 2}, {buf + p->len / 2, p->len - p->len / 2}};
        int64_t t1 = now_ms();
        p->rc = bus_publish(n->bus, p->subject, iov, 2);
        if (now_ms() - t1 > p->worst)
            p->worst = now_ms() - t1;
        if (p->rc != 0)
            break;
    }
    p->took = now_ms() - t0;
    p->buffered = bus_buffered(n->bus);
    free(buf);
}

static void publish(struct node *n, const char *subject, size_t len, int count)
{
    struct pub p = {.subject = subject, .len = len, .count = count};

    node_call(n, do_publish, &p);
    assert_int_equal(p.rc, 0);
}

static void do_sleep(struct node *n, void *arg)
{
    (void)n;
    usleep((useconds_t)(intptr_t)arg * 1000);
}

static void do_buffered(struct node *n, void *arg)
{
    *(size_t *)arg = bus_buffered(n->bus);
}

/* The sequence pump: an idle handle publishing the next messages while
 * cnats holds under 2 MiB. */
struct pump {
    uv_idle_t idle;
    struct node *n;
    const char *to;
    uint64_t next;
    uint8_t *buf;
    int rc;
};

static void pump_closed(uv_handle_t *h)
{
    struct pump *p = h->data;
    free(p->buf);
    p->buf = NULL;
}

static void on_pump(uv_idle_t *h)
{
    struct pump *p = h->data;

    for (int i = 0; i < 64 && p->next < N_SEQ && bus_buffered(p->n->bus) < (2u << 20); i++) {
        size_t len = seq_size(p->next);
        seq_fill(p->next, p->buf, len);
        size_t cut = len > 40 ? 40 : len;
        struct iovec iov[2] = {{p->buf, cut}, {p->buf + cut, len - cut}};
        int rc = bus_publish(p->n->bus, p->to, iov, len > cut ? 2 : 1);
        if (rc != 0) {
            p->rc = rc;
            break;
        }
        p->next++;
    }
    if (p->next == N_SEQ || p->rc != 0)
        uv_close((uv_handle_t *)&p->idle, pump_closed);
}

static void do_pump(struct node *n, void *arg)
{
    struct pump *p = arg;

    p->n = n;
    p->buf = malloc(BIG);
    uv_idle_init(&n->loop, &p->idle);
    p->idle.data = p;
    uv_idle_start(&p->idle, on_pump);
}

/* ---- tests ---- */

static int group_setup(void **state)
{
    (void)state;
    srv.bin = nats_test_find_server();
    if (srv.bin == NULL) {
        fprintf(stderr, "test_bus: no nats-server ($NATS_SERVER_BIN, PATH, /usr/sbin): "
                        "skipping every test\n");
        srv.skip = true;
        return 0;
    }
    char err[BUS_ERR_MAX];
    if (bus_global_init(err, sizeof err) < 0) {
        fprintf(stderr, "test_bus: %s\n", err);
        return -1;
    }
    if (nats_test_start(&srv.ns, srv.bin, "test_bus", false) < 0)
        return -1;
    natsOptions *o = NULL; /* back within 50 ms of a server restart */
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, srv.ns.url);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 50);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsConnection_Connect(&srv.probe, o);
    natsOptions_Destroy(o);
    return s == NATS_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    natsConnection_Destroy(srv.probe);
    nats_test_stop(&srv.ns);
    if (!srv.skip)
        bus_global_shutdown();
    return 0;
}

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (srv.skip)                                                                              \
            skip();                                                                                \
    } while (0)

/* NextMsg with timeout 0 on an empty sync subscription returns at once
 * (sub.c: only timeout > 0 waits), which the drain relies on. */
static void test_nextmsg_zero_never_waits(void **state)
{
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    natsMsg *m = NULL;

    (void)state;
    NEED_SERVER();
    assert_int_equal(natsConnection_ConnectTo(&nc, srv.ns.url), NATS_OK);
    assert_int_equal(natsConnection_SubscribeSync(&sub, nc, "pyry.t.empty"), NATS_OK);
    int64_t t0 = now_ms();
    for (int i = 0; i < 1000; i++)
        assert_int_equal(natsSubscription_NextMsg(&m, sub, 0), NATS_TIMEOUT);
    assert_true(now_ms() - t0 < 500);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
}

static void on_msg_none(void *ud, const struct bus_msg *m)
{
    (void)ud, (void)m;
}

static void on_done_flag(void *ud)
{
    *(bool *)ud = true;
}

/* Parameters are checked; a dead server is -EIO in time with a sentence;
 * a comma-separated list with a dead server in it still connects (cnats'
 * natsOptions_SetURL would take the list for one URL); the loop is left
 * with nothing open either way. On the test's own thread and loop. */
static void test_open_params_and_url_list(void **state)
{
    uv_loop_t loop;
    struct bus *b = NULL;
    char err[BUS_ERR_MAX] = "", urls[160], dead[64];
    struct bus_cbs cbs = {.on_msg = on_msg_none};
    struct bus_params p = {.urls = srv.ns.url,
                           .self_subject = "pyry.t.s.x.*",
                           .all_subject = ALL_SUBJECT,
                           .timeout_ms = 500};
    bool done = false;

    (void)state;
    NEED_SERVER();
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(bus_open(&b, &loop, &p, &cbs, NULL, err, sizeof err), -EINVAL);
    p.self_subject = ALL_SUBJECT;
    assert_int_equal(bus_open(&b, &loop, &p, &cbs, NULL, err, sizeof err), -EINVAL);
    p.self_subject = "pyry.t.s.x.0";
    snprintf(dead, sizeof dead, "nats://127.0.0.1:%d", nats_test_free_port());
    p.urls = dead;
    int64_t t0 = now_ms();
    assert_int_equal(bus_open(&b, &loop, &p, &cbs, NULL, err, sizeof err), -EIO);
    assert_true(now_ms() - t0 < 3000);
    assert_non_null(strstr(err, "cluster bus connect"));
    assert_null(b);
    snprintf(urls, sizeof urls, "%s, %s", dead, srv.ns.url);
    p.urls = urls;
    assert_int_equal(bus_open(&b, &loop, &p, &cbs, NULL, err, sizeof err), 0);
    assert_true(bus_connected(b));
    bus_close(b, on_done_flag, &done);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(done);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_sequence_both_ways(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a1", 0), *b = node_start("b1", 0);
    struct pump pa = {.to = b->self}, pb = {.to = a->self};

    a->seq_mode = b->seq_mode = true;
    node_call(a, do_pump, &pa);
    node_call(b, do_pump, &pb);
    assert_true(wait_count(&b->got_self, N_SEQ, 15000));
    assert_true(wait_count(&a->got_self, N_SEQ, 15000));
    usleep(50 * 1000); /* nothing more may come */
    assert_int_equal(pa.rc, 0);
    assert_int_equal(pb.rc, 0);
    assert_int_equal(atomic_load(&a->got_self), N_SEQ);
    assert_int_equal(atomic_load(&b->got_self), N_SEQ);
    assert_int_equal(atomic_load(&a->bad), 0);
    assert_int_equal(atomic_load(&b->bad), 0);
    assert_int_equal(atomic_load(&a->got_all) + atomic_load(&b->got_all), 0);
    struct bus_counters c;
    bus_counters_load(a->bus, &c);
    assert_int_equal(c.msgs_out, N_SEQ);
    assert_int_equal(c.msgs_in, N_SEQ + atomic_load(&a->probes));
    assert_int_equal(c.dropped, 0);
    node_stop(a);
    node_stop(b);
}

static void test_broadcast(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a2", 0), *b = node_start("b2", 0), *c = node_start("c2", 0);

    publish(a, ALL_SUBJECT, 100, 50);
    assert_true(wait_count(&b->got_all, 50, 5000));
    assert_true(wait_count(&c->got_all, 50, 5000));
    publish(b, c->self, 7, 1); /* a marker behind the broadcasts, on c's own subject */
    assert_true(wait_count(&c->got_self, 1, 5000));
    usleep(100 * 1000);
    assert_int_equal(atomic_load(&a->got_all), 0); /* NoEcho */
    assert_int_equal(atomic_load(&a->got_self), 0);
    assert_int_equal(atomic_load(&b->got_all), 50);
    assert_int_equal(atomic_load(&b->got_self), 0);
    assert_int_equal(atomic_load(&c->got_all), 50);
    assert_int_equal(atomic_load(&c->last_len), 7);
    node_stop(a);
    node_stop(b);
    node_stop(c);
}

/* An idle loop (no traffic, no timers of its own) wakes for one message;
 * a burst larger than what one check may deliver, landing while the loop
 * was busy, is delivered at once, not one budget per ping. */
static void test_idle_delivery(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a3", 0), *b = node_start("b3", 0);

    usleep(300 * 1000);
    int64_t t0 = now_ms();
    publish(a, b->self, 10, 1);
    assert_true(wait_count(&b->got_self, 1, 2000));
    assert_true(atomic_load(&b->last_ms) - t0 < 200);

    node_post(b, do_sleep, (void *)(intptr_t)300, false);
    usleep(20 * 1000);
    publish(a, b->self, 0, 20000);
    t0 = now_ms();
    assert_true(wait_count(&b->got_self, 20001, 5000));
    assert_true(now_ms() - t0 < 900);
    node_stop(a);
    node_stop(b);
}

/* A frozen server: 20 MiB of publishes return while it is still frozen
 * (a publish that waited on it could not), into cnats' buffer, and leave
 * with the server's return. Frozen well under 3 s: the 1 s pings would
 * call the connection stale after 2 unanswered. */
static void test_publish_never_waits(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a4", 0), *b = node_start("b4", 0);
    struct pub p = {.subject = b->self, .len = 256 * 1024, .count = 80};
    size_t later = 0;

    nats_test_freeze(&srv.ns);
    node_call(a, do_publish, &p);
    usleep(200 * 1000);
    node_call(a, do_buffered, &later);
    kill(srv.ns.pid, SIGCONT);
    fprintf(stderr,
            "test_bus: 20 MiB published in %lld ms (slowest %lld ms), %zu buffered, "
            "%zu after 200 ms\n",
            (long long)p.took, (long long)p.worst, p.buffered, later);
    assert_int_equal(p.rc, 0);
    assert_true(p.took < 2000); /* CPU only (cnats grows its buffer by 10%) */
    assert_true(p.worst < 500);
    assert_true(p.buffered >= 20u << 20);
    assert_true(later > 0); /* the kernel took some, not all */
    assert_true(wait_count(&b->got_self, 80, 10000));
    node_call(a, do_buffered, &later);
    assert_int_equal(later, 0);
    node_stop(a);
    node_stop(b);
}

static bool saw_in_order(struct node *n, enum bus_event first, enum bus_event then)
{
    bool seen_first = false, ok = false;

    pthread_mutex_lock(&n->mu);
    for (int i = 0; i < n->nev; i++) {
        if (n->events[i] == (int)first)
            seen_first = true;
        else if (n->events[i] == (int)then && seen_first)
            ok = true;
    }
    pthread_mutex_unlock(&n->mu);
    return ok;
}

static bool wait_events(struct node *n, enum bus_event first, enum bus_event then, int ms)
{
    int64_t end = now_ms() + ms;

    while (!saw_in_order(n, first, then) && now_ms() < end)
        usleep(5000);
    return saw_in_order(n, first, then);
}

/* Publishes every 50 ms until n has received `want` on the counter. */
static bool publish_until(struct node *from, const char *subject, _Atomic uint64_t *v,
                          uint64_t want, int ms)
{
    int64_t end = now_ms() + ms;

    while (atomic_load(v) < want && now_ms() < end) {
        publish(from, subject, 3, 1);
        wait_count(v, want, 50);
    }
    return atomic_load(v) >= want;
}

static void test_server_restart(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a5", 0), *b = node_start("b5", 0);

    assert_int_equal(nats_test_restart(&srv.ns, srv.bin), 0);
    assert_true(wait_events(a, BUS_DISCONNECTED, BUS_RECONNECTED, 10000));
    assert_true(wait_events(b, BUS_DISCONNECTED, BUS_RECONNECTED, 10000));
    assert_false(a->wrong_thread);
    assert_false(b->wrong_thread);
    pthread_mutex_lock(&a->mu);
    int first = a->events[0];
    pthread_mutex_unlock(&a->mu);
    assert_int_equal(first, BUS_DISCONNECTED);
    struct bus_counters c;
    bus_counters_load(a->bus, &c);
    assert_int_equal(c.disconnects, 1);
    assert_true(publish_until(a, b->self, &b->got_self, 1, 5000));
    assert_true(publish_until(b, ALL_SUBJECT, &a->got_all, 1, 5000));
    node_stop(a);
    node_stop(b);
}

static void do_publish_then_close(struct node *n, void *arg)
{
    do_publish(n, arg);
    bus_close(n->bus, on_closed, n);
    uv_close((uv_handle_t *)&n->cmd, NULL);
}

/* Closing while connected sends what is still buffered; closing while
 * disconnected ends too. Both leave the loop with nothing open. */
static void test_close(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a6", 0), *b = node_start("b6", 0);
    struct pub p = {.subject = b->self, .len = 1000, .count = 100};

    node_post(a, do_publish_then_close, &p, false);
    assert_true(wait_flag(a, &a->finished, CALL_MS));
    pthread_join(a->thread, NULL);
    assert_true(a->closed);
    assert_int_equal(a->close_rc, 0);
    assert_int_equal(p.rc, 0);
    wait_count(&b->got_self, 100, 5000); /* all of them: the close waits for their ACKs */
    assert_int_equal(atomic_load(&b->got_self), 100);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);

    struct node *c = node_start("c6", 0); /* closes from inside on_msg */
    c->close_on_msg = true;
    publish(b, c->self, 10, 5);
    assert_true(wait_flag(c, &c->finished, CALL_MS));
    pthread_join(c->thread, NULL);
    assert_true(c->closed);
    assert_int_equal(c->close_rc, 0);
    assert_int_equal(atomic_load(&c->got_self), 1);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);

    nats_test_kill(&srv.ns);
    for (int64_t end = now_ms() + 5000; count_events(b, BUS_DISCONNECTED) == 0 && now_ms() < end;)
        usleep(5000);
    assert_int_equal(count_events(b, BUS_DISCONNECTED), 1);
    struct pub q = {.subject = "pyry.t.s.a6.0", .len = 10, .count = 1};
    node_call(b, do_publish, &q); /* refused at once: see bus.h, BLOCKING */
    assert_int_equal(q.rc, -ENOTCONN);
    assert_int_equal(q.buffered, 0);
    int64_t t0 = now_ms();
    node_stop(b);
    assert_true(now_ms() - t0 < 3000);
    assert_int_equal(nats_test_restart(&srv.ns, srv.bin), 0);
}

struct big {
    int rc_over, rc_max;
    uint64_t out_before, out_after;
    int64_t max;
};

static void do_big(struct node *n, void *arg)
{
    struct big *g = arg;
    g->max = bus_max_payload(n->bus);
    size_t len = (size_t)g->max + 1;
    uint8_t *buf = calloc(1, len);
    struct iovec iov[2] = {{buf, 10}, {buf + 10, len - 10}};

    g->out_before = bus_counters(n->bus)->msgs_out;
    g->rc_over = bus_publish(n->bus, "pyry.t.s.b7.0", iov, 2);
    g->out_after = bus_counters(n->bus)->msgs_out;
    iov[1].iov_len = len - 11;
    g->rc_max = bus_publish(n->bus, "pyry.t.s.b7.0", iov, 2);
    free(buf);
}

static void test_too_large(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a7", 0), *b = node_start("b7", 0);
    struct big g = {0};

    node_call(a, do_big, &g);
    assert_true(g.max >= 1024 * 1024);
    assert_int_equal(g.rc_over, -EMSGSIZE);
    assert_int_equal(g.out_after, g.out_before);
    assert_int_equal(g.rc_max, 0);
    assert_true(wait_count(&b->got_self, 1, 5000));
    usleep(100 * 1000);
    assert_int_equal(atomic_load(&b->got_self), 1); /* only the one that fit */
    assert_int_equal(atomic_load(&b->last_len), g.max);
    node_stop(a);
    node_stop(b);
}

/* b keeps at most 10 messages per subscription; while its loop is busy,
 * 100 arrive: cnats keeps 10, drops 90, and the bus says so once. */
static void test_slow_consumer(void **state)
{
    (void)state;
    NEED_SERVER();
    struct node *a = node_start("a8", 0), *b = node_start("b8", 10);

    node_post(b, do_sleep, (void *)(intptr_t)300, false);
    usleep(20 * 1000);
    publish(a, b->self, 20, 100);
    assert_true(wait_count(&b->got_self, 10, 5000));
    usleep(400 * 1000);
    assert_int_equal(atomic_load(&b->got_self), 10);
    struct bus_counters c;
    bus_counters_load(b->bus, &c);
    assert_int_equal(c.dropped, 90);
    assert_int_equal(count_events(b, BUS_SLOW_CONSUMER), 1);
    node_stop(a);
    node_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nextmsg_zero_never_waits),
        cmocka_unit_test(test_open_params_and_url_list),
        cmocka_unit_test(test_sequence_both_ways),
        cmocka_unit_test(test_broadcast),
        cmocka_unit_test(test_idle_delivery),
        cmocka_unit_test(test_publish_never_waits),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_slow_consumer),
        cmocka_unit_test(test_server_restart),
        cmocka_unit_test(test_close),
    };
    if (getenv("TEST_BUS_FILTER") != NULL) /* e.g. "test_close" while debugging */
        cmocka_set_test_filter(getenv("TEST_BUS_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
