/* claim.c — the cross-node claim state machine (claim.h) and the sids
 * record codec. Each phase has one handler that turns the outcome of the
 * operation in flight into the next action; restarts at step 2 go through
 * restart(), every CAS through cas(), the one place that enforces the
 * single-writer rule. It does not touch the bus, the registry or any
 * clock of its own, and it does not log. */
#include "cluster/claim.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* ---- records ---- */

bool claim_node_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > CLAIM_NODE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ok)
            return false;
    }
    return true;
}

/* Canonical unsigned decimal in s[0..n), at most max. */
static bool parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20 || (s[0] == '0' && n > 1))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Length of the field starting at s (up to the next space or the end). */
static size_t field(const char *s, size_t len)
{
    const char *sp = memchr(s, ' ', len);
    return sp ? (size_t)(sp - s) : len;
}

int claim_record_parse(struct claim_record *r, const char *buf, size_t len)
{
    memset(r, 0, sizeof *r);
    if (len == 1 && buf[0] == '0')
        return 0;
    if (len < 2 || buf[0] != '1' || buf[1] != ' ')
        return -EINVAL;
    const char *p = buf + 2, *end = buf + len;
    size_t n = field(p, (size_t)(end - p));
    if (!claim_node_id_valid(p, n) || p + n == end)
        return -EINVAL;
    memcpy(r->node, p, n);
    p += n + 1;
    n = field(p, (size_t)(end - p));
    if (!parse_u64(p, n, UINT64_MAX, &r->epoch) || r->epoch == 0 || p + n == end)
        return -EINVAL;
    p += n + 1;
    uint64_t shard;
    n = (size_t)(end - p);
    if (!parse_u64(p, n, UINT16_MAX, &shard))
        return -EINVAL;
    r->shard = (uint16_t)shard;
    r->owned = true;
    return 0;
}

