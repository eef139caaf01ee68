/* test_claim.c — the cross-node claim machine over a fake KV: an in-memory
 * model with revisions, Create only if absent, CAS with an expected
 * revision and per-bucket MaxAge on a fake clock, plus fake owner nodes
 * that answer a forwarded CLAIM. Every CAS the machine asks for is checked
 * against the single-writer rule (it holds the live lock, or the record
 * names it). Also: the sids record parser and formatter, and two claimants
 * interleaved in every order never both accepted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/claim.h"

#define L_MS    20000
#define FWD_MS  12000
#define ME      "c-00000001"
#define ME_EP   11
#define ME_SH   3
#define KV_MAX  8
#define NODES   4
#define OPS_MAX 128
#define KEY_MAX 16 /* fake keys and node ids are short; keeps the race's copies small */
#define VAL_MAX 40

enum bucket { NODES_B, SIDS_B, CLAIMS_B };
static const char H[] = "5f2c"; /* stands for sids/<64-hex> and claims/<64-hex> */

struct kv_entry {
    bool used;
    enum bucket b;
    char key[KEY_MAX];
    char val[VAL_MAX];
    uint64_t rev, written;
};

/* How a fake owner answers CLAIM. */
enum reply {
    R_CONFLICT,
    R_HANDOVER,
    R_HANDOVER_TAKEOVER,
    R_NOT_OWNER,
    R_SILENT,
    R_TIMEOUT,
    R_RACE
};

struct fake_node {
    char id[KEY_MAX];
    uint64_t epoch;
    enum reply reply;
    bool renews; /* alive: its lease is rewritten at every step */
    bool won;    /* R_RACE: it accepted the claim (holds the slot) */
};

/* The actions executed, in order, and when (outside the world, which the
 * race test copies at every step). */
static struct {
    enum claim_op ops[OPS_MAX];
    uint64_t at[OPS_MAX];
    int n;
} tr;

struct world {
    struct kv_entry e[KV_MAX];
    uint64_t seq, now;
    struct fake_node n[NODES];
    int nn;
    int cas_checked;
    /* one-shot fault: the next op of this kind answers `fault` (after doing it) */
    enum claim_op fault_op;
    enum claim_outcome fault;
    bool fault_armed;
};

static uint64_t max_age(enum bucket b)
{
    return b == NODES_B ? L_MS : b == SIDS_B ? 24ULL * 3600 * 1000 : 10000;
}

