/* test_link.c — the link tracker: in-order sequences, a gap, duplicates and
 * sequences going backwards, SYNC equal/ahead/behind, links kept apart by
 * epoch and shard, the sender's counters and SYNC sweep, a node's new epoch
 * superseding the old one, heartbeat silence and forgetting on a fake
 * clock, and 64 nodes × 64 shards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "cluster/link.h"

#define SILENCE 5000
#define FORGET  60000

struct downs {
    uint64_t epochs[8192];
    size_t n;
};

static void on_down(void *ctx, uint64_t epoch)
{
    struct downs *d = ctx;
    assert_true(d->n < 8192);
    d->epochs[d->n++] = epoch;
}

struct syncs {
    uint64_t epoch[8192];
    uint16_t shard[8192];
    uint64_t last[8192];
    size_t n;
};

static void on_sync(void *ctx, uint64_t epoch, uint16_t shard, uint64_t last)
{
    struct syncs *s = ctx;
    assert_true(s->n < 8192);
    s->epoch[s->n] = epoch;
    s->shard[s->n] = shard;
    s->last[s->n] = last;
    s->n++;
}

static void test_in_order(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    for (uint64_t seq = 1; seq <= 1000; seq++)
        assert_int_equal(link_rx(t, 7, 1, seq), LINK_OK);
    const struct link_stats *st = link_stats(t);
    assert_true(st->gaps == 0 && st->backwards == 0 && st->stale == 0 && st->invalid == 0);
    assert_int_equal(link_peer_state(t, 7), LINK_PEER_LIVE);
    assert_int_equal(link_peer_shards(t, 7), 2); /* shard 1 seen, no heartbeat yet */
    link_tracker_free(t);
}

static void test_gap(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    assert_int_equal(link_rx(t, 7, 0, 1), LINK_OK);
    assert_int_equal(link_rx(t, 7, 0, 2), LINK_OK);
    assert_int_equal(link_rx(t, 7, 0, 4), LINK_GAP); /* 3 was lost */
    assert_int_equal(link_rx(t, 7, 0, 5), LINK_OK);  /* 4 started the new count */
    assert_int_equal(link_rx(t, 7, 0, 1000), LINK_GAP);
    assert_int_equal(link_rx(t, 7, 0, 1001), LINK_OK);
    assert_int_equal(link_stats(t)->gaps, 2);
    /* A new link whose first message is lost: its first seen is not 1. */
    assert_int_equal(link_rx(t, 8, 3, 2), LINK_GAP);
    assert_int_equal(link_rx(t, 8, 3, 3), LINK_OK);
    assert_int_equal(link_stats(t)->gaps, 3);
    link_tracker_free(t);
}

static void test_backwards(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    for (uint64_t seq = 1; seq <= 3; seq++)
        assert_int_equal(link_rx(t, 7, 0, seq), LINK_OK);
    /* A duplicate costs one reset, not one per message after it. */
    assert_int_equal(link_rx(t, 7, 0, 3), LINK_BACKWARDS);
    assert_int_equal(link_rx(t, 7, 0, 4), LINK_OK);
    /* A counter that went back is followed from where it now is. */
    assert_int_equal(link_rx(t, 7, 0, 2), LINK_BACKWARDS);
    assert_int_equal(link_rx(t, 7, 0, 3), LINK_OK);
    assert_int_equal(link_rx(t, 7, 0, 1), LINK_BACKWARDS);
    assert_int_equal(link_rx(t, 7, 0, 2), LINK_OK);
    assert_int_equal(link_stats(t)->backwards, 3);
    assert_int_equal(link_stats(t)->gaps, 0);
    link_tracker_free(t);
}

