/* test_lease.c — the node lease on a fake clock: the renewal schedule, the
 * 13 s write-outage tolerance at the default L = 20 s, fencing at
 * valid_until and never renewing after it, readiness edges, a clock jump
 * (SIGSTOP), lost acknowledgements, re-registration with a new epoch, and
 * the minimum lease of 6 s. A small simulator plays the KV: it answers each
 * operation after a delay, failing inside an outage window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/lease.h"

static struct lease_params params(uint64_t lease_ms)
{
    struct lease_params p;
    assert_int_equal(lease_params_init(&p, lease_ms), 0);
    return p;
}

/* Registers l at time t (the Create answered at once with epoch). */
static void registered_at(struct lease *l, uint64_t t, uint64_t epoch)
{
    assert_int_equal(lease_check(l, t), LEASE_REGISTER);
    lease_done(l, LEASE_OK, epoch, t);
    assert_int_equal(l->state, LEASE_HELD);
}

/* The fake KV: operations sent inside [out_from, out_to) fail with `fail`,
 * after `fail_ms`; others succeed after ok_ms. */
struct sim {
    uint64_t out_from, out_to;
    enum lease_outcome fail;
    uint64_t fail_ms, ok_ms;
    uint64_t key_rev; /* the key's revision in the fake KV */
    int sends;        /* RENEW operations handed out */
};

/* Runs from now to until, checking on every renewal that it is sent no
 * later than the deadline. Returns the time of the fence, or 0. */
static uint64_t run(struct lease *l, struct sim *s, uint64_t now, uint64_t until)
{
    bool pending = false;
    uint64_t reply_at = 0;
    enum lease_outcome o = LEASE_OK;
    for (;;) {
        enum lease_action a = lease_check(l, now);
        if (a == LEASE_FENCE)
            return now;
        if (a == LEASE_RENEW || a == LEASE_READ) {
            assert_true(now <= lease_valid_until(l)); /* never after the deadline */
            bool down = now >= s->out_from && now < s->out_to;
            o = down ? s->fail : LEASE_OK;
            reply_at = now + (down ? s->fail_ms : s->ok_ms);
            pending = true;
            s->sends += a == LEASE_RENEW;
            if (!down && a == LEASE_RENEW)
                s->key_rev++;
        }
        uint64_t next = lease_next_due(l);
        if (pending && reply_at < next)
            next = reply_at;
        if (next > until)
            return 0;
        now = next > now ? next : now;
        if (pending && now >= reply_at) {
            pending = false;
            lease_done(l, o, s->key_rev, now);
        }
    }
}

static void test_params(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    assert_int_equal(p.renew_ms, 2000);
    assert_int_equal(p.margin_ms, 5000);
    assert_int_equal(p.ready_ms, 10000);
    assert_int_equal(p.retry_ms, 500);
    assert_int_equal(lease_params_init(&p, 5999), LEASE_PARAM_ERROR);
    assert_int_equal(p.renew_ms, 2000); /* untouched */
    p = params(6000);
    assert_int_equal(p.renew_ms, 600);
    assert_int_equal(p.margin_ms, 1500);
    assert_int_equal(p.ready_ms, 3000);
}

