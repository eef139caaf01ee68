/* relay.c — endpoints and lifecycles (docs/operations.md, docs/features/registry.md): the header
 * gate and handshake, a binary's claim (with the incumbent liveness probe and takeover), a phone's
 * registration, grace expiry, and what each end of a connection does to the registry. Forwarding
 * lives in forward.c, push-wake routing in wake.c, the shared structs in peer.h. Tokens, user
 * agents and frame bytes are never logged. */
#include "relay/relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/log.h"
#include "base/siphash.h"
#include "base/version.h"
#include "codec/http.h"
#include "net/server.h"
#include "net/shard.h"
#include "cluster/node.h"
#include "relay/fence.h"
#include "relay/forward.h"
#include "relay/registry.h"
#include "relay/remote.h"
#include "relay/wake.h"
#include "relay/xclaim.h"

#define CLOSE_NO_SERVER 4404
#define CLOSE_CONFLICT  4409
#define CLOSE_AT_CAP    4429

struct probe {
    uv_timer_t timer;
    struct peer *newb; /* the binary asking for the server-id (NULL: a remote claimant) */
    void (*remote)(void *arg, int verdict); /* remote claimant: 1 live, 0 silent, -1 gone */
    void *remote_arg;
    struct peer *inc; /* the incumbent being pinged */
    uint8_t token[8];
    struct list link; /* inc->probes */
};

static void binary_start(struct peer *b);

static struct relay *relay_of(const struct conn *c)
{
    return conn_shard(c)->owner;
}

static uint64_t now_ms(const struct relay *r)
{
    return shard_now(r->shard);
}

static void random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            perror("pyrycode-relay: getrandom");
            abort(); /* like Go's crypto/rand failure: never hand out weak ids */
        }
        p += got;
        n -= (size_t)got;
    }
}

/* ---- HTTP replies ------------------------------------------------------ */

void relay_totals(const struct relay_shared *sh, struct relay_totals *t)
{
    memset(t, 0, sizeof *t);
    for (unsigned i = 0; i < sh->n; i++) {
        const struct relay *r = &sh->relays[i];
        const struct relay_stats *st = &r->stats;
        t->binaries += registry_binaries(r->reg);
        t->phones += registry_phones(r->reg);
        for (int e = 0; e < EP__COUNT; e++)
            for (int o = 0; o < OUT__COUNT; o++)
                t->upgrades[e][o] +=
                    atomic_load_explicit(&st->upgrades[e][o], memory_order_relaxed);
        for (int k = 0; k < KIND__COUNT; k++)
            t->failures[k] += atomic_load_explicit(&st->failures[k], memory_order_relaxed);
        for (int d = 0; d < DIR__COUNT; d++)
            t->frames[d] += atomic_load_explicit(&st->frames[d], memory_order_relaxed);
        t->grace_expiries += atomic_load_explicit(&st->grace_expiries, memory_order_relaxed);
        t->throttled_ms += atomic_load_explicit(&st->throttled_ms, memory_order_relaxed);
    }
}

/* Writes the /healthz body into out; returns its length. In cluster mode a
 * node cut off from the bus (or fencing) says "cluster_unavailable". */
