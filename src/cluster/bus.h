/* bus.h — one shard's data connection to the NATS bus (cluster.md §2, "Per
 * shard", "Receiving", "Sending"): one natsConnection driven by the shard's
 * own libuv loop through cnats' libuv adapter, two sync subscriptions (the
 * shard's own subject and the cluster's broadcast subject) drained on the
 * loop after every poll phase, and non-blocking publishes. It moves opaque
 * messages: it knows nothing of frames, phones or the 40-byte header.
 *
 * THREADS: a bus belongs to the thread running its loop. Every function but
 * bus_global_init/shutdown and bus_counters_load must be called there, and
 * every callback (on_msg, on_event, done) runs there. cnats calls its
 * connection callbacks from its own threads; the bus posts them to the loop
 * and delivers them in the order cnats reported them.
 *
 * BLOCKING: only bus_open blocks (natsConnection_Connect, boot only). No
 * other call waits on the bus: a publish appends to cnats' buffer and the
 * loop writes it. cnats 3.4.1 has one trap: during a reconnect attempt its
 * reconnect thread holds the connection lock through the TCP connect and
 * handshake (up to bus_params.timeout_ms, 2 s by default, against a server
 * that accepts but does not answer: measured, once per ~2.3 s cycle), and
 * every call that takes that lock waits. So from the loop's BUS_DISCONNECTED
 * to its BUS_RECONNECTED the bus does not call into the connection:
 * bus_publish refuses (-ENOTCONN) unless buffer_while_disconnected is set,
 * bus_buffered says 0 and bus_connected false. What remains: the moment
 * between cnats noticing the loss and the loop hearing of it, and
 * bus_close, which joins that thread. */
#ifndef RELAY_CLUSTER_BUS_H
#define RELAY_CLUSTER_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

struct natsopt_tls; /* cluster/natsopt.h */

#define BUS_RECONNECT_BUF  (8u << 20) /* cnats' buffer for publishes while reconnecting */
#define BUS_DRAIN_BUDGET   1024       /* messages delivered per check phase, both subjects */
#define BUS_CLOSE_FLUSH_MS 500        /* bus_close waits this long for buffered bytes to go */
#define BUS_ERR_MAX        256        /* a comfortable err buffer */

/* What happened to the connection (on_event). */
enum bus_event {
    BUS_DISCONNECTED,  /* the socket is gone; cnats reconnects by itself, forever */
    BUS_RECONNECTED,   /* connected again, subscriptions re-sent; messages may have been lost */
    BUS_CLOSED,        /* cnats closed the connection for good (not after bus_close) */
    BUS_SLOW_CONSUMER, /* cnats dropped messages for a subscription: some were lost */
    BUS_ERROR,         /* an asynchronous error, e.g. a permissions violation */
};

/* One delivered message; every pointer is valid only during on_msg. */
struct bus_msg {
    const uint8_t *data;
    size_t len;
    const char *subject; /* the subject it was published on */
    const char *reply;   /* its reply subject, NULL: none */
    bool broadcast;      /* on the broadcast subject (else the shard's own) */
};

struct bus_cbs {
    /* A message on the shard's own subject(s) or the broadcast subject. It
     * may publish, and may call bus_close (no message follows). */
    void (*on_msg)(void *ud, const struct bus_msg *m);
    /* A connection event, in the order cnats reported them. May be NULL. */
    void (*on_event)(void *ud, enum bus_event ev);
};

struct bus_params {
    const char *urls;               /* comma-separated nats:// URLs, all servers of the bus */
    const char *creds_file;         /* a NATS .creds file, or NULL */
    const struct natsopt_tls *tls;  /* TLS files (cluster/natsopt.h), NULL: none */
    const char *name;               /* connection name, e.g. "pyry-<node>-<k>" (or NULL) */
    const char *self_subject;       /* this shard's subject: pyry.<c>.s.<node>.<k>, or a
                                     * trailing ".>" for every subject below it */
    const char *all_subject;        /* the broadcast subject: pyry.<c>.all */
    size_t reconnect_buf;           /* 0: BUS_RECONNECT_BUF */
    int64_t timeout_ms;             /* connect and handshake timeout; 0: cnats' 2000 */
    bool buffer_while_disconnected; /* publish into cnats' reconnect buffer
                                     * while disconnected, accepting stalls */
    int pending_msgs;               /* per-subscription limits before cnats drops (slow */
    int pending_bytes;              /* consumer); 0: cnats' 65536 messages, 64 MiB */
};

