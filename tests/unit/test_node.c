/* test_node.c — the cluster node (node.h) against a real nats-server: it
 * starts its own (single server, -js, replicas 1) on a free loopback port
 * and always stops it and removes its directory again (group teardown, and
 * atexit should an assertion end the run early). Without a nats-server
 * binary ($NATS_SERVER_BIN, PATH, /usr/sbin) every test that needs one is
 * skipped with a message. L = 6000 ms (LEASE_MIN_MS) throughout: renew
 * every 600 ms, ready while the last success is younger than 3 s, valid
 * until the last successful send + 4.5 s. Covers: the name helpers, the
 * registration at node_start (id, epoch, the nodes/<id> value), renewals
 * after node_run, the release to "0" at node_stop, KV jobs run in order on
 * the ctl thread (and side by side on workers, refused at once while the
 * ctl thread is stuck on a frozen bus), boot failures (closed port, lease below the minimum, a
 * stream with another MaxAge), and the fence on a frozen bus followed by a
 * registration under a new node id. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cluster/kv.h"
#include "cluster/lease.h"
#include "cluster/node.h"

#include "nats_testkit.h"

#define L_MS     6000 /* LEASE_MIN_MS: the shortest lease, the shortest test */
#define MAX_LIVE 4

static struct {
    struct nats_testsrv ns;
    bool skip;
    bool frozen;        /* the server is SIGSTOPped (teardown resumes it) */
    natsConnection *nc; /* the test's own connection, for reading keys */
    struct node *live[MAX_LIVE];
} srv;

/* ---- helpers ------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls cond every 10 ms for at most ms milliseconds. */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        uint64_t until_ = mono_ms() + (ms);                                                        \
        while (!(cond) && mono_ms() < until_)                                                      \
            usleep(10 * 1000);                                                                     \
    } while (0)

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (srv.skip)                                                                              \
            skip();                                                                                \
    } while (0)

static struct node_params params(const char *cluster, const char *name, uint64_t lease_ms,
                                 unsigned shards)
{
    return (struct node_params){.urls = srv.ns.url,
                                .creds_file = NULL,
                                .cluster = cluster,
                                .name = name,
                                .lease_ms = lease_ms,
                                .replicas = 1,
                                .connect_ms = 2000,
                                .min_payload = 0,
                                .shards = shards};
}

/* node_start that must succeed; the node is stopped by the test teardown
 * should an assertion end the test first. */
static struct node *start_node(const struct node_params *p)
{
    char err[KV_ERR_MAX] = "";
    struct node *n = NULL;
    int rc = node_start(&n, p, err, sizeof err);

    if (rc != 0)
        fprintf(stderr, "test_node: node_start: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(n);
    for (int i = 0; i < MAX_LIVE; i++)
        if (srv.live[i] == NULL) {
            srv.live[i] = n;
            return n;
        }
    fail_msg("too many live nodes");
    return NULL;
}

static void stop_node(struct node *n)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (srv.live[i] == n)
            srv.live[i] = NULL;
    node_stop(n);
}

/* Reads nodes/<id> of cluster c (L = L_MS) over the test's own connection. */
static enum kv_outcome read_node(const char *c, const char *id, char *buf, size_t cap,
                                 uint64_t *rev)
{
    char err[KV_ERR_MAX] = "";
    struct kv *kv = NULL;
    struct kv_params kp = {.cluster = c, .replicas = 1, .lease_ms = L_MS};
    size_t len = 0;

    if (kv_open(&kv, srv.nc, &kp, err, sizeof err) != 0) {
        fprintf(stderr, "test_node: kv_open %s: %s\n", c, err);
        return KV_ERROR;
    }
    enum kv_outcome o =
        kv_get(kv, KV_NODES, id, strlen(id), buf, cap - 1, &len, rev, err, sizeof err);
    buf[o == KV_OK ? len : 0] = '\0';
    kv_close(kv);
    return o;
}

/* nodes/<id> reads exactly "1 <shards> <boot_ms>" with boot_ms in [lo, hi]. */
static void assert_node_value(const char *c, const char *id, unsigned shards, uint64_t lo,
                              uint64_t hi, uint64_t *rev)
{
    char buf[96], want[96];
    unsigned s = 0;
    unsigned long long boot = 0;

    assert_int_equal(read_node(c, id, buf, sizeof buf, rev), KV_OK);
    assert_int_equal(sscanf(buf, "1 %u %llu", &s, &boot), 2);
    snprintf(want, sizeof want, "1 %u %llu", shards, boot);
    assert_string_equal(buf, want);
    assert_true(boot >= lo && boot <= hi);
}

