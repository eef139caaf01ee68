/* test_registry.c — the reference's registry_test.go cases (docs/features/registry.md):
 * first claim wins, grace reclaim and expiry, takeover identity checks,
 * phone caps and counts, conn-id lookup scoped to the binary's server-id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "relay/registry.h"
#include "relay/registry_internal.h"
#include "base/siphash.h"

static const uint8_t SEED[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

struct ph {
    struct reg_phone p;
    char id[64];
};

static void mkphone(struct ph *ph, const char *sid, uint64_t key)
{
    memset(ph, 0, sizeof *ph);
    snprintf(ph->id, sizeof ph->id, "client-%s-%016llx", sid, (unsigned long long)key);
    ph->p.key = key;
    ph->p.conn_id = ph->id;
    ph->p.conn_id_len = strlen(ph->id);
    list_init(&ph->p.link);
}

static size_t list_len(const struct list *l)
{
    size_t n = 0;
    for (const struct list *it = l->next; it != l; it = it->next)
        n++;
    return n;
}

#define SID(s) (s), strlen(s)

static void test_siphash_vector(void **state)
{
    /* Reference vector from the SipHash paper: key 00..0f, message 00..0e. */
    uint8_t key[16], msg[15];
    (void)state;
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    assert_true(siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
    assert_true(siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
}

static void test_first_claim_wins(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0}, *inc = NULL;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 30000);
    assert_int_equal(registry_claim(&r, &a, SID("s1"), &ev, &inc), REG_CLAIMED);
    assert_int_equal(registry_claim(&r, &b, SID("s1"), &ev, &inc), REG_CONFLICT);
    assert_ptr_equal(inc, &a);
    assert_true(registry_holds(&r, &a));
    assert_false(registry_holds(&r, &b));
    assert_int_equal(registry_binaries(&r), 1);
    /* release frees the slot; releasing again (or unknown) is false */
    assert_true(registry_release(&r, &a));
    assert_false(registry_release(&r, &a));
    assert_int_equal(registry_claim(&r, &b, SID("s1"), &ev, &inc), REG_CLAIMED);
    registry_clear(&r);
}

static void test_phone_requires_binary_and_cap(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0};
    struct ph ph[5];
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 3, 30000);
    mkphone(&ph[0], "s1", 1);
    assert_int_equal(registry_add_phone(&r, &ph[0].p, SID("s1")), REG_ADD_NO_SERVER);
    registry_claim(&r, &a, SID("s1"), &ev, NULL);
    registry_claim(&r, &b, SID("s2"), &ev, NULL);
    for (int i = 0; i < 3; i++) {
        mkphone(&ph[i], "s1", (uint64_t)i + 10);
        assert_int_equal(registry_add_phone(&r, &ph[i].p, SID("s1")), REG_ADD_OK);
    }
    mkphone(&ph[3], "s1", 99);
    assert_int_equal(registry_add_phone(&r, &ph[3].p, SID("s1")), REG_ADD_AT_CAP);
    assert_int_equal(registry_phones(&r), 3);
    /* the cap is per server-id */
    mkphone(&ph[4], "s2", 77);
    assert_int_equal(registry_add_phone(&r, &ph[4].p, SID("s2")), REG_ADD_OK);
    /* unregister frees a cap slot; unknown removal is harmless */
    registry_remove_phone(&r, &ph[1].p);
    registry_remove_phone(&r, &ph[1].p);
    assert_int_equal(registry_add_phone(&r, &ph[3].p, SID("s1")), REG_ADD_OK);
    assert_int_equal(registry_phones(&r), 4);
    registry_clear(&r);
}

static void test_no_cap(void **state)
{
    static struct ph ph[80];
    struct registry r;
    struct reg_binary a = {0};
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 0, 30000);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    for (int i = 0; i < 80; i++) {
        mkphone(&ph[i], "s", (uint64_t)i * 7919);
        assert_int_equal(registry_add_phone(&r, &ph[i].p, SID("s")), REG_ADD_OK);
    }
    for (int i = 0; i < 80; i++)
        assert_ptr_equal(registry_find_phone(&r, &a, ph[i].id, strlen(ph[i].id)), &ph[i].p);
    assert_int_equal(registry_phones(&r), 80);
    registry_clear(&r);
}