static size_t healthz_body(const struct relay *r, bool ok, char *out, size_t cap)
{
    struct relay_totals t;
    relay_totals(r->sh, &t);
    uint64_t now = uv_hrtime();
    long long up = now > r->sh->boot_ns ? (long long)((now - r->sh->boot_ns) / 1000000000) : 0;
    int n = snprintf(out, cap,
                     "{\"status\":\"%s\",\"version\":\"%s\",\"connected_binaries\":%zu,"
                     "\"connected_phones\":%zu,\"uptime_seconds\":%lld}",
                     ok ? "ok" : "cluster_unavailable", RELAY_VERSION, t.binaries, t.phones, up);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void healthz(struct conn *c)
{
    char body[256];
    struct relay *r = relay_of(c);
    bool ok = fence_cluster_ready(r->sh);
    size_t n = healthz_body(r, ok, body, sizeof body);
    conn_http_respond(c, ok ? 200 : 503, "application/json; charset=utf-8",
                      "Cache-Control: no-store\r\n", body, n, true);
}

/* ---- peers ------------------------------------------------------------- */

static struct peer *peer_new(struct conn *c, enum relay_endpoint ep, const char *sid,
                             size_t sid_len)
{
    struct relay *r = relay_of(c);
    uint64_t key;
    random_bytes(&key, sizeof key);
    struct peer *p = peer_alloc(r, ep, sid, sid_len, key);
    p->conn = c;
    conn_set_owner(c, p); /* live_ws was counted before the 101 went out (upgrade) */
    conn_count_frames(
        c, &r->stats.frames[ep == EP_SERVER ? DIR_PHONE_TO_BINARY : DIR_BINARY_TO_PHONE]);
    return p;
}

static void peer_free(struct peer *p)
{
    free(p->version);
    if (p->role == EP_SERVER)
        free(p->ext);
    if (p->role == EP_CLIENT)
        free(p->wrap);
    free(p);
}

/* Closes phones the registry has already unregistered (reclaim, takeover,
 * grace expiry): they get the code, and no close notice. */
static void close_evicted(struct list *evicted, uint16_t code, const char *reason)
{
    while (!list_empty(evicted)) {
        struct reg_phone *rp = CONTAINER_OF(evicted->next, struct reg_phone, link);
        struct peer *p = CONTAINER_OF(rp, struct peer, rp);
        list_remove(&rp->link);
        if (p->stub) /* on another node: its node closes it the same way */
            p->relay->sh->stub_evict(p, code == CLOSE_NO_SERVER   ? BUSMSG_EVICT_RECLAIMED
                                        : code == WS_CLOSE_NORMAL ? BUSMSG_EVICT_GRACE_EXPIRED
                                                                  : BUSMSG_EVICT_SHUTDOWN);
        else
            conn_ws_close(p->conn, code, reason, false);
    }
}

/* ---- grace ------------------------------------------------------------- */

static void on_grace(uv_timer_t *t);

static void arm_grace(struct relay *r)
{
    uint64_t next = registry_next_deadline(r->reg);
    if (next == r->grace_armed || r->shard->draining)
        return;
    r->grace_armed = next;
    if (!next) {
        uv_timer_stop(&r->grace_timer);
        return;
    }
    uint64_t now = now_ms(r);
    uv_timer_start(&r->grace_timer, on_grace, next > now ? next - now : 0, 0);
}

static void on_grace(uv_timer_t *t)
{
    struct relay *r = t->data;
    struct list evicted;
    list_init(&evicted);
    r->grace_armed = 0;
    r->stats.grace_expiries += registry_expire(r->reg, now_ms(r), &evicted);
    close_evicted(&evicted, WS_CLOSE_NORMAL, "");
    arm_grace(r);
}

/* ---- binaries: claim, probe, takeover ---------------------------------- */

static void binary_accept(struct peer *b)
{
    char remote[64];
    struct relay *r = b->relay;
    b->state = PEER_ACTIVE;
    b->ext->since_ms = now_ms(r);
    r->stats.upgrades[EP_SERVER][OUT_ACCEPT]++;
    conn_heartbeat(b->conn, true);
    conn_pause_reading(b->conn, false);
    peer_remote(b, remote, sizeof remote);
    LOGF(LOG_INFO, "server_claimed", LOG_STRN("server_id", b->server_id, b->server_id_len),
         LOG_STR("binary_version", b->version ? b->version : ""), LOG_STR("remote", remote));
    free(b->version);
    b->version = NULL;
}

static void binary_conflict(struct peer *b)
{
    char remote[64];
    struct relay *r = b->relay;
    b->state = PEER_STILLBORN;
    r->stats.upgrades[EP_SERVER][OUT_REJECT_409]++;
    r->stats.failures[KIND_SERVER_IN_USE]++;
    peer_remote(b, remote, sizeof remote);
    LOGF(LOG_INFO, "server_id_conflict", LOG_STRN("server_id", b->server_id, b->server_id_len),
         LOG_STR("remote", remote));
    conn_ws_close(b->conn, CLOSE_CONFLICT, "server-id already claimed", false);
}

/* The incumbent stayed silent (or is already dead): take its place if it
 * still holds the slot, else the newcomer lost a race and conflicts. */
static void binary_takeover(struct peer *b, struct peer *inc)
{
    char remote[64];
    struct relay *r = b->relay;
    struct list evicted;
    list_init(&evicted);
    if (!registry_takeover(r->reg, &b->rb, inc ? &inc->rb : NULL, b->server_id, b->server_id_len,
                           &evicted)) {
        binary_conflict(b);
        return;
    }
    close_evicted(&evicted, CLOSE_NO_SERVER, "binary reclaimed server-id");
    if (inc)
        conn_ws_close(inc->conn, WS_CLOSE_INTERNAL, "heartbeat timeout", false);
    peer_remote(b, remote, sizeof remote);
    LOGF(LOG_INFO, "server_id_takeover", LOG_STRN("server_id", b->server_id, b->server_id_len),
         LOG_STR("remote", remote));
    arm_grace(r); /* a takeover may have cancelled a grace window */
    binary_accept(b);
}

static void probe_freed(uv_handle_t *h)
{
    free(CONTAINER_OF(h, struct probe, timer));
}

static void probe_end(struct probe *p)
{
    list_remove(&p->link);
    if (p->newb)
        p->newb->probe = NULL;
    else
        p->remote(p->remote_arg, -1);
    uv_close((uv_handle_t *)&p->timer, probe_freed);
}

static void probe_conclude(struct probe *p, bool live)
{
    struct peer *b = p->newb, *inc = p->inc;
    if (!b) { /* a claimant on another node: it decides what follows */
        void (*fn)(void *, int) = p->remote;
        void *arg = p->remote_arg;
        p->remote = NULL;
        list_remove(&p->link);
        uv_close((uv_handle_t *)&p->timer, probe_freed);
        fn(arg, live ? 1 : 0);
        return;
    }
    probe_end(p);
    if (live)
        binary_conflict(b);
    else
        binary_takeover(b, inc);
}

static void on_probe_timeout(uv_timer_t *t)
{
    probe_conclude(CONTAINER_OF(t, struct probe, timer), false);
}

/* Pings inc for a claimant on another node: done(arg, 1) on its pong,
 * done(arg, 0) on silence (or if it cannot be pinged), done(arg, -1) if the
 * probe is dropped (drain). */
void relay_probe_remote(struct peer *inc, void (*done)(void *arg, int verdict), void *arg)
{
    struct relay *r = inc->relay;
    struct probe *p = xcalloc(1, sizeof *p);
    p->inc = inc;
    p->remote = done;
    p->remote_arg = arg;
    random_bytes(p->token, sizeof p->token);
    if (!conn_is_open(inc->conn) || conn_ws_ping(inc->conn, p->token, sizeof p->token) != 0) {
        free(p);
        done(arg, 0);
        return;
    }
    list_push_back(&inc->probes, &p->link);
    uv_timer_init(r->shard->loop, &p->timer);
    uint64_t ms = (uint64_t)(r->srv->cfg->conflict_probe_timeout_ns / NS_PER_MS);
    uv_timer_start(&p->timer, on_probe_timeout, ms ? ms : 1, 0);
}

/* The liveness probe (docs/features/registry.md): ping the incumbent and let its pong (or silence)
 * decide. The newcomer is not read meanwhile, as in the reference. */
static void probe_start(struct peer *b, struct peer *inc)
{
    struct relay *r = b->relay;
    if (!conn_is_open(inc->conn)) {
        binary_takeover(b, inc);
        return;
    }
    struct probe *p = xcalloc(1, sizeof *p);
    p->newb = b;
    p->inc = inc;
    random_bytes(p->token, sizeof p->token);
    if (conn_ws_ping(inc->conn, p->token, sizeof p->token) != 0) {
        free(p);
        binary_takeover(b, inc); /* an incumbent we cannot ping is silent */
        return;
    }
    b->state = PEER_PROBING;
    b->probe = p;
    conn_heartbeat(b->conn, false);
    conn_pause_reading(b->conn, true);
    list_push_back(&inc->probes, &p->link);
    uv_timer_init(r->shard->loop, &p->timer);
    uint64_t ms = (uint64_t)(r->srv->cfg->conflict_probe_timeout_ns / NS_PER_MS);
    uv_timer_start(&p->timer, on_probe_timeout, ms ? ms : 1, 0);
}

/* ---- cluster mode: the claim went through the cluster (xclaim.c) ---------- */

/* The cluster gave b the server-id: install the slot and accept. */
static void xclaim_accepted(struct peer *b, bool takeover)
{
    struct relay *r = b->relay;
    struct list evicted;
    struct reg_binary *inc = NULL;
    char remote[64];
    list_init(&evicted);
    if (registry_claim(r->reg, &b->rb, b->server_id, b->server_id_len, &evicted, &inc) ==
        REG_CONFLICT) {
        binary_conflict(b); /* cannot happen: one claim per server-id and shard */
        return;
    }
    arm_grace(r);
    close_evicted(&evicted, CLOSE_NO_SERVER, "binary reclaimed server-id");
    if (takeover) {
        peer_remote(b, remote, sizeof remote);
        LOGF(LOG_INFO, "server_id_takeover", LOG_STRN("server_id", b->server_id, b->server_id_len),
             LOG_STR("remote", remote));
    }
    binary_accept(b);
}

/* The cluster bus kept failing: the binary retries later, as after any
 * server error. */
static void xclaim_failed(struct peer *b, const char *why)
{
    b->state = PEER_STILLBORN;
    LOGF(LOG_WARN, "cluster_claim_failed", LOG_STRN("server_id", b->server_id, b->server_id_len),
         LOG_STR("reason", why));
    conn_ws_close(b->conn, WS_CLOSE_INTERNAL, "cluster unavailable", false);
}

static const struct xclaim_ops claim_ops = {
    .accept = xclaim_accepted,
    .conflict = binary_conflict,
    .fail = xclaim_failed,
    .again = binary_start,
};

static void binary_start(struct peer *b)
{
    struct relay *r = b->relay;
    struct list evicted;
    struct reg_binary *inc = NULL;
    if (xclaim_needed(r, b)) {
        xclaim_start(b, &claim_ops);
        return;
    }
    list_init(&evicted);
    switch (registry_claim(r->reg, &b->rb, b->server_id, b->server_id_len, &evicted, &inc)) {
    case REG_CLAIMED:
        binary_accept(b);
        break;
    case REG_RECLAIMED:
        arm_grace(r);
        close_evicted(&evicted, CLOSE_NO_SERVER, "binary reclaimed server-id");
        binary_accept(b);
        break;
    case REG_CONFLICT:
        probe_start(b, CONTAINER_OF(inc, struct peer, rb));
        break;
    }
}

static void on_pong(struct conn *c, const uint8_t *data, size_t len)
{
    struct peer *inc = conn_owner(c);
    if (!inc || inc->role != EP_SERVER || len != 8)
        return;
    for (struct list *it = inc->probes.next; it != &inc->probes; it = it->next) {
        struct probe *p = CONTAINER_OF(it, struct probe, link);
        if (memcmp(p->token, data, 8) == 0) {
            probe_conclude(p, true);
            return;
        }
    }
}

static void read_end_err(const struct conn *c, char *out, size_t cap)
{
    uint16_t sent = conn_close_sent(c), rcvd = conn_close_rcvd(c);
    if (sent)
        snprintf(out, cap, "closed by relay: status = %u", sent);
    else if (rcvd == WS_CLOSE_ABNORMAL)
        snprintf(out, cap, "EOF");
    else
        snprintf(out, cap, "received close frame: status = %u", rcvd);
}

static void binary_end(struct peer *b)
{
    struct relay *r = b->relay;
    char err[64];
    if (b->probe) /* the newcomer left during the probe: nothing to decide */
        probe_end(b->probe);
    xclaim_abort(b);                  /* ... or during its cluster claim */
    while (!list_empty(&b->probes)) { /* we were the incumbent: now surely silent */
        struct probe *p = CONTAINER_OF(b->probes.next, struct probe, link);
        if (r->shard->draining)
            probe_end(p);
        else
            probe_conclude(p, false);
    }
    if (b->state == PEER_ACTIVE) {
        relay_flush_warns(b);
        read_end_err(b->conn, err, sizeof err);
        LOGF(LOG_INFO, "binary_forwarder_read_end",
             LOG_STRN("server_id", b->server_id, b->server_id_len),
             LOG_STRN("binary_conn_id", b->conn_id, b->conn_id_len), LOG_STR("err", err));
        if (b->phones_paused)
            forward_binary_drained(b); /* phones resume and find the binary gone */
        forward_binary_gone(b);
        if (r->fenced) /* a fenced node holds nothing: no grace window */
            registry_release(r->reg, &b->rb);
        else if (registry_schedule_release(r->reg, &b->rb, now_ms(r))) {
            LOGF(LOG_INFO, "server_released",
                 LOG_STRN("server_id", b->server_id, b->server_id_len));
            arm_grace(r);
        }
    }
    b->state = PEER_ENDED;
}

/* ---- phones ------------------------------------------------------------ */

static void phone_no_server(struct peer *p)
{
    struct relay *r = p->relay;
    char remote[64];
    peer_remote(p, remote, sizeof remote);
    p->state = PEER_STILLBORN;
    r->stats.upgrades[EP_CLIENT][OUT_REJECT_404]++;
    r->stats.failures[KIND_NO_SERVER]++;
    LOGF(LOG_INFO, "phone_register_no_server",
         LOG_STRN("server_id", p->server_id, p->server_id_len), LOG_STR("remote", remote));
    conn_ws_close(p->conn, CLOSE_NO_SERVER, "no server with that id", false);
}

static void phone_at_cap(struct peer *p)
{
    struct relay *r = p->relay;
    char remote[64];
    peer_remote(p, remote, sizeof remote);
    p->state = PEER_STILLBORN;
    r->stats.upgrades[EP_CLIENT][OUT_REJECT_429]++;
    r->stats.failures[KIND_PHONES_AT_CAP]++;
    LOGF(LOG_INFO, "phone_register_at_cap", LOG_STRN("server_id", p->server_id, p->server_id_len),
         LOG_STR("remote", remote));
    conn_ws_close(p->conn, CLOSE_AT_CAP, "too many phones for server-id", false);
}

static void phone_registered(struct peer *p, const char *dev, size_t dev_len)
{
    struct relay *r = p->relay;
    char remote[64];
    peer_remote(p, remote, sizeof remote);
    p->state = PEER_ACTIVE;
    r->stats.upgrades[EP_CLIENT][OUT_ACCEPT]++;
    struct peer *b = p->rm ? NULL : peer_binary_of(p);
    p->bound_binary = b ? b->key : 0;
    LOGF(LOG_INFO, "phone_registered", LOG_STRN("server_id", p->server_id, p->server_id_len),
         LOG_STRN("conn_id", p->conn_id, p->conn_id_len), LOG_STRN("device_name", dev, dev_len),
         LOG_STR("remote", remote));
    if (p->rm) /* its binary is on another node */
        conn_pause_reading(p->conn, false);
    else
        forward_phone_joined(p, b);
}

static void phone_start(struct peer *p, const char *dev, size_t dev_len);

static const struct remote_ops phone_ops = {
    .registered = phone_registered,
    .no_server = phone_no_server,
    .at_cap = phone_at_cap,
    .again = phone_start,
};

static void phone_start(struct peer *p, const char *dev, size_t dev_len)
{
    struct relay *r = p->relay;
    if (remote_needed(r, p)) { /* cluster: the binary may hold it on another node */
        remote_attach(p, dev, dev_len, &phone_ops);
        return;
    }
    switch (registry_add_phone(r->reg, &p->rp, p->server_id, p->server_id_len)) {
    case REG_ADD_NO_SERVER:
        phone_no_server(p);
        return;
    case REG_ADD_AT_CAP:
        phone_at_cap(p);
        return;
    case REG_ADD_OK:
        break;
    }
    phone_registered(p, dev, dev_len);
}

static void phone_end(struct peer *p)
{
    struct relay *r = p->relay;
    char err[64];
    if (p->state == PEER_ACTIVE) {
        read_end_err(p->conn, err, sizeof err);
        LOGF(LOG_INFO, "phone_forwarder_read_end",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len), LOG_STR("err", err));
        if (p->rm)
            remote_phone_ended(p, forward_notice_code(p->conn));
        else
            forward_phone_ended(p);
        registry_remove_phone(r->reg, &p->rp);
        LOGF(LOG_INFO, "phone_unregistered", LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len));
    }
    p->state = PEER_ENDED;
}

