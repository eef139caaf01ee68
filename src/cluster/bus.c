/* bus.c — one shard's data connection to the NATS bus (bus.h): cnats' libuv
 * adapter does the socket I/O on the shard's loop; a uv_check handle drains
 * the two sync subscriptions after every poll phase (bounded, with a
 * uv_idle keeping the loop from sleeping while messages wait); cnats'
 * connection callbacks, which run on its threads, are posted to the loop
 * through a small refcounted "sink". It deliberately does not parse,
 * sequence, retry or log: messages are opaque and every event goes up.
 * This is the one file that includes the adapter (it defines functions). */
/* The adapter first (it defines _GNU_SOURCE, also set by the build). It
 * defines these without prototypes of its own (-Wmissing-prototypes). */
#include <nats/nats.h>
#include <uv.h>
void natsLibuv_Init(void);
void natsLibuv_SetThreadLocalLoop(uv_loop_t *loop);
natsStatus natsLibuv_Attach(void **userData, void *loop, natsConnection *nc, natsSock socket);
natsStatus natsLibuv_Read(void *userData, bool add);
natsStatus natsLibuv_Write(void *userData, bool add);
#include <nats/adapters/libuv.h>
/* Exported by libnats but not in its headers: what its garbage collector
 * calls for a message (see msg_free). */
void natsMsg_free(void *object);

#include "cluster/bus.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/sockios.h>

#include "base/util.h"
#include "cluster/natsopt.h"

#define BUS_DETACH_WAIT_MS 1000 /* bus_close: how long cnats' detach may take */
#define SINK_RING          64   /* connection events waiting for the loop */

enum { SUB_SELF, SUB_ALL, SUBS };

enum bus_state {
    ST_OPEN,      /* delivering */
    ST_FLUSHING,  /* bus_close: waiting for cnats' buffer to be written and ACKed */
    ST_DETACHING, /* connection closed: waiting for the adapter's handles */
    ST_CLOSING,   /* our own handles are closing */
};

/* What cnats' threads share with the loop. It outlives the bus when cnats
 * still owes its closed callback (refs: the bus, and cnats until then). */
struct bus_sink {
    uv_mutex_t mu;
    uv_async_t *async; /* the bus's, NULL once that is closing */
    uint8_t ring[SINK_RING];
    unsigned head, n;
    bool detach; /* cnats asked the adapter to detach */
    int refs;
};

struct bus_atomics {
    _Atomic uint64_t msgs_in, bytes_in, msgs_out, bytes_out, disconnects, dropped;
};

struct bus {
    uv_loop_t *loop;
    natsConnection *nc;
    natsSubscription *sub[SUBS];
    int64_t seen_dropped[SUBS];
    struct bus_cbs cbs;
    void *ud;
    struct bus_sink *sink;
    natsLibuvEvents *nle; /* the adapter's state, set by the first attach */
    enum bus_state state;
    bool adapter_closed;
    bool up;             /* the loop's view: no DISCONNECTED since the last (re)connect */
    bool buffer_offline; /* bus_params.buffer_while_disconnected */
    bool flush_expired;  /* bus_close's BUS_CLOSE_FLUSH_MS are over */
    unsigned turn;       /* which subscription drains first */
    uv_check_t check;
    uv_idle_t idle;
    uv_async_t async;
    uv_timer_t timer;
    int handles; /* ours, still open */
    uint8_t *scratch;
    size_t scratch_cap;
    int64_t max_payload;
    struct bus_counters c;
    struct bus_atomics a;
    void (*done)(void *ud);
    void *done_ud;
};

static void close_step(struct bus *b);

__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

const char *bus_event_name(enum bus_event ev)
{
    static const char *const names[] = {"disconnected", "reconnected", "closed", "slow_consumer",
                                        "error"};

    return (unsigned)ev < ARRAY_LEN(names) ? names[ev] : "unknown";
}

/* ---- the sink: cnats' threads -> the loop ---- */

static void sink_release(struct bus_sink *k)
{
    uv_mutex_lock(&k->mu);
    bool last = --k->refs == 0;
    uv_mutex_unlock(&k->mu);
    if (last) {
        uv_mutex_destroy(&k->mu);
        free(k);
    }
}

