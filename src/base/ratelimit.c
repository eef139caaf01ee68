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
    struct hlink hl;
    uint64_t hash;
    int64_t tokens;
    uint64_t credit_ms; /* refill is counted in whole periods from here */
    uint64_t seen_ms;
    size_t len;
    char key[];
};

static uint64_t bucket_hash(const struct hlink *l)
{
    return CONTAINER_OF(l, struct rl_bucket, hl)->hash;
}

void ratelimit_init(struct ratelimit *rl, int64_t burst, uint64_t refill_ms, const uint8_t seed[16])
{
    memset(rl, 0, sizeof *rl);
    rl->burst = burst;
    rl->refill_ms = refill_ms ? refill_ms : 1;
    memcpy(rl->seed, seed, sizeof rl->seed);
    if (burst > 0)
        htab_init(&rl->buckets, 256, bucket_hash);
}

static void free_bucket(struct hlink *l)
{
    free(CONTAINER_OF(l, struct rl_bucket, hl));
}

void ratelimit_free(struct ratelimit *rl)
{
    htab_free_all(&rl->buckets, free_bucket);
}

static struct rl_bucket *find_or_add(struct ratelimit *rl, const char *key, size_t len,
                                     uint64_t now_ms)
{
    uint64_t h = siphash24(rl->seed, key, len);
    for (struct hlink *l = *htab_chain(&rl->buckets, h); l; l = l->next) {
        struct rl_bucket *b = CONTAINER_OF(l, struct rl_bucket, hl);
        if (b->hash == h && b->len == len && memcmp(b->key, key, len) == 0)
            return b;
    }
    if (rl->buckets.n >= RATELIMIT_MAX_BUCKETS)
        ratelimit_sweep(rl, now_ms);
    struct rl_bucket *b = xmalloc(sizeof *b + len);
    b->hash = h;
    b->tokens = rl->burst;
    b->credit_ms = now_ms;
    b->len = len;
    memcpy(b->key, key, len);
    htab_add(&rl->buckets, &b->hl, h, 1);
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
    for (size_t i = 0; i < rl->buckets.nb; i++) {
        struct hlink **pp = &rl->buckets.b[i];
        while (*pp) {
            struct rl_bucket *b = CONTAINER_OF(*pp, struct rl_bucket, hl);
            if (now_ms >= b->seen_ms && now_ms - b->seen_ms >= idle) {
                htab_unlink(&rl->buckets, pp);
                free(b);
                removed++;
            } else {
                pp = &b->hl.next;
            }
        }
    }
    return removed;
}
