/* registry.h — who holds which server-id (docs/features/registry.md): server-id → binary
 * (1:1, first claim wins), server-id → phones (1:N, capped), and the grace
 * window after a binary leaves. Pure bookkeeping on a clock the caller
 * passes in: it never closes or writes anything. Operations that evict
 * phones hand them back on a list so the caller can close them after the
 * registry is consistent again.
 * Threads: a registry belongs to its shard's thread; only registry_binaries
 * and registry_phones may be called from any thread (atomics). */
#ifndef RELAY_REGISTRY_H
#define RELAY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/htab.h"
#include "base/util.h"

struct registry;
struct reg_slot;

/* A binary's and a phone's entries are embedded in the caller's objects.
 * Their fields belong to the registry: the caller zeroes them, sets a
 * phone's key, conn_id and conn_id_len before registry_add_phone, uses
 * link only on an eviction list it was handed, and reads nothing else. */
struct reg_binary {
    struct reg_slot *slot; /* the slot this binary holds; NULL once displaced or released */
};

struct reg_phone {
    struct list link;      /* slot->phones, or the caller's eviction list */
    struct hlink hl;       /* the registry's phone index */
    struct reg_slot *slot; /* NULL when not registered */
    uint64_t key;          /* the conn id's random suffix */
    const char *conn_id;   /* owned by the caller, outlives registration */
    size_t conn_id_len;
};

enum reg_claim {
    REG_CLAIMED,   /* slot was free */
    REG_RECLAIMED, /* slot was in grace: old phones evicted (close them 4404) */
    REG_CONFLICT,  /* held by a live binary: probe it */
};

enum reg_add {
    REG_ADD_OK,
    REG_ADD_NO_SERVER, /* no binary holds the id (checked first) */
    REG_ADD_AT_CAP,
};

/* Cluster mode: a slot holding an ownership record (registry_set_owner)
 * stopped being held — its grace expired, it was released, or dropped —
 * with the record's epoch and last revision, so the owner can free the
 * record. Not called for slots without a record. */
typedef void (*registry_release_fn)(void *arg, const char *sid, size_t len, uint64_t epoch,
                                    uint64_t rev);

/* A new, empty registry. seed keys the hash; phone_cap <= 0 disables the
 * per-server-id cap; grace_ms is the release delay. */
struct registry *registry_new(const uint8_t seed[16], int64_t phone_cap, uint64_t grace_ms);

/* Frees the registry (binaries and phones belong to callers). */
void registry_free(struct registry *r);

/* Sets the hook called when a slot with a record stops being held. */
void registry_on_release(struct registry *r, registry_release_fn fn, void *arg);

/* Cluster mode: the ownership record behind sid's slot (epoch 0: none, and
 * no release hook for it); h is SHA-256(sid), by which the bus names it.
 * Returns false when sid has no slot. */
bool registry_set_owner(struct registry *r, const char *sid, size_t len, uint64_t epoch,
                        uint64_t rev, const uint8_t h[32]);

/* The server-id whose slot holds a record with SHA-256 h: false if none. */
bool registry_find_owned(const struct registry *r, const uint8_t h[32], const char **sid,
                         size_t *len);

/* The record behind sid's slot: false when sid has no held slot; *epoch 0
 * when it has no record. */
bool registry_owner(const struct registry *r, const char *sid, size_t len, uint64_t *epoch,
                    uint64_t *rev);

/* Cluster mode, draining: calls the release hook for every slot that holds
 * a record (and forgets the records), so other nodes can take them at once. */
void registry_release_records(struct registry *r);

/* Cluster mode: removes sid's slot now, whoever holds it (connected or in
 * grace): the holder's later release is a no-op, its phones are appended to
 * evicted. No release hook: the caller has handed the record over. Returns
 * the holder while its connection exists (else NULL); *held false when sid
 * had no held slot. */
struct reg_binary *registry_drop(struct registry *r, const char *sid, size_t len,
                                 struct list *evicted, bool *held);

/* Changes the per-server-id phone cap for registrations from now on
 * (<= 0: none); phones already registered stay. */
void registry_set_phone_cap(struct registry *r, int64_t phone_cap);

/* Claims server-id sid for b. On REG_RECLAIMED every phone of the slot is
 * unregistered and appended to evicted, and the pending grace is cancelled.
 * On REG_CONFLICT nothing changes; *incumbent receives the holder. */
enum reg_claim registry_claim(struct registry *r, struct reg_binary *b, const char *sid, size_t len,
                              struct list *evicted, struct reg_binary **incumbent);

