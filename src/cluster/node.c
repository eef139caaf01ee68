/* node.c — the ctl thread of a cluster node (node.h): it performs what the
 * lease machine (lease.c) decides over the KV layer (kv.c), publishes the
 * deadline and readiness as atomics for the shards, and runs the fence.
 * Values written: nodes/<id> = "1 <shards> <boot_unix_ms>" while alive,
 * "0" once released at shutdown. */
#include "cluster/node.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"

#define CONN_GRACE_MS 2000 /* a reconnect shorter than this keeps readiness */

struct node {
    struct node_params p; /* p.name points at name; the other strings outlive the node */
    char name[NODE_NAME_MAX + 1];
    struct node_hooks h;
    natsConnection *nc;
    struct kv *kv;       /* replaced by the ctl thread only, under kv_lock */
    uv_rwlock_t kv_lock; /* workers read kv under it */
    bool reopen;         /* re-create/bind the streams before the next register */
    struct lease lease;
    uint64_t boot_unix_ms;
    char urls_log[NODE_URLS_LOGMAX];
    /* the ctl thread, and p.ctl_threads - 1 workers that only run jobs */
    uv_thread_t thread;
    bool thread_on;
    uv_thread_t *workers;
    unsigned nworkers; /* started */
    uv_mutex_t mu;     /* guards stop, id, epoch, stats and the cond wait */
    uv_cond_t cond;
    bool stop;
    char id[KV_NODE_KEY_MAX + 1];
    uint64_t epoch;
    char old_id[KV_NODE_KEY_MAX + 1]; /* the lease lost at the last fence ("": none) */
    struct node_stats stats;
    bool was_ready;
    bool streams_ok;     /* the sids and claims streams answered since the registration */
    uint64_t next_probe; /* ms: when to ask them again */
    struct log_limit renew_warn;
    char last_err[KV_ERR_MAX];
    struct kv_conn_events ev; /* the ctl connection's callbacks' closure */
    /* read by every shard */
    _Atomic uint64_t valid_until; /* ms; 0: not serving */
    _Atomic uint64_t ready_until; /* ms: last successful send + L/2 */
    _Atomic bool fencing;
    _Atomic bool connected;
    _Atomic bool closing;        /* node_free: the disconnect is ours */
    bool closed;                 /* cnats reported the close (under mu): n may go */
    _Atomic uint64_t down_since; /* ms the ctl connection went down */
    _Atomic uint64_t fence_gen;
    _Atomic uint64_t *fenced; /* per shard: the last generation it fenced for */
    struct mpsc jobs;         /* node_submit */
    uv_mutex_t qmu;           /* guards queue: every job thread takes from it */
    struct mpsc_node *queue;  /* taken from jobs, oldest first */
    _Atomic size_t queued;    /* jobs submitted and not yet taken */
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static uint64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool name_byte(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

bool node_cluster_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KV_CLUSTER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_byte(s[i]))
            return false;
    return true;
}

int node_name_from(const char *flag, const char *hostname, char out[NODE_NAME_MAX + 1], char *err,
                   size_t errcap)
{
    if (flag && flag[0]) {
        size_t n = strlen(flag);
        for (size_t i = 0; i < n; i++) {
            if (!name_byte(flag[i]) || n > NODE_NAME_MAX) {
                snprintf(err, errcap,
                         "--cluster-node-name %s: want 1 to %d characters of A-Z a-z 0-9 _ -", flag,
                         NODE_NAME_MAX);
                return -1;
            }
        }
        memcpy(out, flag, n + 1);
        return 0;
    }
    size_t n = 0;
    for (const char *s = hostname ? hostname : ""; *s && n < NODE_NAME_MAX; s++)
        out[n++] = name_byte(*s) ? *s : '-';
    if (n == 0)
        out[n++] = 'r'; /* no host name at all: still a valid id */
    out[n] = '\0';
    return 0;
}

