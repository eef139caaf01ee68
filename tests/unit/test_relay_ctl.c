/* test_relay_ctl.c — the relay's control side without a server: tasks
 * posted to a shard run on its loop in order (and leftovers are discarded,
 * also those posted after the loop closed),
 * reloaded limits reach the cap and the rate limiter, and push_wake
 * refusals get one limiter per text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/relay.h"
#include "net/shard.h"

struct rec_task {
    struct relay_task t;
    int id;
    int *log;
    int *n;
};

static void rec(struct relay *r, struct relay_task *t)
{
    struct rec_task *rt = CONTAINER_OF(t, struct rec_task, t);
    (void)r;
    rt->log[(*rt->n)++] = rt->id;
    free(rt);
}

static int discarded;

static void discard(struct relay_task *t)
{
    discarded++;
    free(t);
}

static struct rec_task *task(int id, int *log, int *n)
{
    struct rec_task *rt = calloc(1, sizeof *rt);
    rt->t.fn = rec;
    rt->t.discard = discard;
    rt->id = id;
    rt->log = log;
    rt->n = n;
    return rt;
}

/* A relay on one shard of its own loop, its task queue ready. */
static void one_shard(uv_loop_t *loop, struct shard *s, struct relay *r)
{
    uv_loop_init(loop);
    memset(s, 0, sizeof *s);
    memset(r, 0, sizeof *r);
    s->loop = loop;
    r->shard = s;
    relay_ctl_init(r);
}

/* Closes the task handle and the loop (after relay_ctl_close or a seal). */
static void close_loop(uv_loop_t *loop, struct relay *r)
{
    uv_close((uv_handle_t *)&r->task_async, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_tasks_run_in_order_on_the_loop(void **state)
{
    uv_loop_t loop;
    struct shard s;
    struct relay r;
    int log[8], n = 0;
    (void)state;
    one_shard(&loop, &s, &r);
    for (int i = 0; i < 3; i++)
        relay_post(&r, &task(i, log, &n)->t);
    assert_int_equal(n, 0); /* nothing runs until the loop does */
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(n, 3);
    assert_int_equal(log[0], 0);
    assert_int_equal(log[2], 2);
    relay_post(&r, &task(9, log, &n)->t); /* left behind when the loop ends */
    relay_ctl_close(&r);
    assert_int_equal(discarded, 1);
    assert_int_equal(n, 3);
    close_loop(&loop, &r);
}

/* The cluster's ctl thread outlives the loops: a post after the seal, even
 * once the loop is closed, only waits for the discard (unsealed, libuv
 * aborts on the closed loop's wake-up descriptor). */
static void test_post_after_seal_never_wakes_a_closed_loop(void **state)
{
    uv_loop_t loop;
    struct shard s;
    struct relay r;
    int log[4], n = 0;
    (void)state;
    discarded = 0;
    one_shard(&loop, &s, &r);
    relay_post(&r, &task(1, log, &n)->t);
    relay_ctl_seal(&r);
    relay_post(&r, &task(2, log, &n)->t);
    close_loop(&loop, &r);
    relay_post(&r, &task(3, log, &n)->t);
    assert_int_equal(n, 0); /* a closing handle runs nothing */
    relay_ctl_close(&r);
    assert_int_equal(discarded, 3);
}

static void test_limits(void **state)
{
    struct relay_shared sh;
    uint8_t seed[16] = {1};
    (void)state;
    memset(&sh, 0, sizeof sh);
    uv_mutex_init(&sh.rl_mu);
    atomic_init(&sh.max_conns, 20);
    ratelimit_init(&sh.rl, 20, 6000, seed);
    struct relay_limits l = {.max_connections = 50,
                             .max_phones_per_server = 4,
                             .rate_limit_burst = 5,
                             .rate_limit_refill_ns = 2 * NS_PER_S};
    relay_set_limits(&sh, &l); /* no shards: only the shared parts */
    assert_int_equal(atomic_load(&sh.max_conns), 50);
    assert_int_equal(sh.rl.burst, 5);
    assert_int_equal(sh.rl.refill_ms, 2000);
    assert_true(ratelimit_allow(&sh.rl, "ip", 2, 1000));
    l.rate_limit_burst = 0; /* off: every request allowed, nothing stored */
    relay_set_limits(&sh, &l);
    for (int i = 0; i < 100; i++)
        assert_true(ratelimit_allow(&sh.rl, "ip", 2, 1000));
    assert_int_equal(sh.rl.buckets.n, 0);
    l.rate_limit_burst = 1; /* back on, from empty buckets */
    relay_set_limits(&sh, &l);
    assert_true(ratelimit_allow(&sh.rl, "ip", 2, 1000));
    assert_false(ratelimit_allow(&sh.rl, "ip", 2, 1000));
    ratelimit_free(&sh.rl);
    uv_mutex_destroy(&sh.rl_mu);
}

static void test_push_limits_per_text(void **state)
{
    struct warn_state ws;
    (void)state;
    memset(&ws, 0, sizeof ws);
    struct log_limit *a = relay_push_limit(&ws, "relay: push is off");
    struct log_limit *b = relay_push_limit(&ws, "relay: malformed push_wake");
    assert_ptr_not_equal(a, b);
    char copy[] = "relay: push is off"; /* the same text at another address */
    assert_ptr_equal(relay_push_limit(&ws, copy), a);
    static char names[20][16];
    for (int i = 0; i < 20; i++) { /* more texts than slots: the last is shared */
        snprintf(names[i], sizeof names[i], "text %d", i);
        assert_non_null(relay_push_limit(&ws, names[i]));
    }
    assert_ptr_equal(relay_push_limit(&ws, names[19]), &ws.push[PUSH_WARN_SLOTS - 1].lim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tasks_run_in_order_on_the_loop),
        cmocka_unit_test(test_post_after_seal_never_wakes_a_closed_loop),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_push_limits_per_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