static void test_renew_schedule(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    assert_int_equal(lease_valid_until(&l), 0);
    assert_true(lease_must_fence(&l, 1000));
    registered_at(&l, 1000, 5);
    assert_int_equal(l.epoch, 5);
    assert_int_equal(lease_valid_until(&l), 1000 + 20000 - 5000);
    assert_int_equal(lease_next_due(&l), 3000);
    assert_int_equal(lease_check(&l, 2999), LEASE_IDLE);
    assert_int_equal(lease_check(&l, 3000), LEASE_RENEW);
    assert_int_equal(lease_check(&l, 3001), LEASE_IDLE); /* one in flight at a time */
    assert_int_equal(lease_next_due(&l), 16001);         /* only the fence is due */
    lease_done(&l, LEASE_OK, 6, 3004);
    assert_int_equal(l.rev, 6);
    assert_int_equal(lease_valid_until(&l), 3000 + 15000); /* from t_send, not the ack */
    assert_int_equal(lease_next_due(&l), 5000);
    assert_int_equal(lease_remaining_ms(&l, 5000), 13000);
    assert_int_equal(l.renewals[LEASE_OK], 1);
    assert_int_equal(l.registrations, 1);

    /* A failure retries every 500 ms and counts by outcome. */
    assert_int_equal(lease_check(&l, 5000), LEASE_RENEW);
    lease_done(&l, LEASE_ERROR, 0, 5001);
    assert_int_equal(lease_next_due(&l), 5501);
    assert_int_equal(lease_check(&l, 5500), LEASE_IDLE);
    assert_int_equal(lease_check(&l, 5501), LEASE_RENEW);
    lease_done(&l, LEASE_OK, 7, 5502);
    assert_int_equal(lease_valid_until(&l), 5501 + 15000);
    assert_int_equal(l.renewals[LEASE_ERROR], 1);
    assert_int_equal(l.renewals[LEASE_OK], 2);
    assert_string_equal(lease_outcome_name(LEASE_TIMEOUT), "timeout");
}

static void test_outage_13s_tolerated(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 1);
    /* Writes fail from the first renewal on, for L - M - R = 13 s: the
     * retry sent exactly at the deadline (16000) gets through. */
    struct sim s = {.out_from = 3000, .out_to = 16000, .fail = LEASE_ERROR, .key_rev = 1};
    assert_int_equal(run(&l, &s, 1000, 120000), 0);
    assert_int_equal(l.fences, 0);
    assert_true(l.renewals[LEASE_ERROR] >= 26); /* 3000, 3500, ... 15500 */
    assert_true(l.renewals[LEASE_OK] > 40);
}

static void test_outage_past_deadline_fences(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 1);
    struct sim s = {.out_from = 3000, .out_to = 16001, .fail = LEASE_ERROR, .key_rev = 1};
    assert_int_equal(run(&l, &s, 1000, 120000), 16001);
    assert_int_equal(l.state, LEASE_FENCED);
    assert_int_equal(l.fences, 1);
    assert_int_equal(lease_valid_until(&l), 0);
}

/* With publishes that time out after 2 s (jo.Wait), the worst case between
 * the outage's end and the next send is 2.5 s: 10.5 s is still ridden out. */
static void test_outage_with_timeouts(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 1);
    struct sim s = {
        .out_from = 3000, .out_to = 13500, .fail = LEASE_TIMEOUT, .fail_ms = 2000, .key_rev = 1};
    assert_int_equal(run(&l, &s, 1000, 120000), 0);
    assert_true(l.renewals[LEASE_TIMEOUT] >= 5);

    /* A renewal still in flight at the deadline does not save the lease,
     * and its late answer is ignored. */
    lease_init(&l, &p);
    registered_at(&l, 1000, 1);
    s = (struct sim){
        .out_from = 3000, .out_to = 60000, .fail = LEASE_TIMEOUT, .fail_ms = 2000, .key_rev = 1};
    assert_int_equal(run(&l, &s, 1000, 120000), 16001);
    lease_done(&l, LEASE_OK, 9, 16500);
    assert_int_equal(l.state, LEASE_FENCED);
}

static void test_fence_at_valid_until(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    /* Nothing renewed (the ctl thread was busy): still valid at 16000, a
     * renewal may still go out exactly then ... */
    assert_false(lease_must_fence(&l, 16000));
    assert_int_equal(lease_check(&l, 16000), LEASE_RENEW);
    /* ... but one millisecond later the node fences, answer or not. */
    assert_true(lease_must_fence(&l, 16001));
    assert_int_equal(lease_check(&l, 16001), LEASE_FENCE);
    lease_done(&l, LEASE_OK, 4, 16002); /* too late: ignored */
    assert_int_equal(l.state, LEASE_FENCED);
    assert_int_equal(lease_check(&l, 16003), LEASE_FENCE); /* idempotent */
    assert_int_equal(l.fences, 1);
    assert_int_equal(lease_next_due(&l), 0);
    assert_false(lease_ready(&l, 16003));
}