void node_urls_for_log(const char *urls, char *out, size_t cap)
{
    size_t o = 0;
    const char *s = urls;
    if (cap == 0)
        return;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *scheme = memmem(s, len, "://", 3);
        const char *host = scheme ? scheme + 3 : s;
        const char *at = NULL; /* the last '@', as cnats splits: a password may hold '@' */
        for (const char *q = host; q < s + len; q++)
            if (*q == '@')
                at = q;
        int w = snprintf(out + o, cap - o, "%s%.*s%.*s", o ? "," : "", (int)(host - s), s,
                         (int)(len - (size_t)((at ? at + 1 : host) - s)), at ? at + 1 : host);
        if (w < 0 || (size_t)w >= cap - o)
            break;
        o += (size_t)w;
        s += len + (end ? 1 : 0);
    }
    out[o < cap ? o : cap - 1] = '\0';
}

/* ---- KV operations, counted -------------------------------------------- */

static void count_op(struct node *n, enum kv_op op, enum kv_outcome o, uint64_t t0)
{
    uint64_t us = (uv_hrtime() - t0) / 1000;
    uv_mutex_lock(&n->mu);
    n->stats.kv_ops[op][o]++;
    n->stats.kv_latency_us_sum[op] += us;
    n->stats.kv_count[op]++;
    uv_mutex_unlock(&n->mu);
}

static enum lease_outcome lease_of(enum kv_outcome o)
{
    switch (o) {
    case KV_OK:
        return LEASE_OK;
    case KV_CONFLICT:
        return LEASE_CONFLICT;
    case KV_NOT_FOUND:
        return LEASE_NOT_FOUND;
    case KV_TIMEOUT:
        return LEASE_TIMEOUT;
    case KV_ERROR:
        break;
    }
    return LEASE_ERROR;
}

static size_t node_value(const struct node *n, char *buf, size_t cap)
{
    int w = snprintf(buf, cap, "1 %u %llu", n->p.shards, (unsigned long long)n->boot_unix_ms);
    return w < 0 ? 0 : (size_t)w;
}

/* A failed renewal or registration: one WARN line a second at most. */
static void renew_failed(struct node *n, const char *what, enum kv_outcome o)
{
    uint64_t suppressed = 0;
    if (!n->thread_on || !log_limit_allow(&n->renew_warn, now_ms(), &suppressed))
        return; /* at boot the refusal says it */
    LOGF(LOG_WARN, "cluster_lease_renew_failed", LOG_STR("node", n->id), LOG_STR("op", what),
         LOG_STR("outcome", kv_outcome_name(o)), LOG_STR("err", n->last_err),
         LOG_NUM("suppressed", suppressed));
}

/* A renewal the old lease sent before the fence can still land after it
 * (a frozen server reads it on resume, before its MaxAge sweep), bringing
 * the dead lease back for another L; claimants would then wait on it. This
 * process is that key's only writer: release it to "0" if it came back. */
static void bury_old_lease(struct node *n)
{
    char val[64], err[KV_ERR_MAX];
    size_t len = 0;
    uint64_t rev = 0, nrev = 0, t0 = uv_hrtime();
    if (!n->old_id[0])
        return;
    enum kv_outcome o = kv_get(n->kv, KV_NODES, n->old_id, strlen(n->old_id), val, sizeof val - 1,
                               &len, &rev, err, sizeof err);
    count_op(n, KV_OP_GET, o, t0);
    if (o == KV_OK && !(len == 1 && val[0] == '0')) {
        t0 = uv_hrtime();
        o = kv_cas(n->kv, KV_NODES, n->old_id, strlen(n->old_id), "0", 1, rev, &nrev, err,
                   sizeof err);
        count_op(n, KV_OP_CAS, o, t0);
    }
    if (o == KV_OK || o == KV_NOT_FOUND)
        n->old_id[0] = '\0';
}

/* Whether the streams a claim writes answer through their leaders: a read
 * of a key nobody writes (this node's id) comes back found or not found.
 * Right after quorum returns, the nodes stream can take a registration
 * while the others still elect, and a claim would fail with 1011 "cluster
 * unavailable" under a /healthz saying 200. */
static bool streams_answer(struct node *n)
{
    static const enum kv_bucket probe[] = {KV_SIDS, KV_CLAIMS};
    char val[64];
    size_t len = 0;
    uint64_t rev = 0;
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
        uint64_t t0 = uv_hrtime();
        enum kv_outcome o = kv_get(n->kv, probe[i], n->id, strlen(n->id), val, sizeof val, &len,
                                   &rev, n->last_err, sizeof n->last_err);
        count_op(n, KV_OP_GET, o, t0);
        if (o != KV_OK && o != KV_NOT_FOUND)
            return false;
    }
    n->last_err[0] = '\0';
    return true;
}