size_t claim_record_format(const struct claim_record *r, char *buf, size_t cap)
{
    int n;
    if (!r->owned) {
        n = snprintf(buf, cap, "0");
    } else {
        size_t nl = strnlen(r->node, sizeof r->node);
        if (!claim_node_id_valid(r->node, nl) || nl == sizeof r->node || r->epoch == 0)
            return 0;
        n = snprintf(buf, cap, "1 %s %" PRIu64 " %u", r->node, r->epoch, (unsigned)r->shard);
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- the machine ---- */

enum cause {
    CAUSE_RACE, /* someone else moved first: lock taken, record changed, NOT_OWNER */
    CAUSE_BUS,  /* an operation failed */
};

static struct claim_action emit(struct claim *c, enum claim_phase ph, enum claim_op op,
                                uint64_t now)
{
    memset(&c->act, 0, sizeof c->act);
    c->act.op = op;
    c->phase = ph;
    c->act_at = now;
    return c->act;
}

static struct claim_action finish(struct claim *c, enum claim_op op)
{
    memset(&c->act, 0, sizeof c->act);
    c->act.op = op;
    c->phase = CLAIM_P_DONE;
    return c->act;
}

static struct claim_action failed(struct claim *c, enum claim_op op, const char *why)
{
    finish(c, op);
    c->act.why = why;
    return c->act;
}

static struct claim_action accepted(struct claim *c, uint64_t epoch, enum claim_how how)
{
    finish(c, CLAIM_ACCEPT);
    c->act.epoch = epoch;
    c->act.how = how;
    return c->act;
}

static struct claim_action sleep_for(struct claim *c, enum claim_phase ph, uint64_t ms,
                                     uint64_t now)
{
    emit(c, ph, CLAIM_SLEEP, now);
    c->act.ms = ms;
    return c->act;
}

static bool names_me(const struct claim *c, const struct claim_record *r)
{
    return r->owned && r->epoch == c->p.me.epoch && strcmp(r->node, c->p.me.node) == 0;
}

static bool lock_usable(const struct claim *c, uint64_t now)
{
    return c->lock_held && now <= c->lock_sent + CLAIM_LOCK_WINDOW_MS;
}

/* Step 2: Create the record. */
static struct claim_action step2(struct claim *c, uint64_t now)
{
    c->stale = false;
    return emit(c, CLAIM_P_CREATE, CLAIM_DO_CREATE_RECORD, now);
}

/* Restart at step 2 (after 200 ms unless the state just changed under us),
 * at most CLAIM_MAX_RESTARTS times. */
static struct claim_action restart(struct claim *c, enum cause why, bool pause, uint64_t now)
{
    if (c->restarts >= CLAIM_MAX_RESTARTS)
        return why == CAUSE_BUS ? failed(c, CLAIM_FAIL, CLAIM_WHY_BUS)
                                : finish(c, CLAIM_REJECT_4409);
    c->restarts++;
    if (pause)
        return sleep_for(c, CLAIM_P_RETRY_SLEEP, CLAIM_RETRY_SLEEP_MS, now);
    return step2(c, now);
}

/* The only way to a CAS. Invariant (single-writer rule, claim.h): a CAS
 * is handed out only while this claim holds the lock inside its window,
 * or to release a record that names this node itself. */
static struct claim_action cas(struct claim *c, enum claim_writer w, enum claim_phase ph,
                               uint64_t now)
{
    bool allowed = w == CLAIM_WRITER_LOCK ? lock_usable(c, now) : names_me(c, &c->owner);
    if (!allowed)
        return failed(c, CLAIM_FAIL, CLAIM_WHY_NOT_WRITER);
    emit(c, ph, CLAIM_DO_CAS, now);
    c->act.rev = c->rec_rev;
    c->act.writer = w;
    c->act.release = w == CLAIM_WRITER_OWNER;
    return c->act;
}

/* Step 3: the record is free or its owner is dead. Take the lock, unless
 * this claim still holds a usable one from an earlier round. */
static struct claim_action step3(struct claim *c, uint64_t now)
{
    if (lock_usable(c, now))
        return emit(c, CLAIM_P_REREAD, CLAIM_DO_READ, now);
    return emit(c, CLAIM_P_LOCK, CLAIM_DO_CREATE_LOCK, now);
}

static struct claim_action read_lease(struct claim *c, enum claim_phase ph, uint64_t now)
{
    emit(c, ph, CLAIM_DO_READ_LEASE, now);
    memcpy(c->act.node, c->owner.node, sizeof c->act.node);
    return c->act;
}

static struct claim_action forward(struct claim *c, uint64_t now)
{
    emit(c, CLAIM_P_FORWARD, CLAIM_DO_FORWARD, now);
    memcpy(c->act.node, c->owner.node, sizeof c->act.node);
    c->act.shard = c->owner.shard;
    c->act.ms = c->p.forward_timeout_ms;
    return c->act;
}

static struct claim_action on_create(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome == CLAIM_R_OK && r->rev > 0)
        return accepted(c, r->rev, CLAIM_HOW_CREATED);
    if (r->outcome == CLAIM_R_CONFLICT)
        return emit(c, CLAIM_P_READ, CLAIM_DO_READ, now);
    /* A Create that timed out may have landed: the next read finds a
     * record naming this node and releases it. */
    return restart(c, CAUSE_BUS, true, now);
}

static struct claim_action on_read(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome == CLAIM_R_NOT_FOUND) /* expired since the Create failed */
        return restart(c, CAUSE_RACE, false, now);
    if (r->outcome != CLAIM_R_OK || r->rev == 0 || !r->value ||
        claim_record_parse(&c->owner, r->value, r->len) != 0)
        return restart(c, CAUSE_BUS, true, now);
    c->rec_rev = r->rev;
    if (!c->owner.owned)
        return step3(c, now);
    if (names_me(c, &c->owner)) /* a record of ours with no slot behind it */
        return cas(c, CLAIM_WRITER_OWNER, CLAIM_P_RELEASE, now);
    if (strcmp(c->owner.node, c->p.me.node) == 0) {
        c->stale = true; /* an earlier epoch of this very node: dead */
        return step3(c, now);
    }
    return read_lease(c, CLAIM_P_OWNER_LEASE, now);
}

/* A lease read that proves the record's owner is alive. */
static bool owner_alive(const struct claim *c, const struct claim_result *r)
{
    return r->outcome == CLAIM_R_OK && (r->lease_epoch == 0 || r->lease_epoch == c->owner.epoch);
}

