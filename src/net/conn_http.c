/* conn_http.c — the HTTP side of a connection: request heads read with
 * the codec's reader (recycled through a per-shard pool), the Host check,
 * the process-wide budget for unfinished heads, the hand-over to the hooks
 * and the replies they send. It does not route: on_request decides. */
#include "net/conn_internal.h"

#include <stdlib.h>

#include "tls/tls.h"

/* ---- request readers ---------------------------------------------------- */

/* A request reader lives only until the upgrade (or the connection's end),
 * so readers are recycled through a small per-shard pool: freeing them
 * between the long-lived connection structs would leave holes that idle
 * connections pay for. */
struct http_req *conn_req_get(struct shard *s)
{
    if (s->nreq_pool)
        return s->req_pool[--s->nreq_pool];
    struct http_req *r = xmalloc(sizeof *r);
    http_req_init(r, (size_t)s->cfg->max_header_bytes);
    return r;
}

void conn_req_put(struct shard *s, struct http_req *r)
{
    if (s->nreq_pool < SHARD_REQ_POOL) {
        http_req_reset(r); /* keeps a small head buffer for the next one */
        s->req_pool[s->nreq_pool++] = r;
        return;
    }
    http_req_free(r);
    free(r);
}

/* Bytes an unfinished request head of c holds (the budget is described in
 * docs/features/websocket.md, "Limits"). */
static size_t head_charge(const struct conn *c)
{
    return c->req && !c->req->head_done ? c->req->buf_cap : 0;
}

/* Brings the process-wide head total up to date after c's charge was before. */
static void head_settle(const struct conn *c, size_t before)
{
    size_t now = head_charge(c);
    _Atomic size_t *total = c->shard->head_bytes;
    if (!total || now == before)
        return;
    if (now > before)
        atomic_fetch_add(total, now - before);
    else
        atomic_fetch_sub(total, before - now);
}

void conn_head_charge(struct conn *c)
{
    head_settle(c, 0);
}

void conn_req_release(struct conn *c)
{
    size_t before = head_charge(c);
    struct http_req *r = c->req;
    if (!r)
        return;
    c->req = NULL;
    head_settle(c, before);
    conn_req_put(c->shard, r);
}

/* ---- replies ------------------------------------------------------------ */

void conn_http_reply(struct conn *c, const char *resp, size_t len, bool keep_alive)
{
    uv_buf_t iov = uv_buf_init((char *)resp, (unsigned)len);
    c->reply_keep_alive =
        keep_alive && c->req && c->req->keep_alive && !c->req->upgrade && !c->shard->draining;
    conn_send(c, OUTBOX_DATA, &iov, 1, false);
    if (c->state != CONN_CLOSED && !c->reply_keep_alive) {
        conn_set_state(c, CONN_HTTP_CLOSING);
        conn_pump(c); /* written already? then linger now */
    }
}

void conn_http_respond(struct conn *c, int status, const char *type, const char *extra,
                       const char *body, size_t body_len, bool keep_alive)
{
    char small[1024];
    size_t cap = body_len + 512;
    char *buf = cap <= sizeof small ? small : xmalloc(cap);
    ssize_t n = http_response(buf, cap <= sizeof small ? sizeof small : cap, status, type, extra,
                              body, body_len, keep_alive);
    if (n < 0)
        conn_abort(c);
    else
        conn_http_reply(c, buf, (size_t)n, keep_alive);
    if (buf != small)
        free(buf);
}

void conn_http_error(struct conn *c, int status, bool keep_alive)
{
    conn_http_respond(c, status, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n",
                      "\n", 1, keep_alive);
}

void conn_http_not_found(struct conn *c)
{
    static const char body[] = "404 page not found\n";
    conn_http_respond(c, 404, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n",
                      body, sizeof body - 1, true);
}

/* ---- request heads ------------------------------------------------------ */

/* On a listener bound to a domain, a request for another host is answered
 * 421 before routing, rate limiting or anything else (docs/features/tls.md). */