/* Counters since bus_open. */
struct bus_counters {
    uint64_t msgs_in, bytes_in;   /* delivered to on_msg */
    uint64_t msgs_out, bytes_out; /* accepted by bus_publish[_request] */
    uint64_t disconnects;         /* BUS_DISCONNECTED events */
    uint64_t dropped;             /* messages cnats dropped (slow consumer) */
};

struct bus;

/* Once per process, on the main thread, before any bus_open: nats_Open(-1)
 * and natsLibuv_Init(). Returns 0, or -EIO with a sentence in err. */
int bus_global_init(char *err, size_t cap);

/* Once per process after every bus is closed: nats_CloseAndWait(2000), which
 * waits for cnats' threads (and so for its last callbacks) to end. */
void bus_global_shutdown(void);

/* Connects to p->urls and subscribes to p->self_subject and p->all_subject.
 * Must be called on the thread that runs `loop` (it registers the loop with
 * the adapter for this thread first). BLOCKS in natsConnection_Connect, up
 * to p->timeout_ms per server: boot only. Options as cluster.md §2
 * (SendAsap, 1 s pings with 2 out, reconnect forever every 250 ms with
 * jitter, NoEcho). The SUBs (broadcast subject first) are written to the
 * socket before it returns; the server applies them when it reads them (a
 * peer publishing before that is not heard; once a message on the own
 * subject arrives, both are in place). Returns 0 with *out set (end it
 * with bus_close), -EINVAL for bad parameters or -EIO for the bus, with a
 * sentence in err naming the cause (never credentials); after a failed
 * subscribe the half-open bus releases its handles on the loop, so run it
 * before uv_loop_close. The strings of p need not outlive the call. */
int bus_open(struct bus **out, uv_loop_t *loop, const struct bus_params *p,
             const struct bus_cbs *cbs, void *ud, char *err, size_t cap);

/* Publishes data gathered from iov[0..iovcnt) on subject. Never waits for
 * the bus (see BLOCKING above): the bytes are appended to cnats' buffer,
 * written when the loop polls. Returns 0; -EMSGSIZE if longer than
 * bus_max_payload (nothing is sent); -ENOTCONN while disconnected (see
 * BLOCKING); -ENOBUFS while reconnecting with the reconnect buffer full
 * (buffer_while_disconnected); -EPIPE once the connection is closed (or
 * bus_close began); -EINVAL for a bad subject; -EIO otherwise. */
int bus_publish(struct bus *b, const char *subject, const struct iovec *iov, int iovcnt);

/* As bus_publish, with reply subject `reply` (a NATS request). */
int bus_publish_request(struct bus *b, const char *subject, const char *reply,
                        const struct iovec *iov, int iovcnt);

/* Bytes waiting in cnats' write buffer (not yet handed to the kernel); 0
 * while disconnected (what waits then is in the reconnect buffer, which
 * this does not count) and once closed. */
size_t bus_buffered(const struct bus *b);

/* true if the connection's status is CONNECTED (and the loop has not heard
 * of a disconnect since). */
bool bus_connected(const struct bus *b);

/* The server's max_payload (refreshed on every reconnect). */
int64_t bus_max_payload(const struct bus *b);

/* The counters, as plain fields (loop thread only). */
const struct bus_counters *bus_counters(const struct bus *b);

/* A copy of the counters from any thread (relaxed atomics mirrored by the
 * loop; each field is exact, the set is not a snapshot). b must be open. */
void bus_counters_load(const struct bus *b, struct bus_counters *out);

/* Ends b: no on_msg/on_event is delivered from here on, and publishes are
 * refused (-EPIPE). On the loop, never blocking it, it first waits up to
 * BUS_CLOSE_FLUSH_MS for cnats' buffer to be written and acknowledged by
 * the server, then closes the connection (the server drops the
 * subscriptions with it) and the adapter's handles and its own, and calls
 * done(ud) (may be NULL) once all are closed and b is freed: the caller may
 * then run the loop to its end and uv_loop_close it. Safe while
 * disconnected or reconnecting, and from inside on_msg or on_event; a
 * second call does nothing. cnats' own close may still stall the loop: up
 * to 500 ms if bytes are left after BUS_CLOSE_FLUSH_MS (its flush cannot
 * progress while the loop waits), and for a reconnect attempt in progress,
 * which it joins. */
void bus_close(struct bus *b, void (*done)(void *ud), void *ud);

/* "disconnected", "reconnected", "closed", "slow_consumer", "error". */
const char *bus_event_name(enum bus_event ev);

#endif
