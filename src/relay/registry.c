/* registry.c — server-id slots in a SipHash-keyed chained table, phones in
 * a second table keyed by their random conn-id suffix, and gracing slots on
 * a FIFO (every grace window has the same length, so FIFO order is deadline
 * order and one timer serves them all). No I/O and no locks: a registry
 * belongs to one shard's loop. */
#include "relay/registry.h"
#include "relay/registry_internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/siphash.h"

/* Makes the counts visible to other threads (see struct registry). */
static void publish(struct registry *r)
{
    atomic_store_explicit(&r->pub_binaries, r->held - r->gracing, memory_order_relaxed);
    atomic_store_explicit(&r->pub_phones, r->phones, memory_order_relaxed);
}

/* ---- tables ------------------------------------------------------------ */

static uint64_t slot_hash(const struct hlink *l)
{
    return CONTAINER_OF(l, struct reg_slot, hl)->hash;
}

static uint64_t phone_hash(const struct hlink *l)
{
    return CONTAINER_OF(l, struct reg_phone, hl)->key;
}

static uint64_t owned_hash(const struct hlink *l)
{
    uint64_t h;
    memcpy(&h, CONTAINER_OF(l, struct reg_slot, hh)->own_h, sizeof h); /* already uniform */
    return h;
}

static uint64_t h64(const uint8_t h[32])
{
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return v;
}

/* Forgets s's record (and its hash index entry). */
static void drop_record(struct registry *r, struct reg_slot *s)
{
    if (s->own_epoch)
        htab_del(&r->by_h, &s->hh, h64(s->own_h));
    s->own_epoch = s->own_rev = 0;
}

void registry_init(struct registry *r, const uint8_t seed[16], int64_t phone_cap, uint64_t grace_ms)
{
    memset(r, 0, sizeof *r);
    memcpy(r->seed, seed, sizeof r->seed);
    htab_init(&r->slots, 64, slot_hash);
    htab_init(&r->by_key, 64, phone_hash);
    htab_init(&r->by_h, 16, owned_hash);
    list_init(&r->grace);
    r->phone_cap = phone_cap;
    r->grace_ms = grace_ms;
}

struct registry *registry_new(const uint8_t seed[16], int64_t phone_cap, uint64_t grace_ms)
{
    struct registry *r = xmalloc(sizeof *r);
    registry_init(r, seed, phone_cap, grace_ms);
    return r;
}

void registry_free(struct registry *r)
{
    if (!r)
        return;
    registry_clear(r);
    free(r);
}

void registry_set_phone_cap(struct registry *r, int64_t phone_cap)
{
    r->phone_cap = phone_cap;
}

static void free_slot(struct hlink *l)
{
    free(CONTAINER_OF(l, struct reg_slot, hl));
}

void registry_clear(struct registry *r)
{
    htab_free_all(&r->slots, free_slot);
    htab_free(&r->by_key); /* phones belong to their connections */
    htab_free(&r->by_h);   /* its entries are slots */
}

static struct reg_slot *find_slot(const struct registry *r, const char *sid, size_t len, uint64_t h)
{
    for (struct hlink *l = *htab_chain(&r->slots, h); l; l = l->next) {
        struct reg_slot *s = CONTAINER_OF(l, struct reg_slot, hl);
        if (s->hash == h && s->id_len == len && memcmp(s->id, sid, len) == 0)
            return s;
    }
    return NULL;
}

static struct reg_slot *lookup(const struct registry *r, const char *sid, size_t len)
{
    return find_slot(r, sid, len, siphash24(r->seed, sid, len));
}

static struct reg_slot *lookup_or_create(struct registry *r, const char *sid, size_t len)
{
    uint64_t h = siphash24(r->seed, sid, len);
    struct reg_slot *s = find_slot(r, sid, len, h);
    if (s)
        return s;
    s = xcalloc(1, sizeof *s + len);
    s->hash = h;
    s->id_len = len;
    memcpy(s->id, sid, len);
    list_init(&s->phones);
    list_init(&s->grace_link);
    htab_add(&r->slots, &s->hl, h, 1);
    return s;
}

