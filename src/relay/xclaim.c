/* xclaim.c — the cluster claim path on a shard (xclaim.h). One struct
 * xclaim per claim in progress; at most one KV job or timer of it is
 * pending at a time, and it is freed only once neither is. A write that
 * may have landed after the newcomer left is undone with a CAS to "0"
 * (this node is that record's writer), so a stray record never blocks the
 * next claimant. */
#include "relay/xclaim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/log.h"
#include "cluster/node.h"
#include "net/conn.h"
#include "net/server.h"
#include "net/shard.h"
#include "relay/registry.h"
#include "relay/relay_ctl.h"

struct xclaim {
    struct list link; /* relay->xclaims */
    struct relay *r;
    struct peer *b; /* NULL once it went away */
    const struct xclaim_ops *ops;
    struct claim m;
    struct claim_action act;
    struct node_job job;
    struct relay_task task; /* the job's result, posted back */
    bool job_busy;
    bool job_writes; /* the job writes our record (may land unseen) */
    uv_timer_t timer;
    bool timer_closed;
    struct claim_result pending; /* fed when the timer fires (sleep, forward) */
    uint64_t req;                /* request id of a forwarded CLAIM */
    bool done;                   /* terminal: free once the job and timer are done */
    struct list waiters;         /* other local binaries for this server-id (ext->xwait) */
    size_t sid_len;
    char sid[];
};

struct release_job {
    struct node_job job;
    size_t len;
    char sid[];
};

static void act_on(struct xclaim *x);

static uint64_t now_ms(const struct relay *r)
{
    return shard_now(r->shard);
}

static struct xclaim *find(const struct relay *r, const char *sid, size_t len)
{
    for (struct list *it = r->xclaims.next; it != &r->xclaims; it = it->next) {
        struct xclaim *x = CONTAINER_OF(it, struct xclaim, link);
        if (!x->done && x->sid_len == len && memcmp(x->sid, sid, len) == 0)
            return x;
    }
    return NULL;
}

bool xclaim_pending(const struct relay *r, const char *sid, size_t len)
{
    return find(r, sid, len) != NULL;
}

bool xclaim_needed(const struct relay *r, const struct peer *b)
{
    uint64_t epoch, rev;
    if (!r->sh->node)
        return false;
    if (find(r, b->server_id, b->server_id_len))
        return true;
    return !registry_owner(r->reg, b->server_id, b->server_id_len, &epoch, &rev);
}

/* ---- lifetime ----------------------------------------------------------- */