static void test_find_phone_scoped(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0};
    struct ph p1, p2;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 30000);
    registry_claim(&r, &a, SID("s1"), &ev, NULL);
    registry_claim(&r, &b, SID("s2"), &ev, NULL);
    mkphone(&p1, "s1", 0xabcdef0123456789ULL);
    mkphone(&p2, "s2", 0x1111111111111111ULL);
    registry_add_phone(&r, &p1.p, SID("s1"));
    registry_add_phone(&r, &p2.p, SID("s2"));
    assert_ptr_equal(registry_find_phone(&r, &a, p1.id, strlen(p1.id)), &p1.p);
    /* a binary can only address phones of its own server-id */
    assert_null(registry_find_phone(&r, &a, p2.id, strlen(p2.id)));
    assert_null(registry_find_phone(&r, &a, "client-s1-zz", 12));
    assert_null(registry_find_phone(&r, &a, "nope", 4));
    uint64_t k;
    assert_int_equal(registry_conn_key(p1.id, strlen(p1.id), &k), 0);
    assert_true(k == 0xabcdef0123456789ULL);
    assert_int_equal(registry_conn_key("client-s-ABCDEF0123456789", 25, &k), -1);
    registry_clear(&r);
}

static void test_counts_lifecycle_and_orphans(void **state)
{
    struct registry r;
    struct reg_binary a = {0};
    struct ph p1;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 30000);
    assert_int_equal(registry_binaries(&r) + registry_phones(&r), 0);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    mkphone(&p1, "s", 5);
    registry_add_phone(&r, &p1.p, SID("s"));
    assert_int_equal(registry_binaries(&r), 1);
    assert_int_equal(registry_phones(&r), 1);
    /* plain release leaves the phone as an orphan, still counted */
    registry_release(&r, &a);
    assert_int_equal(registry_binaries(&r), 0);
    assert_int_equal(registry_phones(&r), 1);
    registry_remove_phone(&r, &p1.p);
    assert_int_equal(registry_phones(&r), 0);
    assert_int_equal(r.slots.n, 0); /* empty entry removed */
    registry_clear(&r);
}

static void test_reclaim_within_grace_evicts(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0}, other = {0};
    struct ph p1, p2, p3;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    registry_claim(&r, &other, SID("o"), &ev, NULL);
    mkphone(&p1, "s", 1);
    mkphone(&p3, "o", 3);
    registry_add_phone(&r, &p1.p, SID("s"));
    registry_add_phone(&r, &p3.p, SID("o"));
    assert_true(registry_schedule_release(&r, &a, 100));
    /* gracing binary not counted; its phones are; a phone may join in grace */
    assert_int_equal(registry_binaries(&r), 1);
    mkphone(&p2, "s", 2);
    assert_int_equal(registry_add_phone(&r, &p2.p, SID("s")), REG_ADD_OK);
    assert_int_equal(registry_claim(&r, &b, SID("s"), &ev, NULL), REG_RECLAIMED);
    assert_int_equal(list_len(&ev), 2); /* both, synchronously */
    assert_null(p1.p.slot);
    assert_int_equal(registry_phones(&r), 1); /* the other server-id is untouched */
    assert_int_equal(registry_binaries(&r), 2);
    /* the old timer is gone: nothing expires later */
    assert_int_equal(registry_expire(&r, 5000, &ev), 0);
    assert_true(registry_holds(&r, &b));
    /* the displaced binary cannot arm a release of its successor's slot */
    assert_false(registry_schedule_release(&r, &a, 6000));
    registry_clear(&r);
}

