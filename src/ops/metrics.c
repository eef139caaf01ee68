/* metrics.c — renders the relay's counters in the Prometheus text format
 * and serves them on a loopback-only listener: GET /metrics (any method
 * works, as in the reference), everything else 404. No label value ever
 * comes from request data. It does not register or aggregate anything
 * itself: counters are fields of each shard's relay_stats, summed here. */
#include "ops/metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cluster/node.h"
#include "ops/admin.h"
#include "codec/http.h"
#include "base/netaddr.h"
#include "push/push.h"
#include "relay/registry.h"
#include "relay/relay.h"
#include "net/server.h"
#include "base/version.h"

struct buf {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void bprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (n > 0 ? (size_t)n : 0);
        b->p = xrealloc(b->p, b->cap);
    }
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *const outcome_names[OUT__COUNT] = {
    [OUT_ACCEPT] = "accept",         [OUT_REJECT_HEADERS] = "reject_headers",
    [OUT_REJECT_409] = "reject_409", [OUT_REJECT_404] = "reject_404",
    [OUT_REJECT_429] = "reject_429", [OUT_REJECT_RATE_LIMIT] = "reject_rate_limit",
};

static const char *const kind_names[KIND__COUNT] = {
    [KIND_NO_SERVER] = "no_server",
    [KIND_SERVER_IN_USE] = "server_in_use",
    [KIND_PHONES_AT_CAP] = "phones_at_cap",
    [KIND_RATELIMIT] = "ratelimit",
};

/* Label values in lexical order, as client_golang prints them. */
static int by_name(const void *a, const void *b, const char *const *names)
{
    return strcmp(names[*(const int *)a], names[*(const int *)b]);
}

static int by_outcome(const void *a, const void *b)
{
    return by_name(a, b, outcome_names);
}

static int by_kind(const void *a, const void *b)
{
    return by_name(a, b, kind_names);
}

/* Registered only when push is on (docs/features/push.md); every outcome from boot. */
static void push_series(struct buf *b, const struct push_waker *w)
{
    static const enum push_outcome order[PUSH__COUNT] = {
        PUSH_DROPPED, PUSH_SEND_FAILED, PUSH_SENT, PUSH_TOKEN_FETCH_FAILED, PUSH_UNREGISTERED};
    family(b, "pyrycode_relay_push_wakes_total", "counter",
           "Push wake requests, by outcome (dropped = refused by a rate limit or cap).");
    for (int i = 0; i < PUSH__COUNT; i++)
        bprintf(b, "pyrycode_relay_push_wakes_total{outcome=\"%s\"} %llu\n",
                push_outcome_name(order[i]), (unsigned long long)push_outcome_count(w, order[i]));
}

/* Cluster mode only (docs/features/cluster.md, "Metrics"): single-instance
 * output is unchanged. Labels are fixed sets, never a server-id. */
/* The shards' cluster counters, summed (fixed label sets). Returns the
 * shards' bus disconnects, which bus_disconnects_total adds up. */
