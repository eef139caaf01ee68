/* test_wheel.c — the timing wheel fires each entry once, at or after its
 * time and never before, across turns, reschedules and cancellations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/wheel.h"

struct rec {
    struct wheel_entry e;
    int fired;
    uint64_t fired_at;
};

static uint64_t g_now;

static void fire(struct wheel_entry *e, void *arg)
{
    struct rec *r = (struct rec *)(void *)e;
    (void)arg;
    r->fired++;
    r->fired_at = g_now;
}

static void advance_to(struct wheel *w, uint64_t t)
{
    for (; g_now < t; g_now += WHEEL_TICK_MS / 2)
        wheel_advance(w, g_now, fire, NULL);
    g_now = t;
    wheel_advance(w, g_now, fire, NULL);
}

static void test_fires_on_time(void **state)
{
    static struct wheel w;
    struct rec a = {0}, b = {0};
    (void)state;
    g_now = 1000;
    wheel_init(&w, g_now);
    wheel_schedule(&w, &a.e, 1234);
    wheel_schedule(&w, &b.e, 1000 + 60000); /* more than a full turn away */
    assert_int_equal(w.count, 2);
    advance_to(&w, 1233);
    assert_int_equal(a.fired, 0);
    advance_to(&w, 1240);
    assert_int_equal(a.fired, 1);
    assert_true(a.fired_at >= 1234 && a.fired_at < 1234 + WHEEL_TICK_MS);
    advance_to(&w, 60999);
    assert_int_equal(b.fired, 0);
    advance_to(&w, 61010);
    assert_int_equal(b.fired, 1);
    assert_int_equal(w.count, 0);
    assert_false(wheel_pending(&a.e));
}

static void test_same_tick_later_entry_not_lost(void **state)
{
    static struct wheel w;
    struct rec a = {0};
    (void)state;
    g_now = 0;
    wheel_init(&w, 0);
    wheel_schedule(&w, &a.e, 7); /* same tick as now, but later */
    wheel_advance(&w, 3, fire, NULL);
    assert_int_equal(a.fired, 0);
    wheel_advance(&w, 8, fire, NULL);
    assert_int_equal(a.fired, 1);
}

static void test_cancel_and_reschedule(void **state)
{
    static struct wheel w;
    struct rec a = {0}, b = {0};
    (void)state;
    g_now = 0;
    wheel_init(&w, 0);
    wheel_schedule(&w, &a.e, 100);
    wheel_schedule(&w, &b.e, 100);
    wheel_cancel(&w, &a.e);
    wheel_cancel(&w, &a.e); /* harmless twice */
    wheel_schedule(&w, &b.e, 500);
    assert_int_equal(w.count, 1);
    advance_to(&w, 400);
    assert_int_equal(a.fired + b.fired, 0);
    advance_to(&w, 510);
    assert_int_equal(b.fired, 1);
    assert_int_equal(a.fired, 0);
}

static void test_overdue_and_long_stall(void **state)
{
    static struct wheel w;
    struct rec a = {0}, b = {0};
    (void)state;
    g_now = 10000;
    wheel_init(&w, g_now);
    wheel_schedule(&w, &a.e, 5); /* in the past */
    wheel_schedule(&w, &b.e, 20000);
    wheel_advance(&w, 10000, fire, NULL);
    assert_int_equal(a.fired, 1);
    /* The loop stalls for several turns: everything due fires once. */
    g_now = 500000;
    wheel_advance(&w, g_now, fire, NULL);
    assert_int_equal(b.fired, 1);
    assert_int_equal(w.count, 0);
}

static struct wheel g_w;
static struct rec g_r;
static int g_refires;

static void fire_resched(struct wheel_entry *e, void *arg)
{
    (void)arg;
    if (++g_refires < 3)
        wheel_schedule(&g_w, e, g_now); /* overdue again: next advance, not now */
}

static void test_fire_may_reschedule(void **state)
{
    (void)state;
    g_now = 0;
    g_refires = 0;
    wheel_init(&g_w, 0);
    wheel_schedule(&g_w, &g_r.e, 0);
    assert_int_equal(wheel_advance(&g_w, 0, fire_resched, NULL), 1);
    assert_int_equal(wheel_advance(&g_w, 0, fire_resched, NULL), 1);
    assert_int_equal(wheel_advance(&g_w, 0, fire_resched, NULL), 1);
    assert_int_equal(g_w.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_on_time),
        cmocka_unit_test(test_same_tick_later_entry_not_lost),
        cmocka_unit_test(test_cancel_and_reschedule),
        cmocka_unit_test(test_overdue_and_long_stall),
        cmocka_unit_test(test_fire_may_reschedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
