/* test_htab.c — the shared bucket array: nodes stay findable across every
 * doubling, the load factor decides when it doubles, and removal (by node
 * or while walking a chain) keeps the count right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "base/htab.h"
#include "base/util.h"

struct node {
    struct hlink hl;
    uint64_t hash;
};

static uint64_t node_hash(const struct hlink *l)
{
    return CONTAINER_OF(l, struct node, hl)->hash;
}

static bool present(const struct htab *t, const struct node *n)
{
    for (const struct hlink *l = *htab_chain(t, n->hash); l; l = l->next)
        if (l == &n->hl)
            return true;
    return false;
}

static void test_grows_and_keeps_nodes(void **state)
{
    static struct node ns[1000];
    struct htab t;
    (void)state;
    htab_init(&t, 4, node_hash);
    for (size_t i = 0; i < 1000; i++) {
        ns[i].hash = i * 0x9e3779b97f4a7c15ULL;
        htab_add(&t, &ns[i].hl, ns[i].hash, 2);
        assert_true(t.n <= t.nb * 2);
    }
    assert_int_equal(t.n, 1000);
    assert_int_equal(t.nb, 512); /* 4 doubled while n reached 2 per bucket */
    for (size_t i = 0; i < 1000; i++)
        assert_true(present(&t, &ns[i]));
    for (size_t i = 0; i < 1000; i += 2)
        assert_true(htab_del(&t, &ns[i].hl, ns[i].hash));
    assert_false(htab_del(&t, &ns[0].hl, ns[0].hash));
    assert_int_equal(t.n, 500);
    for (size_t i = 0; i < 1000; i++)
        assert_true(present(&t, &ns[i]) == (i % 2 == 1));
    /* unlinking while walking every chain empties the table */
    for (size_t i = 0; i < t.nb; i++)
        while (t.b[i])
            htab_unlink(&t, &t.b[i]);
    assert_int_equal(t.n, 0);
    htab_free(&t);
}

static int freed;

static void free_node(struct hlink *l)
{
    freed++;
    free(CONTAINER_OF(l, struct node, hl));
}

/* Teardown hands every node over once, even those sharing a chain (the
 * node is freed before the walk moves on), and leaves the table empty. */
static void test_free_all_hands_every_node_over(void **state)
{
    struct htab t;
    (void)state;
    htab_init(&t, 2, node_hash);
    for (uint64_t i = 0; i < 100; i++) {
        struct node *n = xmalloc(sizeof *n);
        n->hash = i % 3; /* long chains */
        htab_add(&t, &n->hl, n->hash, 50);
    }
    freed = 0;
    htab_free_all(&t, free_node);
    assert_int_equal(freed, 100);
    assert_null(t.b);
    assert_int_equal(t.nb, 0);
    assert_int_equal(t.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_and_keeps_nodes),
        cmocka_unit_test(test_free_all_hands_every_node_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