static void probe_streams(struct node *n)
{
    n->streams_ok = streams_answer(n);
    n->next_probe = now_ms() + NODE_TICK_MS;
}

static void do_register(struct node *n)
{
    char id[KV_NODE_KEY_MAX + 1], val[64];
    uint32_t rnd = 0;
    uint64_t rev = 0, t0 = uv_hrtime();
    enum kv_outcome o = KV_ERROR;
    n->last_err[0] = '\0';
    if (n->reopen) {
        struct kv_params kp = {.cluster = n->p.cluster,
                               .replicas = n->p.replicas,
                               .lease_ms = n->p.lease_ms,
                               .min_payload = n->p.min_payload};
        struct kv *fresh = NULL, *old = NULL;
        if (kv_open(&fresh, n->nc, &kp, n->last_err, sizeof n->last_err) == 0) {
            uv_rwlock_wrlock(&n->kv_lock); /* no worker is inside the old one */
            old = n->kv;
            n->kv = fresh;
            uv_rwlock_wrunlock(&n->kv_lock);
            kv_close(old);
            n->reopen = false;
        }
    }
    if (!n->reopen) {
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
            rnd = (uint32_t)uv_hrtime();
        snprintf(id, sizeof id, "%s-%08x", n->p.name, rnd);
        o = kv_create(n->kv, KV_NODES, id, strlen(id), val, node_value(n, val, sizeof val), &rev,
                      n->last_err, sizeof n->last_err);
        count_op(n, KV_OP_CREATE, o, t0);
    }
    lease_done(&n->lease, lease_of(o), rev, now_ms());
    if (n->lease.state != LEASE_HELD) {
        n->reopen = true; /* the streams may be gone (every bus server restarted) */
        renew_failed(n, "register", o);
        return;
    }
    uv_mutex_lock(&n->mu);
    memcpy(n->id, id, sizeof id);
    n->epoch = node_epoch_of(unix_ms(), n->lease.epoch);
    uv_mutex_unlock(&n->mu);
    LOGF(LOG_INFO, "cluster_node_registered", LOG_STR("node", id), LOG_NUM("epoch", n->epoch),
         LOG_NUM("shards", n->p.shards));
    bury_old_lease(n);
    probe_streams(n);
    if (n->thread_on && n->h.on_registered)
        n->h.on_registered(n->h.ud);
}

static void do_renew(struct node *n, bool read)
{
    char val[64];
    uint64_t rev = 0, t0 = uv_hrtime();
    size_t idlen = strlen(n->id), len = 0;
    enum kv_outcome o;
    n->last_err[0] = '\0';
    if (read) {
        o = kv_get(n->kv, KV_NODES, n->id, idlen, val, sizeof val, &len, &rev, n->last_err,
                   sizeof n->last_err);
        count_op(n, KV_OP_GET, o, t0);
    } else {
        o = kv_cas(n->kv, KV_NODES, n->id, idlen, val, node_value(n, val, sizeof val), n->lease.rev,
                   &rev, n->last_err, sizeof n->last_err);
        count_op(n, KV_OP_CAS, o, t0);
    }
    if (o != KV_OK && o != KV_NOT_FOUND)
        renew_failed(n, read ? "read" : "renew", o);
    lease_done(&n->lease, lease_of(o), rev, now_ms());
}

/* ---- fencing ------------------------------------------------------------ */

static bool all_fenced(const struct node *n, uint64_t gen)
{
    for (unsigned k = 0; k < n->p.shards; k++)
        if (atomic_load(&n->fenced[k]) < gen)
            return false;
    return true;
}

