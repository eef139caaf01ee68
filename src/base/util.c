/* util.c — aborting allocators, string comparisons and the intrusive list.
 * Nothing here does I/O beyond the one message printed before an abort. */
#include "base/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void oom(size_t n)
{
    fprintf(stderr, "pyrycode-relay: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void dbuf_put(struct dbuf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

bool str_eq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

bool str_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

void list_init(struct list *head)
{
    head->next = head->prev = head;
}

bool list_empty(const struct list *head)
{
    return head->next == head;
}

void list_push_back(struct list *head, struct list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

void list_remove(struct list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node->prev = node;
}

void mpsc_init(struct mpsc *q)
{
    atomic_init(&q->top, NULL);
}

void mpsc_push(struct mpsc *q, struct mpsc_node *n)
{
    struct mpsc_node *top = atomic_load(&q->top);
    do
        n->next = top;
    while (!atomic_compare_exchange_weak(&q->top, &top, n));
}

struct mpsc_node *mpsc_take_all(struct mpsc *q)
{
    /* The consumer takes the whole stack, so no node is ever popped while
     * another thread looks at it (no ABA); reversing restores push order. */
    struct mpsc_node *n = atomic_exchange(&q->top, NULL), *fifo = NULL;
    while (n) {
        struct mpsc_node *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }
    return fifo;
}

int b64_digit(char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}
