/* server.h — process lifecycle: the shards (one event loop each, shard 0 on
 * the main thread, the others on threads of their own), the listeners (each
 * with its own transport: plain or TLS, PROXY header or not, Host check or
 * not), SIGTERM/SIGINT, SIGHUP for reloads, and the graceful drain (stop
 * accepting, close every WebSocket with 1001 "shutting down", give up after
 * --drain-timeout; docs/operations.md) carried to every shard.
 *
 * Threads: everything here is called on the main thread (shard 0's loop),
 * before server_run or from callbacks on that loop; the other shards hear
 * from it only through shard_post_control. The counters marked atomic are
 * updated by every shard. */
#ifndef RELAY_SERVER_H
#define RELAY_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "base/config.h"
#include "net/conn.h"
#include "base/log.h"
#include "net/shard.h"

#define SERVER_MAX_LISTENERS 4 /* public, health, metrics, HTTP-01 */

struct server;

/* One accepting socket and how its connections are served. */
struct listener {
    uv_tcp_t tcp;
    struct server *srv;
    const char *addr; /* as configured, for logs */
    struct conn_opts opts;
    bool open;
    /* Accept back-off: on EMFILE/ENFILE/ENOBUFS/ENOMEM the handle is closed
     * while spare_fd (a dup of the listening socket) keeps the socket and
     * its backlog; retry reopens it after backoff_ms. */
    int spare_fd;
    uv_timer_t retry;
    uint64_t backoff_ms; /* 0: not backing off */
    bool paused;
    struct log_limit err_log;
};

struct server {
    uv_loop_t *loop; /* shard 0's loop: the main thread's */
    const struct config *cfg;
    struct shard *shards;
    unsigned nshards;
    uv_loop_t *loops;     /* loops of shards 1..nshards-1 */
    uv_thread_t *threads; /* their threads */
    bool threads_started;
    _Atomic size_t live;       /* connections alive or in transit, every shard */
    _Atomic size_t head_bytes; /* held by unfinished request heads, every shard */
    struct listener listeners[SERVER_MAX_LISTENERS]; /* accepted on shard 0 */
    size_t nlisteners;
    uv_signal_t sig_term, sig_int, sig_hup;
    _Atomic uint64_t accept_errors; /* pyrycode_relay_accept_errors_total */
    uv_timer_t drain_timer;
    bool draining;
    bool drain_timed_out;
    bool finished;
    int exit_code;
    /* Called on each shard's own thread when that shard starts draining,
     * before its open WebSockets are closed (the relay stops its timers
     * there). May be NULL. */
    void (*on_drain)(struct server *srv, struct shard *s);
    /* Called once on shard 0 when the drain is over, before every remaining
     * handle is closed (the relay cancels push sends here). May be NULL. */
    void (*on_finish)(struct server *srv);
    /* Called on each shard's own thread when its loop is to stop, before
     * the remaining handles are closed. Returning true means the owner
     * closes something asynchronously first (the cluster bus) and calls
     * cont(s) on that thread once done; false: closed at once. May be NULL. */
    bool (*on_stop)(struct server *srv, struct shard *s, void (*cont)(struct shard *s));
    /* Called on SIGHUP (reload). NULL: SIGHUP only logs that nothing is
     * reloadable. Set with server_on_reload. */
    void (*on_reload)(struct server *srv, void *arg);
    void *reload_arg;
    void *owner;
    /* Further drain observers (the ACME client), called after on_drain. */
    struct {
        void (*fn)(void *arg);
        void *arg;
    } drain_hooks[2];
    size_t ndrain_hooks;
};

/* Prepares nshards shards (>= 1), their loops and the signal handlers on
 * loop. Shard owners are set by the caller (relay_init) before server_run. */
void server_init(struct server *srv, uv_loop_t *loop, const struct config *cfg, unsigned nshards,
                 const struct conn_hooks *hooks);

/* Binds and listens on addr ("host:port") with plain connections running
 * the shard's hooks. Returns 0, or -1 with a reason in err (the caller
 * logs it and exits). */
int server_listen(struct server *srv, const char *addr, char *err, size_t err_cap);

/* Binds and listens on addr; its connections are served as opts says
 * (copied; opts->hooks and opts->tls must outlive the server). At most
 * SERVER_MAX_LISTENERS per server. Returns 0, or -1 with err set. */
int server_listen_opts(struct server *srv, const char *addr, const struct conn_opts *opts,
                       char *err, size_t err_cap);

/* Logs INFO `listening` with the address tcp is bound to and its kind
 * ("public", "https", "http-01", "metrics"). */
void server_log_listening(uv_tcp_t *tcp, const char *kind);

/* Calls fn(srv, arg) on the loop for every SIGHUP from now on. */
void server_on_reload(struct server *srv, void (*fn)(struct server *srv, void *arg), void *arg);

/* Registers fn(arg) to be called once on shard 0 when the drain starts
 * (at most two hooks). */
void server_add_drain_hook(struct server *srv, void (*fn)(void *arg), void *arg);

/* Starts the other shards' threads, runs shard 0 until the drain completes,
 * joins the threads. Returns the process exit code: 0 after a signal, 1
 * after a listener failure. */
int server_run(struct server *srv);

/* Frees the shards' memory (after server_run). */
void server_free(struct server *srv);

/* Starts the drain (as a signal would); exit_code is what server_run will
 * return. Idempotent. Call on the main thread. */
void server_drain(struct server *srv, int exit_code);

#endif