static void do_fence(struct node *n)
{
    atomic_store(&n->valid_until, 0);
    atomic_store(&n->fencing, true);
    uint64_t gen = atomic_fetch_add(&n->fence_gen, 1) + 1;
    LOGF(LOG_ERROR, "cluster_lease_lost", LOG_STR("node", n->id), LOG_NUM("epoch", n->epoch),
         LOG_STR("err", n->last_err[0] ? n->last_err : "lease deadline passed"));
    if (n->h.on_fence)
        n->h.on_fence(n->h.ud, gen);
    uint64_t deadline = now_ms() + NODE_FENCE_WAIT;
    uv_mutex_lock(&n->mu);
    while (!n->stop && !all_fenced(n, gen) && now_ms() < deadline)
        uv_cond_timedwait(&n->cond, &n->mu, 50 * 1000000ULL);
    uv_mutex_unlock(&n->mu);
    lease_fence_done(&n->lease);
    memcpy(n->old_id, n->id, sizeof n->old_id); /* released once registered again */
    n->reopen = true;
    atomic_store(&n->fencing, false);
}

/* ---- jobs --------------------------------------------------------------- */

/* The oldest job not yet taken, or NULL (any job thread). */
static struct node_job *take_job(struct node *n)
{
    uv_mutex_lock(&n->qmu);
    if (!n->queue)
        n->queue = mpsc_take_all(&n->jobs); /* hands them over oldest first */
    struct mpsc_node *head = n->queue;
    if (head) {
        n->queue = head->next;
        atomic_fetch_sub(&n->queued, 1);
    }
    uv_mutex_unlock(&n->qmu);
    return head ? CONTAINER_OF(head, struct node_job, link) : NULL;
}

/* Runs j against kv on any job thread. A node that may not serve writes
 * nothing: its jobs end with KV_ERROR at once. Whether it may is read from
 * the atomics the shards read; the ctl thread publishes them after every
 * lease step, before it runs jobs, so they say what its lease says. */
static void run_job(struct node *n, struct kv *kv, struct node_job *j)
{
    char err[KV_ERR_MAX];
    uint64_t t0 = uv_hrtime();
    j->rev = 0;
    j->got_len = 0;
    j->got[0] = '\0';
    if (!node_serving(n, now_ms()) || atomic_load(&n->fencing)) {
        j->outcome = KV_ERROR;
        j->done(j);
        return;
    }
    switch (j->op) {
    case KV_OP_CREATE:
        j->outcome =
            kv_create(kv, j->bucket, j->key, j->keylen, j->val, j->len, &j->rev, err, sizeof err);
        break;
    case KV_OP_CAS:
        j->outcome = kv_cas(kv, j->bucket, j->key, j->keylen, j->val, j->len, j->last, &j->rev, err,
                            sizeof err);
        break;
    case KV_OP_GET:
        j->outcome = kv_get(kv, j->bucket, j->key, j->keylen, j->got, sizeof j->got - 1,
                            &j->got_len, &j->rev, err, sizeof err);
        if (j->outcome != KV_OK)
            j->got_len = 0;
        j->got[j->got_len] = '\0';
        break;
    }
    count_op(n, j->op, j->outcome, t0);
    j->done(j);
}

/* Runs queued jobs until none is left or the lease needs the thread. */
static void run_jobs(struct node *n)
{
    struct node_job *j;
    while ((j = take_job(n)) != NULL) {
        run_job(n, n->kv, j); /* the ctl thread owns kv */
        if (now_ms() >= lease_next_due(&n->lease))
            return; /* renew first; the rest follows */
    }
}

/* A worker (--cluster-ctl-threads > 1): runs jobs while the ctl thread
 * keeps the lease. It sees the lease through the atomics the shards read,
 * and the kv under the read lock (the ctl thread swaps it on a re-open). */
static void worker_main(void *arg)
{
    struct node *n = arg;
    for (;;) {
        uv_mutex_lock(&n->mu);
        while (!n->stop && atomic_load(&n->queued) == 0)
            uv_cond_timedwait(&n->cond, &n->mu, NODE_TICK_MS * 1000000ULL);
        bool stop = n->stop;
        uv_mutex_unlock(&n->mu);
        if (stop)
            return; /* the ctl thread flushes what is left */
        struct node_job *j = take_job(n);
        if (!j)
            continue; /* another thread took it */
        uv_rwlock_rdlock(&n->kv_lock);
        run_job(n, n->kv, j);
        uv_rwlock_rdunlock(&n->kv_lock);
    }
}

