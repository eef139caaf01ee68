/* wheel.c — hashed timing wheel. Entries hash to slot (expire / tick) mod
 * slots; entries more than a turn away simply stay in their slot and are
 * skipped until their turn comes. It does not own a clock or a timer. */
#include "base/wheel.h"

static uint64_t tick_of(uint64_t ms)
{
    return ms / WHEEL_TICK_MS;
}

static void link_after(struct wheel_entry *head, struct wheel_entry *e)
{
    e->next = head->next;
    e->prev = head;
    head->next->prev = e;
    head->next = e;
}

static void unlink_entry(struct wheel_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = NULL;
}

void wheel_init(struct wheel *w, uint64_t now_ms)
{
    for (size_t i = 0; i < WHEEL_SLOTS; i++)
        w->slots[i].next = w->slots[i].prev = &w->slots[i];
    w->tick = tick_of(now_ms);
    w->count = 0;
}

bool wheel_pending(const struct wheel_entry *e)
{
    return e->next != NULL;
}

void wheel_schedule(struct wheel *w, struct wheel_entry *e, uint64_t expire_ms)
{
    if (wheel_pending(e))
        unlink_entry(e);
    else
        w->count++;
    e->expire = expire_ms;
    uint64_t t = tick_of(expire_ms);
    if (t < w->tick) /* overdue: the next tick processed picks it up */
        t = w->tick;
    link_after(&w->slots[t & (WHEEL_SLOTS - 1)], e);
}

void wheel_cancel(struct wheel *w, struct wheel_entry *e)
{
    if (!wheel_pending(e))
        return;
    unlink_entry(e);
    w->count--;
}

/* Processes one slot: detach its list first so entries that fire() puts
 * back into the same slot are not visited twice in one pass. */
static size_t run_slot(struct wheel *w, struct wheel_entry *head, uint64_t now_ms,
                       wheel_fire_fn fire, void *arg)
{
    struct wheel_entry pending = {.next = &pending, .prev = &pending};
    size_t fired = 0;
    if (head->next == head)
        return 0;
    pending.next = head->next;
    pending.prev = head->prev;
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    head->next = head->prev = head;
    while (pending.next != &pending) {
        struct wheel_entry *e = pending.next;
        unlink_entry(e);
        if (e->expire <= now_ms) {
            w->count--;
            fired++;
            fire(e, arg);
        } else {
            link_after(head, e);
        }
    }
    return fired;
}

size_t wheel_advance(struct wheel *w, uint64_t now_ms, wheel_fire_fn fire, void *arg)
{
    uint64_t last = tick_of(now_ms);
    size_t fired = 0;
    /* After a long stall, one full turn visits every slot once. */
    if (last >= w->tick + WHEEL_SLOTS)
        w->tick = last - WHEEL_SLOTS + 1;
    for (; w->tick < last; w->tick++)
        fired += run_slot(w, &w->slots[w->tick & (WHEEL_SLOTS - 1)], now_ms, fire, arg);
    /* The current tick stays current: entries later in this same tick must
     * be looked at again by the next advance, not a full turn later. */
    fired += run_slot(w, &w->slots[w->tick & (WHEEL_SLOTS - 1)], now_ms, fire, arg);
    return fired;
}
