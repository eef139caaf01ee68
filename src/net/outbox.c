/* outbox.c — one singly linked list in write order: [in flight][started
 * remainder][control items][data items]. Control items are inserted at the
 * end of that prefix, data at the tail, so the order rule is a position,
 * not a second queue. Items are copies; the only copy-free path (a frame
 * the socket takes whole) never reaches the outbox. */
#include "net/outbox.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct outbox_item {
    struct outbox_item *next;
    uint32_t len; /* bytes in data */
    uint8_t kind; /* enum outbox_kind */
    bool counted; /* bump the frame counter once fully written */
    bool pong;    /* a pong that a newer one may replace while it waits */
    bool started; /* the socket has its first bytes: nothing may go before it */
    uint8_t data[];
};

void outbox_init(struct outbox *o)
{
    memset(o, 0, sizeof *o);
    o->notify_below = SIZE_MAX;
}

void outbox_free(struct outbox *o)
{
    struct outbox_item *it = o->head;
    while (it) {
        struct outbox_item *next = it->next;
        free(it);
        it = next;
    }
    o->head = o->tail = NULL;
    o->inflight = o->head_off = 0;
    o->data_items = 0;
    o->data_bytes = o->ctl_bytes = 0;
}

bool outbox_empty(const struct outbox *o)
{
    return o->head == NULL;
}

size_t outbox_bytes(const struct outbox *o)
{
    return o->data_bytes + o->ctl_bytes;
}

static void charge(struct outbox *o, const struct outbox_item *it, size_t n, bool add)
{
    size_t *bytes = it->kind == OUTBOX_DATA ? &o->data_bytes : &o->ctl_bytes;
    if (add)
        *bytes += n;
    else
        *bytes -= n;
}

/* Where a control item (or a started remainder) goes: after the items in
 * flight, after a started one, after the control items already waiting. */
static struct outbox_item **prefix_end(struct outbox *o, bool past_ctl)
{
    struct outbox_item **pos = &o->head;
    uint32_t i = 0;
    while (*pos &&
           (i < o->inflight || (*pos)->started || (past_ctl && (*pos)->kind == OUTBOX_CTL))) {
        pos = &(*pos)->next;
        i++;
    }
    return pos;
}

static void link_at(struct outbox *o, struct outbox_item **pos, struct outbox_item *it)
{
    it->next = *pos;
    *pos = it;
    if (!it->next)
        o->tail = it;
    if (it->kind == OUTBOX_DATA)
        o->data_items++;
    charge(o, it, it->len, true);
}

static struct outbox_item *item_new(enum outbox_kind kind, size_t len, size_t room)
{
    struct outbox_item *it = xmalloc(sizeof *it + (room > len ? room : len));
    it->next = NULL;
    it->len = (uint32_t)len;
    it->kind = (uint8_t)kind;
    it->counted = it->pong = it->started = false;
    return it;
}

void outbox_push(struct outbox *o, enum outbox_kind kind, const uv_buf_t *iov, unsigned n,
                 size_t skip, bool counted)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    struct outbox_item *it = item_new(kind, total - skip, 0);
    uint8_t *p = it->data;
    it->started = skip > 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = iov[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(p, iov[i].base + skip, l - skip);
        p += l - skip;
        skip = 0;
    }
    it->counted = counted;
    if (it->started)
        link_at(o, prefix_end(o, false), it);
    else if (kind == OUTBOX_CTL)
        link_at(o, prefix_end(o, true), it);
    else
        link_at(o, o->tail ? &o->tail->next : &o->head, it);
}

void outbox_put_pong(struct outbox *o, const uint8_t *frame, size_t len)
{
    struct outbox_item *it = o->head;
    for (uint32_t i = 0; it && i < o->inflight; i++)
        it = it->next;
    for (; it; it = it->next) {
        if (it->pong && !it->started) {
            charge(o, it, it->len, false);
            memcpy(it->data, frame, len);
            it->len = (uint32_t)len;
            charge(o, it, len, true);
            return;
        }
    }
    it = item_new(OUTBOX_CTL, len, OUTBOX_PONG_CAP);
    memcpy(it->data, frame, len);
    it->pong = true;
    link_at(o, prefix_end(o, true), it);
}

