/* test_ratelimit.c — the per-IP token bucket (docs/operations.md) with an injected clock:
 * burst then deny, whole-period refill keeping the fraction, per-key
 * isolation, idle eviction that spares active buckets, disabled mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "base/ratelimit.h"

static const uint8_t SEED[16] = {9};

#define ALLOW(rl, k, t) ratelimit_allow((rl), (k), strlen(k), (t))

static void test_burst_then_deny(void **state)
{
    struct ratelimit rl;
    (void)state;
    ratelimit_init(&rl, 20, 6000, SEED);
    for (int i = 0; i < 20; i++)
        assert_true(ALLOW(&rl, "1.2.3.4", 1000));
    assert_false(ALLOW(&rl, "1.2.3.4", 1000));
    assert_false(ALLOW(&rl, "1.2.3.4", 6999)); /* not a whole period yet */
    assert_true(ALLOW(&rl, "1.2.3.4", 7000));
    assert_false(ALLOW(&rl, "1.2.3.4", 7001));
    ratelimit_free(&rl);
}

static void test_fractional_refill_preserved(void **state)
{
    struct ratelimit rl;
    (void)state;
    ratelimit_init(&rl, 2, 6000, SEED);
    assert_true(ALLOW(&rl, "k", 0));
    assert_true(ALLOW(&rl, "k", 0));
    assert_false(ALLOW(&rl, "k", 0));
    assert_true(ALLOW(&rl, "k", 9000)); /* one period; 3 s carried over */
    assert_false(ALLOW(&rl, "k", 9000));
    assert_true(ALLOW(&rl, "k", 12000)); /* the carried 3 s complete a period */
    /* a long idle refills to the burst, not beyond */
    assert_true(ALLOW(&rl, "k", 1000000));
    assert_true(ALLOW(&rl, "k", 1000000));
    assert_false(ALLOW(&rl, "k", 1000000));
    ratelimit_free(&rl);
}

static void test_per_key_isolation(void **state)
{
    struct ratelimit rl;
    (void)state;
    ratelimit_init(&rl, 1, 6000, SEED);
    assert_true(ALLOW(&rl, "a", 0));
    assert_false(ALLOW(&rl, "a", 0));
    assert_true(ALLOW(&rl, "b", 0));
    ratelimit_free(&rl);
}

static void test_eviction(void **state)
{
    struct ratelimit rl;
    char key[32];
    (void)state;
    ratelimit_init(&rl, 20, 6000, SEED); /* idle threshold 120 s */
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "10.0.%d.%d", i / 256, i % 256);
        ALLOW(&rl, key, 0);
    }
    ALLOW(&rl, "active", 0);
    ALLOW(&rl, "active", 100000);
    assert_int_equal(rl.buckets.n, 1001);
    assert_int_equal(ratelimit_sweep(&rl, 119999), 0);
    assert_int_equal(ratelimit_sweep(&rl, 120000), 1000);
    assert_int_equal(rl.buckets.n, 1);
    /* the surviving bucket kept its credit time (96 s): 4 periods refill it to 20 */
    for (int i = 0; i < 20; i++)
        assert_true(ALLOW(&rl, "active", 120000));
    assert_false(ALLOW(&rl, "active", 120000));
    ratelimit_free(&rl);
}

static void test_disabled(void **state)
{
    struct ratelimit rl;
    (void)state;
    ratelimit_init(&rl, 0, 6000, SEED);
    for (int i = 0; i < 1000; i++)
        assert_true(ALLOW(&rl, "x", 0));
    assert_int_equal(rl.buckets.n, 0);
    ratelimit_free(&rl);
}

static void test_long_keys_bounded(void **state)
{
    struct ratelimit rl;
    char a[1000], b[1000];
    (void)state;
    memset(a, 'x', sizeof a);
    memcpy(b, a, sizeof b);
    b[999] = 'y'; /* differs only past the cut */
    ratelimit_init(&rl, 1, 6000, SEED);
    assert_true(ratelimit_allow(&rl, a, sizeof a, 0));
    assert_false(ratelimit_allow(&rl, b, sizeof b, 0));
    ratelimit_free(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_deny),
        cmocka_unit_test(test_fractional_refill_preserved),
        cmocka_unit_test(test_per_key_isolation),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_long_keys_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
