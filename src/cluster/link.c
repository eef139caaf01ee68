/* link.c — sequence and liveness bookkeeping for cluster links (cluster.md
 * §4.4). Peers live in two intrusive hash tables: by epoch (every peer, for
 * each message) and by node (only each node's newest incarnation, for
 * heartbeats); a peer's links are an array indexed by shard, so a message
 * costs one hash probe and one index. Periodic work (SYNC, silence) walks
 * the peers, at most nodes × shards entries. It knows nothing of subjects,
 * associations or clocks beyond the now_ms it is handed. */
#include "cluster/link.h"

#include <stdlib.h>
#include <string.h>

#include "base/htab.h"
#include "base/util.h"

#define UNSET UINT64_MAX /* last_ms of a peer no check has seen yet */
#define LOAD  2

struct link {
    uint64_t rx_last;   /* last sequence received; 0: none */
    uint64_t tx_last;   /* last sequence sent; 0: none */
    uint64_t tx_synced; /* tx_last when the last SYNC was sent */
};

struct link_peer {
    struct hlink by_epoch;
    struct hlink by_node; /* linked only while this is its node's newest incarnation */
    uint64_t epoch;
    uint64_t node; /* 0: no heartbeat yet */
    uint64_t last_ms;
    uint64_t state_ms; /* when it went down or was superseded */
    struct link *links;
    uint16_t nlinks;
    uint16_t shards; /* from its heartbeat; 0: unknown */
    uint8_t state;   /* enum link_peer_state */
};

struct link_tracker {
    struct htab by_epoch;
    struct htab by_node;
    uint64_t silence_ms;
    uint64_t forget_ms;
    struct link_stats stats;
};

/* Epochs and node identities are not chosen by clients (the bus is a trust
 * boundary, cluster.md §13): a fixed mix spreads them well enough. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9u;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

static uint64_t epoch_hash(const struct hlink *l)
{
    return mix(CONTAINER_OF(l, struct link_peer, by_epoch)->epoch);
}

static uint64_t node_hash(const struct hlink *l)
{
    return mix(CONTAINER_OF(l, struct link_peer, by_node)->node);
}

struct link_tracker *link_tracker_new(uint64_t silence_ms, uint64_t forget_ms)
{
    struct link_tracker *t = xcalloc(1, sizeof *t);
    htab_init(&t->by_epoch, 16, epoch_hash);
    htab_init(&t->by_node, 16, node_hash);
    t->silence_ms = silence_ms;
    t->forget_ms = forget_ms;
    return t;
}

static void peer_free(struct link_peer *p)
{
    free(p->links);
    free(p);
}

static void free_peer_node(struct hlink *l)
{
    peer_free(CONTAINER_OF(l, struct link_peer, by_epoch));
}

void link_tracker_free(struct link_tracker *t)
{
    if (!t)
        return;
    htab_free_all(&t->by_epoch, free_peer_node);
    htab_free(&t->by_node); /* the same peers, freed above */
    free(t);
}

static struct link_peer *find_epoch(const struct link_tracker *t, uint64_t epoch)
{
    for (struct hlink *l = *htab_chain(&t->by_epoch, mix(epoch)); l; l = l->next) {
        struct link_peer *p = CONTAINER_OF(l, struct link_peer, by_epoch);
        if (p->epoch == epoch)
            return p;
    }
    return NULL;
}

static struct link_peer *find_node(const struct link_tracker *t, uint64_t node)
{
    for (struct hlink *l = *htab_chain(&t->by_node, mix(node)); l; l = l->next) {
        struct link_peer *p = CONTAINER_OF(l, struct link_peer, by_node);
        if (p->node == node)
            return p;
    }
    return NULL;
}

static struct link_peer *peer_add(struct link_tracker *t, uint64_t epoch)
{
    struct link_peer *p = xcalloc(1, sizeof *p);
    p->epoch = epoch;
    p->state = LINK_PEER_LIVE;
    p->last_ms = UNSET;
    htab_add(&t->by_epoch, &p->by_epoch, mix(epoch), LOAD);
    return p;
}

static struct link_peer *peer_get(struct link_tracker *t, uint64_t epoch)
{
    struct link_peer *p = find_epoch(t, epoch);
    return p ? p : peer_add(t, epoch);
}

