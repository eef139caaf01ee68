/* shard.c — the per-loop context: config durations in ms, the wheel and the
 * single uv timer that ticks it while anything is scheduled. It does not
 * accept connections (server.c) or interpret them (conn.c, relay.c). */
#include "net/shard.h"

#include <stdlib.h>
#include <unistd.h>

#include "codec/http.h"

static uint64_t ms_of(int64_t ns)
{
    return ns <= 0 ? 1 : (uint64_t)((ns + NS_PER_MS - 1) / NS_PER_MS);
}

static void on_wheel_tick(uv_timer_t *t)
{
    struct shard *s = t->data;
    wheel_advance(&s->wheel, uv_now(s->loop), s->ops->on_timer, s);
    if (s->wheel.count == 0) {
        uv_timer_stop(&s->wheel_timer);
        s->wheel_running = false;
    }
}

void shard_init(struct shard *s, uv_loop_t *loop, const struct config *cfg,
                const struct shard_ops *ops, const struct conn_hooks *hooks, void *owner)
{
    s->loop = loop;
    s->ops = ops;
    s->cfg = cfg;
    s->hooks = hooks;
    s->owner = owner;
    wheel_init(&s->wheel, uv_now(loop));
    uv_timer_init(loop, &s->wheel_timer);
    s->wheel_timer.data = s;
    s->wheel_running = false;
    s->rbuf = xmalloc(SHARD_READ_BUF);
    s->rbuf_busy = false;
    list_init(&s->conns);
    s->nconns = 0;
    s->header_ms = ms_of(cfg->header_timeout_ns);
    s->request_ms = ms_of(cfg->request_timeout_ns);
    s->idle_ms = ms_of(cfg->idle_timeout_ns);
    s->close_ms = ms_of(cfg->close_timeout_ns);
    s->write_ms = ms_of(cfg->write_timeout_ns);
    s->message_ms = ms_of(cfg->message_deadline_ns);
    s->heartbeat_ms = ms_of(cfg->heartbeat_interval_ns);
    s->pong_ms = ms_of(cfg->heartbeat_timeout_ns);
    s->proxy_ms = ms_of(cfg->proxy_header_timeout_ns);
    s->tls_ms = ms_of(cfg->tls_handshake_timeout_ns);
    s->tls_plain = s->tls_out = NULL;
    s->draining = false;
    s->on_conn_freed = NULL;
    s->async_on = false;
    s->nreq_pool = 0;
    mpsc_init(&s->inbox);
    atomic_init(&s->ctl, 0);
}

static void on_async(uv_async_t *a)
{
    struct shard *s = a->data;
    struct mpsc_node *n = mpsc_take_all(&s->inbox);
    while (n) {
        struct mpsc_node *next = n->next;
        s->ops->adopt(s, n);
        n = next;
    }
    unsigned bits = atomic_exchange(&s->ctl, 0);
    if (bits && s->on_control)
        s->on_control(s, bits);
}

void shard_start_inbox(struct shard *s)
{
    uv_async_init(s->loop, &s->async, on_async);
    s->async.data = s;
    s->async_on = true;
}

void shard_post_handoff(struct shard *s, struct mpsc_node *n)
{
    mpsc_push(&s->inbox, n);
    uv_async_send(&s->async);
}

void shard_post_control(struct shard *s, unsigned bits)
{
    atomic_fetch_or(&s->ctl, bits);
    uv_async_send(&s->async);
}

void shard_discard_inbox(struct shard *s)
{
    struct mpsc_node *n = mpsc_take_all(&s->inbox);
    while (n) {
        struct mpsc_node *next = n->next;
        s->ops->discard(n);
        if (s->live)
            atomic_fetch_sub(s->live, 1);
        n = next;
    }
}

void shard_close(struct shard *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->wheel_timer))
        uv_close((uv_handle_t *)&s->wheel_timer, NULL);
    free(s->rbuf);
    s->rbuf = NULL;
    while (s->nreq_pool) {
        struct http_req *r = s->req_pool[--s->nreq_pool];
        http_req_free(r);
        free(r);
    }
    free(s->tls_plain);
    free(s->tls_out);
    s->tls_plain = s->tls_out = NULL;
}

uint64_t shard_now(const struct shard *s)
{
    return uv_now(s->loop);
}

void shard_schedule(struct shard *s, struct wheel_entry *e, uint64_t at)
{
    wheel_schedule(&s->wheel, e, at);
    if (!s->wheel_running) {
        s->wheel_running = true;
        uv_timer_start(&s->wheel_timer, on_wheel_tick, WHEEL_TICK_MS, WHEEL_TICK_MS);
    }
}

void shard_cancel(struct shard *s, struct wheel_entry *e)
{
    wheel_cancel(&s->wheel, e);
}
