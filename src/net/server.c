/* server.c — accepts TCP connections onto shard 0 from listeners that each
 * carry their own transport settings, runs the other shards' loops on their
 * own threads, turns SIGTERM/SIGINT or a listener failure into the drain
 * (docs/operations.md, "Signals and exit codes") on every shard, forwards SIGHUP to a reload hook,
 * and stops the loops when the last connection is gone or the drain deadline passes. It does not
 * know what a request means (relay.c), how a socket is pumped (conn.c) or what a reload reloads
 * (main.c).
 *
 * Drain across shards: shard 0 posts DRAIN to every shard; each closes its
 * own WebSockets. srv->live counts connections everywhere (a connection in
 * transit between shards included); whichever thread drops it to zero
 * tells shard 0, which finishes: STOP to the others (they close their
 * handles and their loops return), then its own handles. */
#include "net/server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/conn.h"
#include "base/netaddr.h"
#include "base/notify.h"

#define ACCEPT_BACKOFF_MIN_MS 50
#define ACCEPT_BACKOFF_MAX_MS 1000

static void finish(struct server *srv);
static void on_connection(uv_stream_t *stream, int status);

/* Out of descriptors or memory: the condition passes (connections close,
 * an operator raises a limit) and must not end the process. */
static bool resource_error(int status)
{
    return status == UV_EMFILE || status == UV_ENFILE || status == UV_ENOBUFS ||
           status == UV_ENOMEM;
}

/* accept(2) reports errors of the pending connection itself (the peer
 * reset it, a network went away): retry at once, like EAGAIN. */
static bool network_error(int status)
{
    return status == UV_ECONNABORTED || status == UV_ECONNRESET || status == UV_EPROTO ||
           status == UV_ENETDOWN || status == UV_ENONET || status == UV_EHOSTUNREACH ||
           status == UV_ENETUNREACH || status == UV_EHOSTDOWN || status == UV_ENOPROTOOPT ||
           status == UV_ENOTSUP || status == UV_ETIMEDOUT || status == UV_EPERM;
}

static void log_accept_error(struct listener *l, int status)
{
    uint64_t suppressed;
    if (!log_limit_allow(&l->err_log, uv_now(l->srv->loop), &suppressed))
        return;
    LOGF(LOG_WARN, "accept_error", LOG_STR("addr", l->addr), LOG_STR("err", uv_strerror(status)),
         LOG_NUM("retry_in_ms", l->backoff_ms), LOG_NUM("suppressed", suppressed));
}

static void on_retry(uv_timer_t *t)
{
    struct listener *l = t->data;
    struct server *srv = l->srv;
    if (srv->draining || l->spare_fd < 0)
        return;
    int fd = l->spare_fd;
    l->spare_fd = -1;
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    if (rc != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", l->addr),
             LOG_STR("err", uv_strerror(rc)));
        LOG0(LOG_ERROR, "listener error; draining");
        uv_close((uv_handle_t *)&l->tcp, NULL);
        server_drain(srv, 1);
        return;
    }
    l->open = true;
    l->paused = false;
    l->spare_fd = dup(fd); /* may fail under fd pressure: retried on the next accept */
}

static void on_paused(uv_handle_t *h)
{
    struct listener *l = h->data;
    if (!l->srv->draining)
        uv_timer_start(&l->retry, on_retry, l->backoff_ms, 0);
}

/* Stops accepting on l for a while; the kernel keeps queueing connections. */
static void pause_listener(struct listener *l)
{
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
    if (l->backoff_ms > ACCEPT_BACKOFF_MAX_MS)
        l->backoff_ms = ACCEPT_BACKOFF_MAX_MS;
    if (l->spare_fd < 0)
        return; /* no spare descriptor: keep polling (each error logged at most once a second) */
    l->paused = true;
    l->open = false;
    uv_close((uv_handle_t *)&l->tcp, on_paused);
}

