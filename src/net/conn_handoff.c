/* conn_handoff.c — moving a connection to the shard that owns its
 * server-id once its request head is read (docs/design.md §2): the
 * socket (duplicated), the TLS session, the parsed head and the unread
 * rest of the input travel through the target shard's inbox, and the
 * target adopts them as a new struct conn. Bytes already queued for
 * writing cannot travel, so such a connection is dropped instead. */
#include "net/conn_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tls/tls.h"

void conn_handoff(struct conn *c, struct shard *target)
{
    c->handoff_to = target;
}

/* The rest of this read may still sit undecrypted in this shard's buffer,
 * which is about to be reused: the transport turns all of it into
 * plaintext now and a partial record stays inside the session, which
 * travels. Returns false if the transport failed. */
static bool drain_transport(struct conn *c, uint8_t **rest, size_t *len, size_t *cap)
{
    for (;;) {
        uint8_t *plain;
        ssize_t r = c->t.ops->read(&c->t, NULL, 0, &plain);
        if (r == 0)
            return true;
        if (r < 0)
            return false;
        if (*cap - *len < (size_t)r) {
            *cap = *cap * 2 + (size_t)r;
            *rest = xrealloc(*rest, *cap);
        }
        memcpy(*rest + *len, plain, (size_t)r);
        *len += (size_t)r;
    }
}

/* Runs after on_request asked for a handoff; this conn is then closed
 * quietly (its duplicate descriptor keeps the socket open). */
void conn_handoff_finish(struct conn *c, const uint8_t *buf, size_t len)
{
    struct shard *target = c->handoff_to;
    size_t rest_cap = len + 1, rest_len = len;
    uint8_t *rest = xmalloc(rest_cap);
    c->handoff_to = NULL;
    if (len)
        memcpy(rest, buf, len);
    uv_os_fd_t fd;
    int dup_fd = -1;
    if (drain_transport(c, &rest, &rest_len, &rest_cap) && conn_output_idle(c) &&
        c->state == CONN_HTTP_HEAD && uv_fileno((uv_handle_t *)&c->t.tcp, &fd) == 0)
        dup_fd = dup(fd);
    if (dup_fd < 0) {
        free(rest);
        conn_abort(c);
        return;
    }
    struct handoff *h = xmalloc(sizeof *h + rest_len);
    h->fd = dup_fd;
    h->opts = c->opts;
    h->tls = transport_take_tls(&c->t);
    h->req = c->req;
    c->req = NULL;
    memcpy(&h->peer, &c->peer, sizeof h->peer);
    h->extra_len = rest_len;
    if (rest_len)
        memcpy(h->extra, rest, rest_len);
    free(rest);
    if (c->shard->live)
        atomic_fetch_add(c->shard->live, 1); /* the handoff counts until adopted */
    conn_abort(c);
    shard_post_handoff(target, &h->node);
}

void conn_discard_node(struct mpsc_node *n)
{
    struct handoff *h = CONTAINER_OF(n, struct handoff, node);
    close(h->fd);
    tls_conn_free(h->tls);
    http_req_free(h->req);
    free(h->req);
    free(h);
}

void conn_adopt_node(struct shard *s, struct mpsc_node *n)
{
    struct handoff *h = CONTAINER_OF(n, struct handoff, node);
    struct conn *c = conn_new(s, h->opts);
    if (uv_tcp_open(&c->t.tcp, h->fd) != 0) {
        close(h->fd);
        conn_discard_new(c);
        tls_conn_free(h->tls);
        conn_req_put(s, h->req);
        free(h);
        if (s->live)
            atomic_fetch_sub(s->live, 1);
        return;
    }
    memcpy(&c->peer, &h->peer, sizeof c->peer);
    c->req = h->req; /* head done, not yet handled: conn_http_input answers it */
    if (h->tls)
        conn_adopt_tls(c, h->tls);
    conn_set_state(c, CONN_HTTP_HEAD);
    conn_start(c);
    c->pumping = true; /* ciphertext the session still held goes out with the pump */
    if (c->state != CONN_CLOSED)
        conn_http_input(c, h->extra, h->extra_len);
    c->pumping = false;
    conn_pump(c);
    free(h);
}