static struct kv_entry *kv_find(struct world *w, enum bucket b, const char *key)
{
    for (int i = 0; i < KV_MAX; i++) {
        struct kv_entry *e = &w->e[i];
        if (e->used && w->now >= e->written + max_age(b) && e->b == b)
            e->used = false; /* MaxAge: gone on the leader */
        if (e->used && e->b == b && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

static uint64_t kv_put(struct world *w, enum bucket b, const char *key, const char *val)
{
    struct kv_entry *e = kv_find(w, b, key);
    for (int i = 0; !e && i < KV_MAX; i++)
        if (!w->e[i].used)
            e = &w->e[i];
    assert_non_null(e);
    e->used = true;
    e->b = b;
    snprintf(e->key, sizeof e->key, "%s", key);
    snprintf(e->val, sizeof e->val, "%s", val);
    e->rev = ++w->seq;
    e->written = w->now;
    return e->rev;
}

static enum claim_outcome kv_create(struct world *w, enum bucket b, const char *key,
                                    const char *val, uint64_t *rev)
{
    if (kv_find(w, b, key))
        return CLAIM_R_CONFLICT;
    *rev = kv_put(w, b, key, val);
    return CLAIM_R_OK;
}

static enum claim_outcome kv_cas(struct world *w, enum bucket b, const char *key, const char *val,
                                 uint64_t last, uint64_t *rev)
{
    struct kv_entry *e = kv_find(w, b, key);
    if (!e || e->rev != last)
        return CLAIM_R_CONFLICT;
    *rev = kv_put(w, b, key, val);
    return CLAIM_R_OK;
}

static struct fake_node *node_of(struct world *w, const char *id)
{
    for (int i = 0; i < w->nn; i++)
        if (strcmp(w->n[i].id, id) == 0)
            return &w->n[i];
    return NULL;
}

static struct fake_node *add_node(struct world *w, const char *id, uint64_t epoch, enum reply rp,
                                  bool alive)
{
    struct fake_node *n = &w->n[w->nn++];
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    n->epoch = epoch;
    n->reply = rp;
    n->renews = alive;
    kv_put(w, NODES_B, id, "1 2 1765000000000");
    return n;
}

static uint64_t put_record(struct world *w, const char *node, uint64_t epoch, unsigned shard)
{
    char v[CLAIM_RECORD_MAX];
    if (node)
        snprintf(v, sizeof v, "1 %s %llu %u", node, (unsigned long long)epoch, shard);
    else
        snprintf(v, sizeof v, "0");
    return kv_put(w, SIDS_B, H, v);
}

static bool record_names(struct world *w, const char *node, uint64_t epoch)
{
    struct kv_entry *e = kv_find(w, SIDS_B, H);
    struct claim_record r;
    return e && claim_record_parse(&r, e->val, strlen(e->val)) == 0 && r.owned &&
           strcmp(r.node, node) == 0 && r.epoch == epoch;
}

static void world_init(struct world *w)
{
    memset(w, 0, sizeof *w);
    tr.n = 0;
    w->now = 100000;
    add_node(w, ME, ME_EP, R_CONFLICT, true);
}

static struct claim_action start(struct claim *c, struct world *w, const char *me, uint64_t ep)
{
    struct claim_params p = {.me = {.owned = true, .epoch = ep, .shard = ME_SH},
                             .lease_ms = L_MS,
                             .forward_timeout_ms = FWD_MS};
    snprintf(p.me.node, sizeof p.me.node, "%s", me);
    return claim_start(c, &p, w->now);
}

/* The single-writer rule, checked against the fake KV's state at the
 * moment of the CAS. */
static void assert_single_writer(struct world *w, const struct claim *c,
                                 const struct claim_action *a)
{
    if (a->writer == CLAIM_WRITER_LOCK) {
        struct kv_entry *lock = kv_find(w, CLAIMS_B, H);
        assert_non_null(lock);
        assert_string_equal(lock->val, c->p.me.node);
        assert_false(a->release);
    } else {
        assert_true(record_names(w, c->p.me.node, c->p.me.epoch));
        assert_true(a->release);
    }
    w->cas_checked++;
}

static struct claim_result forward(struct world *w, const struct claim *c,
                                   const struct claim_action *a)
{
    struct claim_result r = {.outcome = CLAIM_R_NO_RESPONDERS};
    struct fake_node *b = node_of(w, a->node);
    char v[CLAIM_RECORD_MAX];
    struct kv_entry *e = kv_find(w, SIDS_B, H);
    if (!b || b->reply == R_SILENT)
        return r;
    switch (b->reply) {
    case R_CONFLICT:
        r.outcome = CLAIM_R_REPLY_CONFLICT;
        break;
    case R_HANDOVER:
    case R_HANDOVER_TAKEOVER: /* B, the single writer, CASes the record to C */
        claim_record_format(&c->p.me, v, sizeof v);
        assert_int_equal(kv_cas(w, SIDS_B, H, v, e->rev, &r.rev), CLAIM_R_OK);
        r.outcome = CLAIM_R_HANDOVER;
        r.takeover = b->reply == R_HANDOVER_TAKEOVER;
        break;
    case R_NOT_OWNER: /* a record naming B with no slot: B releases it */
        if (record_names(w, b->id, b->epoch))
            assert_int_equal(kv_cas(w, SIDS_B, H, "0", e->rev, &r.rev), CLAIM_R_OK);
        r.outcome = CLAIM_R_NOT_OWNER;
        break;
    case R_TIMEOUT:
        w->now += a->ms;
        r.outcome = CLAIM_R_TIMEOUT;
        break;
    case R_RACE:
        r.outcome = b->won ? CLAIM_R_REPLY_CONFLICT : CLAIM_R_NOT_OWNER;
        break;
    default:
        break;
    }
    return r;
}

static struct claim_result read_op(struct world *w, enum bucket b, const char *key)
{
    struct claim_result r = {.outcome = CLAIM_R_NOT_FOUND};
    struct kv_entry *e = kv_find(w, b, key);
    if (e) {
        struct fake_node *n = b == NODES_B ? node_of(w, key) : NULL;
        r.outcome = CLAIM_R_OK;
        r.rev = e->rev;
        r.value = e->val;
        r.len = strlen(e->val);
        r.lease_epoch = n ? n->epoch : 0;
    }
    return r;
}

static struct claim_result exec_kv(struct world *w, const struct claim *c,
                                   const struct claim_action *a)
{
    struct claim_result r = {.outcome = CLAIM_R_ERROR};
    char v[CLAIM_RECORD_MAX];
    assert_true(claim_value(c, a, v, sizeof v) > 0 || a->op == CLAIM_DO_READ ||
                a->op == CLAIM_DO_READ_LEASE);
    switch (a->op) {
    case CLAIM_DO_CREATE_RECORD:
        r.outcome = kv_create(w, SIDS_B, H, v, &r.rev);
        break;
    case CLAIM_DO_READ:
        r = read_op(w, SIDS_B, H);
        break;
    case CLAIM_DO_READ_LEASE:
        r = read_op(w, NODES_B, a->node);
        break;
    case CLAIM_DO_CREATE_LOCK:
        r.outcome = kv_create(w, CLAIMS_B, H, v, &r.rev);
        break;
    case CLAIM_DO_CAS:
        assert_single_writer(w, c, a);
        r.outcome = kv_cas(w, SIDS_B, H, v, a->rev, &r.rev);
        break;
    default:
        fail_msg("not a KV op: %s", claim_op_name(a->op));
    }
    return r;
}

/* Performs one action at the world's time and returns its outcome. */
static struct claim_result exec(struct world *w, const struct claim *c,
                                const struct claim_action *a)
{
    struct claim_result r = {.outcome = CLAIM_R_WOKE};
    w->now += 1;
    for (int i = 0; i < w->nn; i++) {
        struct kv_entry *lease = w->n[i].renews ? kv_find(w, NODES_B, w->n[i].id) : NULL;
        if (lease) { /* a renewal: new revision, new MaxAge start */
            lease->rev = ++w->seq;
            lease->written = w->now;
        }
    }
    if (tr.n < OPS_MAX) {
        tr.ops[tr.n] = a->op;
        tr.at[tr.n++] = w->now;
    }
    if (a->op == CLAIM_SLEEP)
        w->now += a->ms;
    else if (a->op == CLAIM_DO_FORWARD)
        r = forward(w, c, a);
    else
        r = exec_kv(w, c, a);
    if (w->fault_armed && a->op == w->fault_op) {
        w->fault_armed = false;
        r.outcome = w->fault;
    }
    return r;
}

/* Runs the claim to its end (or max steps) and returns the last action. */
static struct claim_action drive(struct world *w, struct claim *c, struct claim_action a, int max)
{
    for (int i = 0; i < max && !claim_done(c); i++) {
        struct claim_result r = exec(w, c, &a);
        a = claim_feed(c, &r, w->now);
    }
    return a;
}

static void assert_ops(const enum claim_op *want, int n)
{
    for (int i = 0; i < n && i < tr.n; i++)
        if (tr.ops[i] != want[i])
            fail_msg("op %d: %s, want %s", i, claim_op_name(tr.ops[i]), claim_op_name(want[i]));
    assert_int_equal(tr.n, n);
}

/* ---- records ---- */

static void test_record_codec(void **state)
{
    (void)state;
    static const char *const good[] = {
        "0",
        "1 a 1 0",
        "1 n1-0a1b2c3d 42 7",
        "1 A_b-9 18446744073709551615 65535",
        "1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1 1",
    };
    static const char *const bad[] = {
        "",
        "00",
        "0 ",
        " 0",
        "1",
        "1 ",
        "1 a",
        "1 a 1",
        "1 a 1 ",
        "1 a 0 0",
        "1 a 01 0",
        "1 a 1 00",
        "1 a 1 65536",
        "1 a 18446744073709551616 0",
        "1 a.b 1 0",
        "1  a 1 0",
        "1 a  1 0",
        "1 a 1 0 ",
        "1 a 1 0\n",
        "2 a 1 0",
        "1 a 1 -1",
        "1 a +1 0",
        "1 a 1 0 0",
        "1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1 1",
        "1 a 99999999999999999999 0",
    };
    struct claim_record r, r2;
    char buf[CLAIM_RECORD_MAX];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(claim_record_parse(&r, good[i], strlen(good[i])), 0);
        size_t n = claim_record_format(&r, buf, sizeof buf);
        assert_int_equal(n, strlen(good[i]));
        assert_memory_equal(buf, good[i], n);
        assert_int_equal(claim_record_parse(&r2, buf, n), 0);
        assert_memory_equal(&r, &r2, sizeof r);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (claim_record_parse(&r, bad[i], strlen(bad[i])) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_not_equal(claim_record_parse(&r, "1 a\0b 1 0", 9), 0);
    assert_int_equal(claim_record_parse(&r, "1 n1-0a1b2c3d 42 7", 18), 0);
    assert_true(r.owned);
    assert_string_equal(r.node, "n1-0a1b2c3d");
    assert_int_equal(r.epoch, 42);
    assert_int_equal(r.shard, 7);
    assert_int_equal(claim_record_format(&r, buf, 18), 0); /* no room for the NUL */
    assert_int_equal(claim_record_format(&r, buf, 19), 18);
    r.epoch = 0;
    assert_int_equal(claim_record_format(&r, buf, sizeof buf), 0);
    assert_true(claim_node_id_valid("web-1_A", 7));
    assert_false(claim_node_id_valid("web.1", 5));
    assert_false(claim_node_id_valid("", 0));
}

/* ---- scenarios ---- */

static void test_free_id_create_wins(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    struct claim_action a = start(&c, &w, ME, ME_EP);
    assert_int_equal(a.op, CLAIM_DO_CREATE_RECORD);
    a = drive(&w, &c, a, 50);
    assert_int_equal(a.op, CLAIM_ACCEPT);
    assert_int_equal(a.how, CLAIM_HOW_CREATED);
    assert_string_equal(claim_how_path(a.how), "create");
    assert_false(claim_how_takeover(a.how));
    struct kv_entry *e = kv_find(&w, SIDS_B, H);
    assert_string_equal(e->val, "1 " ME " 11 3");
    assert_int_equal(a.epoch, e->rev);
    assert_int_equal(tr.n, 1);
    assert_true(claim_done(&c));
    struct claim_result r = {.outcome = CLAIM_R_OK};
    assert_int_equal(claim_feed(&c, &r, w.now).op, CLAIM_ACCEPT); /* terminal stays */
    assert_int_equal(claim_abort(&c).op, CLAIM_ACCEPT);
}

static void test_live_owner_conflict(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    add_node(&w, "b-00000002", 5, R_CONFLICT, true);
    put_record(&w, "b-00000002", 5, 2);
    struct claim_action a = start(&c, &w, ME, ME_EP);
    for (int i = 0; i < 3; i++) {
        struct claim_result r = exec(&w, &c, &a);
        a = claim_feed(&c, &r, w.now);
    }
    assert_int_equal(a.op, CLAIM_DO_FORWARD);
    assert_string_equal(a.node, "b-00000002");
    assert_int_equal(a.shard, 2);
    assert_int_equal(a.ms, FWD_MS);
    a = drive(&w, &c, a, 50);
    assert_int_equal(a.op, CLAIM_REJECT_4409);
    static const enum claim_op want[] = {CLAIM_DO_CREATE_RECORD, CLAIM_DO_READ, CLAIM_DO_READ_LEASE,
                                         CLAIM_DO_FORWARD};
    assert_ops(want, 4);
    assert_true(record_names(&w, "b-00000002", 5)); /* untouched */
}

static void test_handover(void **state)
{
    (void)state;
    static struct world w;
    for (int takeover = 0; takeover < 2; takeover++) {
        struct claim c;
        world_init(&w);
        add_node(&w, "b-00000002", 5, takeover ? R_HANDOVER_TAKEOVER : R_HANDOVER, true);
        uint64_t old = put_record(&w, "b-00000002", 5, 2);
        struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 50);
        assert_int_equal(a.op, CLAIM_ACCEPT);
        assert_int_equal(a.how,
                         takeover ? CLAIM_HOW_HANDOVER_TAKEOVER : CLAIM_HOW_HANDOVER_RECLAIM);
        assert_int_equal(claim_how_takeover(a.how), takeover);
        assert_string_equal(claim_how_path(a.how), "handover");
        assert_true(a.epoch > old);
        assert_true(record_names(&w, ME, ME_EP));
        assert_int_equal(kv_find(&w, SIDS_B, H)->rev, a.epoch);
        assert_int_equal(w.cas_checked, 0); /* the owner wrote, not the claimant */
    }
}

static void test_not_owner_restarts(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    add_node(&w, "b-00000002", 5, R_NOT_OWNER, true);
    put_record(&w, "b-00000002", 5, 2);
    struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 50);
    assert_int_equal(a.op, CLAIM_ACCEPT);
    assert_int_equal(a.how, CLAIM_HOW_FREE);
    assert_int_equal(c.restarts, 1);
    static const enum claim_op want[] = {
        CLAIM_DO_CREATE_RECORD, CLAIM_DO_READ,          CLAIM_DO_READ_LEASE,
        CLAIM_DO_FORWARD,       CLAIM_DO_CREATE_RECORD, CLAIM_DO_READ,
        CLAIM_DO_CREATE_LOCK,   CLAIM_DO_READ,          CLAIM_DO_CAS};
    assert_ops(want, 9);
    assert_true(record_names(&w, ME, ME_EP));
}

static void test_free_record_lock_cas(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    uint64_t rev = put_record(&w, NULL, 0, 0);
    struct claim_action a = start(&c, &w, ME, ME_EP);
    for (int i = 0; i < 4; i++) {
        struct claim_result r = exec(&w, &c, &a);
        a = claim_feed(&c, &r, w.now);
    }
    assert_int_equal(a.op, CLAIM_DO_CAS);
    assert_int_equal(a.rev, rev);
    assert_int_equal(a.writer, CLAIM_WRITER_LOCK);
    assert_false(a.release);
    char v[CLAIM_RECORD_MAX];
    assert_int_equal(claim_value(&c, &a, v, sizeof v), strlen("1 " ME " 11 3"));
    a = drive(&w, &c, a, 50);
    assert_int_equal(a.op, CLAIM_ACCEPT);
    assert_int_equal(a.how, CLAIM_HOW_FREE);
    assert_int_equal(a.epoch, kv_find(&w, SIDS_B, H)->rev);
    assert_string_equal(kv_find(&w, CLAIMS_B, H)->val, ME);
    assert_int_equal(w.cas_checked, 1);
    static const enum claim_op want[] = {CLAIM_DO_CREATE_RECORD, CLAIM_DO_READ,
                                         CLAIM_DO_CREATE_LOCK, CLAIM_DO_READ, CLAIM_DO_CAS};
    assert_ops(want, 5);
}

static void test_stale_owner_takeover(void **state)
{
    (void)state;
    static struct world w;
    for (int variant = 0; variant < 2; variant++) {
        struct claim c;
        world_init(&w);
        if (variant == 1) /* alive, but the lease is of another epoch */
            add_node(&w, "b-00000002", 9, R_CONFLICT, true);
        put_record(&w, "b-00000002", 5, 2); /* variant 0: no lease at all */
        struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 50);
        assert_int_equal(a.op, CLAIM_ACCEPT);
        assert_int_equal(a.how, CLAIM_HOW_TAKEOVER_DEAD);
        assert_true(claim_how_takeover(a.how));
        assert_string_equal(claim_how_path(a.how), "takeover_dead");
        assert_true(record_names(&w, ME, ME_EP));
        static const enum claim_op want[] = {CLAIM_DO_CREATE_RECORD, CLAIM_DO_READ,
                                             CLAIM_DO_READ_LEASE,    CLAIM_DO_CREATE_LOCK,
                                             CLAIM_DO_READ,          CLAIM_DO_CAS};
        assert_ops(want, 6);
    }
}

static void test_lock_taken_gives_4409(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    put_record(&w, NULL, 0, 0);
    kv_put(&w, CLAIMS_B, H, "d-00000004"); /* someone else is claiming */
    uint64_t t0 = w.now;
    struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 100);
    assert_int_equal(a.op, CLAIM_REJECT_4409);
    assert_int_equal(c.restarts, CLAIM_MAX_RESTARTS);
    int sleeps = 0, locks = 0;
    for (int i = 0; i < tr.n; i++) {
        sleeps += tr.ops[i] == CLAIM_SLEEP;
        locks += tr.ops[i] == CLAIM_DO_CREATE_LOCK;
        assert_int_not_equal(tr.ops[i], CLAIM_DO_CAS);
    }
    assert_int_equal(sleeps, 5);
    assert_int_equal(locks, 6);
    assert_true(w.now - t0 >= 5 * CLAIM_RETRY_SLEEP_MS);
    assert_true(w.now - t0 < 5 * CLAIM_RETRY_SLEEP_MS + 100);
}