static void on_connection(uv_stream_t *stream, int status)
{
    struct listener *l = stream->data;
    struct server *srv = l->srv;
    if (status < 0) {
        if (resource_error(status) || network_error(status)) {
            atomic_fetch_add_explicit(&srv->accept_errors, 1, memory_order_relaxed);
            if (resource_error(status))
                pause_listener(l);
            log_accept_error(l, status);
            return;
        }
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", l->addr),
             LOG_STR("err", uv_strerror(status)));
        LOG0(LOG_ERROR, "listener error; draining");
        server_drain(srv, 1);
        return;
    }
    if (srv->draining)
        return;
    l->backoff_ms = 0;
    if (l->spare_fd < 0) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)stream, &fd) == 0)
            l->spare_fd = dup(fd);
    }
    conn_accept_opts(&srv->shards[0], stream, &l->opts);
}

void server_log_listening(uv_tcp_t *tcp, const char *kind)
{
    struct sockaddr_storage sa;
    int len = sizeof sa;
    char addr[80] = "?";
    if (uv_tcp_getsockname(tcp, (struct sockaddr *)&sa, &len) == 0)
        netaddr_format((struct sockaddr *)&sa, addr, sizeof addr);
    LOGF(LOG_INFO, "listening", LOG_STR("addr", addr), LOG_STR("kind", kind));
}

static void on_hup(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    (void)signum;
    if (srv->draining)
        return;
    notify_reloading();
    if (srv->on_reload)
        srv->on_reload(srv, srv->reload_arg);
    else
        LOGF(LOG_INFO, "reload", LOG_STR("changed", "none"),
             LOG_STR("reason", "nothing reloadable is configured"));
    notify_ready("serving");
}