/* <name>-<8 lowercase hex>. */
static void assert_node_id(const char *id, const char *name)
{
    size_t nl = strlen(name);

    assert_int_equal(strlen(id), nl + 9);
    assert_memory_equal(id, name, nl);
    assert_int_equal(id[nl], '-');
    for (size_t i = nl + 1; i < nl + 9; i++)
        assert_non_null(strchr("0123456789abcdef", id[i]));
}

/* ---- hooks (ctl thread) ------------------------------------------------- */

static struct {
    struct node *n;
    unsigned shards;
    _Atomic int fences, registered, acks;
    _Atomic uint64_t gen;
    pthread_t fence_thread;
} hk;

static void on_fence(void *ud, uint64_t gen)
{
    (void)ud;
    hk.fence_thread = pthread_self();
    atomic_store(&hk.gen, gen);
    for (unsigned k = 0; k < hk.shards; k++) {
        node_fenced(hk.n, k, gen);
        atomic_fetch_add(&hk.acks, 1);
    }
    atomic_fetch_add(&hk.fences, 1);
}

static void on_registered(void *ud)
{
    (void)ud;
    atomic_fetch_add(&hk.registered, 1);
}

static struct node_hooks hooks_for(struct node *n, unsigned shards)
{
    memset(&hk, 0, sizeof hk);
    hk.n = n;
    hk.shards = shards;
    return (struct node_hooks){.on_fence = on_fence, .on_registered = on_registered, .ud = &hk};
}

/* ---- jobs --------------------------------------------------------------- */

struct tjob {
    struct node_job j; /* first: the callbacks cast back */
    _Atomic int seq;   /* completion order, -1 until done */
    _Atomic bool done, discarded;
    pthread_t thread;
    struct node_job *cas; /* a Create's done sets the CAS's last to its rev */
};

static _Atomic int job_order;

static void job_done(struct node_job *j)
{
    struct tjob *t = (struct tjob *)j;

    t->thread = pthread_self();
    if (t->cas != NULL && j->outcome == KV_OK)
        t->cas->last = j->rev; /* runs before the CAS does, on the same thread */
    atomic_store(&t->seq, atomic_fetch_add(&job_order, 1));
    atomic_store(&t->done, true);
}

static void job_discard(struct node_job *j)
{
    atomic_store(&((struct tjob *)j)->discarded, true);
}

static void job_init(struct tjob *t, enum kv_op op, enum kv_bucket b, const char *key,
                     const char *val)
{
    memset(t, 0, sizeof *t);
    atomic_store(&t->seq, -1);
    t->j.op = op;
    t->j.bucket = b;
    t->j.key = key;
    t->j.keylen = strlen(key);
    if (val != NULL) {
        t->j.len = strlen(val);
        memcpy(t->j.val, val, t->j.len);
    }
    t->j.done = job_done;
    t->j.discard = job_discard;
}

/* Submits a Create of key (value "v") and waits up to ms for its outcome. */
static void create_expect(struct node *n, struct tjob *t, const char *key, enum kv_outcome want,
                          uint64_t ms)
{
    job_init(t, KV_OP_CREATE, KV_SIDS, key, "v");
    node_submit(n, &t->j);
    WAIT_FOR(atomic_load(&t->done), ms);
    assert_true(atomic_load(&t->done));
    assert_int_equal(t->j.outcome, want);
}

/* ---- group -------------------------------------------------------------- */

