/* conn_info.c — what the layers above may know about a connection (struct
 * conn is opaque to them): accessors, walking a shard's connections, the
 * peer's address, and a connection's part in the graceful drain. */
#include "net/conn_internal.h"

#include "base/log.h"

void *conn_ctx(const struct conn *c)
{
    return c->opts->ctx;
}

const struct conn_hooks *conn_hooks_of(const struct conn *c)
{
    return c->opts->hooks;
}

void *conn_owner(const struct conn *c)
{
    return c->owner;
}

void conn_set_owner(struct conn *c, void *owner)
{
    c->owner = owner;
}

struct shard *conn_shard(const struct conn *c)
{
    return c->shard;
}

enum conn_state conn_state(const struct conn *c)
{
    return c->state;
}

bool conn_is_open(const struct conn *c)
{
    return c->state == CONN_WS_OPEN;
}

void conn_count_frames(struct conn *c, _Atomic uint64_t *counter)
{
    c->out.frames = counter;
}

uint16_t conn_close_sent(const struct conn *c)
{
    return c->close_sent;
}

uint16_t conn_close_rcvd(const struct conn *c)
{
    return c->close_rcvd;
}

void conn_set_close_sent(struct conn *c, uint16_t code)
{
    c->close_sent = code;
}

void conn_each(struct shard *s, void (*fn)(struct conn *c, void *arg), void *arg)
{
    for (struct list *it = s->conns.next, *next; it != &s->conns; it = next) {
        next = it->next;
        fn(CONTAINER_OF(it, struct conn, link), arg);
    }
}

void conn_remote(const struct conn *c, char *out, size_t cap)
{
    out[0] = '\0';
    if (c->peer.sa.sa_family == AF_INET)
        uv_ip4_name(&c->peer.v4, out, cap);
    else if (c->peer.sa.sa_family == AF_INET6)
        uv_ip6_name(&c->peer.v6, out, cap);
}

void conn_log_refusal(const struct conn *c, const char *msg, int status, const char *reason)
{
    char remote[64];
    if (!log_enabled(LOG_DEBUG))
        return;
    conn_remote(c, remote, sizeof remote);
    if (status)
        LOGF(LOG_DEBUG, msg, LOG_NUM("status", status), LOG_STR("reason", reason),
             LOG_STR("remote", remote));
    else
        LOGF(LOG_DEBUG, msg, LOG_STR("reason", reason), LOG_STR("remote", remote));
}

void conn_drain(struct conn *c)
{
    if (c->state == CONN_WS_OPEN)
        conn_ws_close(c, WS_CLOSE_GOING_AWAY, "shutting down", false);
    else if (c->state == CONN_HTTP_IDLE || c->state == CONN_PROXY_HEADER ||
             c->state == CONN_TLS_HANDSHAKE || (c->state == CONN_HTTP_HEAD && !c->req->buf_len))
        conn_abort(c);
}
