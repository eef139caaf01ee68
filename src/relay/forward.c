/* forward.c — the two forwarders (docs/features/forwarding.md): a phone's message is checked
 * as JSON and sent to its binary wrapped as {"conn_id":…,"frame":<bytes>}
 * without re-encoding; a binary's envelope is scanned once and its frame
 * bytes go verbatim to the addressed phone, or a close directive closes it.
 * Each phone has a byte budget; a slow binary pauses its phones' reading.
 * Frame contents are never logged or inspected beyond JSON structure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/forward.h"

#include "base/log.h"
#include "cluster/busmsg.h"
#include "codec/envelope.h"
#include "codec/json.h"
#include "net/conn.h"
#include "net/server.h"
#include "net/shard.h"
#include "relay/registry.h"
#include "relay/relay_ctl.h"
#include "relay/wake.h"

#define ITEM_OVERHEAD 64 /* per queued item, as the reference outbox (#154) */

static void log_peer(enum log_level lvl, const char *msg, const struct peer *p, const char *err)
{
    LOGF(lvl, msg, LOG_STRN("server_id", p->server_id, p->server_id_len),
         LOG_STRN("conn_id", p->conn_id, p->conn_id_len), LOG_STR("err", err));
}

/* The envelope prefix is fixed per phone: built once, on first use. */
static void ensure_wrap(struct peer *p)
{
    if (p->wrap)
        return;
    size_t cap = p->conn_id_len * 6 + 32;
    p->wrap = xmalloc(cap);
    p->wrap_len = (uint32_t)envelope_wrap_prefix(p->wrap, cap, p->conn_id, p->conn_id_len);
}

static void pause_phone(struct reg_phone *rp, void *arg)
{
    struct peer *p = CONTAINER_OF(rp, struct peer, rp);
    if (p->stub) /* a phone on another node: its node pauses it (XOFF/XON) */
        p->relay->sh->stub_pause(p, *(const bool *)arg);
    else
        conn_pause_reading(p->conn, *(const bool *)arg);
}

static void set_phones_paused(struct peer *b, bool pause)
{
    b->phones_paused = pause;
    registry_each_phone(&b->rb, pause_phone, &pause);
}

void forward_binary_drained(struct peer *b)
{
    set_phones_paused(b, false);
}

/* ---- per-server-id bandwidth (--max-bytes-per-second-per-server) ---------
 * Every byte a server-id's binary and phones send through the relay, both
 * ways together, is charged to a token bucket on its binary (all of that
 * traffic passes through the binary; burst: one second's worth). Over the
 * limit, the relay stops reading every socket of the server-id until the
 * bucket has bytes again: TCP pushes back, nothing is dropped. A binary
 * that reconnects starts with a full bucket. */

struct bw_bucket {
    struct list link;   /* relay->throttled while throttled */
    struct peer *owner; /* the binary */
    int64_t tokens;     /* bytes; negative after a message bigger than what was left */
    uint64_t stamp;     /* loop ms of the last refill */
    uint64_t since;     /* loop ms the throttle began */
    bool throttled;
};

static uint64_t bw_rate(const struct relay *r)
{
    return (uint64_t)r->srv->cfg->max_bytes_per_second_per_server;
}

static void bw_refill(struct bw_bucket *bw, uint64_t rate, uint64_t now)
{
    uint64_t add = (now - bw->stamp) * rate / 1000;
    if (!add)
        return;
    if (bw->tokens + (int64_t)add >= (int64_t)rate) {
        bw->tokens = (int64_t)rate;
        bw->stamp = now;
    } else {
        bw->tokens += (int64_t)add;
        bw->stamp += add * 1000 / rate;
    }
}

static void throttle_phone(struct reg_phone *rp, void *arg)
{
    struct peer *p = CONTAINER_OF(rp, struct peer, rp);
    if (!p->stub)
        conn_throttle(p->conn, *(const bool *)arg);
}

static void set_throttled(struct peer *b, bool on)
{
    b->bw->throttled = on;
    conn_throttle(b->conn, on);
    registry_each_phone(&b->rb, throttle_phone, &on);
}