static void test_sync(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    /* Nothing sent, nothing received. */
    assert_int_equal(link_rx_sync(t, 7, 0, 0), LINK_OK);
    for (uint64_t seq = 1; seq <= 5; seq++)
        assert_int_equal(link_rx(t, 7, 0, seq), LINK_OK);
    assert_int_equal(link_rx_sync(t, 7, 0, 5), LINK_OK); /* equal */
    assert_int_equal(link_rx_sync(t, 7, 0, 5), LINK_OK);
    /* Ahead: 6 and 7 never arrived (the lost tail a gap cannot show). */
    assert_int_equal(link_rx_sync(t, 7, 0, 7), LINK_GAP);
    assert_int_equal(link_stats(t)->sync_lost, 1);
    assert_int_equal(link_rx(t, 7, 0, 8), LINK_OK); /* counted on from the SYNC */
    /* Behind: the sender claims fewer than were received. */
    assert_int_equal(link_rx_sync(t, 7, 0, 6), LINK_BACKWARDS);
    assert_int_equal(link_rx(t, 7, 0, 7), LINK_OK);
    assert_int_equal(link_stats(t)->backwards, 1);
    /* A fresh link synced with a count: everything on it was lost. */
    assert_int_equal(link_rx_sync(t, 9, 2, 3), LINK_GAP);
    assert_int_equal(link_rx(t, 9, 2, 4), LINK_OK);
    assert_int_equal(link_stats(t)->gaps, 0);
    link_tracker_free(t);
}

static void test_links_apart(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    assert_int_equal(link_rx(t, 7, 0, 1), LINK_OK);
    assert_int_equal(link_rx(t, 7, 1, 1), LINK_OK);
    assert_int_equal(link_rx(t, 8, 0, 1), LINK_OK);
    assert_int_equal(link_rx(t, 7, 0, 2), LINK_OK);
    assert_int_equal(link_rx(t, 8, 0, 2), LINK_OK);
    assert_int_equal(link_rx(t, 7, 1, 3), LINK_GAP); /* only (7, 1) lost one */
    assert_int_equal(link_rx(t, 7, 0, 3), LINK_OK);
    assert_int_equal(link_rx(t, 8, 0, 3), LINK_OK);
    /* Sending and receiving on one link count separately. */
    assert_int_equal(link_tx_next(t, 7, 0), 1);
    assert_int_equal(link_rx(t, 7, 0, 4), LINK_OK);
    assert_int_equal(link_peer_count(t), 2);
    link_tracker_free(t);
}

static void test_invalid(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    uint64_t sup;
    assert_int_equal(link_rx(t, 0, 0, 1), LINK_INVALID);
    assert_int_equal(link_rx(t, 7, 0, 0), LINK_INVALID);
    assert_int_equal(link_rx(t, 7, LINK_MAX_SHARDS, 1), LINK_INVALID);
    assert_int_equal(link_rx(t, 7, UINT16_MAX, 1), LINK_INVALID);
    assert_int_equal(link_rx_sync(t, 0, 0, 1), LINK_INVALID);
    assert_int_equal(link_rx(t, 7, LINK_MAX_SHARDS - 1, 1), LINK_OK);
    /* Once a heartbeat says how many shards the peer has, others are bogus. */
    assert_int_equal(link_heartbeat(t, 1, 8, 2, 0, &sup), LINK_HB_NEW);
    assert_int_equal(link_rx(t, 8, 2, 1), LINK_INVALID);
    assert_int_equal(link_rx_sync(t, 8, 2, 1), LINK_INVALID);
    assert_int_equal(link_tx_next(t, 8, 2), 0);
    assert_int_equal(link_rx(t, 8, 1, 1), LINK_OK);
    assert_int_equal(link_stats(t)->invalid, 7);
    assert_int_equal(link_tx_next(t, 0, 0), 0);
    assert_int_equal(link_tx_next(t, 7, LINK_MAX_SHARDS), 0);
    assert_int_equal(link_peer_count(t), 2);
    link_tracker_free(t);
}

