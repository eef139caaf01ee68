/* ratelimit.h — per-key token buckets (docs/operations.md, admission control): a new key starts
 * full and spends one token; one token comes back per whole refill period (the fractional remainder
 * is kept); idle buckets are swept. Pure: the caller passes the clock. Keys are client IPs (or
 * X-Forwarded-For values). Not thread-safe: the owner serialises calls (the relay under its rl_mu,
 * the push waker on shard 0's loop). */
#ifndef RELAY_RATELIMIT_H
#define RELAY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/htab.h"

#define RATELIMIT_MAX_KEY     256     /* longer keys are cut (they are attacker-chosen) */
#define RATELIMIT_MAX_BUCKETS 1000000 /* past this, idle buckets are swept at once */

struct ratelimit {
    int64_t burst;      /* 0 disables limiting */
    uint64_t refill_ms; /* one token per period */
    uint8_t seed[16];
    struct htab buckets; /* struct rl_bucket (ratelimit.c); empty while disabled */
};

/* Prepares rl. burst <= 0 disables it (every call allowed, nothing stored). */
void ratelimit_init(struct ratelimit *rl, int64_t burst, uint64_t refill_ms,
                    const uint8_t seed[16]);

/* Frees every bucket. */
void ratelimit_free(struct ratelimit *rl);

/* Takes a token for key at now_ms. Returns true when allowed. */
bool ratelimit_allow(struct ratelimit *rl, const char *key, size_t len, uint64_t now_ms);

/* Removes buckets unseen for at least burst × refill (they would be full
 * anyway). Returns how many were removed. */
size_t ratelimit_sweep(struct ratelimit *rl, uint64_t now_ms);

#endif