/* B crashed: CLAIM finds no responders; its lease is polled every second
 * until it expires, then lock + CAS. Same when the CLAIM times out. */
static void test_no_responders_polls_lease(void **state)
{
    (void)state;
    static struct world w;
    for (int variant = 0; variant < 2; variant++) {
        struct claim c;
        world_init(&w);
        w.now -= 3000;
        add_node(&w, "b-00000002", 5, variant ? R_TIMEOUT : R_SILENT, false);
        w.now += 3000; /* its last renewal was 3 s ago: 17 s left */
        put_record(&w, "b-00000002", 5, 2);
        uint64_t t0 = w.now;
        struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 100);
        assert_int_equal(a.op, CLAIM_ACCEPT);
        assert_int_equal(a.how, CLAIM_HOW_TAKEOVER_DEAD);
        uint64_t expiry = 97000 + L_MS, fwd_failed = t0 + 4 + (variant ? FWD_MS : 0);
        assert_true(w.now >= expiry && w.now <= expiry + CLAIM_POLL_MS + 10);
        assert_true(w.now <= fwd_failed + L_MS + CLAIM_POLL_EXTRA_MS);
        uint64_t last_poll = 0;
        int polls = 0;
        for (int i = 4; i < tr.n; i++) {
            if (tr.ops[i] != CLAIM_DO_READ_LEASE)
                continue;
            if (last_poll)
                assert_true(tr.at[i] - last_poll <= CLAIM_POLL_MS + 2);
            last_poll = tr.at[i];
            polls++;
        }
        assert_int_equal(polls, variant ? 6 : 18);
        assert_true(record_names(&w, ME, ME_EP));
    }
}