void node_submit(struct node *n, struct node_job *j)
{
    atomic_fetch_add(&n->queued, 1); /* first: a taker never counts below 0 */
    mpsc_push(&n->jobs, &j->link);
    uv_mutex_lock(&n->mu);
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
}

/* node_stop: what never ran is handed back to be freed. */
static void discard_jobs(struct node *n)
{
    struct mpsc_node *lists[2] = {n->queue, mpsc_take_all(&n->jobs)};
    n->queue = NULL;
    atomic_store(&n->queued, 0);
    for (int i = 0; i < 2; i++)
        for (struct mpsc_node *it = lists[i], *next; it; it = next) {
            next = it->next;
            struct node_job *j = CONTAINER_OF(it, struct node_job, link);
            j->discard(j);
        }
}

/* ---- the thread --------------------------------------------------------- */

/* Copies the lease's view out for the shards and the metrics, and logs a
 * readiness change. */
static void publish(struct node *n)
{
    const struct lease *l = &n->lease;
    uint64_t now = now_ms();
    atomic_store(&n->valid_until, lease_valid_until(l));
    atomic_store(&n->ready_until, l->state == LEASE_HELD && n->streams_ok
                                      ? l->last_ok_send + l->p.ready_ms
                                      : (uint64_t)0);
    bool ready = node_ready(n, now);
    uv_mutex_lock(&n->mu);
    memcpy(n->stats.renewals, l->renewals, sizeof l->renewals);
    n->stats.registrations = l->registrations;
    n->stats.fences = l->fences;
    uv_mutex_unlock(&n->mu);
    if (ready == n->was_ready)
        return;
    n->was_ready = ready;
    if (ready)
        LOGF(LOG_INFO, "cluster_ready", LOG_STR("node", n->id), LOG_NUM("epoch", n->epoch));
    else
        LOGF(LOG_WARN, "cluster_not_ready", LOG_STR("node", n->id), LOG_NUM("epoch", n->epoch),
             LOG_STR("err", n->last_err[0] ? n->last_err : "no recent lease renewal"));
}

/* One decision of the lease machine and its operation. Returns how long
 * the thread may sleep before the next (0: at once). */
static uint64_t step(struct node *n)
{
    uint64_t now = now_ms();
    switch (lease_check(&n->lease, now)) {
    case LEASE_IDLE: {
        if (n->lease.state == LEASE_HELD && !n->streams_ok && now >= n->next_probe) {
            probe_streams(n); /* renewals first: only when nothing is due */
            return 0;
        }
        uint64_t due = lease_next_due(&n->lease);
        return due > now ? (due - now < NODE_TICK_MS ? due - now : NODE_TICK_MS) : 0;
    }
    case LEASE_REGISTER:
        do_register(n);
        return 0;
    case LEASE_RENEW:
        do_renew(n, false);
        return 0;
    case LEASE_READ:
        do_renew(n, true);
        return 0;
    case LEASE_FENCE:
        do_fence(n);
        return 0;
    }
    return NODE_TICK_MS;
}

static void ctl_main(void *arg)
{
    struct node *n = arg;
    uv_mutex_lock(&n->mu);
    while (!n->stop) {
        uv_mutex_unlock(&n->mu);
        uint64_t wait = step(n);
        publish(n);
        run_jobs(n);
        uv_mutex_lock(&n->mu);
        if (wait && !n->stop && atomic_load(&n->queued) == 0)
            uv_cond_timedwait(&n->cond, &n->mu, wait * 1000000ULL);
    }
    uv_mutex_unlock(&n->mu);
    /* stopping: what the drain queued (records handed back) still runs,
     * for NODE_FLUSH_MS at most */
    uint64_t until = now_ms() + NODE_FLUSH_MS;
    struct node_job *j;
    while (now_ms() < until && (j = take_job(n)) != NULL)
        run_job(n, n->kv, j); /* the ctl thread owns kv */
}

/* ---- the ctl connection's events (cnats threads) ------------------------ */

