/* acme_http.c — serves HTTP-01 key authorizations from the ACME client's
 * token table on the --http-listen port, with the reference's host policy
 * (only --domain, else 403) and a plain 404 for everything else. It owns
 * no state beyond the listener; tokens come from acme_http01_lookup. */
#include "acme/acme_http.h"

#include <stdio.h>
#include <string.h>

#include "acme/acme.h"
#include "net/conn.h"
#include "base/netaddr.h"
#include "net/server.h"
#include "base/util.h"

bool acme_http_host_matches(const char *host, size_t len, const char *domain)
{
    if (len > 0 && host[0] == '[') {
        const char *end = memchr(host, ']', len);
        if (end && (size_t)(end - host) + 1 < len && end[1] == ':') {
            host++;
            len = (size_t)(end - host);
        }
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - host) - 1))
            len = (size_t)(colon - host);
    }
    return str_ieq(host, len, domain, strlen(domain));
}

enum acme_http_route acme_http_route(const char *path, size_t path_len, const char *host,
                                     size_t host_len, const char *domain, const char **token,
                                     size_t *token_len)
{
    size_t plen = strlen(ACME_HTTP_PREFIX);
    if (path_len < plen || memcmp(path, ACME_HTTP_PREFIX, plen) != 0)
        return ACME_ROUTE_NOT_FOUND;
    if (!host || !acme_http_host_matches(host, host_len, domain))
        return ACME_ROUTE_FORBIDDEN;
    *token = path + plen;
    *token_len = path_len - plen;
    return ACME_ROUTE_TOKEN;
}

static void on_request(struct conn *c, const struct http_req *r)
{
    const struct acme_http *h = conn_ctx(c);
    size_t plen, hlen, tlen = 0;
    const char *path = http_req_path(r, &plen), *token = NULL;
    const char *host = http_req_header(r, HDR_HOST, &hlen);
    char keyauth[400];
    switch (acme_http_route(path, plen, host, hlen, acme_domain(h->acme), &token, &tlen)) {
    case ACME_ROUTE_FORBIDDEN:
        conn_http_error(c, 403, true);
        return;
    case ACME_ROUTE_TOKEN:
        if (acme_http01_lookup(h->acme, token, tlen, keyauth, sizeof keyauth)) {
            conn_http_respond(c, 200, "text/plain", NULL, keyauth, strlen(keyauth), true);
            return;
        }
        break;
    case ACME_ROUTE_NOT_FOUND:
        break;
    }
    conn_http_not_found(c);
}

static const struct conn_hooks acme_http_hooks = {.on_request = on_request};

int acme_http_listen(struct acme_http *h, struct server *srv, struct acme *acme, const char *addr,
                     char *err, size_t err_cap)
{
    memset(h, 0, sizeof *h);
    h->srv = srv;
    h->acme = acme;
    h->opts.hooks = &acme_http_hooks;
    h->opts.ctx = h;
    /* a server listener: accept errors back off like the public one's */
    if (server_listen_opts(srv, addr, &h->opts, err, err_cap) != 0)
        return -1;
    h->listener = &srv->listeners[srv->nlisteners - 1].tcp;
    return 0;
}