static void test_tx_and_sync_sweep(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    struct syncs s = {0};
    assert_int_equal(link_tx_sync(t, true, on_sync, &s), 0);
    for (uint64_t i = 1; i <= 3; i++)
        assert_int_equal(link_tx_next(t, 7, 1), i);
    assert_int_equal(link_tx_next(t, 7, 0), 1);
    assert_int_equal(link_tx_next(t, 9, 1), 1);
    assert_int_equal(link_tx_sync(t, false, on_sync, &s), 3);
    for (size_t i = 0; i < s.n; i++) {
        if (s.epoch[i] == 7 && s.shard[i] == 1)
            assert_int_equal(s.last[i], 3);
        else
            assert_int_equal(s.last[i], 1);
    }
    /* Idle since: nothing to sync, unless asked for every link. */
    s.n = 0;
    assert_int_equal(link_tx_sync(t, false, on_sync, &s), 0);
    assert_int_equal(link_tx_sync(t, true, on_sync, &s), 3);
    s.n = 0;
    assert_int_equal(link_tx_next(t, 7, 1), 4);
    assert_int_equal(link_tx_sync(t, false, on_sync, &s), 1);
    assert_true(s.epoch[0] == 7 && s.shard[0] == 1 && s.last[0] == 4);
    /* A receive-only link is never synced. */
    s.n = 0;
    assert_int_equal(link_rx(t, 11, 0, 1), LINK_OK);
    assert_int_equal(link_tx_sync(t, true, on_sync, &s), 3);
    link_tracker_free(t);
}

static void test_epoch_supersedes(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    struct syncs s = {0};
    uint64_t sup = 99;
    assert_int_equal(link_heartbeat(t, 1, 10, 4, 0, &sup), LINK_HB_NEW);
    assert_int_equal(sup, 0);
    assert_int_equal(link_rx(t, 10, 0, 1), LINK_OK);
    assert_int_equal(link_tx_next(t, 10, 3), 1);
    /* The node registered again (fenced or restarted): epoch 20. Its data
     * may come before its heartbeat. */
    assert_int_equal(link_rx(t, 20, 0, 1), LINK_OK);
    assert_int_equal(link_heartbeat(t, 1, 10, 4, 500, &sup), LINK_HB_ALIVE);
    assert_int_equal(link_heartbeat(t, 1, 20, 4, 1000, &sup), LINK_HB_NEW);
    assert_int_equal(sup, 10);
    assert_int_equal(link_peer_state(t, 10), LINK_PEER_SUPERSEDED);
    assert_int_equal(link_stats(t)->superseded, 1);
    /* The old incarnation's links never revive. */
    assert_int_equal(link_rx(t, 10, 0, 2), LINK_STALE);
    assert_int_equal(link_rx_sync(t, 10, 0, 1), LINK_STALE);
    assert_int_equal(link_tx_next(t, 10, 3), 0);
    assert_int_equal(link_heartbeat(t, 1, 10, 4, 1500, &sup), LINK_HB_STALE);
    assert_int_equal(sup, 0);
    assert_int_equal(link_stats(t)->stale, 2);
    assert_int_equal(link_tx_sync(t, true, on_sync, &s), 0); /* 10's send count went with it */
    assert_int_equal(link_rx(t, 20, 0, 2), LINK_OK);
    assert_int_equal(link_heartbeat(t, 1, 20, 4, 2000, &sup), LINK_HB_ALIVE);

    /* Heartbeats of two incarnations arriving out of order: the older one
     * is stale from the moment the newer is known. */
    assert_int_equal(link_heartbeat(t, 2, 50, 1, 2000, &sup), LINK_HB_NEW);
    assert_int_equal(link_rx(t, 40, 0, 1), LINK_OK); /* not yet known as node 2's */
    assert_int_equal(link_heartbeat(t, 2, 40, 1, 2100, &sup), LINK_HB_STALE);
    assert_int_equal(sup, 0);
    assert_int_equal(link_rx(t, 40, 0, 2), LINK_STALE);
    assert_int_equal(link_heartbeat(t, 2, 30, 1, 2200, &sup), LINK_HB_STALE);
    assert_int_equal(link_rx(t, 30, 0, 1), LINK_STALE);
    assert_int_equal(link_peer_state(t, 50), LINK_PEER_LIVE);
    link_tracker_free(t);
}

