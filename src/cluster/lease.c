/* lease.c — the node lease state machine (lease.h): renewal schedule,
 * validity deadline, readiness and fencing, on the caller's clock. It does
 * no I/O and keeps no time of its own; the ctl thread executes what it
 * decides. It deliberately does not decide node ids or log anything. */
#include "cluster/lease.h"

#include <string.h>

int lease_params_init(struct lease_params *p, uint64_t lease_ms)
{
    if (lease_ms < LEASE_MIN_MS)
        return LEASE_PARAM_ERROR;
    p->lease_ms = lease_ms;
    p->renew_ms = lease_ms / 10;
    p->retry_ms = LEASE_RETRY_MS;
    p->margin_ms = lease_ms / 4;
    p->ready_ms = lease_ms / 2;
    return 0;
}

void lease_init(struct lease *l, const struct lease_params *p)
{
    memset(l, 0, sizeof *l);
    l->p = *p;
    l->state = LEASE_UNREGISTERED;
}

/* The one transition into FENCED: nothing the lease knew counts any more. */
static void fence(struct lease *l)
{
    l->state = LEASE_FENCED;
    l->valid_until = 0;
    l->in_flight = false;
    l->uncertain = false;
    l->read_next = false;
    l->fences++;
}

enum lease_action lease_check(struct lease *l, uint64_t now)
{
    if (l->state == LEASE_FENCED)
        return LEASE_FENCE;
    if (l->state == LEASE_HELD && now > l->valid_until) {
        fence(l);
        return LEASE_FENCE;
    }
    if (l->in_flight || now < l->next_due)
        return LEASE_IDLE;
    if (l->state == LEASE_UNREGISTERED)
        l->op = LEASE_REGISTER;
    else
        l->op = l->read_next ? LEASE_READ : LEASE_RENEW;
    l->in_flight = true;
    l->op_sent = now;
    return l->op;
}

static void registered(struct lease *l, enum lease_outcome o, uint64_t rev, uint64_t now)
{
    if (o != LEASE_OK || rev == 0) {
        l->next_due = now + l->p.retry_ms; /* the next REGISTER uses a new node id */
        return;
    }
    l->state = LEASE_HELD;
    l->epoch = rev;
    l->rev = rev;
    l->last_ok_send = l->op_sent;
    l->valid_until = l->op_sent + l->p.lease_ms - l->p.margin_ms;
    l->next_due = l->op_sent + l->p.renew_ms;
    l->uncertain = false;
    l->read_next = false;
    l->registrations++;
}

/* After a failure: 500 ms later, but one last attempt exactly at the
 * deadline if the retry grid would step over it, so the tolerated outage
 * is L - M - R whatever L is. */
static uint64_t retry_at(const struct lease *l, uint64_t now)
{
    uint64_t t = now + l->p.retry_ms;
    return now < l->valid_until && t > l->valid_until ? l->valid_until : t;
}

static void count(struct lease *l, enum lease_outcome o)
{
    l->renewals[o == LEASE_NOT_FOUND ? LEASE_CONFLICT : o]++;
}

static void renewed(struct lease *l, enum lease_outcome o, uint64_t rev, uint64_t now)
{
    count(l, o);
    switch (o) {
    case LEASE_OK:
        l->rev = rev;
        if (l->op_sent > l->last_ok_send)
            l->last_ok_send = l->op_sent;
        l->valid_until = l->last_ok_send + l->p.lease_ms - l->p.margin_ms;
        l->next_due = l->op_sent + l->p.renew_ms;
        l->uncertain = false;
        return;
    case LEASE_CONFLICT:
    case LEASE_NOT_FOUND:
        /* Only this node writes its key: a conflict means the key expired
         * (the lease is gone), unless a renewal whose answer was lost
         * landed and moved the revision; a READ tells which. */
        if (!l->uncertain) {
            fence(l);
            return;
        }
        l->read_next = true;
        l->next_due = now;
        return;
    case LEASE_TIMEOUT:
    case LEASE_ERROR:
        l->uncertain = true;
        l->next_due = retry_at(l, now);
        return;
    }
}

static void was_read(struct lease *l, enum lease_outcome o, uint64_t rev, uint64_t now)
{
    if (o == LEASE_OK && rev >= l->rev) {
        /* Our own lost renewal landed: adopt its revision, renew at once.
         * The deadline is not extended: which send landed is unknown. */
        l->rev = rev;
        l->uncertain = false;
        l->read_next = false;
        l->next_due = now;
        return;
    }
    if (o == LEASE_OK || o == LEASE_NOT_FOUND) {
        fence(l); /* expired, or the stream was recreated behind us */
        return;
    }
    l->next_due = retry_at(l, now);
}

void lease_done(struct lease *l, enum lease_outcome o, uint64_t rev, uint64_t now)
{
    if (!l->in_flight || l->state == LEASE_FENCED || (unsigned)o >= LEASE_OUTCOMES)
        return;
    l->in_flight = false;
    if (l->state == LEASE_HELD && now > l->valid_until) {
        if (l->op == LEASE_RENEW)
            count(l, o);
        fence(l); /* too late: the shards have stopped trusting the lease */
        return;
    }
    if (l->op == LEASE_REGISTER)
        registered(l, o, rev, now);
    else if (l->op == LEASE_RENEW)
        renewed(l, o, rev, now);
    else
        was_read(l, o, rev, now);
    if (l->state == LEASE_HELD && now > l->valid_until)
        fence(l); /* a success that came back after its own deadline */
}

void lease_fence_done(struct lease *l)
{
    if (l->state != LEASE_FENCED)
        return;
    l->state = LEASE_UNREGISTERED;
    l->epoch = 0;
    l->rev = 0;
    l->next_due = 0;
}

uint64_t lease_next_due(const struct lease *l)
{
    if (l->state == LEASE_FENCED)
        return 0;
    if (l->state == LEASE_UNREGISTERED)
        return l->in_flight ? UINT64_MAX : l->next_due;
    uint64_t fence_at = l->valid_until + 1;
    if (l->in_flight || l->next_due > fence_at)
        return fence_at;
    return l->next_due;
}

uint64_t lease_valid_until(const struct lease *l)
{
    return l->state == LEASE_HELD ? l->valid_until : 0;
}

bool lease_must_fence(const struct lease *l, uint64_t now)
{
    return l->state != LEASE_HELD || now > l->valid_until;
}

bool lease_ready(const struct lease *l, uint64_t now)
{
    if (lease_must_fence(l, now) || now < l->last_ok_send)
        return false;
    return now - l->last_ok_send < l->p.ready_ms;
}

uint64_t lease_remaining_ms(const struct lease *l, uint64_t now)
{
    return lease_must_fence(l, now) ? 0 : l->valid_until - now;
}

const char *lease_outcome_name(enum lease_outcome o)
{
    static const char *const names[LEASE_OUTCOMES] = {"ok", "conflict", "not_found", "timeout",
                                                      "error"};
    return (unsigned)o < LEASE_OUTCOMES ? names[o] : "error";
}
