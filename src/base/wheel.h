/* wheel.h — a hashed timing wheel: one libuv timer per shard drives every
 * connection deadline, so a million connections cost a list link each, not
 * a heap entry per deadline. Pure bookkeeping on a millisecond clock the
 * caller supplies; the shard owns the actual uv_timer_t.
 * Not thread-safe: a wheel belongs to its shard's thread. */
#ifndef RELAY_WHEEL_H
#define RELAY_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WHEEL_SLOTS   4096 /* power of two */
#define WHEEL_TICK_MS 10   /* resolution; a full turn covers ~41 s */

struct wheel_entry {
    struct wheel_entry *next, *prev; /* NULL when not scheduled */
    uint64_t expire;                 /* absolute ms */
};

struct wheel {
    struct wheel_entry slots[WHEEL_SLOTS]; /* sentinels */
    uint64_t tick;                         /* next tick to process */
    size_t count;                          /* scheduled entries */
};

typedef void (*wheel_fire_fn)(struct wheel_entry *e, void *arg);

/* Initialises an empty wheel whose clock starts at now_ms. */
void wheel_init(struct wheel *w, uint64_t now_ms);

/* Schedules e to fire at expire_ms (moving it if already scheduled). A time
 * in the past fires at the next advance. */
void wheel_schedule(struct wheel *w, struct wheel_entry *e, uint64_t expire_ms);

/* Unschedules e; harmless when it is not scheduled. */
void wheel_cancel(struct wheel *w, struct wheel_entry *e);

/* True when e is scheduled. */
bool wheel_pending(const struct wheel_entry *e);

/* Fires, in slot order, every entry whose time is <= now_ms. Each entry is
 * unscheduled before fire() runs, so fire() may reschedule or free it.
 * Returns the number fired. */
size_t wheel_advance(struct wheel *w, uint64_t now_ms, wheel_fire_fn fire, void *arg);

#endif