/* Queues ev (or the detach request, ev < 0) and wakes the loop. A full ring
 * (a loop stalled through 64 events) keeps the newest in its last slot. */
static void sink_post(struct bus_sink *k, int ev)
{
    uv_mutex_lock(&k->mu);
    if (ev < 0)
        k->detach = true;
    else if (k->n < SINK_RING)
        k->ring[(k->head + k->n++) % SINK_RING] = (uint8_t)ev;
    else
        k->ring[(k->head + SINK_RING - 1) % SINK_RING] = (uint8_t)ev;
    if (k->async != NULL)
        uv_async_send(k->async);
    uv_mutex_unlock(&k->mu);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    sink_post(closure, BUS_DISCONNECTED);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    sink_post(closure, BUS_RECONNECTED);
}

/* cnats' last callback for a connection: it drops cnats' reference. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    sink_post(closure, BUS_CLOSED);
    sink_release(closure);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc, (void)sub;
    sink_post(closure, err == NATS_SLOW_CONSUMER ? BUS_SLOW_CONSUMER : BUS_ERROR);
}

/* ---- the adapter, wrapped so that the bus sees its state and its end ---- */

/* cnats passes `loop` through as we gave it: the bus. The adapter keeps one
 * natsLibuvEvents per connection across reconnects. */
static natsStatus on_attach(void **userData, void *loop, natsConnection *nc, natsSock fd)
{
    struct bus *b = loop;
    void *nle = b->nle;
    natsStatus s = natsLibuv_Attach(&nle, b->loop, nc, fd);

    if (s == NATS_OK) {
        if (b->nle == NULL)
            b->nle = nle; /* first attach: on the loop thread, before any other */
        *userData = b;
    }
    return s;
}

static natsStatus on_read(void *userData, bool add)
{
    struct bus *b = userData;

    return b->nle != NULL ? natsLibuv_Read(b->nle, add) : NATS_ILLEGAL_STATE;
}

static natsStatus on_write(void *userData, bool add)
{
    struct bus *b = userData;

    return b->nle != NULL ? natsLibuv_Write(b->nle, add) : NATS_ILLEGAL_STATE;
}

/* The connection is closed (from any thread). The loop closes the
 * adapter's handles itself (adapter_close), so that it knows when they are
 * gone; the adapter's own detach gives no word of it. */
static natsStatus on_detach(void *userData)
{
    sink_post(((struct bus *)userData)->sink, -1);
    return NATS_OK;
}

struct find {
    const uv_handle_t *h;
    bool found;
};

static void find_cb(uv_handle_t *h, void *arg)
{
    struct find *f = arg;

    f->found |= h == f->h;
}

/* As the adapter's finalCloseCb. */
static void adapter_free(struct bus *b)
{
    natsLibuvEvents *nle = b->nle;
    natsLibuvEvent *ev;

    while ((ev = nle->head) != NULL) {
        nle->head = ev->next;
        free(ev);
    }
    free(nle->handle);
    free(nle->scheduler);
    uv_mutex_destroy(nle->lock);
    free(nle->lock);
    free(nle);
    b->nle = NULL;
    b->adapter_closed = true;
    close_step(b);
}

static void on_poll_closed(uv_handle_t *h)
{
    adapter_free(h->data);
}

/* The poll handle is closed after the scheduler, as the adapter does. A
 * failed re-attach (uv_poll_init on a socket cnats already closed) leaves
 * an uninitialised handle: only one the loop knows is closed. */
static void on_scheduler_closed(uv_handle_t *h)
{
    struct bus *b = h->data;
    struct find f = {.h = (uv_handle_t *)b->nle->handle};

    if (f.h != NULL)
        uv_walk(b->loop, find_cb, &f);
    if (f.found && !uv_is_closing(f.h)) {
        b->nle->handle->data = b;
        uv_close((uv_handle_t *)b->nle->handle, on_poll_closed);
    } else {
        adapter_free(b);
    }
}

/* Applies what the adapter has queued from other threads (a re-attach
 * after a reconnect, poll changes) now, as its scheduler would at the next
 * poll. False once the adapter is closed or closing. */