static void test_heartbeat_invalid(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    uint64_t sup;
    assert_int_equal(link_heartbeat(t, 0, 10, 1, 0, &sup), LINK_HB_INVALID);
    assert_int_equal(link_heartbeat(t, 1, 0, 1, 0, &sup), LINK_HB_INVALID);
    assert_int_equal(link_heartbeat(t, 1, 10, 0, 0, &sup), LINK_HB_INVALID);
    assert_int_equal(link_heartbeat(t, 1, 10, LINK_MAX_SHARDS + 1, 0, &sup), LINK_HB_INVALID);
    assert_int_equal(link_peer_count(t), 0);
    assert_int_equal(link_heartbeat(t, 1, 10, LINK_MAX_SHARDS, 0, &sup), LINK_HB_NEW);
    /* One epoch cannot belong to two nodes (epochs are unique revisions). */
    assert_int_equal(link_heartbeat(t, 2, 10, 1, 0, &sup), LINK_HB_INVALID);
    assert_int_equal(link_peer_state(t, 10), LINK_PEER_LIVE);
    assert_int_equal(link_peer_shards(t, 10), LINK_MAX_SHARDS);
    link_tracker_free(t);
}

static void test_silence(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    struct downs d = {0};
    uint64_t sup;
    assert_int_equal(link_heartbeat(t, 1, 10, 2, 1000, &sup), LINK_HB_NEW);
    assert_int_equal(link_check(t, 1000 + SILENCE - 1, on_down, &d), 0);
    assert_int_equal(link_heartbeat(t, 1, 10, 2, 3000, &sup), LINK_HB_ALIVE);
    assert_int_equal(link_check(t, 3000 + SILENCE - 1, on_down, &d), 0);
    assert_int_equal(link_check(t, 3000 + SILENCE, on_down, &d), 1);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.epochs[0], 10);
    assert_int_equal(link_peer_state(t, 10), LINK_PEER_DOWN);
    assert_int_equal(link_check(t, 3000 + SILENCE + 1000, on_down, &d), 0); /* once */
    /* Frozen, then resumed with the same epoch: up again, sequences go on. */
    assert_int_equal(link_rx(t, 10, 1, 1), LINK_OK);
    assert_int_equal(link_heartbeat(t, 1, 10, 2, 9000, &sup), LINK_HB_UP);
    assert_int_equal(link_peer_state(t, 10), LINK_PEER_LIVE);
    assert_int_equal(link_rx(t, 10, 1, 2), LINK_OK);
    assert_int_equal(link_check(t, 9000 + SILENCE, on_down, &d), 1);
    assert_int_equal(link_stats(t)->peers_down, 2);
    /* Down long enough: forgotten; what it sends later starts over. */
    assert_int_equal(link_check(t, 9000 + SILENCE + FORGET - 1, on_down, &d), 0);
    assert_int_equal(link_peer_state(t, 10), LINK_PEER_DOWN);
    assert_int_equal(link_check(t, 9000 + SILENCE + FORGET, on_down, &d), 0);
    assert_int_equal(link_peer_state(t, 10), LINK_PEER_UNKNOWN);
    assert_int_equal(link_peer_count(t), 0);
    assert_int_equal(link_rx(t, 10, 1, 3), LINK_GAP);
    /* A clock that went back never reports silence. */
    assert_int_equal(link_heartbeat(t, 1, 10, 2, 100000, &sup), LINK_HB_NEW);
    assert_int_equal(link_check(t, 50, on_down, &d), 0);
    link_tracker_free(t);
}

/* A peer known only from traffic is timed from the first check that sees
 * it; a superseded one is forgotten like a down one. */