static int group_setup(void **state)
{
    char err[KV_ERR_MAX] = "";
    const char *bin = nats_test_find_server();

    (void)state;
    if (bin == NULL) {
        fprintf(stderr, "test_node: no nats-server ($NATS_SERVER_BIN, PATH, /usr/sbin): "
                        "skipping every test that needs one\n");
        srv.skip = true;
        return 0;
    }
    if (nats_test_start(&srv.ns, bin, "test_node", true) < 0)
        return -1;
    if (kv_connect(&srv.nc, srv.ns.url, NULL, NULL, "test_node", 2000, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "test_node: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (srv.nc != NULL)
        natsConnection_Destroy(srv.nc);
    srv.nc = NULL;
    nats_test_stop(&srv.ns);
    nats_CloseAndWait(2000);
    return 0;
}

/* After every test: resume a frozen server and stop what an assertion left. */
static int test_teardown(void **state)
{
    (void)state;
    if (srv.frozen) {
        kill(srv.ns.pid, SIGCONT);
        srv.frozen = false;
    }
    for (int i = 0; i < MAX_LIVE; i++)
        if (srv.live[i] != NULL)
            stop_node(srv.live[i]);
    return 0;
}

/* ---- 7. names (no server) ----------------------------------------------- */

static void test_names(void **state)
{
    char out[NODE_NAME_MAX + 1], err[256] = "", host[128], log[NODE_URLS_LOGMAX];

    (void)state;
    /* From the host name: every byte outside [A-Za-z0-9_-] becomes '-'. */
    assert_int_equal(node_name_from(NULL, "web.example.com", out, err, sizeof err), 0);
    assert_string_equal(out, "web-example-com");
    assert_int_equal(node_name_from("", "Host_1.lan", out, err, sizeof err), 0);
    assert_string_equal(out, "Host_1-lan");
    /* No host name: still a valid, non-empty name. */
    assert_int_equal(node_name_from("", "", out, err, sizeof err), 0);
    assert_true(strlen(out) >= 1);
    assert_true(strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
                strlen(out));
    assert_int_equal(node_name_from(NULL, NULL, out, err, sizeof err), 0);
    assert_true(strlen(out) >= 1);
    /* A long host name is cut to NODE_NAME_MAX. */
    memset(host, 'h', 70);
    host[70] = '\0';
    host[3] = '.';
    assert_int_equal(node_name_from(NULL, host, out, err, sizeof err), 0);
    assert_int_equal(strlen(out), NODE_NAME_MAX);
    assert_memory_equal(out, "hhh-hhh", 7);
    /* An explicit valid name is copied as is. */
    assert_int_equal(node_name_from("relay-7_b", "ignored.host", out, err, sizeof err), 0);
    assert_string_equal(out, "relay-7_b");
    /* An explicit invalid name is refused, naming the flag. */
    err[0] = '\0';
    assert_int_equal(node_name_from("bad.name", "host", out, err, sizeof err), -1);
    assert_non_null(strstr(err, "--cluster-node-name"));
    err[0] = '\0';
    memset(host, 'a', NODE_NAME_MAX + 1);
    host[NODE_NAME_MAX + 1] = '\0';
    assert_int_equal(node_name_from(host, "host", out, err, sizeof err), -1);
    assert_non_null(strstr(err, "--cluster-node-name"));
    host[NODE_NAME_MAX] = '\0'; /* exactly NODE_NAME_MAX: fine */
    assert_int_equal(node_name_from(host, "host", out, err, sizeof err), 0);
    assert_string_equal(out, host);

    /* --cluster-name: 1..32 of [A-Za-z0-9_-]. */
    assert_true(node_cluster_name_valid("prod-eu_1"));
    assert_false(node_cluster_name_valid(""));
    assert_false(node_cluster_name_valid("a.b"));
    assert_false(node_cluster_name_valid("a b"));
    assert_true(node_cluster_name_valid("0123456789abcdef0123456789abcdef"));
    assert_false(node_cluster_name_valid("0123456789abcdef0123456789abcdef0"));

    /* Credentials never reach a log line. */
    node_urls_for_log("nats://alice:pw@h1:4222,tls://h2:1", log, sizeof log);
    assert_string_equal(log, "nats://h1:4222,tls://h2:1");
    node_urls_for_log("nats://alice:p@ss@h1:4222,nats://bob:x@y@h2", log, sizeof log);
    assert_string_equal(log, "nats://h1:4222,nats://h2"); /* cnats splits at the last '@' */
    node_urls_for_log("nats://h1:4222", log, sizeof log);
    assert_string_equal(log, "nats://h1:4222");
    node_urls_for_log("bob:secret@h3:4222,nats://tok@h4", log, sizeof log);
    assert_string_equal(log, "h3:4222,nats://h4");
    /* Too small a buffer: cut at a whole URL, never mid-way, terminated. */
    node_urls_for_log("nats://u:p@h1:4222,nats://h2:4222", log, 20);
    assert_string_equal(log, "nats://h1:4222");
}

/* ---- 1. node_start registers -------------------------------------------- */

/* Epochs: later registrations are larger even when the revision restarts
 * (a lost memory bucket), and equal revisions at different times differ. */
static void test_epoch_of(void **state)
{
    (void)state;
    uint64_t t = UINT64_C(1796000000000); /* 2026 */
    assert_true(node_epoch_of(t + 1, 1) > node_epoch_of(t, 40000));
    assert_true(node_epoch_of(t + 1, 3) != node_epoch_of(t, 3));
    assert_int_equal(node_epoch_of(t, 0x12345) & 0xffff, 0x2345);
    assert_int_equal(node_epoch_of(t, 7) >> NODE_EPOCH_REV_BITS, t);
    assert_true(node_epoch_of(t, 1) > 0);
}

static void test_start_registers(void **state)
{
    struct node_params p = params("reg", "web1", L_MS, 2);
    char id[KV_NODE_KEY_MAX + 1];
    uint64_t epoch = 0, rev = 0, lo, hi;
    struct node_stats st;

    (void)state;
    NEED_SERVER();
    lo = wall_ms();
    struct node *n = start_node(&p);
    hi = wall_ms();
    node_identity(n, id, &epoch);
    assert_node_id(id, "web1");
    assert_true(epoch > 0);
    uint64_t now = uv_hrtime() / 1000000;
    assert_true(node_serving(n, now));
    assert_true(node_ready(n, now));
    /* Not serving once the deadline (at most L - L/4 from now) has passed. */
    assert_false(node_serving(n, now + L_MS - L_MS / 4 + 1));
    node_stats(n, &st);
    assert_true(st.ready);
    assert_int_equal(st.registrations, 1);
    assert_int_equal(st.fences, 0);
    assert_true(st.lease_remaining_ms > 0 && st.lease_remaining_ms <= L_MS - L_MS / 4);
    assert_int_equal(st.kv_ops[KV_OP_CREATE][KV_OK], 1);
    /* Ready only after the sids and claims streams answered a read of a
     * key nobody writes (the node id): not found, through their leaders. */
    assert_true(st.kv_ops[KV_OP_GET][KV_NOT_FOUND] >= 2);
    /* The key: written by the Create that made the epoch (its low bits),
     * at a wall-clock time within the registration (its high bits). */
    assert_node_value("reg", id, 2, lo, hi, &rev);
    assert_int_equal(node_epoch_of(epoch >> NODE_EPOCH_REV_BITS, rev), epoch);
    assert_true(epoch >> NODE_EPOCH_REV_BITS >= lo && epoch >> NODE_EPOCH_REV_BITS <= hi);
    stop_node(n);
}

/* ---- 2. renewals after node_run ----------------------------------------- */

static void test_renewals(void **state)
{
    struct node_params p = params("ren", "ren1", L_MS, 1);
    char id[KV_NODE_KEY_MAX + 1];
    uint64_t epoch = 0, rev = 0, lo, hi;
    struct node_stats s0, s1;
    int not_ready = 0, samples = 0;

    (void)state;
    NEED_SERVER();
    lo = wall_ms();
    struct node *n = start_node(&p);
    hi = wall_ms();
    node_identity(n, id, &epoch);
    node_stats(n, &s0);
    node_run(n, hooks_for(n, 1));
    for (uint64_t end = mono_ms() + 1600; mono_ms() < end; samples++) {
        if (!node_ready(n, mono_ms()))
            not_ready++;
        usleep(25 * 1000);
    }
    node_stats(n, &s1);
    assert_true(samples > 10);
    assert_int_equal(not_ready, 0);
    assert_true(s1.ready);
    /* R = L/10 = 600 ms: at least two renewals in 1.6 s, none failed. */
    assert_true(s1.renewals[LEASE_OK] >= s0.renewals[LEASE_OK] + 2);
    assert_int_equal(s1.renewals[LEASE_CONFLICT], 0);
    assert_int_equal(s1.renewals[LEASE_TIMEOUT], 0);
    assert_int_equal(s1.renewals[LEASE_ERROR], 0);
    assert_int_equal(s1.registrations, 1);
    assert_int_equal(s1.fences, 0);
    assert_true(s1.kv_ops[KV_OP_CAS][KV_OK] >= 2);
    /* Renewed recently: well over L/4 of the lease left. */
    assert_true(s1.lease_remaining_ms > L_MS / 4);
    /* Same node id and epoch; the key's revision moved on, value unchanged. */
    char id2[KV_NODE_KEY_MAX + 1];
    uint64_t epoch2 = 0;
    node_identity(n, id2, &epoch2);
    assert_string_equal(id2, id);
    assert_int_equal(epoch2, epoch);
    assert_node_value("ren", id, 1, lo, hi, &rev);
    assert_true(rev > (epoch & 0xffff));
    assert_int_equal(atomic_load(&hk.fences), 0);
    assert_int_equal(atomic_load(&hk.registered), 0); /* not for the boot registration */
    stop_node(n);
}

/* ---- 3. node_stop releases ---------------------------------------------- */

static void test_stop_releases(void **state)
{
    struct node_params p = params("rel", "rel1", L_MS, 1);
    char id[KV_NODE_KEY_MAX + 1], buf[96];
    uint64_t epoch = 0, rev = 0;
    struct node_stats s0, s;
    static struct tjob never;

    (void)state;
    NEED_SERVER();
    node_stop(NULL); /* fine */

    /* Running, after at least one renewal. */
    struct node *n = start_node(&p);
    node_identity(n, id, &epoch);
    node_stats(n, &s0);
    node_run(n, hooks_for(n, 1));
    WAIT_FOR((node_stats(n, &s), s.renewals[LEASE_OK] > s0.renewals[LEASE_OK]), 3000);
    assert_true(s.renewals[LEASE_OK] > s0.renewals[LEASE_OK]);
    stop_node(n);
    assert_int_equal(read_node("rel", id, buf, sizeof buf, &rev), KV_OK);
    assert_string_equal(buf, "0");
    assert_true(rev > (epoch & 0xffff));

    /* Never run: released all the same; a job that never ran is discarded. */
    n = start_node(&p);
    node_identity(n, id, &epoch);
    job_init(&never, KV_OP_CREATE, KV_SIDS, "never", "v");
    node_submit(n, &never.j);
    stop_node(n);
    assert_true(atomic_load(&never.discarded));
    assert_false(atomic_load(&never.done));
    assert_int_equal(read_node("rel", id, buf, sizeof buf, &rev), KV_OK);
    assert_string_equal(buf, "0");
    assert_int_equal(rev, (epoch & 0xffff) + 1); /* the release is the key's only write since */
}

/* ---- 4. jobs ------------------------------------------------------------ */

static void test_jobs(void **state)
{
    struct node_params p = params("jobs", "job1", L_MS, 1);
    static struct tjob create, get, cas, again;
    struct node_stats st;
    char err[KV_ERR_MAX] = "", buf[96];
    struct kv *kv = NULL;
    struct kv_params kp = {.cluster = "jobs", .replicas = 1, .lease_ms = L_MS};
    uint64_t rev = 0;
    size_t len = 0;

    (void)state;
    NEED_SERVER();
    struct node *n = start_node(&p);
    node_run(n, hooks_for(n, 1));
    atomic_store(&job_order, 0);
    job_init(&create, KV_OP_CREATE, KV_SIDS, "x", "v1");
    job_init(&get, KV_OP_GET, KV_SIDS, "x", NULL);
    job_init(&cas, KV_OP_CAS, KV_SIDS, "x", "v2");
    create.cas = &cas.j; /* last = the Create's rev, set when the Create is done */
    node_submit(n, &create.j);
    node_submit(n, &get.j);
    node_submit(n, &cas.j);
    WAIT_FOR(atomic_load(&create.done) && atomic_load(&get.done) && atomic_load(&cas.done), 5000);
    assert_true(atomic_load(&create.done));
    assert_true(atomic_load(&get.done));
    assert_true(atomic_load(&cas.done));
    /* In submission order, on one thread that is not ours (the ctl thread). */
    assert_int_equal(atomic_load(&create.seq), 0);
    assert_int_equal(atomic_load(&get.seq), 1);
    assert_int_equal(atomic_load(&cas.seq), 2);
    assert_true(pthread_equal(create.thread, get.thread));
    assert_true(pthread_equal(create.thread, cas.thread));
    assert_false(pthread_equal(create.thread, pthread_self()));
    /* Outcomes and revisions. */
    assert_int_equal(create.j.outcome, KV_OK);
    assert_true(create.j.rev > 0);
    assert_int_equal(get.j.outcome, KV_OK);
    assert_int_equal(get.j.rev, create.j.rev);
    assert_int_equal(get.j.got_len, 2);
    assert_string_equal(get.j.got, "v1");
    assert_int_equal(cas.j.last, create.j.rev);
    assert_int_equal(cas.j.outcome, KV_OK);
    assert_true(cas.j.rev > create.j.rev);
    assert_false(atomic_load(&create.discarded) || atomic_load(&get.discarded) ||
                 atomic_load(&cas.discarded));

    /* A Create of an existing key: conflict, value unchanged. */
    job_init(&again, KV_OP_CREATE, KV_SIDS, "x", "v3");
    node_submit(n, &again.j);
    WAIT_FOR(atomic_load(&again.done), 5000);
    assert_true(atomic_load(&again.done));
    assert_int_equal(atomic_load(&again.seq), 3);
    assert_int_equal(again.j.outcome, KV_CONFLICT);

    /* What the bus holds: the CAS's value under the CAS's revision. */
    assert_int_equal(kv_open(&kv, srv.nc, &kp, err, sizeof err), 0);
    enum kv_outcome o = kv_get(kv, KV_SIDS, "x", 1, buf, sizeof buf, &len, &rev, err, sizeof err);
    kv_close(kv);
    assert_int_equal(o, KV_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, "v2", 2);
    assert_int_equal(rev, cas.j.rev);

    node_stats(n, &st);
    assert_int_equal(st.kv_ops[KV_OP_CREATE][KV_OK], 2); /* the registration and the job */
    assert_int_equal(st.kv_ops[KV_OP_CREATE][KV_CONFLICT], 1);
    assert_true(st.kv_ops[KV_OP_GET][KV_OK] >= 1);
    assert_true(st.kv_count[KV_OP_CREATE] >= 3);
    stop_node(n);
}

/* ---- 5. workers (--cluster-ctl-threads) -------------------------------- */

/* The first job's done waits (5 s at most) for the second's: only another
 * thread can run the second meanwhile. */
static struct tjob par_a, par_b;
static _Atomic bool b_while_a;

static void par_a_done(struct node_job *j)
{
    uint64_t until = mono_ms() + 5000;
    while (!atomic_load(&par_b.done) && mono_ms() < until)
        usleep(1000);
    atomic_store(&b_while_a, atomic_load(&par_b.done));
    job_done(j);
}

static bool all_done(struct tjob *t, int count)
{
    for (int i = 0; i < count; i++)
        if (!atomic_load(&t[i].done))
            return false;
    return true;
}

static void test_workers(void **state)
{
    struct node_params p = params("workers", "w1", L_MS, 1);
    static struct tjob many[40];
    char keys[40][8];
    struct node_stats st;
    (void)state;
    NEED_SERVER();
    p.ctl_threads = 3;
    struct node *n = start_node(&p);
    atomic_store(&job_order, 0);
    atomic_store(&b_while_a, false);
    job_init(&par_a, KV_OP_CREATE, KV_SIDS, "pa", "v");
    par_a.j.done = par_a_done;
    job_init(&par_b, KV_OP_CREATE, KV_SIDS, "pb", "v");
    node_submit(n, &par_a.j);
    node_submit(n, &par_b.j);
    node_stats(n, &st); /* no thread runs yet: both wait */
    assert_int_equal(st.jobs_waiting, 2);
    node_run(n, hooks_for(n, 1));
    WAIT_FOR(atomic_load(&par_a.done), 8000);
    assert_true(atomic_load(&par_a.done));
    assert_true(atomic_load(&b_while_a)); /* one thread would have waited 5 s */
    assert_false(pthread_equal(par_a.thread, par_b.thread));
    assert_int_equal(par_a.j.outcome, KV_OK);
    assert_int_equal(par_b.j.outcome, KV_OK);

    /* Many at once: every one runs once, with its own outcome. */
    for (int i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof keys[i], "m%d", i);
        job_init(&many[i], KV_OP_CREATE, KV_SIDS, keys[i], "v");
        node_submit(n, &many[i].j);
    }
    WAIT_FOR(all_done(many, 40), 10000);
    assert_true(all_done(many, 40));
    for (int i = 0; i < 40; i++)
        assert_int_equal(many[i].j.outcome, KV_OK);
    assert_int_equal(atomic_load(&job_order), 42);
    node_stats(n, &st);
    assert_int_equal(st.kv_ops[KV_OP_CREATE][KV_OK], 43); /* and the registration */
    assert_int_equal(st.jobs_waiting, 0);
    stop_node(n);
}

/* With workers, a fenced node refuses jobs at once, though the ctl thread
 * itself is stuck in a call to the frozen bus; after the resume the workers
 * write through the streams the ctl thread re-opened. */
static void test_workers_fence(void **state)
{
    struct node_params p = params("wfence", "wf1", L_MS, 1);
    static struct tjob late, after;
    (void)state;
    NEED_SERVER();
    p.ctl_threads = 2;
    struct node *n = start_node(&p);
    node_run(n, hooks_for(n, 1));
    srv.frozen = true;
    nats_test_freeze(&srv.ns);
    WAIT_FOR(!node_serving(n, mono_ms()), 8000);
    assert_false(node_serving(n, mono_ms()));
    uint64_t t0 = mono_ms();
    create_expect(n, &late, "late", KV_ERROR, 8000);
    assert_true(mono_ms() - t0 < 500); /* not behind the ctl thread's 2 s call */
    kill(srv.ns.pid, SIGCONT);
    srv.frozen = false;
    WAIT_FOR(atomic_load(&hk.registered) >= 1 && node_ready(n, mono_ms()), 15000);
    assert_true(node_ready(n, mono_ms()));
    create_expect(n, &after, "after", KV_OK, 5000);
    stop_node(n);
}

/* ---- 6. boot failures --------------------------------------------------- */

static void test_boot_failures(void **state)
{
    char err[KV_ERR_MAX], url[64];
    struct node *n = NULL;
    struct node_params p;

    (void)state;
    /* Nothing listens: refused within the connect timeout. */
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", nats_test_free_port());
    p = params("boot", "b1", L_MS, 1);
    p.urls = url;
    p.connect_ms = 500;
    err[0] = '\0';
    uint64_t t0 = mono_ms();
    assert_int_equal(node_start(&n, &p, err, sizeof err), -1);
    assert_true(mono_ms() - t0 < 2000);
    assert_null(n);
    assert_true(err[0] != '\0');

    /* A lease below the minimum. */
    p = params("boot", "b1", LEASE_MIN_MS - 1, 1);
    err[0] = '\0';
    assert_int_equal(node_start(&n, &p, err, sizeof err), -1);
    assert_null(n);
    assert_non_null(strstr(err, "6000"));

    NEED_SERVER();
    /* The nodes stream exists with MaxAge 6 s: a node with L = 7 s is refused. */
    p = params("maxage", "m1", L_MS, 1);
    n = start_node(&p);
    stop_node(n);
    n = NULL;
    p = params("maxage", "m1", 7000, 1);
    p.connect_ms = 1000;
    err[0] = '\0';
    t0 = mono_ms();
    assert_int_equal(node_start(&n, &p, err, sizeof err), -1);
    assert_true(mono_ms() - t0 < 1000 + 2500);
    assert_null(n);
    assert_non_null(strstr(err, "max_age"));
    assert_non_null(strstr(err, "KV_pyry_maxage_nodes"));
}

/* ---- 5. fence on a frozen bus, then a new node id ----------------------- */

static void test_fence(void **state)
{
    struct node_params p = params("fence", "f1", L_MS, 2);
    char id[KV_NODE_KEY_MAX + 1], id2[KV_NODE_KEY_MAX + 1], buf[96];
    uint64_t epoch = 0, epoch2 = 0, rev = 0, lo, hi;
    uint64_t t_unready = 0, t_unserving = 0;
    struct node_stats s0, s;
    static struct tjob late, fenced, after;

    (void)state;
    NEED_SERVER();
    lo = wall_ms();
    struct node *n = start_node(&p);
    hi = wall_ms();
    node_identity(n, id, &epoch);
    node_run(n, hooks_for(n, 2));

    /* Freeze right after a successful renewal: the deadline is then about
     * 4.5 s and readiness about 3 s away. */
    node_stats(n, &s0);
    WAIT_FOR((node_stats(n, &s), s.renewals[LEASE_OK] > s0.renewals[LEASE_OK]), 3000);
    assert_true(s.renewals[LEASE_OK] > s0.renewals[LEASE_OK]);
    uint64_t t_stop = mono_ms();
    srv.frozen = true;
    nats_test_freeze(&srv.ns);
    uint64_t t_frozen = mono_ms();
    assert_true(node_serving(n, t_frozen));
    while (mono_ms() - t_frozen < 7000) {
        uint64_t now = uv_hrtime() / 1000000;
        if (t_unready == 0 && !node_ready(n, now))
            t_unready = now;
        if (!node_serving(n, now)) {
            t_unserving = now;
            break;
        }
        usleep(10 * 1000);
    }
    fprintf(stderr,
            "test_node: frozen after %llu ms; not ready after %llu ms, "
            "not serving after %llu ms\n",
            (unsigned long long)(t_frozen - t_stop), (unsigned long long)(t_unready - t_stop),
            (unsigned long long)(t_unserving - t_stop));
    assert_true(t_unserving != 0);
    assert_true(t_unready != 0);
    assert_true(t_unready < t_unserving);
    assert_true(t_unready >= t_stop + 2000 && t_unready <= t_frozen + 3500);
    assert_true(t_unserving >= t_stop + 3500 && t_unserving <= t_frozen + 5000);
    assert_false(node_ready(n, mono_ms()));

    /* A job submitted past the deadline writes nothing. */
    create_expect(n, &late, "late", KV_ERROR, 8000);

    /* on_fence, once, generation 1, on the ctl thread; every shard acked. */
    WAIT_FOR(atomic_load(&hk.fences) >= 1, 8000);
    assert_int_equal(atomic_load(&hk.fences), 1);
    assert_int_equal(atomic_load(&hk.gen), 1);
    assert_int_equal(atomic_load(&hk.acks), 2);
    assert_true(pthread_equal(hk.fence_thread, late.thread));
    assert_false(pthread_equal(hk.fence_thread, pthread_self()));

    /* Fenced, the bus still frozen: a job fails, nothing registers. */
    create_expect(n, &fenced, "fenced", KV_ERROR, 10000);
    assert_int_equal(atomic_load(&hk.registered), 0);
    assert_false(node_serving(n, mono_ms()));
    assert_false(node_ready(n, mono_ms()));

    /* Resumed: registered again under a new node id, ready again. */
    kill(srv.ns.pid, SIGCONT);
    srv.frozen = false;
    uint64_t t_cont = mono_ms();
    WAIT_FOR(atomic_load(&hk.registered) >= 1 && node_ready(n, mono_ms()), 15000);
    fprintf(stderr, "test_node: ready again %llu ms after SIGCONT\n",
            (unsigned long long)(mono_ms() - t_cont));
    assert_int_equal(atomic_load(&hk.registered), 1);
    assert_true(node_ready(n, mono_ms()));
    assert_true(node_serving(n, mono_ms()));
    node_identity(n, id2, &epoch2);
    assert_node_id(id2, "f1");
    assert_string_not_equal(id2, id);
    assert_true(epoch2 > epoch);
    assert_node_value("fence", id2, 2, lo, hi, &rev);
    assert_true(rev >= (epoch2 & 0xffff));
    assert_int_equal(atomic_load(&hk.fences), 1);
    /* The old lease stays dead: expired on the resumed server, and not
     * revived by the renewal cnats buffered during the outage and sent on
     * reconnect (a CAS on the old key's last revision). */
    enum kv_outcome old = read_node("fence", id, buf, sizeof buf, &rev);
    assert_true(old == KV_NOT_FOUND || (old == KV_OK && strcmp(buf, "0") == 0));
    node_stats(n, &s);
    assert_int_equal(s.fences, 1);
    assert_int_equal(s.registrations, 2);
    assert_true(s.disconnects >= 1);

    /* Jobs work again. */
    create_expect(n, &after, "after", KV_OK, 5000);

    /* The release is of the new id. */
    stop_node(n);
    assert_int_equal(read_node("fence", id2, buf, sizeof buf, &rev), KV_OK);
    assert_string_equal(buf, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_names, test_teardown),
        cmocka_unit_test(test_epoch_of),
        cmocka_unit_test_teardown(test_start_registers, test_teardown),
        cmocka_unit_test_teardown(test_renewals, test_teardown),
        cmocka_unit_test_teardown(test_stop_releases, test_teardown),
        cmocka_unit_test_teardown(test_jobs, test_teardown),
        cmocka_unit_test_teardown(test_workers, test_teardown),
        cmocka_unit_test_teardown(test_workers_fence, test_teardown),
        cmocka_unit_test_teardown(test_boot_failures, test_teardown),
        cmocka_unit_test_teardown(test_fence, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