static void test_never_renew_after_deadline(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    assert_int_equal(lease_check(&l, 16001), LEASE_FENCE);
    for (uint64_t t = 16001; t < 60000; t += 250)
        assert_int_equal(lease_check(&l, t), LEASE_FENCE);
    assert_int_equal(l.renewals[LEASE_OK] + l.renewals[LEASE_ERROR], 0);

    /* A conflict on its own key means the lease is gone. */
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    assert_int_equal(lease_check(&l, 3000), LEASE_RENEW);
    lease_done(&l, LEASE_CONFLICT, 0, 3001);
    assert_int_equal(l.state, LEASE_FENCED);
    assert_int_equal(lease_check(&l, 3002), LEASE_FENCE);
    assert_int_equal(l.renewals[LEASE_CONFLICT], 1);
}

static void test_ready_edges(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    assert_false(lease_ready(&l, 0));
    registered_at(&l, 1000, 3);
    assert_true(lease_ready(&l, 1000));
    assert_true(lease_ready(&l, 10999));  /* last success 9.999 s old */
    assert_false(lease_ready(&l, 11000)); /* 10 s: not ready ... */
    assert_false(lease_must_fence(&l, 11000));
    assert_false(lease_must_fence(&l, 16000)); /* ... yet not fencing until 15 s */
    assert_int_equal(lease_check(&l, 12000), LEASE_RENEW);
    lease_done(&l, LEASE_OK, 4, 12100);
    assert_true(lease_ready(&l, 12100)); /* ready again after a success */
    assert_false(lease_ready(&l, 22000));
    assert_true(lease_ready(&l, 21999));
}

static void test_clock_jump(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    assert_int_equal(lease_check(&l, 3000), LEASE_RENEW);
    /* SIGSTOP for a minute, then SIGCONT: the first thing that looks at the
     * clock sees it past the deadline, before anything is forwarded ... */
    assert_true(lease_must_fence(&l, 63000));
    assert_false(lease_ready(&l, 63000));
    /* ... and even the renewal's success, delivered after the jump, fences. */
    lease_done(&l, LEASE_OK, 4, 63000);
    assert_int_equal(l.state, LEASE_FENCED);
    assert_int_equal(lease_check(&l, 63000), LEASE_FENCE);

    /* Same without an operation in flight. */
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    assert_int_equal(lease_check(&l, 63000), LEASE_FENCE);
    assert_int_equal(lease_remaining_ms(&l, 63000), 0);
}

/* A renewal that timed out but landed moves the key's revision; the next
 * CAS conflicts. The lease reads its key, adopts the revision and goes on. */
