/* htab.h — the bucket array of an intrusive chained hash table: nodes
 * embed a struct hlink, their owner keeps each node's hash (keyed as it
 * likes: SipHash for attacker-chosen keys) and tells the table how to read
 * it back when the array doubles. Lookups walk htab_chain themselves. No
 * locks: a table belongs to its owner's thread. */
#ifndef RELAY_HTAB_H
#define RELAY_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hlink {
    struct hlink *next;
};

struct htab {
    struct hlink **b;
    size_t nb; /* buckets: a power of two (0 before htab_init) */
    size_t n;  /* nodes */
    uint64_t (*hash_of)(const struct hlink *l);
};

/* Prepares t with nbuckets (a power of two) empty chains; hash_of returns
 * the hash a node was added with. */
void htab_init(struct htab *t, size_t nbuckets, uint64_t (*hash_of)(const struct hlink *l));

/* Frees the bucket array (the nodes are the owner's). */
void htab_free(struct htab *t);

/* Hands every node to free_node (which may free it), then frees the
 * bucket array: the owner's teardown of a table that owns its nodes. */
void htab_free_all(struct htab *t, void (*free_node)(struct hlink *l));

/* The head of the chain hash h falls in. */
static inline struct hlink **htab_chain(const struct htab *t, uint64_t h)
{
    return &t->b[h & (t->nb - 1)];
}

/* Adds l, whose hash is h, at the head of its chain. First doubles the
 * array when it already holds load nodes per bucket. */
void htab_add(struct htab *t, struct hlink *l, uint64_t h, size_t load);

/* Unlinks l (hash h). Returns false, changing nothing, when l is not in t. */
bool htab_del(struct htab *t, struct hlink *l, uint64_t h);

/* Unlinks the node *pp points at while walking a chain (pp: the chain head
 * or a node's next field); *pp then names the node after it. */
void htab_unlink(struct htab *t, struct hlink **pp);

#endif