/* A slot with no binary, no phones and no grace is forgotten. */
static void maybe_free_slot(struct registry *r, struct reg_slot *s)
{
    if (s->binary || s->nphones || s->in_grace)
        return;
    drop_record(r, s);
    htab_del(&r->slots, &s->hl, s->hash);
    free(s);
}

static void unindex_phone(struct registry *r, struct reg_phone *p)
{
    htab_del(&r->by_key, &p->hl, p->key);
}

/* ---- grace ------------------------------------------------------------- */

static void cancel_grace(struct registry *r, struct reg_slot *s)
{
    if (!s->in_grace)
        return;
    list_remove(&s->grace_link);
    s->in_grace = false;
    r->gracing--;
    publish(r);
}

/* Unregisters every phone of s onto evicted (caller closes them). */
/* Takes p off its slot's list and out of the phone index. */
static void detach_phone(struct registry *r, struct reg_phone *p)
{
    list_remove(&p->link);
    unindex_phone(r, p);
    p->slot->nphones--;
    p->slot = NULL;
    r->phones--;
    publish(r);
}

static void evict_phones(struct registry *r, struct reg_slot *s, struct list *evicted)
{
    while (!list_empty(&s->phones)) {
        struct reg_phone *p = CONTAINER_OF(s->phones.next, struct reg_phone, link);
        detach_phone(r, p);
        list_push_back(evicted, &p->link);
    }
}

static void install(struct registry *r, struct reg_slot *s, struct reg_binary *b)
{
    if (s->binary) {
        s->binary->slot = NULL; /* displaced: its later release must be a no-op */
    } else {
        r->held++;
        publish(r);
    }
    s->binary = b;
    b->slot = s;
}

enum reg_claim registry_claim(struct registry *r, struct reg_binary *b, const char *sid, size_t len,
                              struct list *evicted, struct reg_binary **incumbent)
{
    struct reg_slot *s = lookup_or_create(r, sid, len);
    if (s->in_grace) {
        cancel_grace(r, s);
        install(r, s, b);
        evict_phones(r, s, evicted);
        return REG_RECLAIMED;
    }
    if (s->binary) {
        if (incumbent)
            *incumbent = s->binary;
        return REG_CONFLICT;
    }
    install(r, s, b);
    return REG_CLAIMED;
}

bool registry_takeover(struct registry *r, struct reg_binary *b, struct reg_binary *incumbent,
                       const char *sid, size_t len, struct list *evicted)
{
    struct reg_slot *s = lookup(r, sid, len);
    struct reg_binary *cur = s ? s->binary : NULL;
    if (cur != incumbent)
        return false;
    if (!s)
        s = lookup_or_create(r, sid, len);
    cancel_grace(r, s);
    install(r, s, b);
    evict_phones(r, s, evicted);
    return true;
}

bool registry_schedule_release(struct registry *r, struct reg_binary *b, uint64_t now_ms)
{
    struct reg_slot *s = b->slot;
    if (!s || s->binary != b)
        return false;
    if (s->in_grace)
        list_remove(&s->grace_link); /* last schedule wins */
    else
        r->gracing++;
    publish(r);
    s->in_grace = true;
    s->grace_deadline = now_ms + r->grace_ms;
    list_push_back(&r->grace, &s->grace_link);
    return true;
}

void registry_forget(struct registry *r, struct reg_binary *b)
{
    struct reg_slot *s = b->slot;
    if (!s || s->binary != b)
        return;
    b->slot = NULL;
    if (s->in_grace) {
        s->binary = &r->gone;
        return;
    }
    s->binary = NULL; /* not gracing: the reference's plain release */
    r->held--;
    publish(r);
    maybe_free_slot(r, s);
}

/* The slot stops being held: tell the owner of its record. */
static void released(struct registry *r, struct reg_slot *s)
{
    uint64_t epoch = s->own_epoch, rev = s->own_rev;
    drop_record(r, s);
    if (epoch && r->on_release)
        r->on_release(r->release_arg, s->id, s->id_len, epoch, rev);
}

void registry_release_records(struct registry *r)
{
    for (size_t i = 0; i < r->slots.nb; i++)
        for (struct hlink *l = r->slots.b[i]; l; l = l->next)
            released(r, CONTAINER_OF(l, struct reg_slot, hl));
}