/* B's lease stays (it renews) but B never answers: after L + 2 s of
 * polling its id is not ours to take. */
static void test_silent_live_owner_4409(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    add_node(&w, "b-00000002", 5, R_SILENT, true);
    put_record(&w, "b-00000002", 5, 2);
    uint64_t t0 = w.now;
    struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 100);
    assert_int_equal(a.op, CLAIM_REJECT_4409);
    assert_true(w.now - t0 >= L_MS + CLAIM_POLL_EXTRA_MS);
    assert_true(w.now - t0 <= L_MS + CLAIM_POLL_EXTRA_MS + 100);
    assert_true(record_names(&w, "b-00000002", 5));
    assert_int_equal(w.cas_checked, 0);
}

/* The newcomer disconnects: abort works after any number of steps. */
static void test_abort_at_any_step(void **state)
{
    (void)state;
    static struct world w;
    int k;
    for (k = 0; k < 200; k++) {
        struct claim c;
        world_init(&w);
        add_node(&w, "b-00000002", 5, R_SILENT, false);
        put_record(&w, "b-00000002", 5, 2);
        struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), k);
        if (claim_done(&c)) {
            assert_int_equal(a.op, CLAIM_ACCEPT); /* k steps ran it to the end */
            break;
        }
        assert_int_equal(claim_abort(&c).op, CLAIM_ABORTED);
        assert_true(claim_done(&c));
        struct claim_result r = {.outcome = a.op == CLAIM_SLEEP ? CLAIM_R_WOKE : CLAIM_R_OK};
        assert_int_equal(claim_feed(&c, &r, w.now).op, CLAIM_ABORTED);
    }
    assert_true(k > 8 && k < 200); /* every kind of step was interrupted once */
}

