/* conn_accept.c — from accept to the first request byte: a new struct
 * conn, its peer address, the PROXY v2 header when the listener asks for
 * one (docs/features/proxy-protocol.md), and the choice of transport
 * (plaintext, or TLS on the shard's scratch buffers). It reads nothing
 * itself: on_read in conn.c feeds the header reader. */
#include "net/conn_internal.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "codec/proxyproto.h"

/* The shard's decrypt and encrypt buffers, made on its first TLS connection. */
static void shard_tls_buffers(struct shard *s)
{
    if (!s->tls_plain) {
        s->tls_plain = xmalloc(TRANSPORT_SCRATCH);
        s->tls_out = xmalloc(TRANSPORT_SCRATCH);
    }
}

void conn_start_transport(struct conn *c)
{
    struct shard *s = c->shard;
    if (!c->opts->tls) {
        conn_set_state(c, CONN_HTTP_HEAD);
        return;
    }
    shard_tls_buffers(s);
    if (transport_use_tls(&c->t, c->opts->tls, s->tls_plain, s->tls_out) != 0) {
        conn_abort(c);
        return;
    }
    conn_set_state(c, CONN_TLS_HANDSHAKE);
}

void conn_adopt_tls(struct conn *c, struct tls_conn *tls)
{
    shard_tls_buffers(c->shard);
    transport_adopt_tls(&c->t, tls, c->shard->tls_plain, c->shard->tls_out);
}

struct conn *conn_new(struct shard *s, const struct conn_opts *opts)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->shard = s;
    c->opts = opts;
    uv_tcp_init(s->loop, &c->t.tcp);
    transport_use_tcp(&c->t);
    outbox_init(&c->out);
    list_init(&c->link);
    return c;
}

void conn_start(struct conn *c)
{
    struct shard *s = c->shard;
    uv_tcp_nodelay(&c->t.tcp, 1);
    list_push_back(&s->conns, &c->link);
    s->nconns++;
    conn_pump(c); /* starts reading */
}

static void on_reject_closed(uv_handle_t *h)
{
    free(CONTAINER_OF(h, struct conn, t.tcp));
}

void conn_discard_new(struct conn *c)
{
    uv_close((uv_handle_t *)&c->t.tcp, on_reject_closed);
}

struct conn *conn_accept_opts(struct shard *s, uv_stream_t *server, const struct conn_opts *opts)
{
    struct conn *c = conn_new(s, opts);
    if (uv_accept(server, (uv_stream_t *)&c->t.tcp) != 0) {
        conn_discard_new(c);
        return NULL;
    }
    if (s->live)
        atomic_fetch_add(s->live, 1);
    int namelen = sizeof c->peer;
    if (uv_tcp_getpeername(&c->t.tcp, &c->peer.sa, &namelen) != 0)
        c->peer.sa.sa_family = AF_UNSPEC;
    c->req = conn_req_get(s);
    conn_head_charge(c);
    conn_start(c);
    if (opts->proxy_protocol) {
        /* read on the connection's own callbacks: a stalled sender blocks
         * nobody else (docs/features/proxy-protocol.md) */
        c->pp = xmalloc(sizeof *c->pp);
        proxyproto_init(c->pp);
        conn_set_state(c, CONN_PROXY_HEADER);
    } else {
        conn_start_transport(c);
    }
    return c;
}

/* The PROXY v2 header comes first (docs/features/proxy-protocol.md).
 * Returns how many bytes of buf it used, or -1 when the connection was
 * dropped: nothing is ever written to such a peer. */
ssize_t conn_proxy_input(struct conn *c, const uint8_t *buf, size_t len)
{
    ssize_t r = proxyproto_feed(c->pp, buf, len);
    if (r == 0)
        return (ssize_t)len;
    if (r < 0) {
        conn_log_refusal(c, "proxy_header_refused", 0, proxyproto_strerror((int)r));
        conn_abort(c);
        return -1;
    }
    /* The header's source is the peer from now on (rate limit, logs). */
    memset(&c->peer, 0, sizeof c->peer);
    if (c->pp->family == AF_INET) {
        c->peer.v4.sin_family = AF_INET;
        memcpy(&c->peer.v4.sin_addr, c->pp->src, 4);
        c->peer.v4.sin_port = htons(c->pp->src_port);
    } else {
        c->peer.v6.sin6_family = AF_INET6;
        memcpy(&c->peer.v6.sin6_addr, c->pp->src, 16);
        c->peer.v6.sin6_port = htons(c->pp->src_port);
    }
    free(c->pp);
    c->pp = NULL;
    conn_start_transport(c);
    return r;
}