static void test_silence_without_heartbeat(void **state)
{
    (void)state;
    struct link_tracker *t = link_tracker_new(1000, 3000);
    struct downs d = {0};
    uint64_t sup;
    assert_int_equal(link_tx_next(t, 33, 0), 1);
    assert_int_equal(link_check(t, 200, on_down, &d), 0);
    assert_int_equal(link_check(t, 1199, on_down, &d), 0);
    assert_int_equal(link_check(t, 1200, on_down, &d), 1);
    assert_int_equal(d.epochs[0], 33);

    assert_int_equal(link_heartbeat(t, 5, 40, 1, 1200, &sup), LINK_HB_NEW);
    assert_int_equal(link_heartbeat(t, 5, 41, 1, 1300, &sup), LINK_HB_NEW);
    assert_int_equal(sup, 40);
    assert_int_equal(link_check(t, 1300 + 999, on_down, &d), 0);
    assert_int_equal(link_peer_state(t, 40), LINK_PEER_SUPERSEDED);
    /* Superseded peers are never reported down. */
    assert_int_equal(link_check(t, 1300 + 2999, on_down, &d), 1); /* 41 went silent */
    assert_int_equal(d.epochs[1], 41);
    assert_int_equal(link_peer_state(t, 40), LINK_PEER_SUPERSEDED);
    assert_int_equal(link_check(t, 1300 + 3000, on_down, &d), 0);
    assert_int_equal(link_peer_state(t, 40), LINK_PEER_UNKNOWN);
    assert_int_equal(link_peer_state(t, 33), LINK_PEER_UNKNOWN);
    assert_int_equal(link_peer_state(t, 41), LINK_PEER_DOWN);
    /* The node's newest incarnation is still known after the old is gone. */
    assert_int_equal(link_heartbeat(t, 5, 40, 1, 4400, &sup), LINK_HB_STALE);
    assert_int_equal(link_heartbeat(t, 5, 41, 1, 4400, &sup), LINK_HB_UP);
    link_tracker_free(t);
}

/* 64 nodes × 64 shards, every link used both ways, then every node
 * re-registering and everything going silent. */
static void test_many_links(void **state)
{
    (void)state;
    enum { NODES = 64, SHARDS = 64, MSGS = 5 };
    struct link_tracker *t = link_tracker_new(SILENCE, FORGET);
    static struct syncs s;
    static struct downs d;
    uint64_t sup;
    s.n = d.n = 0;
    for (uint64_t n = 1; n <= NODES; n++)
        assert_int_equal(link_heartbeat(t, n, 1000 + n, SHARDS, 0, &sup), LINK_HB_NEW);
    for (uint64_t seq = 1; seq <= MSGS; seq++)
        for (uint64_t n = 1; n <= NODES; n++)
            for (uint16_t sh = 0; sh < SHARDS; sh++) {
                assert_int_equal(link_rx(t, 1000 + n, sh, seq), LINK_OK);
                assert_int_equal(link_tx_next(t, 1000 + n, sh), seq);
            }
    assert_int_equal(link_tx_sync(t, false, on_sync, &s), NODES * SHARDS);
    for (size_t i = 0; i < s.n; i++)
        assert_int_equal(s.last[i], MSGS);
    assert_int_equal(link_peer_count(t), NODES);
    for (uint64_t n = 1; n <= NODES; n++) {
        assert_int_equal(link_heartbeat(t, n, 2000 + n, SHARDS, 1000, &sup), LINK_HB_NEW);
        assert_int_equal(sup, 1000 + n);
        assert_int_equal(link_rx(t, 1000 + n, 0, MSGS + 1), LINK_STALE);
        assert_int_equal(link_rx(t, 2000 + n, SHARDS - 1, 1), LINK_OK);
    }
    assert_int_equal(link_peer_count(t), 2 * NODES);
    assert_int_equal(link_check(t, 1000 + SILENCE, on_down, &d), NODES);
    for (size_t i = 0; i < d.n; i++)
        assert_true(d.epochs[i] > 2000 && d.epochs[i] <= 2000 + NODES);
    assert_int_equal(link_check(t, 1000 + SILENCE + FORGET, on_down, &d), 0);
    assert_int_equal(link_peer_count(t), 0);
    link_tracker_free(t);
}

static void test_free_null(void **state)
{
    (void)state;
    link_tracker_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_gap),
        cmocka_unit_test(test_backwards),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_links_apart),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_tx_and_sync_sweep),
        cmocka_unit_test(test_epoch_supersedes),
        cmocka_unit_test(test_heartbeat_invalid),
        cmocka_unit_test(test_silence),
        cmocka_unit_test(test_silence_without_heartbeat),
        cmocka_unit_test(test_many_links),
        cmocka_unit_test(test_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