static void bw_unthrottle(struct bw_bucket *bw, uint64_t now)
{
    struct relay *r = bw->owner->relay;
    atomic_fetch_add_explicit(&r->stats.throttled_ms, now - bw->since, memory_order_relaxed);
    list_remove(&bw->link);
    set_throttled(bw->owner, false);
}

static void on_bw_timer(uv_timer_t *t);

/* Wakes the relay when the first throttled bucket has a byte again. */
static void bw_arm(struct relay *r)
{
    uint64_t rate = bw_rate(r), now = shard_now(r->shard), next = UINT64_MAX;
    for (struct list *it = r->throttled.next; it != &r->throttled; it = it->next) {
        const struct bw_bucket *bw = CONTAINER_OF(it, struct bw_bucket, link);
        uint64_t due = bw->stamp + ((uint64_t)(1 - bw->tokens) * 1000 + rate - 1) / rate;
        if (due < next)
            next = due;
    }
    if (next == UINT64_MAX)
        uv_timer_stop(&r->bw_timer);
    else
        uv_timer_start(&r->bw_timer, on_bw_timer, next > now ? next - now : 1, 0);
}

static void on_bw_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    uint64_t rate = bw_rate(r), now = shard_now(r->shard);
    struct list *it = r->throttled.next;
    while (it != &r->throttled) {
        struct bw_bucket *bw = CONTAINER_OF(it, struct bw_bucket, link);
        it = it->next;
        bw_refill(bw, rate, now);
        if (bw->tokens > 0)
            bw_unthrottle(bw, now);
    }
    bw_arm(r);
}

/* Charges n bytes read for binary b's server-id. */
static void bw_charge(struct peer *b, size_t n)
{
    struct relay *r = b->relay;
    uint64_t rate = bw_rate(r), now = shard_now(r->shard);
    if (!rate || b->state != PEER_ACTIVE)
        return;
    if (!b->bw) {
        b->bw = xcalloc(1, sizeof *b->bw);
        b->bw->owner = b;
        b->bw->tokens = (int64_t)rate;
        b->bw->stamp = now;
        list_init(&b->bw->link);
    }
    struct bw_bucket *bw = b->bw;
    bw_refill(bw, rate, now);
    bw->tokens -= (int64_t)n;
    if (bw->tokens > 0 || bw->throttled)
        return;
    bw->since = now;
    list_push_back(&r->throttled, &bw->link);
    set_throttled(b, true);
    bw_arm(r);
}

void forward_binary_gone(struct peer *b)
{
    if (!b->bw)
        return;
    if (b->bw->throttled)
        bw_unthrottle(b->bw, shard_now(b->relay->shard)); /* its phones find it gone */
    free(b->bw);
    b->bw = NULL;
}

void forward_phone_joined(struct peer *p, struct peer *b)
{
    if (b && b->phones_paused)
        conn_pause_reading(p->conn, true);
    if (b && b->bw && b->bw->throttled)
        conn_throttle(p->conn, true);
}

void forward_bw_init(struct relay *r)
{
    list_init(&r->throttled);
    uv_timer_init(r->shard->loop, &r->bw_timer);
    r->bw_timer.data = r;
}

void forward_from_phone(struct peer *p, uint8_t *data, size_t len)
{
    if (p->state != PEER_ACTIVE)
        return;
    if (!json_valid(data, len)) {
        log_peer(LOG_WARN, "phone_forwarder_marshal_err", p, "relay: frame is not valid JSON");
        conn_ws_close(p->conn, WS_CLOSE_NORMAL, "", false);
        return;
    }
    if (p->rm) { /* its binary is on another node: validated here, once */
        p->relay->sh->remote_p2b(p, data, len);
        return;
    }
    forward_phone_frame(p, data, len);
}

/* A phone that may not send: a local one is closed 1000 (the log says
 * why); a stub's node is told to do the same (EVICT, and it logs). */