static bool adapter_apply(struct bus *b)
{
    natsLibuvEvents *nle = b->nle;

    if (nle == NULL || b->adapter_closed || uv_is_closing((uv_handle_t *)nle->scheduler))
        return false;
    if (nle->handle != NULL && uv_is_closing((uv_handle_t *)nle->handle))
        return false; /* the loop is being torn down around us: nothing left to poll */
    for (int i = 0; i < 64; i++) {
        uv_mutex_lock(nle->lock);
        bool queued = nle->head != NULL;
        uv_mutex_unlock(nle->lock);
        if (!queued)
            break;
        uvAsyncCb(nle->scheduler);
    }
    return true;
}

/* On the loop, after cnats' detach: the adapter's queue, then its two
 * handles. */
static void adapter_close(struct bus *b)
{
    if (b->nle == NULL || b->adapter_closed || uv_is_closing((uv_handle_t *)b->nle->scheduler))
        return; /* gone, or its close callback is on the way */
    adapter_apply(b);
    b->nle->scheduler->data = b;
    uv_close((uv_handle_t *)b->nle->scheduler, on_scheduler_closed);
}

/* ---- receiving ---- */

static void mirror(struct bus *b)
{
    atomic_store_explicit(&b->a.msgs_in, b->c.msgs_in, memory_order_relaxed);
    atomic_store_explicit(&b->a.bytes_in, b->c.bytes_in, memory_order_relaxed);
    atomic_store_explicit(&b->a.msgs_out, b->c.msgs_out, memory_order_relaxed);
    atomic_store_explicit(&b->a.bytes_out, b->c.bytes_out, memory_order_relaxed);
    atomic_store_explicit(&b->a.disconnects, b->c.disconnects, memory_order_relaxed);
    atomic_store_explicit(&b->a.dropped, b->c.dropped, memory_order_relaxed);
}

static void emit(struct bus *b, enum bus_event ev)
{
    if (b->state == ST_OPEN && b->cbs.on_event != NULL)
        b->cbs.on_event(b->ud, ev);
}

/* cnats' dropped counters moved: one BUS_SLOW_CONSUMER per discovery,
 * whichever of the three signals (the counter seen while draining, NextMsg's
 * NATS_SLOW_CONSUMER, the error handler) comes first. */
static void check_dropped(struct bus *b)
{
    int64_t added = 0;

    for (int i = 0; i < SUBS; i++) {
        int64_t d = 0;
        if (b->sub[i] != NULL && natsSubscription_GetDropped(b->sub[i], &d) == NATS_OK &&
            d > b->seen_dropped[i]) {
            added += d - b->seen_dropped[i];
            b->seen_dropped[i] = d;
        }
    }
    if (added > 0) {
        b->c.dropped += (uint64_t)added;
        mirror(b);
        emit(b, BUS_SLOW_CONSUMER);
    }
}

/* natsMsg_Destroy hands every message to cnats' garbage-collector thread:
 * a lock, a condition signal and that thread's wake-up per message, which
 * made four futex calls and a cross-thread free of every message a shard
 * received (docs/performance.md, cluster mode). A message starts with
 * cnats' GC item {next, freeCb}, and freeCb is natsMsg_free for every
 * message cnats builds; where that word says so, the message is freed here,
 * on the loop that allocated it. Anything else (another layout, a message
 * not set up for collection) goes the documented way. */
static void msg_free(natsMsg *m)
{
    void *word[2];
    void (*const fn)(void *) = natsMsg_free;

    memcpy(word, m, sizeof word);
    if (memcmp(&word[1], &fn, sizeof fn) == 0)
        natsMsg_free(m);
    else
        natsMsg_Destroy(m);
}

/* Delivers up to budget messages of subscription i; returns how many it
 * took, and sets *more if some are left. GetPending first: NextMsg on an
 * empty subscription would record a thread-local error each time. */