static void test_cas_not_acked_gives_up(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    struct claim_action a;
    for (int variant = 0; variant < 3; variant++) {
        world_init(&w);
        put_record(&w, NULL, 0, 0);
        a = start(&c, &w, ME, ME_EP);
        while (a.op != CLAIM_DO_CAS) {
            struct claim_result r = exec(&w, &c, &a);
            a = claim_feed(&c, &r, w.now);
        }
        struct claim_result r = {.outcome = CLAIM_R_TIMEOUT};
        if (variant == 1)
            r.outcome = CLAIM_R_ERROR;
        if (variant == 2) { /* acknowledged, but after the 5 s window */
            w.now = c.lock_sent + CLAIM_LOCK_WINDOW_MS;
            r = exec(&w, &c, &a);
            assert_int_equal(r.outcome, CLAIM_R_OK);
        }
        a = claim_feed(&c, &r, w.now);
        assert_int_equal(a.op, CLAIM_GIVE_UP);
        assert_string_equal(a.why, CLAIM_WHY_UNACKED);
    }
    /* The re-read under the lock came back too late: no CAS is sent. */
    world_init(&w);
    put_record(&w, NULL, 0, 0);
    a = start(&c, &w, ME, ME_EP);
    for (int i = 0; i < 3; i++) {
        struct claim_result r = exec(&w, &c, &a);
        a = claim_feed(&c, &r, w.now);
    }
    assert_int_equal(a.op, CLAIM_DO_READ);
    assert_true(c.lock_held);
    w.now = c.lock_sent + CLAIM_LOCK_WINDOW_MS;
    struct claim_result r = exec(&w, &c, &a);
    a = claim_feed(&c, &r, w.now);
    assert_int_equal(a.op, CLAIM_SLEEP);
    a = drive(&w, &c, a, 100);
    assert_int_equal(a.op, CLAIM_REJECT_4409); /* our own lock blocks us for 10 s */
    assert_int_equal(w.cas_checked, 0);
}

