/* relay_ctl.c — the relay's control side, apart from its data path: a
 * per-shard task queue other threads post to (admin gathers, reloads), the
 * reloadable admission limits, and the collapsing of a binary's repeated
 * warnings. It never forwards a frame or touches another shard's state
 * from the wrong thread. */
#include <stdlib.h>
#include <string.h>

#include "relay/relay_ctl.h"

#include "base/log.h"
#include "net/shard.h"
#include "relay/registry.h"

void relay_post(struct relay *r, struct relay_task *t)
{
    uv_mutex_lock(&r->task_mu);
    mpsc_push(&r->tasks, &t->node);
    if (!r->task_sealed)
        uv_async_send(&r->task_async);
    uv_mutex_unlock(&r->task_mu);
}

void relay_ctl_seal(struct relay *r)
{
    uv_mutex_lock(&r->task_mu);
    r->task_sealed = true;
    uv_mutex_unlock(&r->task_mu);
}

static void on_tasks(uv_async_t *a)
{
    struct relay *r = a->data;
    struct mpsc_node *n = mpsc_take_all(&r->tasks); /* in push order */
    while (n) {
        struct mpsc_node *next = n->next;
        struct relay_task *t = CONTAINER_OF(n, struct relay_task, node);
        t->fn(r, t);
        n = next;
    }
}

struct cap_task {
    struct relay_task t;
    int64_t cap;
};

static void set_phone_cap(struct relay *r, struct relay_task *t)
{
    struct cap_task *ct = CONTAINER_OF(t, struct cap_task, t);
    registry_set_phone_cap(r->reg, ct->cap); /* registrations from now on; nobody is evicted */
    free(ct);
}

void relay_set_limits(struct relay_shared *sh, const struct relay_limits *l)
{
    atomic_store(&sh->max_conns, l->max_connections);
    uv_mutex_lock(&sh->rl_mu);
    if ((sh->rl.burst > 0) != (l->rate_limit_burst > 0)) {
        /* switched on or off: start from empty buckets */
        uint8_t seed[16];
        memcpy(seed, sh->rl.seed, sizeof seed);
        ratelimit_free(&sh->rl);
        ratelimit_init(&sh->rl, l->rate_limit_burst,
                       (uint64_t)(l->rate_limit_refill_ns / NS_PER_MS), seed);
    } else {
        sh->rl.burst = l->rate_limit_burst; /* buckets above it are capped on next use */
        sh->rl.refill_ms = (uint64_t)(l->rate_limit_refill_ns / NS_PER_MS);
    }
    if (sh->rl.refill_ms == 0)
        sh->rl.refill_ms = 1;
    uv_mutex_unlock(&sh->rl_mu);
    for (unsigned i = 0; i < sh->n; i++) {
        struct cap_task *ct = xmalloc(sizeof *ct);
        ct->t.fn = set_phone_cap;
        ct->t.discard = NULL;
        ct->cap = l->max_phones_per_server;
        relay_post(&sh->relays[i], &ct->t);
    }
}

void relay_ctl_init(struct relay *r)
{
    mpsc_init(&r->tasks);
    if (uv_mutex_init(&r->task_mu) != 0)
        abort();
    uv_async_init(r->shard->loop, &r->task_async, on_tasks);
    r->task_async.data = r;
}

void relay_ctl_close(struct relay *r)
{
    for (struct mpsc_node *n = mpsc_take_all(&r->tasks), *next; n; n = next) {
        next = n->next;
        struct relay_task *t = CONTAINER_OF(n, struct relay_task, node);
        if (t->discard)
            t->discard(t);
        else
            free(t);
    }
    uv_mutex_destroy(&r->task_mu);
}

bool relay_warn_allowed(struct peer *b, enum peer_warn w, uint64_t *suppressed)
{
    return log_limit_allow(&b->ext->warns.kinds[w], shard_now(b->relay->shard), suppressed);
}

struct log_limit *relay_push_limit(struct warn_state *ws, const char *err)
{
    for (size_t i = 0; i < PUSH_WARN_SLOTS; i++) {
        if (!ws->push[i].err)
            ws->push[i].err = err;
        if (ws->push[i].err == err || strcmp(ws->push[i].err, err) == 0)
            return &ws->push[i].lim;
    }
    return &ws->push[PUSH_WARN_SLOTS - 1].lim; /* more texts than slots: share the last */
}

void relay_flush_warns(struct peer *b)
{
    static const char *const msgs[WARN__COUNT] = {
        [WARN_UNKNOWN_CONN_ID] = "binary_forwarder_unknown_conn_id",
        [WARN_MALFORMED] = "binary_forwarder_unmarshal_err",
        [WARN_MISSING_CONN_ID] = "binary_forwarder_unmarshal_err",
        [WARN_MISSING_FRAME] = "binary_forwarder_unmarshal_err",
    };
    static const char *const errs[WARN__COUNT] = {
        [WARN_MALFORMED] = "relay: malformed routing envelope",
        [WARN_MISSING_CONN_ID] = "relay: routing envelope missing conn_id",
        [WARN_MISSING_FRAME] = "relay: routing envelope missing frame",
    };
    struct warn_state *ws = &b->ext->warns;
    for (size_t i = 0; i < PUSH_WARN_SLOTS && ws->push[i].err; i++)
        if (ws->push[i].lim.suppressed)
            LOGF(LOG_WARN, "binary_forwarder_push_wake_dropped",
                 LOG_STRN("server_id", b->server_id, b->server_id_len),
                 LOG_STRN("binary_conn_id", b->conn_id, b->conn_id_len),
                 LOG_STR("err", ws->push[i].err),
                 LOG_NUM("suppressed", ws->push[i].lim.suppressed));
    for (int w = 0; w < WARN__COUNT; w++) {
        if (!ws->kinds[w].suppressed)
            continue;
        if (errs[w])
            LOGF(LOG_WARN, msgs[w], LOG_STRN("server_id", b->server_id, b->server_id_len),
                 LOG_STRN("binary_conn_id", b->conn_id, b->conn_id_len), LOG_STR("err", errs[w]),
                 LOG_NUM("suppressed", ws->kinds[w].suppressed));
        else
            LOGF(LOG_WARN, msgs[w], LOG_STRN("server_id", b->server_id, b->server_id_len),
                 LOG_STRN("binary_conn_id", b->conn_id, b->conn_id_len),
                 LOG_NUM("suppressed", ws->kinds[w].suppressed));
    }
}