/* Grows p's link array to n entries (n <= LINK_MAX_SHARDS), zero-filled. */
static void links_grow(struct link_peer *p, size_t n)
{
    if (n <= p->nlinks)
        return;
    p->links = xrealloc(p->links, n * sizeof *p->links);
    memset(p->links + p->nlinks, 0, (n - p->nlinks) * sizeof *p->links);
    p->nlinks = (uint16_t)n;
}

/* The live link to shard of p, or NULL when p cannot have that shard. */
static struct link *link_at(struct link_peer *p, uint16_t shard)
{
    if (shard >= LINK_MAX_SHARDS || (p->shards && shard >= p->shards))
        return NULL;
    links_grow(p, (size_t)shard + 1);
    return &p->links[shard];
}

/* The link a received message is judged on, or NULL with *v set. */
static struct link *rx_link(struct link_tracker *t, uint64_t epoch, uint16_t shard,
                            enum link_verdict *v)
{
    struct link_peer *p = epoch && shard < LINK_MAX_SHARDS ? peer_get(t, epoch) : NULL;
    struct link *l = NULL;
    if (p && p->state == LINK_PEER_SUPERSEDED) {
        t->stats.stale++;
        *v = LINK_STALE;
        return NULL;
    }
    if (p)
        l = link_at(p, shard);
    if (!l) {
        t->stats.invalid++;
        *v = LINK_INVALID;
    }
    return l;
}

enum link_verdict link_rx(struct link_tracker *t, uint64_t src_epoch, uint16_t src_shard,
                          uint64_t seq)
{
    if (!seq) {
        t->stats.invalid++;
        return LINK_INVALID;
    }
    enum link_verdict v = LINK_INVALID;
    struct link *l = rx_link(t, src_epoch, src_shard, &v);
    if (!l)
        return v;
    if (seq == l->rx_last + 1)
        v = LINK_OK;
    else if (seq > l->rx_last) {
        t->stats.gaps++;
        v = LINK_GAP;
    } else {
        t->stats.backwards++;
        v = LINK_BACKWARDS;
    }
    l->rx_last = seq;
    return v;
}

enum link_verdict link_rx_sync(struct link_tracker *t, uint64_t src_epoch, uint16_t src_shard,
                               uint64_t last)
{
    enum link_verdict v = LINK_INVALID;
    struct link *l = rx_link(t, src_epoch, src_shard, &v);
    if (!l)
        return v;
    if (last == l->rx_last)
        return LINK_OK;
    if (last > l->rx_last) {
        t->stats.sync_lost++;
        v = LINK_GAP;
    } else {
        t->stats.backwards++;
        v = LINK_BACKWARDS;
    }
    l->rx_last = last;
    return v;
}

uint64_t link_tx_next(struct link_tracker *t, uint64_t dst_epoch, uint16_t dst_shard)
{
    if (!dst_epoch || dst_shard >= LINK_MAX_SHARDS)
        return 0;
    struct link_peer *p = peer_get(t, dst_epoch);
    if (p->state == LINK_PEER_SUPERSEDED)
        return 0;
    struct link *l = link_at(p, dst_shard);
    return l ? ++l->tx_last : 0;
}

size_t link_tx_sync(struct link_tracker *t, bool all,
                    void (*cb)(void *ctx, uint64_t epoch, uint16_t shard, uint64_t last), void *ctx)
{
    size_t n = 0;
    for (size_t i = 0; i < t->by_epoch.nb; i++) {
        for (struct hlink *h = t->by_epoch.b[i]; h; h = h->next) {
            struct link_peer *p = CONTAINER_OF(h, struct link_peer, by_epoch);
            if (p->state == LINK_PEER_SUPERSEDED)
                continue;
            for (uint16_t s = 0; s < p->nlinks; s++) {
                struct link *l = &p->links[s];
                if (l->tx_last == 0 || (!all && l->tx_last == l->tx_synced))
                    continue;
                l->tx_synced = l->tx_last;
                cb(ctx, p->epoch, s, l->tx_last);
                n++;
            }
        }
    }
    return n;
}

/* Drops p's links for good: its node registered again. */
static void supersede(struct link_tracker *t, struct link_peer *p, uint64_t now_ms)
{
    if (p->node && find_node(t, p->node) == p)
        htab_del(&t->by_node, &p->by_node, mix(p->node));
    free(p->links);
    p->links = NULL;
    p->nlinks = 0;
    p->state = LINK_PEER_SUPERSEDED;
    p->state_ms = now_ms;
    t->stats.superseded++;
}