static void test_expiry_removes_and_closes(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0};
    struct ph p1, p2;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    mkphone(&p1, "s", 1);
    registry_add_phone(&r, &p1.p, SID("s"));
    registry_schedule_release(&r, &a, 0);
    registry_forget(&r, &a); /* the connection is freed during grace */
    assert_int_equal(registry_next_deadline(&r), 1000);
    mkphone(&p2, "s", 2);
    assert_int_equal(registry_add_phone(&r, &p2.p, SID("s")), REG_ADD_OK);
    assert_int_equal(registry_expire(&r, 999, &ev), 0);
    assert_int_equal(registry_expire(&r, 1000, &ev), 1);
    assert_int_equal(list_len(&ev), 2);
    assert_int_equal(registry_phones(&r), 0);
    assert_int_equal(registry_binaries(&r), 0);
    mkphone(&p1, "s", 1);
    assert_int_equal(registry_add_phone(&r, &p1.p, SID("s")), REG_ADD_NO_SERVER);
    assert_int_equal(registry_claim(&r, &b, SID("s"), &ev, NULL), REG_CLAIMED);
    registry_clear(&r);
}

/* ---- cluster records -------------------------------------------------- */

struct rel {
    int calls;
    char sid[16];
    uint64_t epoch, rev;
};

static void on_rel(void *arg, const char *sid, size_t len, uint64_t epoch, uint64_t rev)
{
    struct rel *r = arg;
    r->calls++;
    snprintf(r->sid, sizeof r->sid, "%.*s", (int)len, sid);
    r->epoch = epoch;
    r->rev = rev;
}

static void hash_of(const char *s, uint8_t h[32])
{
    memset(h, 0, 32);
    memcpy(h, s, strlen(s) < 32 ? strlen(s) : 32); /* any 32 bytes do for the index */
}

static void test_record_release_on_expiry_and_release(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0};
    struct rel rel = {0};
    struct list ev;
    uint8_t h[32];
    const char *sid;
    size_t len;
    uint64_t epoch, rev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_on_release(&r, on_rel, &rel);
    hash_of("s", h);
    assert_false(registry_set_owner(&r, SID("s"), 7, 7, h)); /* no slot yet */
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    assert_true(registry_set_owner(&r, SID("s"), 7, 9, h));
    assert_true(registry_owner(&r, SID("s"), &epoch, &rev));
    assert_int_equal(epoch, 7);
    assert_int_equal(rev, 9);
    assert_true(registry_find_owned(&r, h, &sid, &len));
    assert_memory_equal(sid, "s", 1);
    /* grace alone releases nothing; its expiry does, once */
    registry_schedule_release(&r, &a, 0);
    assert_int_equal(rel.calls, 0);
    registry_expire(&r, 1000, &ev);
    assert_int_equal(rel.calls, 1);
    assert_string_equal(rel.sid, "s");
    assert_int_equal(rel.epoch, 7);
    assert_int_equal(rel.rev, 9);
    assert_false(registry_find_owned(&r, h, &sid, &len));
    /* a plain release hands the record back too; a slot without one never */
    registry_claim(&r, &b, SID("t"), &ev, NULL);
    hash_of("t", h);
    registry_set_owner(&r, SID("t"), 3, 4, h);
    assert_true(registry_release(&r, &b));
    assert_int_equal(rel.calls, 2);
    assert_string_equal(rel.sid, "t");
    registry_claim(&r, &a, SID("u"), &ev, NULL);
    assert_true(registry_release(&r, &a));
    assert_int_equal(rel.calls, 2);
    registry_clear(&r);
}

static void test_record_drop_and_drain(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0}, c = {0};
    struct rel rel = {0};
    struct ph p1;
    struct list ev;
    uint8_t h[32], h2[32];
    const char *sid;
    size_t len;
    bool held;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_on_release(&r, on_rel, &rel);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    hash_of("s", h);
    registry_set_owner(&r, SID("s"), 5, 5, h);
    mkphone(&p1, "s", 1);
    registry_add_phone(&r, &p1.p, SID("s"));
    /* handed over: the slot goes, phones are evicted, no release */
    assert_ptr_equal(registry_drop(&r, SID("s"), &ev, &held), &a);
    assert_true(held);
    assert_int_equal(list_len(&ev), 1);
    assert_int_equal(rel.calls, 0);
    assert_false(registry_find_owned(&r, h, &sid, &len));
    assert_int_equal(registry_binaries(&r), 0);
    assert_false(registry_release(&r, &a)); /* its later release is a no-op */
    assert_null(registry_drop(&r, SID("s"), &ev, &held));
    assert_false(held);
    /* a gracing slot whose connection is gone drops too, holder NULL */
    registry_claim(&r, &b, SID("g"), &ev, NULL);
    registry_schedule_release(&r, &b, 0);
    registry_forget(&r, &b);
    assert_null(registry_drop(&r, SID("g"), &ev, &held));
    assert_true(held);
    assert_int_equal(registry_next_deadline(&r), 0);
    /* the drain hands every record back at once */
    registry_claim(&r, &b, SID("x"), &ev, NULL);
    registry_claim(&r, &c, SID("y"), &ev, NULL);
    hash_of("x", h);
    hash_of("y", h2);
    registry_set_owner(&r, SID("x"), 1, 2, h);
    registry_set_owner(&r, SID("y"), 3, 4, h2);
    registry_release_records(&r);
    assert_int_equal(rel.calls, 2);
    assert_false(registry_find_owned(&r, h, &sid, &len));
    assert_false(registry_find_owned(&r, h2, &sid, &len));
    assert_true(registry_holds(&r, &b)); /* the binaries stay until they close */
    registry_clear(&r);
}