/* ---- hooks ------------------------------------------------------------- */

/* The header gate (docs/operations.md, Endpoints): every required header present and non-empty
 * (values arrive trimmed, so whitespace-only counts as empty). Returns
 * NULL, or the name of the first header that is missing or empty. */
static const char *gate_missing(const struct http_req *r, enum relay_endpoint ep)
{
    static const enum http_hdr server_hdrs[] = {HDR_X_SERVER, HDR_X_VERSION, HDR_USER_AGENT};
    static const enum http_hdr client_hdrs[] = {HDR_X_SERVER, HDR_X_TOKEN, HDR_USER_AGENT};
    static const char *const server_names[] = {"X-Pyrycode-Server", "X-Pyrycode-Version",
                                               "User-Agent"};
    static const char *const client_names[] = {"X-Pyrycode-Server", "X-Pyrycode-Token",
                                               "User-Agent"};
    const enum http_hdr *need = ep == EP_SERVER ? server_hdrs : client_hdrs;
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        if (!http_req_header(r, need[i], &len))
            return ep == EP_SERVER ? server_names[i] : client_names[i];
    }
    return NULL;
}

/* At debug level, why an upgrade was refused: a header name or the
 * handshake rule it broke, never a header value (tokens stay out). */
static void log_refused(struct conn *c, const struct http_req *req, int status, const char *why,
                        size_t why_len)
{
    char remote[64];
    size_t plen;
    if (!log_enabled(LOG_DEBUG))
        return;
    const char *path = http_req_path(req, &plen);
    conn_remote(c, remote, sizeof remote);
    LOGF(LOG_DEBUG, "upgrade_refused", LOG_STRN("path", path, plen), LOG_NUM("status", status),
         LOG_STRN("reason", why, why_len), LOG_STR("remote", remote));
}