static void test_lost_ack_is_not_a_lost_lease(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    assert_int_equal(lease_check(&l, 3000), LEASE_RENEW);
    lease_done(&l, LEASE_TIMEOUT, 0, 5000); /* it landed as revision 4 */
    assert_true(l.uncertain);
    assert_int_equal(lease_check(&l, 5500), LEASE_RENEW);
    assert_int_equal(l.rev, 3);
    lease_done(&l, LEASE_CONFLICT, 0, 5501);
    assert_int_equal(l.state, LEASE_HELD);
    assert_int_equal(lease_check(&l, 5501), LEASE_READ);
    lease_done(&l, LEASE_OK, 4, 5502);
    assert_int_equal(l.rev, 4);
    assert_int_equal(lease_valid_until(&l), 16000); /* not extended by a read */
    assert_int_equal(lease_check(&l, 5502), LEASE_RENEW);
    lease_done(&l, LEASE_OK, 5, 5503);
    assert_int_equal(lease_valid_until(&l), 5502 + 15000);

    /* The read finding the key gone (or older) fences. */
    assert_int_equal(lease_check(&l, 7502), LEASE_RENEW);
    lease_done(&l, LEASE_TIMEOUT, 0, 9502);
    assert_int_equal(lease_check(&l, 10002), LEASE_RENEW);
    lease_done(&l, LEASE_CONFLICT, 0, 10003);
    assert_int_equal(lease_check(&l, 10003), LEASE_READ);
    lease_done(&l, LEASE_TIMEOUT, 0, 12003); /* reads retry too */
    assert_int_equal(lease_check(&l, 12503), LEASE_READ);
    lease_done(&l, LEASE_NOT_FOUND, 0, 12504);
    assert_int_equal(l.state, LEASE_FENCED);
}

static void test_reregister_new_epoch(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_DEFAULT_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 3);
    assert_int_equal(lease_check(&l, 20000), LEASE_FENCE);
    assert_int_equal(lease_check(&l, 20001), LEASE_FENCE); /* until the caller is done */
    lease_fence_done(&l);
    assert_int_equal(l.state, LEASE_UNREGISTERED);
    assert_int_equal(lease_check(&l, 20100), LEASE_REGISTER);
    assert_int_equal(lease_next_due(&l), UINT64_MAX);
    lease_done(&l, LEASE_TIMEOUT, 0, 22100); /* that node id is abandoned */
    assert_int_equal(lease_check(&l, 22200), LEASE_IDLE);
    assert_int_equal(lease_check(&l, 22600), LEASE_REGISTER);
    lease_done(&l, LEASE_OK, 42, 22601);
    assert_int_equal(l.epoch, 42);
    assert_int_equal(l.rev, 42);
    assert_int_equal(lease_valid_until(&l), 22600 + 15000);
    assert_true(lease_ready(&l, 22601));
    assert_int_equal(l.registrations, 2);
    assert_int_equal(l.fences, 1);
    lease_fence_done(&l); /* harmless when not fenced */
    assert_int_equal(l.state, LEASE_HELD);
}

static void test_min_lease_6s(void **state)
{
    (void)state;
    struct lease_params p = params(LEASE_MIN_MS);
    struct lease l;
    lease_init(&l, &p);
    registered_at(&l, 1000, 1);
    assert_int_equal(lease_valid_until(&l), 1000 + 4500);
    assert_int_equal(lease_next_due(&l), 1600);
    assert_false(lease_ready(&l, 4000));
    assert_true(lease_ready(&l, 3999));
    /* Tolerance L - M - R = 3.9 s, and not a millisecond more. */
    struct sim s = {.out_from = 1600, .out_to = 5500, .fail = LEASE_ERROR, .key_rev = 1};
    assert_int_equal(run(&l, &s, 1000, 60000), 0);
    lease_init(&l, &p);
    registered_at(&l, 1000, 1);
    s = (struct sim){.out_from = 1600, .out_to = 5501, .fail = LEASE_ERROR, .key_rev = 1};
    assert_int_equal(run(&l, &s, 1000, 60000), 5501);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_renew_schedule),
        cmocka_unit_test(test_outage_13s_tolerated),
        cmocka_unit_test(test_outage_past_deadline_fences),
        cmocka_unit_test(test_outage_with_timeouts),
        cmocka_unit_test(test_fence_at_valid_until),
        cmocka_unit_test(test_never_renew_after_deadline),
        cmocka_unit_test(test_ready_edges),
        cmocka_unit_test(test_clock_jump),
        cmocka_unit_test(test_lost_ack_is_not_a_lost_lease),
        cmocka_unit_test(test_reregister_new_epoch),
        cmocka_unit_test(test_min_lease_6s),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