static int drain_one(struct bus *b, int i, int budget, bool *more)
{
    int msgs = 0, bytes = 0, taken = 0;

    if (natsSubscription_GetPending(b->sub[i], &msgs, &bytes) != NATS_OK || msgs <= 0)
        return 0;
    check_dropped(b);
    while (taken < msgs && taken < budget && b->state == ST_OPEN) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, b->sub[i], 0); /* 0: never waits */
        if (s == NATS_SLOW_CONSUMER) {
            check_dropped(b);
            continue;
        }
        if (s == NATS_NO_RESPONDERS) { /* a request's "503"; cnats hands no message */
            taken++;
            continue;
        }
        if (s != NATS_OK)
            break;
        size_t len = (size_t)natsMsg_GetDataLength(m);
        b->c.msgs_in++;
        b->c.bytes_in += len;
        struct bus_msg bm = {.data = (const uint8_t *)natsMsg_GetData(m),
                             .len = len,
                             .subject = natsMsg_GetSubject(m),
                             .reply = natsMsg_GetReply(m),
                             .broadcast = i == SUB_ALL};
        b->cbs.on_msg(b->ud, &bm);
        msg_free(m);
        taken++;
    }
    if (taken < msgs)
        *more = true;
    return taken;
}

/* Both subscriptions, at most BUS_DRAIN_BUDGET messages, alternating which
 * goes first; true if messages are left for the next round. */
static bool drain(struct bus *b)
{
    int budget = BUS_DRAIN_BUDGET;
    bool more = false;

    b->turn ^= 1;
    for (int k = 0; k < SUBS && b->state == ST_OPEN; k++)
        budget -= drain_one(b, (int)((b->turn + (unsigned)k) % SUBS), budget, &more);
    mirror(b);
    return more;
}

static void on_idle(uv_idle_t *h)
{
    (void)h; /* its being active keeps the next poll from sleeping */
}

/* After every poll phase. Messages left over (budget spent) keep the idle
 * handle on, so the loop polls without sleeping and comes straight back:
 * sockets are still served, and nothing is stranded in a subscription. */
static void on_check(uv_check_t *h)
{
    struct bus *b = h->data;
    bool again = false;

    if (b->state == ST_OPEN)
        again = drain(b);
    else if (b->state == ST_FLUSHING)
        close_step(b);
    if (b->state == ST_CLOSING)
        return;
    if (again || b->state == ST_FLUSHING)
        uv_idle_start(&b->idle, on_idle);
    else
        uv_idle_stop(&b->idle);
}

static void handle_event(struct bus *b, enum bus_event ev)
{
    if (ev == BUS_DISCONNECTED) {
        b->up = false;
        b->c.disconnects++;
        mirror(b);
    } else if (ev == BUS_RECONNECTED) {
        b->up = true;
        b->max_payload = natsConnection_GetMaxPayload(b->nc);
    } else if (ev == BUS_CLOSED) {
        b->up = false;
    } else if (ev == BUS_SLOW_CONSUMER) {
        check_dropped(b); /* reports it unless draining already did */
        return;
    }
    emit(b, ev);
}

/* cnats' callbacks, in the order it made them, then a detach request. */
static void on_async(uv_async_t *h)
{
    struct bus *b = h->data;
    struct bus_sink *k = b->sink;
    uint8_t evs[SINK_RING];
    unsigned n;

    uv_mutex_lock(&k->mu);
    n = k->n;
    for (unsigned i = 0; i < n; i++)
        evs[i] = k->ring[(k->head + i) % SINK_RING];
    k->head = (k->head + n) % SINK_RING;
    k->n = 0;
    bool detach = k->detach;
    k->detach = false;
    uv_mutex_unlock(&k->mu);
    for (unsigned i = 0; i < n && b->state != ST_CLOSING; i++)
        handle_event(b, (enum bus_event)evs[i]);
    if (detach)
        adapter_close(b);
}

/* ---- opening ---- */

int bus_global_init(char *err, size_t cap)
{
    natsStatus s = nats_Open(-1);

    if (s != NATS_OK) {
        errf(err, cap, "cluster bus: cannot initialise the NATS library: %s",
             natsStatus_GetText(s));
        return -EIO;
    }
    natsLibuv_Init();
    return 0;
}

void bus_global_shutdown(void)
{
    nats_CloseAndWait(2000);
}

/* A subject we can subscribe to: non-empty, no spaces, no wildcards. */
static bool subject_ok(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 255)
        return false;
    return strpbrk(s, " \t\r\n*>") == NULL && s[0] != '.' && s[strlen(s) - 1] != '.' &&
           strstr(s, "..") == NULL;
}

