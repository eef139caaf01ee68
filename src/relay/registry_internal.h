/* registry_internal.h — the registry's tables, for registry.c and its unit
 * test only; everyone else goes through registry.h. Same thread rule: the
 * owning shard's thread. */
#ifndef RELAY_REGISTRY_INTERNAL_H
#define RELAY_REGISTRY_INTERNAL_H

#include "relay/registry.h"

struct reg_slot {
    struct hlink hl; /* registry->slots */
    uint64_t hash;
    struct reg_binary *binary; /* holder (possibly gone and in grace) or NULL */
    struct list phones;
    size_t nphones;
    bool in_grace;
    uint64_t grace_deadline;
    struct list grace_link; /* registry->grace, deadline order */
    uint64_t own_epoch;     /* cluster: ownership epoch of this node's record (0: none) */
    uint64_t own_rev;       /* cluster: the record's last revision */
    uint8_t own_h[32];      /* cluster: SHA-256 of the id, indexed in by_h while own_epoch */
    struct hlink hh;        /* registry->by_h */
    size_t id_len;
    char id[]; /* server-id bytes */
};

struct registry {
    struct htab slots;  /* reg_slot by SipHash of the server-id */
    struct htab by_key; /* reg_phone by conn-id key (random, so used as is) */
    struct htab by_h;   /* cluster: slots with a record, by the SHA-256 of their id */
    struct list grace;  /* slots in grace, oldest deadline first */
    size_t held;        /* slots with a binary (including gracing ones) */
    size_t gracing;
    size_t phones;
    /* held - gracing and phones, republished after every change so another
     * shard's thread (healthz, metrics) can read them without a race */
    _Atomic size_t pub_binaries, pub_phones;
    int64_t phone_cap; /* <= 0: no cap */
    uint64_t grace_ms;
    uint8_t seed[16];               /* SipHash key: server-ids are attacker-chosen */
    struct reg_binary gone;         /* stands in for a gracing binary whose connection is freed */
    registry_release_fn on_release; /* cluster: a slot with a record stopped being held */
    void *release_arg;
};

/* registry_new and registry_free without the allocation: prepare r in
 * place / release what it points to. */
void registry_init(struct registry *r, const uint8_t seed[16], int64_t phone_cap,
                   uint64_t grace_ms);
void registry_clear(struct registry *r);

#endif