static bool host_refused(const struct conn *c)
{
    size_t len;
    if (!c->opts->domain)
        return false;
    const char *h = http_req_header(c->req, HDR_HOST, &len);
    return !tls_host_matches(h ? h : "", len, c->opts->domain);
}

/* Over --max-header-bytes-total: the connections on this shard holding the
 * largest unfinished heads get 431 (as a single head over
 * --max-header-bytes does) and give their buffers back, until the total is
 * within the budget again. Request heads are read on the accepting shard,
 * so that is where they are. Returns true if any connection was refused. */
static bool head_budget_enforce(struct shard *s)
{
    size_t budget = (size_t)s->cfg->max_header_bytes_total;
    bool refused = false;
    while (s->head_bytes && atomic_load(s->head_bytes) > budget) {
        struct conn *victim = NULL;
        size_t most = 0;
        for (struct list *it = s->conns.next; it != &s->conns; it = it->next) {
            struct conn *x = CONTAINER_OF(it, struct conn, link);
            if (x->state == CONN_HTTP_HEAD && head_charge(x) > most) {
                most = head_charge(x);
                victim = x;
            }
        }
        if (!victim)
            break;
        conn_log_refusal(victim, "request_refused", 431,
                         "unfinished request heads over --max-header-bytes-total");
        conn_http_error(victim, 431, false);
        conn_req_release(victim);
        refused = true;
    }
    return refused;
}

/* A complete head: the Host check, then the hooks. Returns false when the
 * input must not be read further here (handed off, upgraded, closing). */
static bool head_complete(struct conn *c, uint8_t *buf, size_t len)
{
    c->head_handled = true;
    if (host_refused(c)) {
        conn_log_refusal(c, "request_refused", 421, "Host is not --domain");
        conn_http_respond(c, 421, NULL, NULL, "", 0, true);
    } else {
        c->opts->hooks->on_request(c, c->req);
    }
    if (c->handoff_to) {
        conn_handoff_finish(c, buf, len);
        return false;
    }
    if (c->state == CONN_WS_OPEN) {
        conn_req_release(c);
        conn_ws_input(c, buf, len);
        return false;
    }
    if (c->state != CONN_HTTP_HEAD)
        return false;
    conn_set_state(c, CONN_HTTP_BODY);
    return true;
}

/* Feeds the request reader. Returns false when reading stops here. */
static bool feed(struct conn *c, uint8_t **buf, size_t *len)
{
    size_t before = head_charge(c);
    ssize_t n = http_req_feed(c->req, (const char *)*buf, *len);
    head_settle(c, before);
    if (n < 0) {
        conn_log_refusal(c, "request_refused", n == HTTP_E_TOO_LARGE ? 431 : 400,
                         n == HTTP_E_TOO_LARGE ? "request head over --max-header-bytes"
                                               : "malformed HTTP request");
        conn_http_error(c, n == HTTP_E_TOO_LARGE ? 431 : 400, false);
        conn_req_release(c); /* the refused head is not kept while the reply drains */
        return false;
    }
    if (head_charge(c) > before && head_budget_enforce(c->shard) && c->state != CONN_HTTP_HEAD)
        return false; /* c held the largest head and was refused */
    *buf += n;
    *len -= (size_t)n;
    /* zero consumed: the parser wants nothing more from this read */
    return n > 0 || (c->req->head_done && !c->head_handled) || c->req->msg_done;
}

void conn_http_input(struct conn *c, uint8_t *buf, size_t len)
{
    for (;;) {
        if (c->req->head_done && !c->head_handled && !head_complete(c, buf, len))
            return;
        if (c->req->msg_done) {
            size_t before = head_charge(c);
            http_req_reset(c->req);
            head_settle(c, before);
            c->head_handled = false;
            conn_set_state(c, CONN_HTTP_IDLE);
        }
        if (len == 0)
            return;
        if (c->state == CONN_HTTP_IDLE)
            conn_set_state(c, CONN_HTTP_HEAD);
        if (c->state != CONN_HTTP_HEAD && c->state != CONN_HTTP_BODY)
            return;
        if (!feed(c, &buf, &len))
            return;
    }
}