/* Cluster mode registers phones on other nodes (stubs) through the same
 * call: the cap counts them with local ones, "no server" comes first, and
 * the owner finds a stub by its key when its node's messages arrive. */
static void test_phone_by_key_and_mixed_cap(void **state)
{
    struct registry r;
    struct reg_binary a = {0};
    struct ph ph[3];
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 2, 1000);
    mkphone(&ph[0], "s", 0x11);
    assert_int_equal(registry_add_phone(&r, &ph[0].p, SID("s")), REG_ADD_NO_SERVER);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    mkphone(&ph[1], "s", 0x22); /* a local phone and a stub: both count */
    assert_int_equal(registry_add_phone(&r, &ph[0].p, SID("s")), REG_ADD_OK);
    assert_int_equal(registry_add_phone(&r, &ph[1].p, SID("s")), REG_ADD_OK);
    mkphone(&ph[2], "s", 0x33);
    assert_int_equal(registry_add_phone(&r, &ph[2].p, SID("s")), REG_ADD_AT_CAP);
    assert_ptr_equal(registry_phone_by_key(&r, 0x22), &ph[1].p);
    assert_ptr_equal(registry_phone_by_key(&r, 0x11), &ph[0].p);
    assert_null(registry_phone_by_key(&r, 0x33));
    registry_remove_phone(&r, &ph[1].p);
    assert_null(registry_phone_by_key(&r, 0x22));
    assert_int_equal(registry_add_phone(&r, &ph[2].p, SID("s")), REG_ADD_OK);
    registry_clear(&r);
}

static void test_reschedule_last_wins(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, c = {0};
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    registry_claim(&r, &c, SID("t"), &ev, NULL);
    registry_schedule_release(&r, &a, 0);
    registry_schedule_release(&r, &c, 100);
    registry_schedule_release(&r, &a, 500); /* replaces: now after t */
    assert_int_equal(registry_next_deadline(&r), 1100);
    assert_int_equal(registry_expire(&r, 1200, &ev), 1);
    assert_true(a.slot != NULL);
    assert_int_equal(registry_expire(&r, 1500, &ev), 1);
    assert_null(a.slot);
    /* scheduling an unheld binary is a no-op */
    assert_false(registry_schedule_release(&r, &a, 2000));
    registry_clear(&r);
}

static void test_takeover(void **state)
{
    struct registry r;
    struct reg_binary old = {0}, neu = {0}, third = {0}, *inc = NULL;
    struct ph p1;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_claim(&r, &old, SID("s"), &ev, NULL);
    mkphone(&p1, "s", 1);
    registry_add_phone(&r, &p1.p, SID("s"));
    assert_int_equal(registry_claim(&r, &neu, SID("s"), &ev, &inc), REG_CONFLICT);
    /* a stale incumbent pointer conflicts */
    assert_false(registry_takeover(&r, &neu, &third, SID("s"), &ev));
    assert_true(registry_takeover(&r, &neu, inc, SID("s"), &ev));
    assert_int_equal(list_len(&ev), 1);
    assert_null(old.slot);
    assert_true(registry_holds(&r, &neu));
    /* the displaced incumbent's exit cannot arm a release */
    assert_false(registry_schedule_release(&r, &old, 10));
    /* takeover during grace cancels the timer */
    registry_schedule_release(&r, &neu, 10);
    assert_true(registry_takeover(&r, &third, &neu, SID("s"), &ev));
    assert_int_equal(registry_expire(&r, 99999, &ev), 0);
    assert_true(registry_holds(&r, &third));
    /* nil incumbent only succeeds on an empty slot */
    struct reg_binary x = {0};
    assert_false(registry_takeover(&r, &x, NULL, SID("s"), &ev));
    assert_true(registry_takeover(&r, &x, NULL, SID("empty"), &ev));
    registry_clear(&r);
}