static uint64_t relay_cluster_series(struct buf *b, const struct relay_shared *sh)
{
    static const char *const paths[CLAIMS__COUNT] = {"create", "handover", "takeover_dead",
                                                     "conflict", "aborted"};
    static const char *const outcomes[ATTACH__COUNT] = {"ok", "no_server", "at_cap", "not_owner",
                                                        "timeout"};
    static const char *const dirs[2] = {"in", "out"};
    static const char *const reasons[LR__COUNT] = {"gap", "peer_down", "slow_consumer", "buffer"};
    uint64_t resets[LR__COUNT] = {0};
    uint64_t claims[CLAIMS__COUNT] = {0}, attaches[ATTACH__COUNT] = {0}, msgs[2] = {0},
             bytes[2] = {0}, buffered = 0, disc = 0, stale = 0;
    int64_t remote = 0, stubs = 0;
    for (unsigned i = 0; i < sh->n; i++) {
        const struct relay_stats *st = &sh->relays[i].stats;
        for (int k = 0; k < CLAIMS__COUNT; k++)
            claims[k] += atomic_load_explicit(&st->claims[k], memory_order_relaxed);
        for (int k = 0; k < ATTACH__COUNT; k++)
            attaches[k] += atomic_load_explicit(&st->attaches[k], memory_order_relaxed);
        for (int k = 0; k < 2; k++) {
            msgs[k] += atomic_load_explicit(&st->bus_msgs[k], memory_order_relaxed);
            bytes[k] += atomic_load_explicit(&st->bus_bytes[k], memory_order_relaxed);
        }
        buffered += atomic_load_explicit(&st->bus_buffered, memory_order_relaxed);
        disc += atomic_load_explicit(&st->bus_disconnects, memory_order_relaxed);
        stale += atomic_load_explicit(&st->stale_dropped, memory_order_relaxed);
        for (int k = 0; k < LR__COUNT; k++)
            resets[k] += atomic_load_explicit(&st->link_resets[k], memory_order_relaxed);
        remote += atomic_load_explicit(&st->remote_phones, memory_order_relaxed);
        stubs += atomic_load_explicit(&st->stubs, memory_order_relaxed);
    }
    family(b, "pyrycode_relay_cluster_claims_total", "counter",
           "Binary claims decided through the cluster, by how they ended.");
    for (int k = 0; k < CLAIMS__COUNT; k++)
        bprintf(b, "pyrycode_relay_cluster_claims_total{path=\"%s\"} %llu\n", paths[k],
                (unsigned long long)claims[k]);
    family(b, "pyrycode_relay_cluster_attaches_total", "counter",
           "Phones attached to a binary on another node, by outcome.");
    for (int k = 0; k < ATTACH__COUNT; k++)
        bprintf(b, "pyrycode_relay_cluster_attaches_total{outcome=\"%s\"} %llu\n", outcomes[k],
                (unsigned long long)attaches[k]);
    family(b, "pyrycode_relay_cluster_remote_phones", "gauge",
           "Phones connected here whose binary is on another node.");
    bprintf(b, "pyrycode_relay_cluster_remote_phones %lld\n", (long long)remote);
    family(b, "pyrycode_relay_cluster_stubs", "gauge",
           "Phones on other nodes registered with binaries here.");
    bprintf(b, "pyrycode_relay_cluster_stubs %lld\n", (long long)stubs);
    family(b, "pyrycode_relay_cluster_peers", "gauge", "Other nodes heard within 5 s.");
    bprintf(b, "pyrycode_relay_cluster_peers %lld\n",
            (long long)atomic_load_explicit(&sh->relays[0].stats.peers, memory_order_relaxed));
    family(b, "pyrycode_relay_cluster_bus_messages_total", "counter",
           "Messages on the shards' bus connections, by direction.");
    for (int k = 0; k < 2; k++)
        bprintf(b, "pyrycode_relay_cluster_bus_messages_total{direction=\"%s\"} %llu\n", dirs[k],
                (unsigned long long)msgs[k]);
    family(b, "pyrycode_relay_cluster_bus_bytes_total", "counter",
           "Payload bytes on the shards' bus connections, by direction.");
    for (int k = 0; k < 2; k++)
        bprintf(b, "pyrycode_relay_cluster_bus_bytes_total{direction=\"%s\"} %llu\n", dirs[k],
                (unsigned long long)bytes[k]);
    family(b, "pyrycode_relay_cluster_bus_buffered_bytes", "gauge",
           "Bytes waiting in the shards' bus send buffers.");
    bprintf(b, "pyrycode_relay_cluster_bus_buffered_bytes %llu\n", (unsigned long long)buffered);
    family(b, "pyrycode_relay_cluster_stale_epoch_dropped_total", "counter",
           "Bus messages dropped because they named an older ownership epoch.");
    bprintf(b, "pyrycode_relay_cluster_stale_epoch_dropped_total %llu\n",
            (unsigned long long)stale);
    family(b, "pyrycode_relay_cluster_link_resets_total", "counter",
           "Bus links reset (their phones closed 1011 \"cluster link lost\"), by reason.");
    for (int k = 0; k < LR__COUNT; k++)
        bprintf(b, "pyrycode_relay_cluster_link_resets_total{reason=\"%s\"} %llu\n", reasons[k],
                (unsigned long long)resets[k]);
    return disc;
}