void outbox_drop_unsent_data(struct outbox *o)
{
    struct outbox_item **pos = &o->head, *last = NULL;
    uint32_t i = 0;
    while (*pos) {
        struct outbox_item *it = *pos;
        if (i >= o->inflight && !it->started && it->kind == OUTBOX_DATA) {
            *pos = it->next;
            o->data_items--;
            charge(o, it, it->len, false);
            free(it);
            continue;
        }
        last = it;
        pos = &it->next;
        i++;
    }
    o->tail = last;
}

unsigned outbox_gather(struct outbox *o, uv_buf_t *bufs, unsigned max, size_t *bytes)
{
    unsigned n = 0;
    size_t total = 0;
    for (struct outbox_item *it = o->head; it && n < max; it = it->next) {
        size_t off = n == 0 ? o->head_off : 0;
        bufs[n++] = uv_buf_init((char *)it->data + off, (unsigned)(it->len - off));
        total += it->len - off;
    }
    o->inflight = n;
    *bytes = total;
    return n;
}

static void count(struct outbox *o)
{
    /* Only the owning shard's thread writes the counter; others read it. */
    if (o->frames)
        atomic_store_explicit(o->frames, atomic_load_explicit(o->frames, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

void outbox_count_frame(struct outbox *o)
{
    count(o);
}

/* Frees the head, which is fully written (counted) or lost (not). */
static void pop(struct outbox *o, bool written)
{
    struct outbox_item *it = o->head;
    o->head = it->next;
    if (!o->head)
        o->tail = NULL;
    if (it->kind == OUTBOX_DATA)
        o->data_items--;
    charge(o, it, it->len - o->head_off, false);
    o->head_off = 0;
    if (written && it->counted)
        count(o);
    free(it);
}

/* A write that did not reach every item it carried leaves them queued
 * again, in front of control items pushed meanwhile: restore the order
 * rule (control ahead of data not yet started, each in its own order) and
 * keep a single waiting pong, the oldest position with the newest frame. */
static void regroup(struct outbox *o)
{
    struct outbox_item **pos = &o->head, *ctl = NULL, *data = NULL, *pong = NULL;
    struct outbox_item **ctl_end = &ctl, **data_end = &data;
    while (*pos && (*pos)->started)
        pos = &(*pos)->next;
    for (struct outbox_item *it = *pos, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->pong && pong) {
            charge(o, pong, pong->len, false);
            memcpy(pong->data, it->data, it->len);
            pong->len = it->len;
            charge(o, pong, pong->len, true);
            charge(o, it, it->len, false);
            free(it);
            continue;
        }
        if (it->pong)
            pong = it;
        struct outbox_item ***end = it->kind == OUTBOX_CTL ? &ctl_end : &data_end;
        **end = it;
        *end = &it->next;
    }
    *ctl_end = data;
    *pos = ctl ? ctl : data;
    o->tail = NULL;
    for (struct outbox_item *it = o->head; it; it = it->next)
        o->tail = it;
}

enum outbox_progress outbox_written(struct outbox *o, size_t n, int status)
{
    uint32_t inflight = o->inflight, done = 0;
    o->inflight = 0;
    if (status < 0) {
        while (inflight-- && o->head)
            pop(o, false);
        return OUTBOX_FAILED;
    }
    while (n > 0 && o->head) {
        struct outbox_item *it = o->head;
        size_t left = it->len - o->head_off;
        if (n < left) {
            o->head_off += (uint32_t)n;
            charge(o, it, n, false);
            it->started = true;
            break;
        }
        n -= left;
        pop(o, true);
        done++;
    }
    if (done < inflight)
        regroup(o);
    if (o->notify_below != SIZE_MAX && o->data_bytes <= o->notify_below) {
        o->notify_below = SIZE_MAX;
        o->drained = true;
    }
    return o->head ? OUTBOX_PENDING : OUTBOX_DONE;
}

void outbox_notify_below(struct outbox *o, size_t mark)
{
    o->notify_below = mark;
}

bool outbox_take_drained(struct outbox *o)
{
    bool due = o->drained;
    o->drained = false;
    return due;
}