static struct claim_action on_owner_lease(struct claim *c, const struct claim_result *r,
                                          uint64_t now)
{
    if (owner_alive(c, r))
        return forward(c, now);
    if (r->outcome == CLAIM_R_OK || r->outcome == CLAIM_R_NOT_FOUND) {
        c->stale = true;
        return step3(c, now);
    }
    return restart(c, CAUSE_BUS, true, now);
}

static struct claim_action on_release(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome == CLAIM_R_OK && r->rev > c->rec_rev) {
        c->rec_rev = r->rev;
        memset(&c->owner, 0, sizeof c->owner); /* now "0" */
        return step3(c, now);
    }
    if (r->outcome == CLAIM_R_CONFLICT)
        return restart(c, CAUSE_RACE, false, now);
    return restart(c, CAUSE_BUS, true, now);
}

static struct claim_action on_lock(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome == CLAIM_R_OK) {
        c->lock_held = true;
        c->lock_sent = c->act_at;
        return emit(c, CLAIM_P_REREAD, CLAIM_DO_READ, now);
    }
    /* Taken: someone else is claiming (or our own Create landed unseen,
     * which we cannot tell; it expires like any other). */
    return restart(c, r->outcome == CLAIM_R_CONFLICT ? CAUSE_RACE : CAUSE_BUS, true, now);
}

static struct claim_action on_reread(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome == CLAIM_R_NOT_FOUND || (r->outcome == CLAIM_R_OK && r->rev != c->rec_rev))
        return restart(c, CAUSE_RACE, false, now); /* changed: look again */
    if (r->outcome != CLAIM_R_OK)
        return restart(c, CAUSE_BUS, true, now);
    if (!lock_usable(c, now))
        return restart(c, CAUSE_RACE, true, now); /* too late to write under this lock */
    return cas(c, CLAIM_WRITER_LOCK, CLAIM_P_CAS, now);
}

static struct claim_action on_cas(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome == CLAIM_R_CONFLICT)
        return restart(c, CAUSE_RACE, false, now);
    if (r->outcome != CLAIM_R_OK || r->rev <= c->rec_rev || !lock_usable(c, now))
        return failed(c, CLAIM_GIVE_UP, CLAIM_WHY_UNACKED); /* not acknowledged within the window */
    return accepted(c, r->rev, c->stale ? CLAIM_HOW_TAKEOVER_DEAD : CLAIM_HOW_FREE);
}

static struct claim_action on_forward(struct claim *c, const struct claim_result *r, uint64_t now)
{
    switch (r->outcome) {
    case CLAIM_R_REPLY_CONFLICT:
        return finish(c, CLAIM_REJECT_4409);
    case CLAIM_R_HANDOVER:
        if (r->rev <= c->rec_rev) /* an epoch must be newer than the record we saw */
            return restart(c, CAUSE_BUS, true, now);
        return accepted(c, r->rev,
                        r->takeover ? CLAIM_HOW_HANDOVER_TAKEOVER : CLAIM_HOW_HANDOVER_RECLAIM);
    case CLAIM_R_NOT_OWNER:
        return restart(c, CAUSE_RACE, false, now);
    case CLAIM_R_NO_RESPONDERS:
    case CLAIM_R_TIMEOUT:
        c->poll_until = now + c->p.lease_ms + CLAIM_POLL_EXTRA_MS;
        return read_lease(c, CLAIM_P_POLL, now);
    default:
        return restart(c, CAUSE_BUS, true, now);
    }
}

/* Step 5: the owner did not answer; wait for its lease to go. A lease
 * still there after L + 2 s belongs to a live node: its id is not ours. */
static struct claim_action on_poll(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (!owner_alive(c, r) && (r->outcome == CLAIM_R_OK || r->outcome == CLAIM_R_NOT_FOUND)) {
        c->stale = true;
        return step3(c, now);
    }
    if (now >= c->poll_until)
        return finish(c, CLAIM_REJECT_4409);
    uint64_t left = c->poll_until - now;
    return sleep_for(c, CLAIM_P_POLL_SLEEP, left < CLAIM_POLL_MS ? left : CLAIM_POLL_MS, now);
}