static void cluster_series(struct buf *b, const struct node *n, const struct relay_shared *sh)
{
    static const enum lease_outcome renew_order[] = {LEASE_CONFLICT, LEASE_ERROR, LEASE_OK,
                                                     LEASE_TIMEOUT};
    static const enum kv_outcome kv_order[] = {KV_CONFLICT, KV_ERROR, KV_NOT_FOUND, KV_OK,
                                               KV_TIMEOUT};
    static const enum kv_op op_order[] = {KV_OP_CAS, KV_OP_CREATE, KV_OP_GET};
    struct node_stats st;
    node_stats(n, &st);
    family(b, "pyrycode_relay_cluster_ready", "gauge",
           "1 while this node holds its lease, hears the bus and is not fencing.");
    bprintf(b, "pyrycode_relay_cluster_ready %d\n", st.ready ? 1 : 0);
    family(b, "pyrycode_relay_cluster_lease_remaining_seconds", "gauge",
           "Time left before this node must stop serving unless a renewal succeeds.");
    bprintf(b, "pyrycode_relay_cluster_lease_remaining_seconds %llu.%03llu\n",
            (unsigned long long)(st.lease_remaining_ms / 1000),
            (unsigned long long)(st.lease_remaining_ms % 1000));
    family(b, "pyrycode_relay_cluster_lease_renewals_total", "counter",
           "Node lease renewals, by outcome.");
    for (size_t i = 0; i < sizeof renew_order / sizeof renew_order[0]; i++)
        bprintf(b, "pyrycode_relay_cluster_lease_renewals_total{outcome=\"%s\"} %llu\n",
                lease_outcome_name(renew_order[i]),
                (unsigned long long)st.renewals[renew_order[i]]);
    family(b, "pyrycode_relay_cluster_kv_jobs_waiting", "gauge",
           "KV operations handed to the ctl threads and not started yet.");
    bprintf(b, "pyrycode_relay_cluster_kv_jobs_waiting %llu\n",
            (unsigned long long)st.jobs_waiting);
    family(b, "pyrycode_relay_cluster_kv_ops_total", "counter",
           "JetStream KV operations of this node, by operation and outcome.");
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < sizeof kv_order / sizeof kv_order[0]; j++)
            bprintf(b, "pyrycode_relay_cluster_kv_ops_total{op=\"%s\",outcome=\"%s\"} %llu\n",
                    kv_op_name(op_order[i]), kv_outcome_name(kv_order[j]),
                    (unsigned long long)st.kv_ops[op_order[i]][kv_order[j]]);
    family(b, "pyrycode_relay_cluster_kv_latency_seconds", "summary",
           "Time KV operations took, by operation.");
    for (size_t i = 0; i < 3; i++) {
        uint64_t us = st.kv_latency_us_sum[op_order[i]];
        bprintf(b, "pyrycode_relay_cluster_kv_latency_seconds_sum{op=\"%s\"} %llu.%06llu\n",
                kv_op_name(op_order[i]), (unsigned long long)(us / 1000000),
                (unsigned long long)(us % 1000000));
        bprintf(b, "pyrycode_relay_cluster_kv_latency_seconds_count{op=\"%s\"} %llu\n",
                kv_op_name(op_order[i]), (unsigned long long)st.kv_count[op_order[i]]);
    }
    uint64_t data_disc = relay_cluster_series(b, sh);
    family(b, "pyrycode_relay_cluster_lease_losses_total", "counter",
           "Times this node lost its lease and fenced (closed every WebSocket).");
    bprintf(b, "pyrycode_relay_cluster_lease_losses_total %llu\n", (unsigned long long)st.fences);
    family(b, "pyrycode_relay_cluster_bus_disconnects_total", "counter",
           "Times a connection to the bus (the ctl one or a shard's) was lost.");
    bprintf(b, "pyrycode_relay_cluster_bus_disconnects_total %llu\n",
            (unsigned long long)(st.disconnects + data_disc));
}