/* A subscription may end in ".>" (every subject below the prefix). */
static bool sub_subject_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    char head[256];
    if (n > 2 && n < sizeof head && strcmp(s + n - 2, ".>") == 0) {
        memcpy(head, s, n - 2);
        head[n - 2] = '\0';
        s = head;
    }
    return subject_ok(s);
}

static natsStatus set_options(natsOptions *o, struct bus *b, const struct bus_params *p)
{
    natsStatus s = natsopt_common(o, p->urls, p->name, p->creds_file, p->tls);

    if (s == NATS_OK)
        s = natsOptions_SetEventLoop(o, b, on_attach, on_read, on_write, on_detach);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(o, true);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(o, 100, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(
            o, (int)(p->reconnect_buf ? p->reconnect_buf : BUS_RECONNECT_BUF));
    if (s == NATS_OK)
        s = natsOptions_SetNoEcho(o, true);
    if (s == NATS_OK && p->timeout_ms > 0)
        s = natsOptions_SetTimeout(o, p->timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, b->sink);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_reconnected, b->sink);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(o, on_closed, b->sink);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, on_error, b->sink);
    return s;
}

static int connect_bus(struct bus *b, const struct bus_params *p, char *err, size_t cap)
{
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);

    if (s == NATS_OK)
        s = set_options(o, b, p);
    if (s != NATS_OK) {
        errf(err, cap, "cluster bus options (--cluster-nats, credentials): %s%s%s",
             natsStatus_GetText(s), natsopt_last_error(s)[0] ? ": " : "", natsopt_last_error(s));
        natsOptions_Destroy(o);
        return -EINVAL;
    }
    natsLibuv_SetThreadLocalLoop(b->loop);
    s = natsConnection_Connect(&b->nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        errf(err, cap, "cluster bus connect (%s): %s%s%s", p->name ? p->name : "data",
             natsStatus_GetText(s), natsopt_last_error(s)[0] ? ": " : "", natsopt_last_error(s));
        return -EIO;
    }
    b->max_payload = natsConnection_GetMaxPayload(b->nc);
    return 0;
}

static void start_handles(struct bus *b)
{
    uv_check_init(b->loop, &b->check);
    uv_idle_init(b->loop, &b->idle);
    uv_async_init(b->loop, &b->async, on_async);
    uv_timer_init(b->loop, &b->timer);
    b->check.data = b->idle.data = b->async.data = b->timer.data = b;
    b->handles = 4;
    uv_check_start(&b->check, on_check);
    uv_mutex_lock(&b->sink->mu);
    b->sink->async = &b->async;
    uv_async_send(&b->async); /* whatever cnats posted before this */
    uv_mutex_unlock(&b->sink->mu);
}

static int subscribe(struct bus *b, const struct bus_params *p, char *err, size_t cap)
{
    const char *subj[SUBS] = {p->self_subject, p->all_subject};
    int limit[2] = {p->pending_msgs, p->pending_bytes};

    /* The broadcast subject first: the server applies a client's SUBs in
     * order, so once the shard's own subject hears something, both do. */
    for (int i = SUBS - 1; i >= 0; i--) {
        natsStatus s = natsConnection_SubscribeSync(&b->sub[i], b->nc, subj[i]);
        if (s == NATS_OK && (limit[0] != 0 || limit[1] != 0))
            s = natsSubscription_SetPendingLimits(b->sub[i], limit[0] ? limit[0] : 65536,
                                                  limit[1] ? limit[1] : 64 << 20);
        if (s != NATS_OK) {
            errf(err, cap, "cluster bus subscribe %s: %s", subj[i], natsStatus_GetText(s));
            return -EIO;
        }
    }
    return 0;
}