static void maybe_free(struct xclaim *x)
{
    if (x->done && !x->job_busy && x->timer_closed) {
        list_remove(&x->link);
        free(x);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    struct xclaim *x = CONTAINER_OF((uv_timer_t *)h, struct xclaim, timer);
    x->timer_closed = true;
    maybe_free(x);
}

/* The claim is over for its binary: wake the waiters, let it go. */
static void finish(struct xclaim *x)
{
    if (x->done)
        return;
    x->done = true;
    uv_close((uv_handle_t *)&x->timer, on_timer_closed);
    while (!list_empty(&x->waiters)) {
        struct binary_ext *e = CONTAINER_OF(x->waiters.next, struct binary_ext, xwait);
        list_remove(&e->xwait);
        struct peer *w = e->xclaim_peer;
        e->xclaim = NULL;
        x->ops->again(w);
    }
    if (x->b)
        x->b->ext->xclaim = NULL;
    maybe_free(x);
}

/* ---- KV jobs ------------------------------------------------------------ */

static void on_job_task(struct relay *r, struct relay_task *t);

static void job_done(struct node_job *j)
{
    struct xclaim *x = CONTAINER_OF(j, struct xclaim, job);
    relay_post(x->r, &x->task); /* back to the shard's loop */
}

static void job_discard(struct node_job *j)
{
    free(CONTAINER_OF(j, struct xclaim, job)); /* the loops are gone */
}

static void task_discard(struct relay_task *t)
{
    free(CONTAINER_OF(t, struct xclaim, task));
}

static void release_done(struct node_job *j)
{
    free(CONTAINER_OF(j, struct release_job, job));
}

/* Frees sids/<sid> (CAS to "0" at rev): this node wrote it last. */
static void release_record(struct relay *r, const char *sid, size_t len, uint64_t rev)
{
    if (r->fenced || !r->sh->node)
        return; /* a fenced node writes nothing */
    struct release_job *rj = xcalloc(1, sizeof *rj + len);
    memcpy(rj->sid, sid, len);
    rj->len = len;
    rj->job.op = KV_OP_CAS;
    rj->job.bucket = KV_SIDS;
    rj->job.key = rj->sid;
    rj->job.keylen = len;
    rj->job.val[0] = '0';
    rj->job.len = 1;
    rj->job.last = rev;
    rj->job.done = release_done;
    rj->job.discard = release_done;
    node_submit(r->sh->node, &rj->job);
}

static void submit(struct xclaim *x, enum kv_op op, enum kv_bucket bucket, const void *key,
                   size_t keylen)
{
    struct node_job *j = &x->job;
    memset(j, 0, sizeof *j);
    j->op = op;
    j->bucket = bucket;
    j->key = key;
    j->keylen = keylen;
    j->len = claim_value(&x->m, &x->act, j->val, sizeof j->val);
    j->last = x->act.rev;
    j->done = job_done;
    j->discard = job_discard;
    x->job_writes = bucket == KV_SIDS && op != KV_OP_GET && !x->act.release;
    x->task.fn = on_job_task;
    x->task.discard = task_discard;
    x->job_busy = true;
    node_submit(x->r->sh->node, j);
}

static struct claim_result job_result(const struct xclaim *x)
{
    static const enum claim_outcome map[] = {
        [KV_OK] = CLAIM_R_OK,
        [KV_CONFLICT] = CLAIM_R_CONFLICT,
        [KV_NOT_FOUND] = CLAIM_R_NOT_FOUND,
        [KV_ERROR] = CLAIM_R_ERROR,
        [KV_TIMEOUT] = CLAIM_R_TIMEOUT,
    };
    const struct node_job *j = &x->job;
    struct claim_result res = {.outcome = map[j->outcome], .rev = j->rev};
    if (x->act.op == CLAIM_DO_READ && j->outcome == KV_OK) {
        res.value = j->got;
        res.len = j->got_len;
    }
    if (x->act.op == CLAIM_DO_READ_LEASE && j->outcome == KV_OK) {
        /* a released lease ("0") is no lease; a node id names one epoch */
        if (j->got_len == 1 && j->got[0] == '0')
            res.outcome = CLAIM_R_NOT_FOUND;
    }
    return res;
}

static void on_job_task(struct relay *r, struct relay_task *t)
{
    struct xclaim *x = CONTAINER_OF(t, struct xclaim, task);
    (void)r;
    x->job_busy = false;
    if (x->done) {
        /* the newcomer left: a record this node may just have written names
         * it with no slot behind it; free it at once */
        if (x->job_writes && x->job.outcome == KV_OK)
            release_record(x->r, x->sid, x->sid_len, x->job.rev);
        maybe_free(x);
        return;
    }
    struct claim_result res = job_result(x);
    x->act = claim_feed(&x->m, &res, now_ms(x->r));
    act_on(x);
}

/* ---- timers: sleeps and forwarded CLAIMs -------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct xclaim *x = CONTAINER_OF(t, struct xclaim, timer);
    struct claim_result res = x->pending;
    x->req = 0;
    x->act = claim_feed(&x->m, &res, now_ms(x->r));
    act_on(x);
}

static void wait_then(struct xclaim *x, uint64_t ms, enum claim_outcome o)
{
    memset(&x->pending, 0, sizeof x->pending);
    x->pending.outcome = o;
    uv_timer_start(&x->timer, on_timer, ms, 0);
}

static void forward(struct xclaim *x)
{
    struct relay *r = x->r;
    uint64_t req = 0;
    while (!req && getrandom(&req, sizeof req, 0) != sizeof req)
        ;
    x->req = req;
    if (!r->sh->send_claim ||
        r->sh->send_claim(r, x->act.node, x->act.shard, x->sid, x->sid_len, req) != 0) {
        wait_then(x, 0, CLAIM_R_NO_RESPONDERS);
        return;
    }
    wait_then(x, XCLAIM_ACK_MS, CLAIM_R_TIMEOUT); /* a live owner acknowledges at once */
}

void xclaim_acked(struct relay *r, uint64_t req)
{
    for (struct list *it = r->xclaims.next; it != &r->xclaims; it = it->next) {
        struct xclaim *x = CONTAINER_OF(it, struct xclaim, link);
        if (!x->done && req && x->req == req && x->act.op == CLAIM_DO_FORWARD) {
            wait_then(x, x->act.ms, CLAIM_R_TIMEOUT); /* now the verdict (probe + 2 s) */
            return;
        }
    }
}

void xclaim_reply(struct relay *r, uint64_t req, enum claim_outcome o, uint64_t epoch,
                  bool takeover)
{
    for (struct list *it = r->xclaims.next; it != &r->xclaims; it = it->next) {
        struct xclaim *x = CONTAINER_OF(it, struct xclaim, link);
        if (x->done || !req || x->req != req || x->act.op != CLAIM_DO_FORWARD)
            continue;
        uv_timer_stop(&x->timer);
        x->req = 0;
        struct claim_result res = {.outcome = o, .rev = epoch, .takeover = takeover};
        x->act = claim_feed(&x->m, &res, now_ms(r));
        act_on(x);
        return;
    }
}

/* ---- the machine's actions ---------------------------------------------- */

/* Hands b back from its ended claim. */
static struct peer *detach(struct xclaim *x)
{
    struct peer *b = x->b;
    x->b = NULL;
    b->ext->xclaim = NULL;
    return b;
}