static void relay_series(struct buf *b, const struct relay *r)
{
    struct relay_totals tot;
    relay_totals(r->sh, &tot);
    const struct relay_totals *st = &tot;
    family(b, "pyrycode_relay_connected_binaries", "gauge",
           "Server-ids held by a connected binary (binaries in their grace window excluded).");
    bprintf(b, "pyrycode_relay_connected_binaries %zu\n", st->binaries);
    family(b, "pyrycode_relay_connected_phones", "gauge", "Registered phone connections.");
    bprintf(b, "pyrycode_relay_connected_phones %zu\n", st->phones);
    family(b, "pyrycode_relay_frames_forwarded_total", "counter",
           "Frames written to the destination socket, by direction.");
    bprintf(b, "pyrycode_relay_frames_forwarded_total{direction=\"binary_to_phone\"} %llu\n",
            (unsigned long long)st->frames[DIR_BINARY_TO_PHONE]);
    bprintf(b, "pyrycode_relay_frames_forwarded_total{direction=\"phone_to_binary\"} %llu\n",
            (unsigned long long)st->frames[DIR_PHONE_TO_BINARY]);
    family(b, "pyrycode_relay_grace_expiries_total", "counter",
           "Grace windows that expired and evicted a server-id.");
    bprintf(b, "pyrycode_relay_grace_expiries_total %llu\n",
            (unsigned long long)st->grace_expiries);
    family(b, "pyrycode_relay_throttled_seconds_total", "counter",
           "Time server-ids spent over --max-bytes-per-second-per-server, not being read.");
    bprintf(b, "pyrycode_relay_throttled_seconds_total %llu.%03llu\n",
            (unsigned long long)(st->throttled_ms / 1000),
            (unsigned long long)(st->throttled_ms % 1000));
    if (r->sh->push)
        push_series(b, r->sh->push);
    if (r->sh->node)
        cluster_series(b, r->sh->node, r->sh);
    int kinds[KIND__COUNT], outcomes[OUT__COUNT];
    for (int i = 0; i < KIND__COUNT; i++)
        kinds[i] = i;
    for (int i = 0; i < OUT__COUNT; i++)
        outcomes[i] = i;
    qsort(kinds, KIND__COUNT, sizeof *kinds, by_kind);
    qsort(outcomes, OUT__COUNT, sizeof *outcomes, by_outcome);
    family(b, "pyrycode_relay_register_failures_total", "counter",
           "Registration failures, by kind.");
    for (int i = 0; i < KIND__COUNT; i++)
        bprintf(b, "pyrycode_relay_register_failures_total{kind=\"%s\"} %llu\n",
                kind_names[kinds[i]], (unsigned long long)st->failures[kinds[i]]);
    family(b, "pyrycode_relay_ws_upgrade_attempts_total", "counter",
           "WebSocket upgrade attempts, by endpoint and terminal outcome.");
    static const char *const eps[EP__COUNT] = {[EP_SERVER] = "server", [EP_CLIENT] = "client"};
    static const int ep_order[EP__COUNT] = {EP_CLIENT, EP_SERVER};
    for (int e = 0; e < EP__COUNT; e++)
        for (int i = 0; i < OUT__COUNT; i++)
            bprintf(b,
                    "pyrycode_relay_ws_upgrade_attempts_total{endpoint=\"%s\",outcome=\"%s\"} "
                    "%llu\n",
                    eps[ep_order[e]], outcome_names[outcomes[i]],
                    (unsigned long long)st->upgrades[ep_order[e]][outcomes[i]]);
}

static long count_fds(void)
{
    long n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d) {
        closedir(d);
        n--; /* the directory stream's own fd */
    }
    return n;
}