static void test_conflict_and_plain_release_keep_phones(void **state)
{
    struct registry r;
    struct reg_binary a = {0}, b = {0};
    struct ph p1;
    struct list ev;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_claim(&r, &a, SID("s"), &ev, NULL);
    mkphone(&p1, "s", 1);
    registry_add_phone(&r, &p1.p, SID("s"));
    assert_int_equal(registry_claim(&r, &b, SID("s"), &ev, NULL), REG_CONFLICT);
    registry_release(&r, &a);
    assert_int_equal(list_len(&ev), 0);
    assert_non_null(p1.p.slot);
    registry_clear(&r);
}

static void test_many_slots_grow(void **state)
{
    static struct reg_binary bs[500];
    struct registry r;
    struct list ev;
    char sid[32];
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    for (int i = 0; i < 500; i++) {
        snprintf(sid, sizeof sid, "server-%d", i);
        assert_int_equal(registry_claim(&r, &bs[i], SID(sid), &ev, NULL), REG_CLAIMED);
    }
    assert_int_equal(registry_binaries(&r), 500);
    for (int i = 0; i < 500; i++)
        assert_true(registry_release(&r, &bs[i]));
    assert_int_equal(r.slots.n, 0);
    registry_clear(&r);
}

static void count_slot(const struct reg_view *s, void *arg)
{
    size_t *n = arg;
    (*n)++;
    assert_int_equal(strncmp(s->id, "server-", 7), 0);
}

/* The admin endpoints' view: find one slot, visit every slot once. */
static void test_find_and_each(void **state)
{
    static struct reg_binary bs[300];
    struct registry r;
    struct list ev;
    char sid[32];
    size_t n = 0;
    (void)state;
    list_init(&ev);
    registry_init(&r, SEED, 16, 1000);
    registry_each(&r, count_slot, &n);
    assert_int_equal(n, 0);
    for (int i = 0; i < 300; i++) {
        snprintf(sid, sizeof sid, "server-%d", i);
        assert_int_equal(registry_claim(&r, &bs[i], SID(sid), &ev, NULL), REG_CLAIMED);
    }
    registry_each(&r, count_slot, &n);
    assert_int_equal(n, 300);
    struct reg_view v;
    assert_true(registry_find(&r, SID("server-17"), &v));
    assert_ptr_equal(v.holder, &bs[17]);
    assert_false(registry_find(&r, SID("server-300"), &v));
    assert_false(registry_find(&r, SID("server-1x"), &v));
    for (int i = 0; i < 300; i++)
        assert_true(registry_release(&r, &bs[i]));
    registry_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vector),
        cmocka_unit_test(test_first_claim_wins),
        cmocka_unit_test(test_phone_requires_binary_and_cap),
        cmocka_unit_test(test_no_cap),
        cmocka_unit_test(test_find_phone_scoped),
        cmocka_unit_test(test_counts_lifecycle_and_orphans),
        cmocka_unit_test(test_reclaim_within_grace_evicts),
        cmocka_unit_test(test_expiry_removes_and_closes),
        cmocka_unit_test(test_reschedule_last_wins),
        cmocka_unit_test(test_takeover),
        cmocka_unit_test(test_conflict_and_plain_release_keep_phones),
        cmocka_unit_test(test_many_slots_grow),
        cmocka_unit_test(test_find_and_each),
        cmocka_unit_test(test_record_release_on_expiry_and_release),
        cmocka_unit_test(test_record_drop_and_drain),
        cmocka_unit_test(test_phone_by_key_and_mixed_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