int bus_open(struct bus **out, uv_loop_t *loop, const struct bus_params *p,
             const struct bus_cbs *cbs, void *ud, char *err, size_t cap)
{
    *out = NULL;
    if (p->urls == NULL || !sub_subject_ok(p->self_subject) || !subject_ok(p->all_subject) ||
        strcmp(p->self_subject, p->all_subject) == 0 || cbs->on_msg == NULL ||
        p->reconnect_buf > INT32_MAX || p->pending_msgs < 0 || p->pending_bytes < 0) {
        errf(err, cap, "cluster bus: bad parameters (urls, subjects or limits)");
        return -EINVAL;
    }
    struct bus *b = xcalloc(1, sizeof *b);
    b->loop = loop;
    b->cbs = *cbs;
    b->ud = ud;
    b->up = true;
    b->buffer_offline = p->buffer_while_disconnected;
    b->sink = xcalloc(1, sizeof *b->sink);
    b->sink->refs = 2; /* ours, and cnats' until on_closed */
    if (uv_mutex_init(&b->sink->mu) != 0)
        abort();
    int rc = connect_bus(b, p, err, cap);
    if (rc < 0) { /* no connection: cnats will not call back */
        sink_release(b->sink);
        sink_release(b->sink);
        free(b);
        return rc;
    }
    start_handles(b);
    rc = subscribe(b, p, err, cap);
    if (rc < 0) {
        bus_close(b, NULL, NULL); /* finishes on the loop */
        return rc;
    }
    /* Hand the SUBs to the kernel now, not at the loop's first poll: a
     * loop busy right after bus_open would otherwise leave the server
     * unaware of us. One non-blocking write (cnats stops at EAGAIN). */
    natsConnection_ProcessWriteEvent(b->nc);
    *out = b;
    return 0;
}

/* ---- sending ---- */

static int status_errno(natsStatus s)
{
    switch (s) {
    case NATS_MAX_PAYLOAD:
        return -EMSGSIZE;
    case NATS_INSUFFICIENT_BUFFER:
        return -ENOBUFS;
    case NATS_CONNECTION_CLOSED:
    case NATS_DRAINING:
        return -EPIPE;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
        return -EINVAL;
    default:
        return -EIO;
    }
}

int bus_publish_request(struct bus *b, const char *subject, const char *reply,
                        const struct iovec *iov, int iovcnt)
{
    size_t len = 0;
    const void *data = iovcnt == 1 ? iov[0].iov_base : NULL;

    if (b->state != ST_OPEN)
        return -EPIPE;
    if (!b->up && !b->buffer_offline)
        return -ENOTCONN; /* cnats' reconnect thread may hold the lock for seconds */
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > (size_t)(b->max_payload > 0 ? b->max_payload : 0))
        return -EMSGSIZE;
    if (iovcnt > 1) {
        if (len > b->scratch_cap) {
            b->scratch = xrealloc(b->scratch, len);
            b->scratch_cap = len;
        }
        size_t off = 0;
        for (int i = 0; i < iovcnt; i++) {
            memcpy(b->scratch + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        data = b->scratch;
    }
    natsStatus s = reply != NULL
                       ? natsConnection_PublishRequest(b->nc, subject, reply, data, (int)len)
                       : natsConnection_Publish(b->nc, subject, data, (int)len);
    if (s != NATS_OK)
        return status_errno(s);
    b->c.msgs_out++;
    b->c.bytes_out += len;
    atomic_store_explicit(&b->a.msgs_out, b->c.msgs_out, memory_order_relaxed);
    atomic_store_explicit(&b->a.bytes_out, b->c.bytes_out, memory_order_relaxed);
    return 0;
}

int bus_publish(struct bus *b, const char *subject, const struct iovec *iov, int iovcnt)
{
    return bus_publish_request(b, subject, NULL, iov, iovcnt);
}

/* ---- state ---- */

size_t bus_buffered(const struct bus *b)
{
    int n = b->nc != NULL && b->up ? natsConnection_Buffered(b->nc) : -1;

    return n > 0 ? (size_t)n : 0;
}

bool bus_connected(const struct bus *b)
{
    return b->nc != NULL && b->up && natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

int64_t bus_max_payload(const struct bus *b)
{
    return b->max_payload;
}

const struct bus_counters *bus_counters(const struct bus *b)
{
    return &b->c;
}

void bus_counters_load(const struct bus *b, struct bus_counters *out)
{
    out->msgs_in = atomic_load_explicit(&b->a.msgs_in, memory_order_relaxed);
    out->bytes_in = atomic_load_explicit(&b->a.bytes_in, memory_order_relaxed);
    out->msgs_out = atomic_load_explicit(&b->a.msgs_out, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&b->a.bytes_out, memory_order_relaxed);
    out->disconnects = atomic_load_explicit(&b->a.disconnects, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&b->a.dropped, memory_order_relaxed);
}

/* ---- closing ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct bus *b = h->data;

    if (--b->handles > 0)
        return;
    void (*done)(void *) = b->done;
    void *ud = b->done_ud;
    sink_release(b->sink);
    free(b->scratch);
    free(b);
    if (done != NULL)
        done(ud);
}

static void on_detach_timeout(uv_timer_t *t)
{
    struct bus *b = t->data;

    if (b->state != ST_DETACHING || b->adapter_closed)
        return;
    if (b->nle == NULL) { /* never attached, or already freed */
        b->adapter_closed = true;
        close_step(b);
        return;
    }
    adapter_close(b); /* its last close callback drives close_step */
}