static void process_series(struct buf *b, const struct metrics *m)
{
    struct rusage ru;
    struct rlimit rl;
    unsigned long vsize_pages = 0, rss_pages = 0;
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lu %lu", &vsize_pages, &rss_pages) != 2)
            vsize_pages = rss_pages = 0;
        fclose(f);
    }
    getrusage(RUSAGE_SELF, &ru);
    getrlimit(RLIMIT_NOFILE, &rl);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                 ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    family(b, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    bprintf(b, "process_cpu_seconds_total %.6f\n", cpu);
    family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    bprintf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    bprintf(b, "process_open_fds %ld\n", count_fds());
    family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    bprintf(b, "process_resident_memory_bytes %lu\n", rss_pages * (unsigned long)page);
    family(b, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    bprintf(b, "process_start_time_seconds %.3f\n", m->start_time);
    family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    bprintf(b, "process_virtual_memory_bytes %lu\n", vsize_pages * (unsigned long)page);
}

/* Prometheus label values: backslash, quote and newline escaped. */
static void label(struct buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            bprintf(b, "\\%c", *v);
        else if (*v == '\n')
            bprintf(b, "\\n");
        else
            bprintf(b, "%c", *v);
    }
}

/* The usual build_info idiom: a constant 1 whose labels say what runs. */
static void build_info(struct buf *b)
{
    family(b, "pyrycode_relay_build_info", "gauge",
           "Version of the relay and of the libraries it runs on; always 1.");
    bprintf(b, "pyrycode_relay_build_info{version=\"");
    label(b, RELAY_VERSION);
    bprintf(b, "\",libuv=\"");
    label(b, uv_version_string());
    bprintf(b, "\",openssl=\"");
    label(b, OpenSSL_version(OPENSSL_VERSION_STRING));
    bprintf(b, "\"} 1\n");
}

/* Renders the exposition text into a malloc'd buffer; *len receives its
 * length. The caller frees it. */
static char *render(const struct metrics *m, size_t *len)
{
    struct buf b = {xmalloc(8192), 0, 8192};
    process_series(&b, m);
    family(&b, "promhttp_metric_handler_requests_in_flight", "gauge",
           "Current number of scrapes being served.");
    bprintf(&b, "promhttp_metric_handler_requests_in_flight 1\n");
    family(&b, "promhttp_metric_handler_requests_total", "counter",
           "Total number of scrapes by HTTP status code.");
    static const char *const codes[3] = {"200", "500", "503"};
    for (int i = 0; i < 3; i++)
        bprintf(&b, "promhttp_metric_handler_requests_total{code=\"%s\"} %llu\n", codes[i],
                (unsigned long long)m->requests[i]);
    build_info(&b);
    relay_series(&b, m->relay);
    family(&b, "pyrycode_relay_accept_errors_total", "counter",
           "accept(2) failures the relay survived (out of descriptors or memory: accepting "
           "paused briefly; or the pending connection failed).");
    bprintf(&b, "pyrycode_relay_accept_errors_total %llu\n",
            (unsigned long long)atomic_load_explicit(&m->srv->accept_errors, memory_order_relaxed));
    *len = b.len;
    return b.p;
}

static void on_request(struct conn *c, const struct http_req *r)
{
    struct metrics *m = conn_ctx(c);
    size_t plen, blen;
    const char *path = http_req_path(r, &plen);
    if (!str_eq(path, plen, "/metrics")) {
        if (!admin_handle(c, r, m->relay->sh))
            conn_http_not_found(c);
        return;
    }
    m->requests[0]++; /* counted before rendering, as promhttp does */
    char *body = render(m, &blen);
    conn_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, body, blen, true);
    free(body);
}

static const struct conn_hooks metrics_hooks = {.on_request = on_request};

int metrics_listen(struct metrics *m, struct server *srv, struct relay *relay, const char *addr,
                   char *err, size_t cap)
{
    struct timeval tv;
    memset(m, 0, sizeof *m);
    m->srv = srv;
    m->relay = relay;
    gettimeofday(&tv, NULL);
    m->start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    m->opts.hooks = &metrics_hooks;
    m->opts.ctx = m;
    /* a server listener: accept errors back off like the public one's */
    if (server_listen_opts(srv, addr, &m->opts, err, cap) != 0)
        return -1;
    m->listener = &srv->listeners[srv->nlisteners - 1].tcp;
    return 0;
}