/* Client IP (docs/operations.md, Admission control): the peer's host, or with
 * --trust-x-forwarded-for the first X-Forwarded-For entry (trimmed, unvalidated) when there is one.
 */
static size_t client_ip(const struct conn *c, const struct http_req *req, char *out, size_t cap)
{
    size_t xlen;
    const char *xff = http_req_header(req, HDR_X_FORWARDED_FOR, &xlen);
    if (conn_shard(c)->cfg->trust_x_forwarded_for && xff) {
        const char *comma = memchr(xff, ',', xlen);
        size_t n = comma ? (size_t)(comma - xff) : xlen;
        while (n && (xff[n - 1] == ' ' || xff[n - 1] == '\t'))
            n--;
        while (n && (*xff == ' ' || *xff == '\t')) {
            xff++;
            n--;
        }
        if (n) {
            n = n < cap - 1 ? n : cap - 1;
            memcpy(out, xff, n);
            out[n] = '\0';
            return n;
        }
    }
    conn_remote(c, out, cap);
    return strlen(out);
}

/* Admission control (docs/operations.md): the per-IP limiter, then the live-connection cap. */
static bool admitted(struct conn *c, const struct http_req *req, enum relay_endpoint ep)
{
    struct relay *r = relay_of(c);
    char ip[RATELIMIT_MAX_KEY + 1], quoted[2 * RATELIMIT_MAX_KEY], remote[64];
    size_t n = client_ip(c, req, ip, sizeof ip);
    bool allowed = false;
    if (n) {
        uv_mutex_lock(&r->sh->rl_mu);
        allowed = ratelimit_allow(&r->sh->rl, ip, n, uv_hrtime() / 1000000);
        uv_mutex_unlock(&r->sh->rl_mu);
    }
    if (!allowed) {
        r->stats.upgrades[ep][OUT_REJECT_RATE_LIMIT]++;
        r->stats.failures[KIND_RATELIMIT]++;
        log_go_quote(quoted, sizeof quoted, ip, n);
        LOGF(LOG_WARN, "rate_limited", LOG_STR("remote", quoted));
        conn_http_error(c, 429, true);
        return false;
    }
    if (atomic_load(&r->sh->live_ws) >= (size_t)atomic_load(&r->sh->max_conns)) {
        size_t plen;
        const char *path = http_req_path(req, &plen);
        conn_remote(c, remote, sizeof remote);
        LOGF(LOG_WARN, "conn_cap_reached", LOG_STRN("path", path, plen), LOG_STR("remote", remote));
        conn_http_error(c, 503, true);
        return false;
    }
    return true;
}