static void on_bus_event(void *ud, enum kv_conn_event ev)
{
    struct node *n = ud;
    if (ev == KV_CONN_CLOSED) {
        uv_mutex_lock(&n->mu);
        n->closed = true;
        uv_cond_broadcast(&n->cond);
        uv_mutex_unlock(&n->mu);
        return;
    }
    if (atomic_load(&n->closing))
        return; /* our own close */
    if (ev == KV_CONN_DISCONNECTED) {
        atomic_store(&n->down_since, now_ms());
        atomic_store(&n->connected, false);
        uv_mutex_lock(&n->mu);
        n->stats.disconnects++;
        uv_mutex_unlock(&n->mu);
        LOGF(LOG_WARN, "cluster_bus_disconnected", LOG_STR("bus", n->urls_log));
    } else if (ev == KV_CONN_RECONNECTED) {
        atomic_store(&n->connected, true);
        LOGF(LOG_INFO, "cluster_bus_reconnected", LOG_STR("bus", n->urls_log));
    }
}

/* ---- public ------------------------------------------------------------- */

static void node_free(struct node *n)
{
    atomic_store(&n->closing, true);
    kv_close(n->kv);
    if (n->nc) {
        /* cnats reports events on its own thread, the close last: until
         * then a callback may still hold n */
        natsConnection_Close(n->nc);
        uint64_t until = now_ms() + 2000;
        uv_mutex_lock(&n->mu);
        while (!n->closed && now_ms() < until)
            uv_cond_timedwait(&n->cond, &n->mu, 20 * 1000000ULL);
        uv_mutex_unlock(&n->mu);
        natsConnection_Destroy(n->nc);
    }
    uv_cond_destroy(&n->cond);
    uv_mutex_destroy(&n->mu);
    uv_mutex_destroy(&n->qmu);
    uv_rwlock_destroy(&n->kv_lock);
    free(n->workers);
    free(n->fenced);
    free(n);
}

int node_start(struct node **out, const struct node_params *p, char *err, size_t errcap)
{
    struct lease_params lp;
    struct node *n = xcalloc(1, sizeof *n);
    n->p = *p;
    snprintf(n->name, sizeof n->name, "%s", p->name);
    n->p.name = n->name;
    n->boot_unix_ms = unix_ms();
    n->fenced = xcalloc(p->shards ? p->shards : 1, sizeof *n->fenced);
    n->reopen = true;
    if (n->p.ctl_threads == 0)
        n->p.ctl_threads = 1;
    if (uv_mutex_init(&n->mu) != 0 || uv_cond_init(&n->cond) != 0 || uv_mutex_init(&n->qmu) != 0 ||
        uv_rwlock_init(&n->kv_lock) != 0)
        abort(); /* only without memory: nothing to serve with */
    mpsc_init(&n->jobs);
    node_urls_for_log(p->urls, n->urls_log, sizeof n->urls_log);
    if (lease_params_init(&lp, p->lease_ms) != 0) {
        snprintf(err, errcap, "cluster lease %llu ms is below the minimum %d ms",
                 (unsigned long long)p->lease_ms, LEASE_MIN_MS);
        node_free(n);
        return -1;
    }
    lease_init(&n->lease, &lp);
    n->ev = (struct kv_conn_events){.on_event = on_bus_event, .ud = n};
    char name[KV_NODE_KEY_MAX + 16];
    snprintf(name, sizeof name, "pyry-%s-ctl", p->name);
    if (kv_connect(&n->nc, p->urls, p->creds_file, p->tls, name, p->connect_ms, &n->ev, err,
                   errcap) != 0) {
        node_free(n);
        return -1;
    }
    atomic_store(&n->connected, true);
    LOGF(LOG_INFO, "cluster_bus_connected", LOG_STR("bus", n->urls_log),
         LOG_STR("cluster", p->cluster));
    /* Streams may not be creatable yet (a fresh cluster still electing, or
     * several nodes creating them at once): retry within the same bound. */
    uint64_t until = now_ms() + p->connect_ms;
    for (;;) {
        if (lease_check(&n->lease, now_ms()) == LEASE_REGISTER)
            do_register(n);
        if (n->lease.state == LEASE_HELD || now_ms() + LEASE_RETRY_MS > until)
            break;
        uv_sleep(LEASE_RETRY_MS);
    }
    if (n->lease.state != LEASE_HELD) {
        snprintf(err, errcap, "%s", n->last_err[0] ? n->last_err : "node lease not registered");
        node_free(n);
        return -1;
    }
    /* Streams another node just created may still elect their leaders:
     * wait a little for them (renewals start with the ctl thread, so at
     * most half a renewal period), then the ctl thread keeps asking. */
    uint64_t streams_by = now_ms() + n->lease.p.renew_ms / 2;
    while (!n->streams_ok && now_ms() + 100 <= streams_by) {
        uv_sleep(100);
        probe_streams(n);
    }
    publish(n);
    *out = n;
    return 0;
}