/* ACCEPT: the slot is ours with this epoch (install and hand back). */
static void accepted(struct xclaim *x)
{
    struct relay *r = x->r;
    struct peer *b = detach(x);
    uint8_t h[32];
    const char *path = claim_how_path(x->act.how);
    r->stats.claims[strcmp(path, "create") == 0     ? CP_CREATE
                    : strcmp(path, "handover") == 0 ? CP_HANDOVER
                                                    : CP_TAKEOVER_DEAD]++;
    kv_hash_of(x->sid, x->sid_len, h);
    if (x->act.how == CLAIM_HOW_TAKEOVER_DEAD) /* its owner's lease lapsed */
        LOGF(LOG_INFO, "cluster_takeover_dead_owner", LOG_STRN("server_id", x->sid, x->sid_len),
             LOG_STR("peer", x->m.owner.node), LOG_NUM("epoch", x->act.epoch));
    x->ops->accept(b, claim_how_takeover(x->act.how));
    if (!registry_set_owner(r->reg, x->sid, x->sid_len, x->act.epoch, x->act.epoch, h))
        release_record(r, x->sid, x->sid_len, x->act.epoch); /* the slot went at once */
    finish(x);
}

static void act_on(struct xclaim *x)
{
    const struct claim_action *a = &x->act;
    switch (a->op) {
    case CLAIM_DO_CREATE_RECORD:
    case CLAIM_DO_CAS:
    case CLAIM_DO_READ:
        submit(x,
               a->op == CLAIM_DO_READ  ? KV_OP_GET
               : a->op == CLAIM_DO_CAS ? KV_OP_CAS
                                       : KV_OP_CREATE,
               KV_SIDS, x->sid, x->sid_len);
        return;
    case CLAIM_DO_CREATE_LOCK:
        submit(x, KV_OP_CREATE, KV_CLAIMS, x->sid, x->sid_len);
        return;
    case CLAIM_DO_READ_LEASE:
        submit(x, KV_OP_GET, KV_NODES, a->node, strlen(a->node));
        return;
    case CLAIM_DO_FORWARD:
        forward(x);
        return;
    case CLAIM_SLEEP:
        wait_then(x, a->ms, CLAIM_R_WOKE);
        return;
    case CLAIM_ACCEPT:
        accepted(x);
        return;
    case CLAIM_REJECT_4409:
        x->r->stats.claims[CP_CONFLICT]++;
        x->ops->conflict(detach(x));
        finish(x);
        return;
    case CLAIM_FAIL:
    case CLAIM_GIVE_UP:
        x->r->stats.claims[CP_ABORTED]++;
        x->ops->fail(detach(x), a->why ? a->why : CLAIM_WHY_INTERNAL);
        finish(x);
        return;
    case CLAIM_ABORTED:
        x->r->stats.claims[CP_ABORTED]++;
        finish(x);
        return;
    }
}

/* ---- public ------------------------------------------------------------- */

static void on_release(void *arg, const char *sid, size_t len, uint64_t epoch, uint64_t rev)
{
    (void)epoch;
    release_record(arg, sid, len, rev);
}

void xclaim_init(struct relay *r)
{
    list_init(&r->xclaims);
    registry_on_release(r->reg, on_release, r);
}

void xclaim_start(struct peer *b, const struct xclaim_ops *ops)
{
    struct relay *r = b->relay;
    struct claim_params p;
    struct xclaim *running = find(r, b->server_id, b->server_id_len);
    b->state = PEER_PROBING;
    conn_heartbeat(b->conn, false);
    conn_pause_reading(b->conn, true);
    if (running) { /* one claim per server-id and shard: wait for it */
        b->ext->xclaim = running;
        b->ext->xclaim_peer = b;
        list_push_back(&running->waiters, &b->ext->xwait);
        return;
    }
    struct xclaim *x = xcalloc(1, sizeof *x + b->server_id_len);
    x->r = r;
    x->b = b;
    x->ops = ops;
    x->sid_len = b->server_id_len;
    memcpy(x->sid, b->server_id, b->server_id_len);
    list_init(&x->waiters);
    list_push_back(&r->xclaims, &x->link);
    uv_timer_init(r->shard->loop, &x->timer);
    b->ext->xclaim = x;
    b->ext->xclaim_peer = b;
    memset(&p, 0, sizeof p);
    p.me.owned = true;
    node_identity(r->sh->node, p.me.node, &p.me.epoch);
    p.me.shard = (uint16_t)r->shard->id;
    p.lease_ms = (uint64_t)(r->srv->cfg->cluster_lease_ns / NS_PER_MS);
    p.forward_timeout_ms = (uint64_t)(r->srv->cfg->conflict_probe_timeout_ns / NS_PER_MS) + 2000;
    x->act = claim_start(&x->m, &p, now_ms(r));
    act_on(x);
}

void xclaim_abort(struct peer *b)
{
    struct xclaim *x = b->ext->xclaim;
    if (!x)
        return;
    b->ext->xclaim = NULL;
    if (x->b != b) { /* a waiter */
        list_remove(&b->ext->xwait);
        return;
    }
    x->b = NULL;
    uv_timer_stop(&x->timer);
    claim_abort(&x->m);
    x->act.op = CLAIM_ABORTED;
    finish(x);
}