static void upgrade(struct conn *c, const struct http_req *req, enum relay_endpoint ep)
{
    struct relay *r = relay_of(c);
    if (!admitted(c, req, ep))
        return;
    const char *missing = gate_missing(req, ep);
    if (missing) {
        char why[64];
        int n = snprintf(why, sizeof why, "missing or empty %s header", missing);
        r->stats.upgrades[ep][OUT_REJECT_HEADERS]++;
        log_refused(c, req, 400, why, (size_t)n); /* debug only: the header gate */
        conn_http_error(c, 400, true);
        return;
    }
    if (conn_shard(c)->draining) {
        log_refused(c, req, 503, "shutting down", strlen("shutting down"));
        conn_http_error(c, 503, true);
        return;
    }
    if (!fence_ready(r)) { /* cut off from the cluster bus, or fencing */
        log_refused(c, req, 503, "cluster_not_ready", strlen("cluster_not_ready"));
        conn_http_error(c, 503, true);
        return;
    }
    char resp[512];
    size_t len = 0;
    int status = http_ws_handshake(req, resp, sizeof resp, &len);
    if (status != 101) {
        /* the reply's body is the handshake rule that was broken */
        const char *body = memmem(resp, len, "\r\n\r\n", 4);
        body = body ? body + 4 : resp + len;
        size_t blen = (size_t)(resp + len - body);
        while (blen && body[blen - 1] == '\n')
            blen--;
        log_refused(c, req, status, body, blen);
        conn_http_reply(c, resp, len, false);
        return;
    }
    /* Counted before the 101 leaves: a client that has read its 101 and
     * dials again must find itself under --max-connections already. */
    atomic_fetch_add(&r->sh->live_ws, 1);
    conn_ws_accept(c, resp, len);
    if (!conn_is_open(c)) {
        atomic_fetch_sub(&r->sh->live_ws, 1);
        return;
    }
    size_t sid_len, v_len, d_len;
    const char *sid = http_req_header(req, HDR_X_SERVER, &sid_len);
    struct peer *p = peer_new(c, ep, sid, sid_len);
    if (ep == EP_SERVER) {
        const char *v = http_req_header(req, HDR_X_VERSION, &v_len);
        p->version = xstrndup(v, v_len);
        binary_start(p);
    } else {
        const char *dev = http_req_header(req, HDR_X_DEVICE_NAME, &d_len);
        phone_start(p, dev ? dev : "", dev ? d_len : 0);
    }
}

