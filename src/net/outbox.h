/* outbox.h — what a connection still has to write: frames and replies in
 * write order, with control frames (ping, pong, close) placed ahead of
 * queued data but never inside a frame already started, a byte budget, a
 * count of forwarded frames fully written, and a one-shot "drained below
 * the mark" notice. It performs no I/O and calls nobody: the caller
 * gathers buffers, writes them however it likes and reports how many bytes
 * went out; the outbox answers with its progress. One outbox belongs to
 * one connection and is used only on the thread of the shard that owns
 * it (the frame counter may be read by other threads). */
#ifndef RELAY_OUTBOX_H
#define RELAY_OUTBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Room kept in a pong item: the longest unmasked control frame. */
#define OUTBOX_PONG_CAP (2 + 125)

enum outbox_kind {
    OUTBOX_DATA, /* a data frame or an HTTP reply: counted in the data budget */
    OUTBOX_CTL,  /* a control frame: goes ahead of queued data */
};

enum outbox_progress {
    OUTBOX_DONE,    /* nothing left to write */
    OUTBOX_PENDING, /* more to write */
    OUTBOX_FAILED,  /* the write failed: what was in flight is lost */
};

struct outbox_item;

struct outbox {
    struct outbox_item *head, *tail;
    size_t data_bytes;        /* unwritten bytes of OUTBOX_DATA items */
    size_t ctl_bytes;         /* unwritten bytes of OUTBOX_CTL items */
    size_t notify_below;      /* drained notice once data_bytes <= this (SIZE_MAX: off) */
    _Atomic uint64_t *frames; /* bumped per counted item fully written (may be NULL) */
    uint32_t head_off;        /* bytes of head already written */
    uint32_t inflight;        /* items from head gathered into the write in flight */
    uint32_t data_items;      /* OUTBOX_DATA items queued */
    bool drained;             /* the notice is due (outbox_take_drained) */
};

/* Empty outbox, no notice asked, no counter. */
void outbox_init(struct outbox *o);

/* Frees every queued item (what was not written is lost). */
void outbox_free(struct outbox *o);

/* True when nothing is left to write. */
bool outbox_empty(const struct outbox *o);

/* Unwritten bytes, data and control together (the connection's budget). */
size_t outbox_bytes(const struct outbox *o);

/* Queues a copy of the concatenation of iov without its first skip bytes.
 * skip > 0 means the socket already took the beginning of this frame (the
 * caller wrote it directly, which it may do only while the outbox is
 * empty and nothing is in flight), so it must finish before anything
 * else. Control items go after what is in flight or started and after
 * earlier control items; data items go last. counted: bump the frame
 * counter once the item is fully written. */
void outbox_push(struct outbox *o, enum outbox_kind kind, const uv_buf_t *iov, unsigned n,
                 size_t skip, bool counted);

/* RFC 6455 §5.5.3: a pong still waiting (not started, not in flight) takes
 * the newer frame (len <= OUTBOX_PONG_CAP) in place; otherwise the frame
 * is queued as a control item. At most one pong ever waits. */
void outbox_put_pong(struct outbox *o, const uint8_t *frame, size_t len);

/* Drops the data items no write has started (a close that must not wait
 * behind data); in-flight and started items stay. */
void outbox_drop_unsent_data(struct outbox *o);

/* Fills bufs[0..max) with the unwritten bytes in write order and marks
 * those items in flight; *bytes gets their total. Returns the number of
 * buffers (0: nothing to write). Call again only after outbox_written. */
unsigned outbox_gather(struct outbox *o, uv_buf_t *bufs, unsigned max, size_t *bytes);

/* The gathered write ended: n of its bytes were written (status < 0: the
 * write failed and the in-flight items are dropped uncounted). Fully
 * written items are freed and counted. Returns DONE, PENDING or FAILED. */
enum outbox_progress outbox_written(struct outbox *o, size_t n, int status);

/* Bumps the frame counter for a counted frame written without queueing. */
void outbox_count_frame(struct outbox *o);

/* Asks for one drained notice once data_bytes falls to mark or below. */
void outbox_notify_below(struct outbox *o, size_t mark);

/* True once, after a write brought data_bytes to the mark or below. */
bool outbox_take_drained(struct outbox *o);

#endif
