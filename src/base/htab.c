/* htab.c — bucket arrays for intrusive chained hash tables: add, remove,
 * and the one rehash loop every table in the relay grows with (doubling,
 * so the amortised cost per add stays constant). It never hashes a key
 * and never frees a node. */
#include "base/htab.h"

#include <stdlib.h>

#include "base/util.h"

void htab_init(struct htab *t, size_t nbuckets, uint64_t (*hash_of)(const struct hlink *l))
{
    t->b = xcalloc(nbuckets, sizeof *t->b);
    t->nb = nbuckets;
    t->n = 0;
    t->hash_of = hash_of;
}

void htab_free(struct htab *t)
{
    free(t->b);
    t->b = NULL;
    t->nb = t->n = 0;
}

void htab_free_all(struct htab *t, void (*free_node)(struct hlink *l))
{
    for (size_t i = 0; i < t->nb; i++) {
        struct hlink *l = t->b[i];
        while (l) {
            struct hlink *next = l->next;
            free_node(l);
            l = next;
        }
    }
    htab_free(t);
}

static void grow(struct htab *t)
{
    size_t n = t->nb * 2;
    struct hlink **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < t->nb; i++) {
        struct hlink *l = t->b[i];
        while (l) {
            struct hlink *next = l->next;
            struct hlink **head = &b[t->hash_of(l) & (n - 1)];
            l->next = *head;
            *head = l;
            l = next;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = n;
}

void htab_add(struct htab *t, struct hlink *l, uint64_t h, size_t load)
{
    if (t->n >= t->nb * load)
        grow(t);
    struct hlink **head = htab_chain(t, h);
    l->next = *head;
    *head = l;
    t->n++;
}

bool htab_del(struct htab *t, struct hlink *l, uint64_t h)
{
    struct hlink **pp = htab_chain(t, h);
    while (*pp && *pp != l)
        pp = &(*pp)->next;
    if (!*pp)
        return false;
    htab_unlink(t, pp);
    l->next = NULL;
    return true;
}

void htab_unlink(struct htab *t, struct hlink **pp)
{
    *pp = (*pp)->next;
    t->n--;
}