/* docs/features/workers.md: a server-id's binary and phones all live on the shard its
 * hash picks. NULL when c is already there (or there is nothing to move). */
static struct shard *owning_shard(struct conn *c, const struct http_req *req)
{
    struct relay *r = relay_of(c);
    size_t len;
    if (r->sh->n == 1 || conn_shard(c)->draining)
        return NULL;
    const char *sid = http_req_header(req, HDR_X_SERVER, &len);
    if (!sid)
        return NULL; /* refused by the gate wherever it runs */
    unsigned k = (unsigned)(siphash24(r->sh->shard_key, sid, len) % r->sh->n);
    return k == conn_shard(c)->id ? NULL : r->sh->relays[k].shard;
}

static void on_request(struct conn *c, const struct http_req *r)
{
    size_t plen;
    const char *path = http_req_path(r, &plen);
    enum relay_endpoint ep;
    if (str_eq(path, plen, "/healthz")) {
        healthz(c);
        return;
    }
    if (str_eq(path, plen, "/v1/server"))
        ep = EP_SERVER;
    else if (str_eq(path, plen, "/v1/client"))
        ep = EP_CLIENT;
    else {
        if (r->conn_has_upgrade) /* a WebSocket client at the wrong door */
            log_refused(c, r, 404, "no WebSocket endpoint at this path",
                        strlen("no WebSocket endpoint at this path"));
        conn_http_not_found(c);
        return;
    }
    struct shard *owner = owning_shard(c, r);
    if (owner)
        conn_handoff(c, owner); /* its loop calls on_request again */
    else
        upgrade(c, r, ep);
}

