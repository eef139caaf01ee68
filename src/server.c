/* server.c — accepts TCP connections onto the shard, turns SIGTERM/SIGINT
 * or a listener failure into the drain of spec §11, and stops the loop when
 * the last connection is gone or the drain deadline passes. It does not
 * know what a request means (relay.c) or how a socket is pumped (conn.c). */
#include "server.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "netaddr.h"

static void finish(struct server *srv);

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *srv = listener->data;
    if (status < 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", srv->listen_addr),
             LOG_STR("err", uv_strerror(status)));
        LOG0(LOG_ERROR, "listener error; draining");
        server_drain(srv, 1);
        return;
    }
    if (srv->draining)
        return;
    conn_accept(&srv->shard, listener, srv->shard.hooks);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    (void)signum;
    if (srv->draining)
        return; /* the first signal wins; later ones are ignored */
    LOG0(LOG_INFO, "shutdown signal received; draining");
    server_drain(srv, 0);
}

static void on_conn_freed(struct shard *s)
{
    struct server *srv = CONTAINER_OF(s, struct server, shard);
    if (srv->draining && s->nconns == 0)
        finish(srv);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct server *srv = t->data;
    LOGF(LOG_WARN, "shutdown deadline exceeded; force-closed listeners",
         LOG_STR("err", "context deadline exceeded"));
    LOGF(LOG_WARN, "drain incomplete", LOG_STR("err", "context deadline exceeded"));
    struct list *it = srv->shard.conns.next;
    while (it != &srv->shard.conns) {
        struct conn *c = CONTAINER_OF(it, struct conn, link);
        it = it->next;
        conn_abort(c);
    }
    srv->drain_timed_out = true; /* conns are freed by their close callbacks */
    finish(srv);
}

void server_init(struct server *srv, uv_loop_t *loop, const struct config *cfg,
                 const struct conn_hooks *hooks, void *owner)
{
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->cfg = cfg;
    srv->owner = owner;
    shard_init(&srv->shard, loop, cfg, hooks, owner);
    srv->shard.on_conn_freed = on_conn_freed;
    uv_signal_init(loop, &srv->sig_term);
    uv_signal_init(loop, &srv->sig_int);
    srv->sig_term.data = srv->sig_int.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_timer_init(loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
}

void server_add_listener(struct server *srv, uv_tcp_t *listener)
{
    if (srv->nextra < ARRAY_LEN(srv->extra))
        srv->extra[srv->nextra++] = listener;
}

void server_add_drain_hook(struct server *srv, void (*fn)(void *arg), void *arg)
{
    if (srv->ndrain_hooks < ARRAY_LEN(srv->drain_hooks)) {
        srv->drain_hooks[srv->ndrain_hooks].fn = fn;
        srv->drain_hooks[srv->ndrain_hooks].arg = arg;
        srv->ndrain_hooks++;
    }
}

int server_listen(struct server *srv, const char *addr, char *err, size_t err_cap)
{
    struct sockaddr_storage sa;
    if (netaddr_resolve(addr, &sa, err, err_cap) != 0)
        return -1;
    uv_tcp_init(srv->loop, &srv->listener);
    srv->listener.data = srv;
    srv->listen_addr = addr;
    int rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection);
    if (rc != 0) {
        snprintf(err, err_cap, "listen tcp %s: %s", addr, uv_strerror(rc));
        uv_close((uv_handle_t *)&srv->listener, NULL);
        return -1;
    }
    srv->listening = true;
    return 0;
}

void server_drain(struct server *srv, int exit_code)
{
    if (srv->draining)
        return;
    srv->draining = true;
    srv->shard.draining = true;
    srv->exit_code = exit_code;
    if (srv->listening) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        srv->listening = false;
    }
    for (size_t i = 0; i < srv->nextra; i++)
        if (!uv_is_closing((uv_handle_t *)srv->extra[i]))
            uv_close((uv_handle_t *)srv->extra[i], NULL);
    uint64_t ms = (uint64_t)(srv->cfg->drain_timeout_ns / NS_PER_MS);
    uv_timer_start(&srv->drain_timer, on_drain_timeout, ms ? ms : 1, 0);
    if (srv->on_drain)
        srv->on_drain(srv);
    for (size_t i = 0; i < srv->ndrain_hooks; i++)
        srv->drain_hooks[i].fn(srv->drain_hooks[i].arg);
    /* Idle HTTP connections go at once; requests in progress finish under
     * their own deadlines; WebSockets get the close handshake. */
    struct list *it = srv->shard.conns.next;
    while (it != &srv->shard.conns) {
        struct conn *c = CONTAINER_OF(it, struct conn, link);
        it = it->next;
        if (c->state == CONN_WS_OPEN)
            conn_ws_close(c, WS_CLOSE_GOING_AWAY, "shutting down", false);
        else if (c->state == CONN_HTTP_IDLE || (c->state == CONN_HTTP_HEAD && !c->req->buf_len))
            conn_abort(c);
    }
    if (srv->shard.nconns == 0)
        finish(srv);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Last step: log, and close every handle so uv_run returns. */
static void finish(struct server *srv)
{
    if (srv->finished)
        return;
    srv->finished = true;
    if (!srv->drain_timed_out)
        LOG0(LOG_INFO, "shutdown complete");
    uv_timer_stop(&srv->drain_timer);
    uv_walk(srv->loop, close_walk, NULL);
    /* Closing the signal handles restores the default action; a late
     * signal must still be ignored (spec §11: only the first counts). */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
}

int server_run(struct server *srv)
{
    uv_run(srv->loop, UV_RUN_DEFAULT);
    shard_close(&srv->shard); /* handles are closed; free what is left */
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return srv->exit_code;
}