/* A record naming this node with no slot behind it: this node is its
 * single writer, so it CASes it to "0", then claims it like a free one. */
static void test_own_record_released(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    uint64_t rev = put_record(&w, ME, ME_EP, ME_SH);
    struct claim_action a = start(&c, &w, ME, ME_EP);
    for (int i = 0; i < 2; i++) {
        struct claim_result r = exec(&w, &c, &a);
        a = claim_feed(&c, &r, w.now);
    }
    assert_int_equal(a.op, CLAIM_DO_CAS);
    assert_true(a.release);
    assert_int_equal(a.writer, CLAIM_WRITER_OWNER);
    assert_int_equal(a.rev, rev);
    char v[CLAIM_RECORD_MAX];
    assert_int_equal(claim_value(&c, &a, v, sizeof v), 1);
    assert_string_equal(v, "0");
    struct claim_result r = exec(&w, &c, &a);
    assert_string_equal(kv_find(&w, SIDS_B, H)->val, "0");
    a = drive(&w, &c, claim_feed(&c, &r, w.now), 50);
    assert_int_equal(a.op, CLAIM_ACCEPT);
    assert_int_equal(a.how, CLAIM_HOW_FREE);
    assert_true(a.epoch > rev + 1);
    assert_int_equal(w.cas_checked, 2);
    assert_true(record_names(&w, ME, ME_EP));
}