static void on_flush_timeout(uv_timer_t *t)
{
    struct bus *b = t->data;

    b->flush_expired = true;
    close_step(b);
}

/* Closes the connection (the server drops its subscriptions with it) and
 * frees the subscriptions; the detach arrives through the sink (at once
 * when this thread is the one closing). No explicit UNSUB: it would put
 * bytes in cnats' buffer, and natsConnection_Close then "flushes" them,
 * waiting 500 ms for a PONG that only this (waiting) loop could read. */
static void close_connection(struct bus *b)
{
    b->state = ST_DETACHING;
    uv_timer_stop(&b->timer);
    /* A re-attach still queued must meet an open socket, not the one the
     * close is about to shut: the adapter would poll a dead descriptor. */
    adapter_apply(b);
    /* Nor may the loop poll the descriptor cnats is about to close (epoll
     * on a closed fd aborts libuv): stop watching it first. */
    if (b->nle != NULL && b->nle->handle != NULL && !uv_is_closing((uv_handle_t *)b->nle->handle) &&
        uv_is_active((uv_handle_t *)b->nle->handle))
        uv_poll_stop(b->nle->handle);
    natsConnection_Close(b->nc);
    for (int i = 0; i < SUBS; i++) {
        natsSubscription_Destroy(b->sub[i]);
        b->sub[i] = NULL;
    }
    /* A connection closed while it was reconnecting has no socket to
     * detach: cnats never calls detach then, so do not wait for it. */
    uv_timer_start(&b->timer, on_detach_timeout, BUS_DETACH_WAIT_MS, 0);
}

static void close_handles(struct bus *b)
{
    b->state = ST_CLOSING;
    natsConnection_Destroy(b->nc);
    b->nc = NULL;
    uv_mutex_lock(&b->sink->mu);
    b->sink->async = NULL; /* cnats' threads no longer wake the loop */
    uv_mutex_unlock(&b->sink->mu);
    uv_close((uv_handle_t *)&b->check, on_handle_closed);
    uv_close((uv_handle_t *)&b->idle, on_handle_closed);
    uv_close((uv_handle_t *)&b->async, on_handle_closed);
    uv_close((uv_handle_t *)&b->timer, on_handle_closed);
}

/* Bytes the kernel still holds unacknowledged by the server. cnats closes
 * the socket while the server may be sending to us (a PONG, a broadcast);
 * unread input turns that close into a RST, which throws away whatever
 * the kernel had not sent yet. */
static int unacked(const struct bus *b)
{
    int n = 0;

    if (b->nle == NULL || ioctl(b->nle->socket, SIOCOUTQ, &n) != 0)
        return 0;
    return n;
}

/* The close sequence, driven by the check handle (the idle handle keeps it
 * coming while flushing), the flush timer, the async handle (detach) and
 * the adapter's last close callback. */
static void close_step(struct bus *b)
{
    if (b->state == ST_FLUSHING &&
        (b->flush_expired || !bus_connected(b) || (bus_buffered(b) == 0 && unacked(b) == 0)))
        close_connection(b);
    if (b->state == ST_DETACHING && b->adapter_closed)
        close_handles(b);
}

void bus_close(struct bus *b, void (*done)(void *ud), void *ud)
{
    if (b->state != ST_OPEN)
        return;
    b->done = done;
    b->done_ud = ud;
    b->state = ST_FLUSHING;
    uv_timer_start(&b->timer, on_flush_timeout, BUS_CLOSE_FLUSH_MS, 0);
    uv_idle_start(&b->idle, on_idle); /* the next check comes at once */
}