/* Settles which incarnation of node is newest when epoch is heard. Returns
 * false when epoch is the older one (after marking it superseded). */
static bool settle_node(struct link_tracker *t, uint64_t node, uint64_t epoch, uint64_t now_ms,
                        uint64_t *superseded)
{
    struct link_peer *cur = find_node(t, node);
    if (!cur || cur->epoch == epoch)
        return true;
    if (cur->epoch > epoch) {
        supersede(t, peer_get(t, epoch), now_ms);
        return false;
    }
    *superseded = cur->epoch;
    supersede(t, cur, now_ms);
    return true;
}

enum link_hb link_heartbeat(struct link_tracker *t, uint64_t node, uint64_t epoch, uint16_t shards,
                            uint64_t now_ms, uint64_t *superseded)
{
    *superseded = 0;
    if (!node || !epoch || !shards || shards > LINK_MAX_SHARDS)
        return LINK_HB_INVALID;
    struct link_peer *p = find_epoch(t, epoch);
    if (p && p->state == LINK_PEER_SUPERSEDED)
        return LINK_HB_STALE;
    if (p && p->node && p->node != node)
        return LINK_HB_INVALID;
    if (!settle_node(t, node, epoch, now_ms, superseded))
        return LINK_HB_STALE;
    if (!p)
        p = peer_add(t, epoch);
    enum link_hb r = p->state == LINK_PEER_DOWN ? LINK_HB_UP : LINK_HB_ALIVE;
    if (!p->node) {
        p->node = node;
        htab_add(&t->by_node, &p->by_node, mix(node), LOAD);
        if (r == LINK_HB_ALIVE)
            r = LINK_HB_NEW;
    }
    p->shards = shards;
    p->state = LINK_PEER_LIVE;
    p->last_ms = now_ms;
    return r;
}

/* Frees p, which the by_epoch walk has at *pp. */
static void forget(struct link_tracker *t, struct hlink **pp, struct link_peer *p)
{
    if (p->node && find_node(t, p->node) == p)
        htab_del(&t->by_node, &p->by_node, mix(p->node));
    htab_unlink(&t->by_epoch, pp);
    peer_free(p);
}

/* One peer's check: true when it has just gone down. */
static bool check_peer(struct link_tracker *t, struct link_peer *p, uint64_t now_ms)
{
    if (p->state != LINK_PEER_LIVE)
        return false;
    if (p->last_ms == UNSET) {
        p->last_ms = now_ms;
        return false;
    }
    if (now_ms < p->last_ms || now_ms - p->last_ms < t->silence_ms)
        return false;
    p->state = LINK_PEER_DOWN;
    p->state_ms = now_ms;
    t->stats.peers_down++;
    return true;
}

size_t link_check(struct link_tracker *t, uint64_t now_ms,
                  void (*on_down)(void *ctx, uint64_t epoch), void *ctx)
{
    size_t n = 0;
    for (size_t i = 0; i < t->by_epoch.nb; i++) {
        struct hlink **pp = &t->by_epoch.b[i];
        while (*pp) {
            struct link_peer *p = CONTAINER_OF(*pp, struct link_peer, by_epoch);
            bool gone = p->state == LINK_PEER_DOWN || p->state == LINK_PEER_SUPERSEDED;
            if (gone && now_ms >= p->state_ms && now_ms - p->state_ms >= t->forget_ms) {
                forget(t, pp, p);
                continue;
            }
            if (check_peer(t, p, now_ms)) {
                on_down(ctx, p->epoch);
                n++;
            }
            pp = &(*pp)->next;
        }
    }
    return n;
}

enum link_peer_state link_peer_state(const struct link_tracker *t, uint64_t epoch)
{
    struct link_peer *p = find_epoch(t, epoch);
    return p ? (enum link_peer_state)p->state : LINK_PEER_UNKNOWN;
}

uint16_t link_peer_shards(const struct link_tracker *t, uint64_t epoch)
{
    struct link_peer *p = find_epoch(t, epoch);
    if (!p)
        return 0;
    return p->shards ? p->shards : p->nlinks;
}

size_t link_peer_count(const struct link_tracker *t)
{
    return t->by_epoch.n;
}

const struct link_stats *link_stats(const struct link_tracker *t)
{
    return &t->stats;
}