static void phone_refused(struct peer *p, const char *msg, int reason)
{
    if (p->stub) {
        p->relay->sh->stub_evict(p, reason);
        return;
    }
    if (strcmp(msg, "phone_forwarder_no_binary") == 0)
        LOGF(LOG_INFO, msg, LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len));
    else
        log_peer(LOG_INFO, msg, p, "relay: binary connection closed");
    conn_ws_close(p->conn, WS_CLOSE_NORMAL, "", false);
}

void forward_phone_frame(struct peer *p, uint8_t *data, size_t len)
{
    struct relay *r = p->relay;
    struct peer *b = peer_binary_of(p);
    if (!registry_phone_held(&p->rp)) {
        phone_refused(p, "phone_forwarder_no_binary", BUSMSG_EVICT_NO_BINARY);
        return;
    }
    ensure_wrap(p);
    uv_buf_t parts[3] = {uv_buf_init(p->wrap, (unsigned)p->wrap_len),
                         uv_buf_init((char *)data, (unsigned)len), uv_buf_init("}", 1)};
    if (!b || b->state != PEER_ACTIVE || conn_ws_send(b->conn, parts, 3, true) != 0) {
        /* The binary is gone (grace window): the phone must re-dial. */
        phone_refused(p, "phone_forwarder_send_failed", BUSMSG_EVICT_BINARY_GONE);
        return;
    }
    b->ext->bytes_to_binary += len;
    bw_charge(b, len);
    if (!b->phones_paused && conn_queued_bytes(b->conn) > r->high_water) {
        set_phones_paused(b, true);
        conn_notify_below(b->conn, r->low_water);
    }
}

/* Codes that may not appear in a close frame become 1011 (docs/design.md §4). */
static uint16_t wire_code(uint16_t code)
{
    return ws_close_code_valid(code) ? code : WS_CLOSE_INTERNAL;
}

static void route(struct peer *b, const struct envelope *env)
{
    struct relay *r = b->relay;
    struct reg_phone *rp = registry_find_phone(r->reg, &b->rb, env->conn_id, env->conn_id_len);
    if (!rp) {
        uint64_t sup;
        if (!relay_warn_allowed(b, WARN_UNKNOWN_CONN_ID, &sup))
            return;
        if (sup)
            LOGF(LOG_WARN, "binary_forwarder_unknown_conn_id",
                 LOG_STRN("server_id", b->server_id, b->server_id_len),
                 LOG_STRN("conn_id", env->conn_id, env->conn_id_len), LOG_NUM("suppressed", sup));
        else
            LOGF(LOG_WARN, "binary_forwarder_unknown_conn_id",
                 LOG_STRN("server_id", b->server_id, b->server_id_len),
                 LOG_STRN("conn_id", env->conn_id, env->conn_id_len));
        return;
    }
    struct peer *p = CONTAINER_OF(rp, struct peer, rp);
    if (p->stub) { /* on another node: its node enforces the budget */
        if (p->binary_closed)
            return;
        r->sh->stub_route(p, (const uint8_t *)env->frame, env->frame ? env->frame_len : 0,
                          env->close_code);
        b->ext->bytes_to_phones += env->frame ? env->frame_len : 0;
        return;
    }
    forward_deliver(b, p, (const uint8_t *)env->frame, env->frame_len, env->close_code);
}