/* Installs b after a failed liveness probe, but only if the slot is still
 * held by incumbent (or still empty when incumbent is NULL). Evicts the
 * slot's phones into evicted and cancels any grace. Returns false (nothing
 * changed) when someone else holds the slot now. The displaced incumbent's
 * slot pointer is cleared so its later release is a no-op. */
bool registry_takeover(struct registry *r, struct reg_binary *b, struct reg_binary *incumbent,
                       const char *sid, size_t len, struct list *evicted);

/* The binary left: start (or restart: last wins) its slot's grace window,
 * but only if b still holds the slot. Returns true when scheduled. */
bool registry_schedule_release(struct registry *r, struct reg_binary *b, uint64_t now_ms);

/* b's connection is being freed while its slot is in grace: the slot keeps
 * counting as held (until reclaim or expiry) but no longer points at b. */
void registry_forget(struct registry *r, struct reg_binary *b);

/* Removes b's slot entry right away, leaving its phones registered
 * ("orphans": the reference's plain release, which the relay never uses). Returns false if b holds
 * nothing. */
bool registry_release(struct registry *r, struct reg_binary *b);

/* Expires every grace window due at now_ms: the binary entry and all phones
 * of each such slot are removed, phones appended to evicted (close them
 * 1000). Returns the number of slots expired. */
size_t registry_expire(struct registry *r, uint64_t now_ms, struct list *evicted);

/* Earliest pending grace deadline, or 0 when none. */
uint64_t registry_next_deadline(const struct registry *r);

/* Registers phone p (conn_id and key set by the caller) under sid;
 * check and insert happen together. */
enum reg_add registry_add_phone(struct registry *r, struct reg_phone *p, const char *sid,
                                size_t len);

/* The registered phone with conn-id key `key`, or NULL. */
struct reg_phone *registry_phone_by_key(const struct registry *r, uint64_t key);

/* Unregisters p; harmless if it is not registered. */
void registry_remove_phone(struct registry *r, struct reg_phone *p);

/* Finds the phone with this conn id among the phones of b's server-id.
 * Returns NULL when there is none (or when b holds nothing). */
struct reg_phone *registry_find_phone(const struct registry *r, const struct reg_binary *b,
                                      const char *conn_id, size_t len);

/* Parses the 16-hex-digit suffix of a conn id ("client-<sid>-<hex>").
 * Returns 0 and stores it, or -1 when the id does not end that way. */
int registry_conn_key(const char *conn_id, size_t len, uint64_t *key);

/* Held server-ids outside their grace window (healthz, metrics). */
size_t registry_binaries(const struct registry *r);

/* Registered phones, gracing and orphaned ones included. */
size_t registry_phones(const struct registry *r);

/* True when b currently holds its slot and the slot is not in grace. */
bool registry_holds(const struct registry *r, const struct reg_binary *b);

/* Server-ids held (gracing ones included), those in grace, and registered
 * phones, as the owning thread sees them now. */
struct reg_counts {
    size_t held, gracing, phones;
};
void registry_counts(const struct registry *r, struct reg_counts *out);

/* True when p is registered and its server-id has a holder: a connected
 * binary or one in its grace window. */
bool registry_phone_held(const struct reg_phone *p);

/* The binary holding p's server-id if its connection is still there (it
 * may be in its grace window), else NULL. */
struct reg_binary *registry_phone_binary(const struct registry *r, const struct reg_phone *p);

/* Calls fn for every phone of the server-id b holds (none when b holds
 * nothing). fn may unregister the phone it is given, and no other. */
void registry_each_phone(const struct reg_binary *b, void (*fn)(struct reg_phone *p, void *arg),
                         void *arg);

/* The same for the phones of server-id sid, whoever holds it. */
void registry_each_phone_of(const struct registry *r, const char *sid, size_t len,
                            void (*fn)(struct reg_phone *p, void *arg), void *arg);

/* What the admin endpoints see of one server-id. */
struct reg_view {
    const char *id; /* server-id bytes, valid until the registry changes */
    size_t id_len;
    size_t phones;
    bool in_grace;
    struct reg_binary *holder; /* its binary while the connection exists, else NULL */
};

/* Fills *out for server-id sid; false when the registry has no entry. */
bool registry_find(const struct registry *r, const char *sid, size_t len, struct reg_view *out);

/* Calls fn for every server-id, in no particular order; fn must not change
 * the registry. */
void registry_each(const struct registry *r, void (*fn)(const struct reg_view *v, void *arg),
                   void *arg);

#endif