void server_on_reload(struct server *srv, void (*fn)(struct server *srv, void *arg), void *arg)
{
    srv->on_reload = fn;
    srv->reload_arg = arg;
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

/* On shard 0: everything is gone once the live count is zero. */
static void check_finish(struct server *srv)
{
    if (srv->draining && atomic_load(&srv->live) == 0)
        finish(srv);
}

/* Any shard's thread: a connection was freed. Zero matters only while
 * draining, which shard 0 knows first, so it is told whenever that shard
 * is not the one that is running. */
static void on_conn_freed(struct shard *s)
{
    struct server *srv = s->server;
    if (atomic_load(&srv->live) != 0)
        return;
    if (s->id == 0)
        check_finish(srv);
    else
        shard_post_control(&srv->shards[0], SHARD_CTL_CHECK);
}

static void abort_one(struct conn *c, void *arg)
{
    (void)arg;
    conn_abort(c);
}

static void drain_one(struct conn *c, void *arg)
{
    (void)arg;
    conn_drain(c);
}

static void abort_all(struct shard *s)
{
    conn_each(s, abort_one, NULL);
}

/* This shard's part of the drain, on its own thread. Idle HTTP connections
 * go at once; requests in progress finish under their own deadlines;
 * WebSockets get the close handshake. */
static void drain_local(struct server *srv, struct shard *s)
{
    if (s->draining)
        return;
    s->draining = true;
    if (srv->on_drain)
        srv->on_drain(srv, s);
    conn_each(s, drain_one, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void close_handles(struct shard *s)
{
    uv_walk(s->loop, close_walk, NULL); /* the loop returns once they are closed */
    if (s->id == 0) {
        /* Closing the signal handles restores the default action; a late
         * signal must still be ignored (docs/operations.md: only the first
         * counts), also when an owner closed something first (on_stop). */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
    }
}

/* The loop of s is to end: its owner may close something first. */
static void stop_shard(struct server *srv, struct shard *s)
{
    s->draining = true;
    if (!srv->on_stop || !srv->on_stop(srv, s, close_handles))
        close_handles(s);
}

static void on_control(struct shard *s, unsigned bits)
{
    struct server *srv = s->server;
    if (bits & SHARD_CTL_DRAIN)
        drain_local(srv, s);
    if (bits & SHARD_CTL_ABORT)
        abort_all(s);
    if (bits & SHARD_CTL_STOP)
        stop_shard(srv, s);
    if ((bits & SHARD_CTL_CHECK) && s->id == 0)
        check_finish(srv);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct server *srv = t->data;
    LOGF(LOG_WARN, "shutdown deadline exceeded; force-closed listeners",
         LOG_STR("err", "context deadline exceeded"));
    LOGF(LOG_WARN, "drain incomplete", LOG_STR("err", "context deadline exceeded"));
    abort_all(&srv->shards[0]);
    for (unsigned i = 1; i < srv->nshards; i++)
        shard_post_control(&srv->shards[i], SHARD_CTL_ABORT);
    srv->drain_timed_out = true; /* conns are freed by their close callbacks */
    finish(srv);
}

void server_init(struct server *srv, uv_loop_t *loop, const struct config *cfg, unsigned nshards,
                 const struct conn_hooks *hooks)
{
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->cfg = cfg;
    srv->nshards = nshards ? nshards : 1;
    atomic_init(&srv->live, 0);
    atomic_init(&srv->head_bytes, 0);
    srv->shards = xcalloc(srv->nshards, sizeof *srv->shards);
    if (srv->nshards > 1) {
        srv->loops = xcalloc(srv->nshards - 1, sizeof *srv->loops);
        srv->threads = xcalloc(srv->nshards - 1, sizeof *srv->threads);
    }
    for (unsigned i = 0; i < srv->nshards; i++) {
        struct shard *s = &srv->shards[i];
        uv_loop_t *l = loop;
        if (i > 0) {
            l = &srv->loops[i - 1];
            uv_loop_init(l);
        }
        shard_init(s, l, cfg, &conn_shard_ops, hooks, NULL);
        s->id = i;
        s->server = srv;
        s->live = &srv->live;
        s->head_bytes = &srv->head_bytes;
        s->on_conn_freed = on_conn_freed;
        s->on_control = on_control;
        shard_start_inbox(s);
    }
    uv_signal_init(loop, &srv->sig_term);
    uv_signal_init(loop, &srv->sig_int);
    uv_signal_init(loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    /* SIGHUP never terminates: it reloads what can be reloaded. */
    uv_signal_start(&srv->sig_hup, on_hup, SIGHUP);
    atomic_init(&srv->accept_errors, 0);
    uv_timer_init(loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
}

void server_add_drain_hook(struct server *srv, void (*fn)(void *arg), void *arg)
{
    if (srv->ndrain_hooks < ARRAY_LEN(srv->drain_hooks)) {
        srv->drain_hooks[srv->ndrain_hooks].fn = fn;
        srv->drain_hooks[srv->ndrain_hooks].arg = arg;
        srv->ndrain_hooks++;
    }
}

static int server_bind(struct server *srv, uv_tcp_t *tcp, const char *addr, int backlog,
                       uv_connection_cb cb, char *err, size_t err_cap)
{
    struct sockaddr_storage sa;
    if (netaddr_resolve(addr, &sa, err, err_cap) != 0)
        return -1;
    uv_tcp_init(srv->loop, tcp);
    int rc = uv_tcp_bind(tcp, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)tcp, backlog, cb);
    if (rc != 0) {
        snprintf(err, err_cap, "listen tcp %s: %s", addr, uv_strerror(rc));
        uv_close((uv_handle_t *)tcp, NULL);
        return -1;
    }
    return 0;
}

int server_listen_opts(struct server *srv, const char *addr, const struct conn_opts *opts,
                       char *err, size_t err_cap)
{
    if (srv->nlisteners == SERVER_MAX_LISTENERS) {
        snprintf(err, err_cap, "listen tcp %s: too many listeners", addr);
        return -1;
    }
    struct listener *l = &srv->listeners[srv->nlisteners];
    memset(l, 0, sizeof *l);
    l->srv = srv;
    l->addr = addr;
    l->opts = *opts;
    l->spare_fd = -1;
    if (server_bind(srv, &l->tcp, addr, 4096, on_connection, err, err_cap) != 0)
        return -1;
    l->tcp.data = l; /* callbacks run only once the loop does */
    l->open = true;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0)
        l->spare_fd = dup(fd);
    uv_timer_init(srv->loop, &l->retry);
    l->retry.data = l;
    srv->nlisteners++;
    return 0;
}

int server_listen(struct server *srv, const char *addr, char *err, size_t err_cap)
{
    struct conn_opts opts = {.hooks = srv->shards[0].hooks};
    return server_listen_opts(srv, addr, &opts, err, err_cap);
}

void server_drain(struct server *srv, int exit_code)
{
    if (srv->draining)
        return;
    srv->draining = true;
    srv->exit_code = exit_code;
    notify_stopping();
    for (size_t i = 0; i < srv->nlisteners; i++) {
        struct listener *l = &srv->listeners[i];
        if (l->open) {
            uv_close((uv_handle_t *)&l->tcp, NULL);
            l->open = false;
        }
        uv_timer_stop(&l->retry);
        if (l->spare_fd >= 0) {
            close(l->spare_fd);
            l->spare_fd = -1;
        }
    }
    uint64_t ms = (uint64_t)(srv->cfg->drain_timeout_ns / NS_PER_MS);
    uv_timer_start(&srv->drain_timer, on_drain_timeout, ms ? ms : 1, 0);
    for (size_t i = 0; i < srv->ndrain_hooks; i++)
        srv->drain_hooks[i].fn(srv->drain_hooks[i].arg);
    drain_local(srv, &srv->shards[0]);
    for (unsigned i = 1; i < srv->nshards; i++)
        shard_post_control(&srv->shards[i], SHARD_CTL_DRAIN);
    check_finish(srv);
}

/* Last step: log, stop the other shards, and close every handle of shard 0
 * so uv_run returns. */
static void finish(struct server *srv)
{
    if (srv->finished)
        return;
    srv->finished = true;
    if (srv->on_finish)
        srv->on_finish(srv);
    if (!srv->drain_timed_out)
        LOG0(LOG_INFO, "shutdown complete");
    uv_timer_stop(&srv->drain_timer);
    for (unsigned i = 1; i < srv->nshards; i++)
        shard_post_control(&srv->shards[i], SHARD_CTL_STOP);
    stop_shard(srv, &srv->shards[0]);
}

static void shard_thread(void *arg)
{
    struct shard *s = arg;
    uv_run(s->loop, UV_RUN_DEFAULT);
}

int server_run(struct server *srv)
{
    for (unsigned i = 1; i < srv->nshards; i++) {
        if (uv_thread_create(&srv->threads[i - 1], shard_thread, &srv->shards[i]) != 0) {
            perror("pyrycode-relay: thread");
            abort();
        }
    }
    srv->threads_started = true;
    uv_run(srv->loop, UV_RUN_DEFAULT);
    for (unsigned i = 1; i < srv->nshards; i++)
        uv_thread_join(&srv->threads[i - 1]);
    /* Every loop has stopped: free what is left, shard by shard. */
    for (unsigned i = 0; i < srv->nshards; i++) {
        struct shard *s = &srv->shards[i];
        shard_discard_inbox(s);
        shard_close(s);
        uv_run(s->loop, UV_RUN_DEFAULT);
        if (i > 0)
            uv_loop_close(s->loop);
    }
    return srv->exit_code;
}

void server_free(struct server *srv)
{
    free(srv->shards);
    free(srv->loops);
    free(srv->threads);
    srv->shards = NULL;
    srv->loops = NULL;
    srv->threads = NULL;
}