/* The --health-listen listener: /healthz and nothing else. */
static void on_health_request(struct conn *c, const struct http_req *r)
{
    size_t plen;
    const char *path = http_req_path(r, &plen);
    if (str_eq(path, plen, "/healthz"))
        healthz(c);
    else
        conn_http_not_found(c);
}

const struct conn_hooks relay_health_hooks = {.on_request = on_health_request};

static void on_message(struct conn *c, uint8_t *data, size_t len)
{
    struct peer *p = conn_owner(c);
    if (!p || !fence_serving(p->relay)) /* past the lease: nothing more is forwarded */
        return;
    if (p->role == EP_SERVER)
        forward_from_binary(p, data, len);
    else
        forward_from_phone(p, data, len);
}

static void on_ws_end(struct conn *c)
{
    struct peer *p = conn_owner(c);
    if (!p)
        return;
    if (p->role == EP_SERVER)
        binary_end(p);
    else
        phone_end(p);
}

/* docs/features/forwarding.md: a phone whose write fails is closed 1011 "phone write failed"
 * (the code its close notice carries), or with the directive's own code
 * when the frame before a close directive could not be written. */
static void on_write_failed(struct conn *c, const char *err)
{
    struct peer *p = conn_owner(c);
    if (!p || p->role != EP_CLIENT)
        return;
    if (p->binary_closed) {
        LOGF(LOG_INFO, "binary_forwarder_close_frame_send_failed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len),
             LOG_NUM("close_code", conn_close_sent(c)), LOG_STR("err", err));
    } else if (conn_is_open(c) && p->state == PEER_ACTIVE) {
        LOGF(LOG_INFO, "binary_forwarder_phone_send_failed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len), LOG_STR("err", err));
        conn_set_close_sent(c,
                            WS_CLOSE_INTERNAL); /* "phone write failed": nothing more can be sent */
    }
}

static void on_drained(struct conn *c)
{
    struct peer *p = conn_owner(c);
    if (p && p->role == EP_SERVER)
        forward_binary_drained(p);
}

static void on_free(struct conn *c)
{
    struct peer *p = conn_owner(c);
    if (!p)
        return;
    if (p->role == EP_SERVER) {
        forward_binary_gone(p);
        registry_forget(p->relay->reg, &p->rb);
    } else {
        remote_phone_free(p);
        registry_remove_phone(p->relay->reg, &p->rp);
    }
    atomic_fetch_sub(&p->relay->sh->live_ws, 1);
    peer_free(p);
    conn_set_owner(c, NULL);
}

const struct conn_hooks relay_hooks = {
    .on_request = on_request,
    .on_message = on_message,
    .on_pong = on_pong,
    .on_ws_end = on_ws_end,
    .on_write_failed = on_write_failed,
    .on_drained = on_drained,
    .on_free = on_free,
};

static void on_drain(struct server *srv, struct shard *s)
{
    struct relay *r = s->owner;
    (void)srv;
    uv_timer_stop(&r->grace_timer); /* grace windows are simply lost: the drain ends the process */
    uv_timer_stop(&r->bw_timer);
    registry_release_records(r->reg);           /* cluster: other nodes may take them at once */
    remote_evict_all(r, BUSMSG_EVICT_SHUTDOWN); /* phones on other nodes: 1001 */
    if (s->id == 0)
        uv_timer_stop(&r->rl_sweep);
}

static void on_rl_sweep(uv_timer_t *t)
{
    struct relay *r = t->data;
    uv_mutex_lock(&r->sh->rl_mu);
    ratelimit_sweep(&r->sh->rl, uv_hrtime() / 1000000);
    uv_mutex_unlock(&r->sh->rl_mu);
}

/* The loop is about to stop: push sends still in flight are cancelled
 * (docs/features/push.md) while their handles can still be closed properly. */
static void on_finish(struct server *srv)
{
    struct relay *r = srv->shards[0].owner;
    wake_shutdown(r->sh);
}

/* A shard's loop is ending: no other thread wakes it from now on (the
 * cluster's ctl thread outlives the loops), and its bus closes first. */
static bool on_stop(struct server *srv, struct shard *s, void (*cont)(struct shard *s))
{
    struct relay *r = s->owner;
    (void)srv;
    relay_ctl_seal(r);
    return r->sh->shard_stop && r->sh->shard_stop(r, cont);
}

void relay_init(struct relay *relays, struct relay_shared *sh, struct server *srv)
{
    uint8_t seed[16];
    const struct config *cfg = srv->cfg;
    memset(sh, 0, sizeof *sh);
    sh->relays = relays;
    sh->n = srv->nshards;
    sh->boot_ns = uv_hrtime();
    atomic_init(&sh->live_ws, 0);
    atomic_init(&sh->max_conns, cfg->max_connections);
    random_bytes(sh->shard_key, sizeof sh->shard_key);
    random_bytes(seed, sizeof seed);
    uv_mutex_init(&sh->rl_mu);
    ratelimit_init(&sh->rl, cfg->rate_limit_burst,
                   (uint64_t)(cfg->rate_limit_refill_ns / NS_PER_MS), seed);
    for (unsigned i = 0; i < srv->nshards; i++) {
        struct relay *r = &relays[i];
        struct shard *s = &srv->shards[i];
        memset(r, 0, sizeof *r);
        r->srv = srv;
        r->shard = s;
        r->sh = sh;
        s->owner = r;
        random_bytes(seed, sizeof seed);
        r->reg = registry_new(seed, cfg->max_phones_per_server,
                              (uint64_t)(cfg->grace_period_ns / NS_PER_MS));
        uv_timer_init(s->loop, &r->grace_timer);
        r->grace_timer.data = r;
        r->scratch = xmalloc((size_t)cfg->max_message_bytes);
        r->high_water = 1024 * 1024;
        r->low_water = 256 * 1024;
        forward_bw_init(r);
        relay_ctl_init(r);
        xclaim_init(r);
    }
    struct relay *r0 = &relays[0];
    uv_timer_init(srv->loop, &r0->rl_sweep);
    r0->rl_sweep.data = r0;
    uv_timer_start(&r0->rl_sweep, on_rl_sweep, 5 * 60 * 1000, 5 * 60 * 1000);
    wake_init(sh, srv->loop);
    srv->on_drain = on_drain;
    srv->on_finish = on_finish;
    srv->on_stop = on_stop;
}

void relay_close(struct relay_shared *sh)
{
    for (unsigned i = 0; i < sh->n; i++) {
        struct relay *r = &sh->relays[i];
        registry_free(r->reg);
        r->reg = NULL;
        free(r->scratch);
        r->scratch = NULL;
        relay_ctl_close(r);
        free(r->xnode); /* its bus is closed with the loop */
        r->xnode = NULL;
        remote_close(r);
    }
    ratelimit_free(&sh->rl);
    uv_mutex_destroy(&sh->rl_mu);
    wake_close(sh);
}
