/* util.h — the few helpers every module shares: allocation that aborts on
 * out-of-memory (memory is bounded by limits, not by checking every malloc),
 * intrusive list links, and small string helpers.
 * Any thread; a list or dbuf belongs to one thread at a time, an mpsc takes
 * pushes from any thread and one consumer. */
#ifndef RELAY_UTIL_H
#define RELAY_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* malloc/calloc/realloc that abort with a message when memory runs out. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);

/* A growable byte buffer, always NUL-terminated once anything is in it
 * ({0} is empty; free p when done). */
struct dbuf {
    char *p;
    size_t len, cap;
};

/* Appends s[0..n) to b, growing it as needed. */
void dbuf_put(struct dbuf *b, const void *s, size_t n);
char *xstrndup(const char *s, size_t n);

/* True when s[0..len) equals the NUL-terminated lit exactly. */
bool str_eq(const char *s, size_t len, const char *lit);

/* ASCII case-insensitive equality of a[0..alen) and b[0..blen). */
bool str_ieq(const char *a, size_t alen, const char *b, size_t blen);

/* Intrusive doubly-linked list (circular, with a sentinel head). */
struct list {
    struct list *next, *prev;
};

void list_init(struct list *head);
bool list_empty(const struct list *head);
void list_push_back(struct list *head, struct list *node);
/* Unlinks node and leaves it self-linked, so removing twice is harmless. */
void list_remove(struct list *node);

/* The value of base64 digit c (0..63), or -1; url selects the URL-safe
 * alphabet ('-', '_') over the standard one ('+', '/'). */
int b64_digit(char c, bool url);

/* A multi-producer queue without locks: any thread pushes; one consumer
 * takes everything at once, oldest first. Embed a node in the item. */
struct mpsc_node {
    struct mpsc_node *next;
};

struct mpsc {
    _Atomic(struct mpsc_node *) top;
};

void mpsc_init(struct mpsc *q);
void mpsc_push(struct mpsc *q, struct mpsc_node *n);

/* Detaches every pushed node and returns them in push order (NULL: none). */
struct mpsc_node *mpsc_take_all(struct mpsc *q);

#endif
