/* server.h — process lifecycle on the event loop: the public listener,
 * SIGTERM/SIGINT, and the drain of spec §11 (stop accepting, close every
 * WebSocket with 1001 "shutting down", give up after --drain-timeout). */
#ifndef RELAY_SERVER_H
#define RELAY_SERVER_H

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "shard.h"

struct conn_hooks;

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct shard shard;
    uv_tcp_t listener;
    bool listening;
    const char *listen_addr;
    uv_tcp_t *extra[4]; /* other listeners (metrics) closed when draining */
    size_t nextra;
    uv_signal_t sig_term, sig_int;
    uv_timer_t drain_timer;
    bool draining;
    bool drain_timed_out;
    bool finished;
    int exit_code;
    /* Called once when draining starts, before open WebSockets are closed
     * (the relay uses it to stop timers of its own). May be NULL. */
    void (*on_drain)(struct server *srv);
    void *owner;
    /* Further drain observers (the ACME client), called after on_drain. */
    struct {
        void (*fn)(void *arg);
        void *arg;
    } drain_hooks[2];
    size_t ndrain_hooks;
};

/* Prepares the loop, the shard and the signal handlers. */
void server_init(struct server *srv, uv_loop_t *loop, const struct config *cfg,
                 const struct conn_hooks *hooks, void *owner);

/* Binds and listens on addr ("host:port"). Returns 0, or -1 with a reason
 * in err (the caller logs it and exits). */
int server_listen(struct server *srv, const char *addr, char *err, size_t err_cap);

/* Registers another listener to be closed when the drain starts. */
void server_add_listener(struct server *srv, uv_tcp_t *listener);

/* Registers fn(arg) to be called once when the drain starts, after
 * on_drain (at most two hooks). */
void server_add_drain_hook(struct server *srv, void (*fn)(void *arg), void *arg);

/* Runs the loop until the drain completes. Returns the process exit code:
 * 0 after a signal, 1 after a listener failure. */
int server_run(struct server *srv);

/* Starts the drain (as a signal would); exit_code is what server_run will
 * return. Idempotent. */
void server_drain(struct server *srv, int exit_code);

#endif