void registry_on_release(struct registry *r, registry_release_fn fn, void *arg)
{
    r->on_release = fn;
    r->release_arg = arg;
}

bool registry_set_owner(struct registry *r, const char *sid, size_t len, uint64_t epoch,
                        uint64_t rev, const uint8_t h[32])
{
    struct reg_slot *s = lookup(r, sid, len);
    if (!s)
        return false;
    drop_record(r, s);
    if (!epoch)
        return true;
    s->own_epoch = epoch;
    s->own_rev = rev;
    memcpy(s->own_h, h, sizeof s->own_h);
    htab_add(&r->by_h, &s->hh, h64(h), 1);
    return true;
}

bool registry_find_owned(const struct registry *r, const uint8_t h[32], const char **sid,
                         size_t *len)
{
    for (struct hlink *l = *htab_chain(&r->by_h, h64(h)); l; l = l->next) {
        const struct reg_slot *s = CONTAINER_OF(l, struct reg_slot, hh);
        if (memcmp(s->own_h, h, 32) == 0) {
            *sid = s->id;
            *len = s->id_len;
            return true;
        }
    }
    return false;
}

bool registry_owner(const struct registry *r, const char *sid, size_t len, uint64_t *epoch,
                    uint64_t *rev)
{
    const struct reg_slot *s = lookup(r, sid, len);
    if (!s || !s->binary)
        return false;
    *epoch = s->own_epoch;
    *rev = s->own_rev;
    return true;
}

struct reg_binary *registry_drop(struct registry *r, const char *sid, size_t len,
                                 struct list *evicted, bool *held)
{
    struct reg_slot *s = lookup(r, sid, len);
    struct reg_binary *b = s ? s->binary : NULL;
    *held = b != NULL;
    if (!s || !b)
        return NULL;
    cancel_grace(r, s);
    drop_record(r, s); /* handed over: no release */
    b->slot = NULL;
    s->binary = NULL;
    r->held--;
    publish(r);
    evict_phones(r, s, evicted);
    maybe_free_slot(r, s);
    return b == &r->gone ? NULL : b;
}

bool registry_release(struct registry *r, struct reg_binary *b)
{
    struct reg_slot *s = b->slot;
    if (!s || s->binary != b)
        return false;
    released(r, s);
    cancel_grace(r, s);
    s->binary = NULL;
    b->slot = NULL;
    r->held--;
    publish(r);
    maybe_free_slot(r, s);
    return true;
}

size_t registry_expire(struct registry *r, uint64_t now_ms, struct list *evicted)
{
    size_t n = 0;
    while (!list_empty(&r->grace)) {
        struct reg_slot *s = CONTAINER_OF(r->grace.next, struct reg_slot, grace_link);
        if (s->grace_deadline > now_ms)
            break;
        cancel_grace(r, s);
        released(r, s);
        if (s->binary)
            s->binary->slot = NULL;
        s->binary = NULL;
        r->held--;
        publish(r);
        evict_phones(r, s, evicted);
        maybe_free_slot(r, s);
        n++;
    }
    return n;
}

uint64_t registry_next_deadline(const struct registry *r)
{
    if (list_empty(&r->grace))
        return 0;
    return CONTAINER_OF(r->grace.next, struct reg_slot, grace_link)->grace_deadline;
}

/* ---- phones ------------------------------------------------------------ */

enum reg_add registry_add_phone(struct registry *r, struct reg_phone *p, const char *sid,
                                size_t len)
{
    struct reg_slot *s = lookup(r, sid, len);
    if (!s || !s->binary)
        return REG_ADD_NO_SERVER;
    if (r->phone_cap > 0 && s->nphones >= (size_t)r->phone_cap)
        return REG_ADD_AT_CAP;
    list_push_back(&s->phones, &p->link);
    s->nphones++;
    r->phones++;
    publish(r);
    p->slot = s;
    htab_add(&r->by_key, &p->hl, p->key, 2);
    return REG_ADD_OK;
}

struct reg_phone *registry_phone_by_key(const struct registry *r, uint64_t key)
{
    for (struct hlink *l = *htab_chain(&r->by_key, key); l; l = l->next) {
        struct reg_phone *p = CONTAINER_OF(l, struct reg_phone, hl);
        if (p->key == key)
            return p;
    }
    return NULL;
}

