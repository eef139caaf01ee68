/* relay.c — what the relay does with a request: /healthz, the pyrycode
 * header gate, then the RFC 6455 handshake for /v1/server and /v1/client;
 * everything else is 404. Upgraded connections stay open under heartbeat.
 * It never logs tokens, user agents or frame contents. */
#include "relay.h"

#include <stdio.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "shard.h"

enum endpoint { EP_SERVER, EP_CLIENT };

static struct relay *relay_of(const struct conn *c)
{
    return c->shard->owner;
}

size_t relay_healthz_body(const struct relay *r, char *out, size_t cap)
{
    uint64_t now = shard_now(&r->srv->shard);
    long long up = now > r->boot_ms ? (long long)((now - r->boot_ms) / 1000) : 0;
    int n = snprintf(out, cap,
                     "{\"status\":\"ok\",\"version\":\"%s\",\"connected_binaries\":%zu,"
                     "\"connected_phones\":%zu,\"uptime_seconds\":%lld}",
                     RELAY_VERSION, r->binaries, r->phones, up);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void reply(struct conn *c, int status, const char *type, const char *extra,
                  const char *body, size_t body_len)
{
    char buf[1024];
    ssize_t n = http_response(buf, sizeof buf, status, type, extra, body, body_len, true);
    if (n < 0)
        conn_abort(c);
    else
        conn_http_reply(c, buf, (size_t)n, true);
}

static void reply_error(struct conn *c, int status)
{
    char buf[512];
    ssize_t n = http_error_response(buf, sizeof buf, status, true);
    if (n < 0)
        conn_abort(c);
    else
        conn_http_reply(c, buf, (size_t)n, true);
}

static void healthz(struct conn *c)
{
    char body[256];
    size_t n = relay_healthz_body(relay_of(c), body, sizeof body);
    reply(c, 200, "application/json; charset=utf-8", "Cache-Control: no-store\r\n", body, n);
}

/* Spec §2.1/§2.2 step 2: every required header present and non-empty
 * (values arrive trimmed, so whitespace-only counts as empty). */
static bool gate_passes(const struct http_req *r, enum endpoint ep)
{
    static const enum http_hdr server_hdrs[] = {HDR_X_SERVER, HDR_X_VERSION, HDR_USER_AGENT};
    static const enum http_hdr client_hdrs[] = {HDR_X_SERVER, HDR_X_TOKEN, HDR_USER_AGENT};
    const enum http_hdr *need = ep == EP_SERVER ? server_hdrs : client_hdrs;
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        if (!http_req_header(r, need[i], &len))
            return false;
    }
    return true;
}

static void upgrade(struct conn *c, const struct http_req *r, enum endpoint ep)
{
    if (!gate_passes(r, ep)) {
        reply_error(c, 400); /* no log line: spec §2.1 step 2 */
        return;
    }
    if (c->shard->draining) {
        reply_error(c, 503);
        return;
    }
    char resp[512];
    size_t len = 0;
    int status = http_ws_handshake(r, resp, sizeof resp, &len);
    if (status != 101) {
        conn_http_reply(c, resp, len, false);
        return;
    }
    conn_ws_accept(c, resp, len);
}

static void on_request(struct conn *c, const struct http_req *r)
{
    size_t plen;
    const char *path = http_req_path(r, &plen);
    if (str_eq(path, plen, "/healthz"))
        healthz(c);
    else if (str_eq(path, plen, "/v1/server"))
        upgrade(c, r, EP_SERVER);
    else if (str_eq(path, plen, "/v1/client"))
        upgrade(c, r, EP_CLIENT);
    else
        reply(c, 404, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n",
              "404 page not found\n", 19);
}

static void on_message(struct conn *c, uint8_t *data, size_t len)
{
    /* Routing arrives with the registry; until then messages are dropped. */
    (void)c;
    (void)data;
    (void)len;
}

const struct conn_hooks relay_hooks = {
    .on_request = on_request,
    .on_message = on_message,
};

void relay_init(struct relay *r, struct server *srv)
{
    memset(r, 0, sizeof *r);
    r->srv = srv;
    r->boot_ms = shard_now(&srv->shard);
}