void node_run(struct node *n, struct node_hooks h)
{
    n->h = h;
    n->thread_on = true; /* before the thread reads it */
    if (uv_thread_create(&n->thread, ctl_main, n) != 0) {
        perror("pyrycode-relay: cluster ctl thread");
        abort(); /* the lease would lapse unnoticed: never serve without it */
    }
    n->workers = xcalloc(n->p.ctl_threads, sizeof *n->workers);
    for (unsigned i = 1; i < n->p.ctl_threads; i++) {
        if (uv_thread_create(&n->workers[n->nworkers], worker_main, n) != 0) {
            perror("pyrycode-relay: cluster ctl worker thread");
            abort(); /* as for any thread the operator asked for */
        }
        n->nworkers++;
    }
}

void node_stop(struct node *n)
{
    if (!n)
        return;
    uv_mutex_lock(&n->mu);
    n->stop = true;
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
    for (unsigned i = 0; i < n->nworkers; i++)
        uv_thread_join(&n->workers[i]);
    if (n->thread_on)
        uv_thread_join(&n->thread);
    discard_jobs(n);
    if (n->lease.state == LEASE_HELD && !lease_must_fence(&n->lease, now_ms())) {
        uint64_t rev;
        char err[KV_ERR_MAX];
        if (kv_cas(n->kv, KV_NODES, n->id, strlen(n->id), "0", 1, n->lease.rev, &rev, err,
                   sizeof err) == KV_OK)
            LOGF(LOG_INFO, "cluster_node_released", LOG_STR("node", n->id),
                 LOG_NUM("epoch", n->epoch));
    }
    atomic_store(&n->valid_until, 0);
    node_free(n);
}

bool node_serving(const struct node *n, uint64_t now)
{
    return now <= atomic_load_explicit(&n->valid_until, memory_order_relaxed);
}

bool node_ready(const struct node *n, uint64_t now)
{
    if (!node_serving(n, now) || atomic_load(&n->fencing) || now >= atomic_load(&n->ready_until))
        return false;
    return atomic_load(&n->connected) || now - atomic_load(&n->down_since) < CONN_GRACE_MS;
}

void node_fenced(struct node *n, unsigned shard, uint64_t gen)
{
    if (shard >= n->p.shards)
        return;
    atomic_store(&n->fenced[shard], gen);
    uv_mutex_lock(&n->mu);
    uv_cond_broadcast(&n->cond);
    uv_mutex_unlock(&n->mu);
}

uint64_t node_epoch_of(uint64_t unix_ms, uint64_t revision)
{
    uint64_t low = revision & ((UINT64_C(1) << NODE_EPOCH_REV_BITS) - 1);
    return unix_ms << NODE_EPOCH_REV_BITS | low;
}

void node_identity(const struct node *n, char id[KV_NODE_KEY_MAX + 1], uint64_t *epoch)
{
    struct node *m = (struct node *)n; /* the lock is not part of the value */
    uv_mutex_lock(&m->mu);
    memcpy(id, n->id, KV_NODE_KEY_MAX + 1);
    *epoch = n->epoch;
    uv_mutex_unlock(&m->mu);
}

void node_stats(const struct node *n, struct node_stats *s)
{
    struct node *m = (struct node *)n;
    uint64_t now = now_ms(), until = atomic_load(&n->valid_until);
    uv_mutex_lock(&m->mu);
    *s = n->stats;
    uv_mutex_unlock(&m->mu);
    s->ready = node_ready(n, now);
    s->lease_remaining_ms = until > now ? until - now : 0;
    s->jobs_waiting = atomic_load(&n->queued);
}