void registry_remove_phone(struct registry *r, struct reg_phone *p)
{
    struct reg_slot *s = p->slot;
    if (!s)
        return;
    detach_phone(r, p);
    maybe_free_slot(r, s);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

int registry_conn_key(const char *conn_id, size_t len, uint64_t *key)
{
    uint64_t k = 0;
    if (len < 17 || conn_id[len - 17] != '-')
        return -1;
    for (size_t i = len - 16; i < len; i++) {
        int v = hexval(conn_id[i]);
        if (v < 0)
            return -1;
        k = (k << 4) | (uint64_t)v;
    }
    *key = k;
    return 0;
}

struct reg_phone *registry_find_phone(const struct registry *r, const struct reg_binary *b,
                                      const char *conn_id, size_t len)
{
    uint64_t key;
    if (!b->slot || b->slot->binary != b || registry_conn_key(conn_id, len, &key) != 0)
        return NULL;
    for (struct hlink *l = *htab_chain(&r->by_key, key); l; l = l->next) {
        struct reg_phone *p = CONTAINER_OF(l, struct reg_phone, hl);
        if (p->key == key && p->slot == b->slot && p->conn_id_len == len &&
            memcmp(p->conn_id, conn_id, len) == 0)
            return p;
    }
    return NULL;
}

size_t registry_binaries(const struct registry *r)
{
    return atomic_load_explicit(&r->pub_binaries, memory_order_relaxed);
}

size_t registry_phones(const struct registry *r)
{
    return atomic_load_explicit(&r->pub_phones, memory_order_relaxed);
}

bool registry_holds(const struct registry *r, const struct reg_binary *b)
{
    (void)r;
    return b->slot && b->slot->binary == b && !b->slot->in_grace;
}

void registry_counts(const struct registry *r, struct reg_counts *out)
{
    out->held = r->held;
    out->gracing = r->gracing;
    out->phones = r->phones;
}

bool registry_phone_held(const struct reg_phone *p)
{
    return p->slot && p->slot->binary;
}

struct reg_binary *registry_phone_binary(const struct registry *r, const struct reg_phone *p)
{
    struct reg_binary *b = p->slot ? p->slot->binary : NULL;
    return b == &r->gone ? NULL : b;
}

/* Safe against fn unregistering the phone it is given. */
static void each_phone(const struct reg_slot *s, void (*fn)(struct reg_phone *p, void *arg),
                       void *arg)
{
    for (struct list *it = s->phones.next, *next; it != &s->phones; it = next) {
        next = it->next;
        fn(CONTAINER_OF(it, struct reg_phone, link), arg);
    }
}

void registry_each_phone(const struct reg_binary *b, void (*fn)(struct reg_phone *p, void *arg),
                         void *arg)
{
    if (b->slot)
        each_phone(b->slot, fn, arg);
}

void registry_each_phone_of(const struct registry *r, const char *sid, size_t len,
                            void (*fn)(struct reg_phone *p, void *arg), void *arg)
{
    const struct reg_slot *s = lookup(r, sid, len);
    if (s)
        each_phone(s, fn, arg);
}

static void view(const struct registry *r, const struct reg_slot *s, struct reg_view *out)
{
    out->id = s->id;
    out->id_len = s->id_len;
    out->phones = s->nphones;
    out->in_grace = s->in_grace;
    out->holder = s->binary == &r->gone ? NULL : s->binary;
}

bool registry_find(const struct registry *r, const char *sid, size_t len, struct reg_view *out)
{
    const struct reg_slot *s = lookup(r, sid, len);
    if (s)
        view(r, s, out);
    return s != NULL;
}

void registry_each(const struct registry *r, void (*fn)(const struct reg_view *v, void *arg),
                   void *arg)
{
    struct reg_view v;
    for (size_t i = 0; i < r->slots.nb; i++)
        for (const struct hlink *l = r->slots.b[i]; l; l = l->next) {
            view(r, CONTAINER_OF(l, struct reg_slot, hl), &v);
            fn(&v, arg);
        }
}