void forward_deliver(struct peer *b, struct peer *p, const uint8_t *frame, size_t frame_len,
                     uint16_t code)
{
    struct relay *r = p->relay;
    if (p->binary_closed || !conn_is_open(p->conn)) {
        log_peer(LOG_INFO, "binary_forwarder_phone_enqueue_failed", p,
                 "relay: phone outbox closed");
        return;
    }
    if (code)
        p->binary_closed = true; /* even if the item overflows: no notice */
    size_t used = conn_queued_bytes(p->conn) + ITEM_OVERHEAD * conn_queued_items(p->conn);
    size_t cost = (frame ? frame_len : 0) + ITEM_OVERHEAD;
    if (used + cost > (size_t)r->srv->cfg->phone_backlog_bytes) {
        conn_ws_close(p->conn, code ? wire_code(code) : WS_CLOSE_INTERNAL, "phone backlog full",
                      false);
        log_peer(LOG_INFO, "binary_forwarder_phone_enqueue_failed", p,
                 "relay: phone delivery backlog full");
        return;
    }
    if (frame) {
        uv_buf_t part = uv_buf_init((char *)frame, (unsigned)frame_len);
        if (conn_ws_send(p->conn, &part, 1, true) == 0 && b)
            b->ext->bytes_to_phones += frame_len;
    }
    if (code) {
        conn_ws_close(p->conn, wire_code(code), "", true);
        LOGF(LOG_INFO, "binary_forwarder_phone_closed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len), LOG_NUM("close_code", code));
    }
}

void forward_from_binary(struct peer *b, uint8_t *data, size_t len)
{
    struct relay *r = b->relay;
    struct envelope env;
    char detail[160], err[224];
    if (b->state != PEER_ACTIVE)
        return;
    bw_charge(b, len);
    enum envelope_kind kind =
        envelope_parse(data, len, &env, (char *)r->scratch, (size_t)r->srv->cfg->max_message_bytes,
                       detail, sizeof detail);
    switch (kind) {
    case ENVELOPE_ROUTE:
        route(b, &env);
        return;
    case ENVELOPE_WAKE: {
        wake_post(b, env.push_wake, env.push_wake_len);
        return;
    }
    case ENVELOPE_MALFORMED:
        snprintf(err, sizeof err, "%s: %s", envelope_error(kind), detail);
        break;
    default:
        snprintf(err, sizeof err, "%s", envelope_error(kind));
        break;
    }
    uint64_t sup;
    enum peer_warn w = kind == ENVELOPE_MALFORMED         ? WARN_MALFORMED
                       : kind == ENVELOPE_MISSING_CONN_ID ? WARN_MISSING_CONN_ID
                                                          : WARN_MISSING_FRAME;
    if (!relay_warn_allowed(b, w, &sup))
        return;
    if (sup)
        LOGF(LOG_WARN, "binary_forwarder_unmarshal_err",
             LOG_STRN("server_id", b->server_id, b->server_id_len),
             LOG_STRN("binary_conn_id", b->conn_id, b->conn_id_len), LOG_STR("err", err),
             LOG_NUM("suppressed", sup));
    else
        LOGF(LOG_WARN, "binary_forwarder_unmarshal_err",
             LOG_STRN("server_id", b->server_id, b->server_id_len),
             LOG_STRN("binary_conn_id", b->conn_id, b->conn_id_len), LOG_STR("err", err));
}

/* The close notice (docs/features/envelope.md, docs/design.md §4): the code the relay closed with,
 * else the phone's own, else 1001 (no status, or the TCP connection vanished). */
uint16_t forward_notice_code(const struct conn *c)
{
    uint16_t sent = conn_close_sent(c), rcvd = conn_close_rcvd(c);
    if (sent)
        return sent;
    if (rcvd == 0 || rcvd == WS_CLOSE_NO_STATUS || rcvd == WS_CLOSE_ABNORMAL)
        return WS_CLOSE_GOING_AWAY;
    return rcvd;
}

void forward_phone_ended(struct peer *p)
{
    forward_phone_gone(p, forward_notice_code(p->conn));
}

void forward_phone_gone(struct peer *p, uint16_t code)
{
    struct relay *r = p->relay;
    if (p->binary_closed || r->shard->draining || r->fenced || !registry_phone_held(&p->rp))
        return;
    struct peer *b = peer_binary_of(p);
    if (b && b->key != p->bound_binary)
        return; /* a different binary holds the id now: it never knew this phone */
    char notice[512];
    char *buf = notice;
    size_t cap = p->conn_id_len * 6 + 64;
    if (cap > sizeof notice)
        buf = xmalloc(cap);
    size_t n = envelope_close_notice(buf, cap, p->conn_id, p->conn_id_len, code);
    uv_buf_t part = uv_buf_init(buf, (unsigned)n);
    if (!b || b->state != PEER_ACTIVE || conn_ws_send(b->conn, &part, 1, false) != 0)
        LOGF(LOG_INFO, "phone_close_notice_send_failed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len), LOG_NUM("close_code", code),
             LOG_STR("err", "relay: binary connection closed"));
    if (buf != notice)
        free(buf);
}