/* The first Create times out but landed: the retry finds our own record. */
static void test_create_timeout_landed(void **state)
{
    (void)state;
    static struct world w;
    struct claim c;
    world_init(&w);
    w.fault_armed = true;
    w.fault_op = CLAIM_DO_CREATE_RECORD;
    w.fault = CLAIM_R_TIMEOUT;
    struct claim_action a = drive(&w, &c, start(&c, &w, ME, ME_EP), 50);
    assert_int_equal(a.op, CLAIM_ACCEPT);
    assert_int_equal(c.restarts, 1);
    static const enum claim_op want[] = {
        CLAIM_DO_CREATE_RECORD, CLAIM_SLEEP,          CLAIM_DO_CREATE_RECORD, CLAIM_DO_READ,
        CLAIM_DO_CAS,           CLAIM_DO_CREATE_LOCK, CLAIM_DO_READ,          CLAIM_DO_CAS};
    assert_ops(want, 8);
    assert_int_equal(a.epoch, kv_find(&w, SIDS_B, H)->rev);
}

/* The bus keeps failing: five restarts, then FAIL (not 4409). */
static void test_bus_errors_fail(void **state)
{
    (void)state;
    struct claim c;
    static struct world w;
    world_init(&w);
    struct claim_action a = start(&c, &w, ME, ME_EP);
    int steps = 0;
    while (!claim_done(&c) && steps++ < 100) {
        struct claim_result r = {.outcome = a.op == CLAIM_SLEEP ? CLAIM_R_WOKE : CLAIM_R_ERROR};
        a = claim_feed(&c, &r, w.now += 10);
    }
    assert_int_equal(a.op, CLAIM_FAIL);
    assert_string_equal(a.why, CLAIM_WHY_BUS);
    assert_int_equal(c.restarts, CLAIM_MAX_RESTARTS);
    /* Invalid parameters never start. */
    a = start(&c, &w, "bad.id", ME_EP);
    assert_int_equal(a.op, CLAIM_FAIL);
    assert_string_equal(a.why, CLAIM_WHY_NOT_SERVING);
    a = start(&c, &w, ME, 0);
    assert_int_equal(a.op, CLAIM_FAIL);
    assert_string_equal(a.why, CLAIM_WHY_NOT_SERVING);
    /* A sleeping claim fed anything but its wake-up ends (a caller bug). */
    world_init(&w);
    a = start(&c, &w, ME, ME_EP);
    struct claim_result err = {.outcome = CLAIM_R_ERROR};
    a = claim_feed(&c, &err, w.now += 10);
    assert_int_equal(a.op, CLAIM_SLEEP);
    a = claim_feed(&c, &err, w.now += 10);
    assert_int_equal(a.op, CLAIM_FAIL);
    assert_string_equal(a.why, CLAIM_WHY_INTERNAL);
    /* An accepted claim carries no reason. */
    world_init(&w);
    a = drive(&w, &c, start(&c, &w, ME, ME_EP), 100);
    assert_int_equal(a.op, CLAIM_ACCEPT);
    assert_null(a.why);
}

