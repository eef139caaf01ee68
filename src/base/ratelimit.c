/* ratelimit.c — token buckets in a SipHash-keyed chained table. Refill is
 * computed lazily on each call from the last credit time, so buckets cost
 * nothing between requests; a periodic sweep drops idle ones. Runs at
 * upgrade rate, on the loop thread, without locks. */
#include "base/ratelimit.h"

#include <stdlib.h>
#include <string.h>

#include "base/siphash.h"
#include "base/util.h"

struct rl_bucket {
    struct rl_bucket *next;
    uint64_t hash;
    int64_t tokens;
    uint64_t credit_ms; /* refill is counted in whole periods from here */
    uint64_t seen_ms;
    size_t len;
    char key[];
};

void ratelimit_init(struct ratelimit *rl, int64_t burst, uint64_t refill_ms, const uint8_t seed[16])
{
    memset(rl, 0, sizeof *rl);
    rl->burst = burst;
    rl->refill_ms = refill_ms ? refill_ms : 1;
    memcpy(rl->seed, seed, sizeof rl->seed);
    if (burst > 0) {
        rl->nbuckets = 256;
        rl->table = xcalloc(rl->nbuckets, sizeof *rl->table);
    }
}

void ratelimit_free(struct ratelimit *rl)
{
    for (size_t i = 0; i < rl->nbuckets; i++) {
        struct rl_bucket *b = rl->table[i];
        while (b) {
            struct rl_bucket *next = b->next;
            free(b);
            b = next;
        }
    }
    free(rl->table);
    rl->table = NULL;
    rl->nbuckets = rl->count = 0;
}

static void grow(struct ratelimit *rl)
{
    size_t n = rl->nbuckets * 2;
    struct rl_bucket **t = xcalloc(n, sizeof *t);
    for (size_t i = 0; i < rl->nbuckets; i++) {
        struct rl_bucket *b = rl->table[i];
        while (b) {
            struct rl_bucket *next = b->next;
            b->next = t[b->hash & (n - 1)];
            t[b->hash & (n - 1)] = b;
            b = next;
        }
    }
    free(rl->table);
    rl->table = t;
    rl->nbuckets = n;
}

static struct rl_bucket *find_or_add(struct ratelimit *rl, const char *key, size_t len,
                                     uint64_t now_ms)
{
    uint64_t h = siphash24(rl->seed, key, len);
    for (struct rl_bucket *b = rl->table[h & (rl->nbuckets - 1)]; b; b = b->next)
        if (b->hash == h && b->len == len && memcmp(b->key, key, len) == 0)
            return b;
    if (rl->count >= RATELIMIT_MAX_BUCKETS)
        ratelimit_sweep(rl, now_ms);
    if (rl->count >= rl->nbuckets)
        grow(rl);
    struct rl_bucket *b = xmalloc(sizeof *b + len);
    b->hash = h;
    b->tokens = rl->burst;
    b->credit_ms = now_ms;
    b->len = len;
    memcpy(b->key, key, len);
    b->next = rl->table[h & (rl->nbuckets - 1)];
    rl->table[h & (rl->nbuckets - 1)] = b;
    rl->count++;
    return b;
}

bool ratelimit_allow(struct ratelimit *rl, const char *key, size_t len, uint64_t now_ms)
{
    if (rl->burst <= 0)
        return true;
    if (len > RATELIMIT_MAX_KEY)
        len = RATELIMIT_MAX_KEY;
    struct rl_bucket *b = find_or_add(rl, key, len, now_ms);
    if (now_ms > b->credit_ms) {
        uint64_t periods = (now_ms - b->credit_ms) / rl->refill_ms;
        if (periods) {
            b->credit_ms += periods * rl->refill_ms; /* keep the fraction */
            b->tokens = (int64_t)periods >= rl->burst - b->tokens ? rl->burst
                                                                  : b->tokens + (int64_t)periods;
        }
    }
    b->seen_ms = now_ms;
    if (b->tokens <= 0)
        return false;
    b->tokens--;
    return true;
}

size_t ratelimit_sweep(struct ratelimit *rl, uint64_t now_ms)
{
    uint64_t idle = (uint64_t)rl->burst * rl->refill_ms;
    size_t removed = 0;
    for (size_t i = 0; i < rl->nbuckets; i++) {
        struct rl_bucket **pp = &rl->table[i];
        while (*pp) {
            struct rl_bucket *b = *pp;
            if (now_ms >= b->seen_ms && now_ms - b->seen_ms >= idle) {
                *pp = b->next;
                free(b);
                rl->count--;
                removed++;
            } else {
                pp = &b->next;
            }
        }
    }
    return removed;
}