struct claim_action claim_start(struct claim *c, const struct claim_params *p, uint64_t now)
{
    memset(c, 0, sizeof *c);
    c->p = *p;
    size_t nl = strnlen(p->me.node, sizeof p->me.node);
    if (!p->me.owned || p->me.epoch == 0 || nl == sizeof p->me.node ||
        !claim_node_id_valid(p->me.node, nl))
        return failed(c, CLAIM_FAIL, CLAIM_WHY_NOT_SERVING);
    return step2(c, now);
}

static struct claim_action woke(struct claim *c, const struct claim_result *r, uint64_t now)
{
    if (r->outcome != CLAIM_R_WOKE)
        return failed(c, CLAIM_FAIL, CLAIM_WHY_INTERNAL); /* the caller lost track of its sleep */
    if (c->phase == CLAIM_P_POLL_SLEEP)
        return read_lease(c, CLAIM_P_POLL, now);
    return step2(c, now);
}

struct claim_action claim_feed(struct claim *c, const struct claim_result *r, uint64_t now)
{
    switch (c->phase) {
    case CLAIM_P_CREATE:
        return on_create(c, r, now);
    case CLAIM_P_READ:
        return on_read(c, r, now);
    case CLAIM_P_OWNER_LEASE:
        return on_owner_lease(c, r, now);
    case CLAIM_P_RELEASE:
        return on_release(c, r, now);
    case CLAIM_P_LOCK:
        return on_lock(c, r, now);
    case CLAIM_P_REREAD:
        return on_reread(c, r, now);
    case CLAIM_P_CAS:
        return on_cas(c, r, now);
    case CLAIM_P_FORWARD:
        return on_forward(c, r, now);
    case CLAIM_P_POLL:
        return on_poll(c, r, now);
    case CLAIM_P_POLL_SLEEP:
    case CLAIM_P_RETRY_SLEEP:
        return woke(c, r, now);
    case CLAIM_P_DONE:
        break;
    }
    return c->act;
}

struct claim_action claim_abort(struct claim *c)
{
    if (c->phase != CLAIM_P_DONE)
        finish(c, CLAIM_ABORTED);
    return c->act;
}

bool claim_done(const struct claim *c)
{
    return c->phase == CLAIM_P_DONE;
}

size_t claim_value(const struct claim *c, const struct claim_action *a, char *buf, size_t cap)
{
    static const struct claim_record free_rec = {.owned = false};
    switch (a->op) {
    case CLAIM_DO_CREATE_RECORD:
        return claim_record_format(&c->p.me, buf, cap);
    case CLAIM_DO_CAS:
        return claim_record_format(a->release ? &free_rec : &c->p.me, buf, cap);
    case CLAIM_DO_CREATE_LOCK: {
        int n = snprintf(buf, cap, "%s", c->p.me.node);
        return n > 0 && (size_t)n < cap ? (size_t)n : 0;
    }
    default:
        return 0;
    }
}

const char *claim_how_path(enum claim_how how)
{
    switch (how) {
    case CLAIM_HOW_CREATED:
    case CLAIM_HOW_FREE:
        return "create";
    case CLAIM_HOW_TAKEOVER_DEAD:
        return "takeover_dead";
    case CLAIM_HOW_HANDOVER_RECLAIM:
    case CLAIM_HOW_HANDOVER_TAKEOVER:
        return "handover";
    }
    return "create";
}

bool claim_how_takeover(enum claim_how how)
{
    return how == CLAIM_HOW_TAKEOVER_DEAD || how == CLAIM_HOW_HANDOVER_TAKEOVER;
}

const char *claim_op_name(enum claim_op op)
{
    static const char *const names[] = {
        "DO_CREATE_RECORD", "DO_READ",    "DO_READ_LEASE", "DO_CREATE_LOCK",
        "DO_CAS",           "DO_FORWARD", "SLEEP",         "ACCEPT",
        "REJECT_4409",      "FAIL",       "GIVE_UP",       "ABORTED",
    };
    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "?";
}