/* ---- two claimants, every interleaving ---- */

static const char *const RN[2] = {"n1-0000000a", "n2-0000000b"};

struct race {
    struct world w;
    struct claim c[2];
    struct claim_action a[2];
};

static long race_leaves;

static void race_dfs(const struct race *s, int depth)
{
    bool moved = false;
    assert_true(depth < 100);
    for (int i = 0; i < 2; i++) {
        if (claim_done(&s->c[i]))
            continue;
        moved = true;
        struct race n = *s;
        tr.n = 0; /* the trace is not needed here */
        struct claim_result r = exec(&n.w, &n.c[i], &n.a[i]);
        n.a[i] = claim_feed(&n.c[i], &r, n.w.now);
        if (n.a[i].op == CLAIM_ACCEPT) {
            node_of(&n.w, RN[i])->won = true;
            assert_false(node_of(&n.w, RN[!i])->won);
            assert_true(record_names(&n.w, RN[i], 21 + (uint64_t)i));
            assert_int_equal(kv_find(&n.w, SIDS_B, H)->rev, n.a[i].epoch);
        }
        race_dfs(&n, depth + 1);
    }
    if (moved)
        return;
    int accepts = (s->a[0].op == CLAIM_ACCEPT) + (s->a[1].op == CLAIM_ACCEPT);
    assert_int_equal(accepts, 1);
    int winner = s->a[0].op == CLAIM_ACCEPT ? 0 : 1;
    assert_int_equal(s->a[!winner].op, CLAIM_REJECT_4409);
    assert_true(record_names((struct world *)&s->w, RN[winner], 21 + (uint64_t)winner));
    race_leaves++;
}

/* Scenario 0: no record; 1: a free record; 2: a record of a dead node;
 * 3: a record of a live node without the slot (it answers NOT_OWNER and
 * releases the record when it still names it). */
static void race(int scenario)
{
    static struct race s;
    memset(&s, 0, sizeof s);
    s.w.now = 100000;
    for (int i = 0; i < 2; i++)
        add_node(&s.w, RN[i], 21 + (uint64_t)i, R_RACE, true);
    if (scenario == 1)
        put_record(&s.w, NULL, 0, 0);
    if (scenario == 2 || scenario == 3)
        put_record(&s.w, "b-00000002", 5, 2);
    if (scenario == 3)
        add_node(&s.w, "b-00000002", 5, R_NOT_OWNER, true);
    for (int i = 0; i < 2; i++)
        s.a[i] = start(&s.c[i], &s.w, RN[i], 21 + (uint64_t)i);
    race_leaves = 0;
    race_dfs(&s, 0);
    assert_true(race_leaves > 1);
    print_message("race scenario %d: %ld interleavings\n", scenario, race_leaves);
}

static void test_race_never_two_owners(void **state)
{
    (void)state;
    for (int scenario = 0; scenario < 4; scenario++)
        race(scenario);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_codec),
        cmocka_unit_test(test_free_id_create_wins),
        cmocka_unit_test(test_live_owner_conflict),
        cmocka_unit_test(test_handover),
        cmocka_unit_test(test_not_owner_restarts),
        cmocka_unit_test(test_free_record_lock_cas),
        cmocka_unit_test(test_stale_owner_takeover),
        cmocka_unit_test(test_lock_taken_gives_4409),
        cmocka_unit_test(test_no_responders_polls_lease),
        cmocka_unit_test(test_silent_live_owner_4409),
        cmocka_unit_test(test_abort_at_any_step),
        cmocka_unit_test(test_cas_not_acked_gives_up),
        cmocka_unit_test(test_own_record_released),
        cmocka_unit_test(test_create_timeout_landed),
        cmocka_unit_test(test_bus_errors_fail),
        cmocka_unit_test(test_race_never_two_owners),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
