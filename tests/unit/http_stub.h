/* http_stub.h — a tiny scripted HTTP/1.1 server on the test's own libuv
 * loop, for test_curluv.c and test_push.c: it records every request
 * (method, path, headers, body) and lets the test's handler answer, answer
 * later, or never answer. Keep-alive and Content-Length bodies only. */
#ifndef HTTP_STUB_H
#define HTTP_STUB_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define STUB_UNUSED  __attribute__((unused))
#define STUB_MAXREQS 256

struct stub;

struct stub_conn {
    uv_tcp_t tcp;
    struct stub *st;
    char *buf;
    size_t len, cap;
    struct stub_conn *next;
    bool closing;
};

struct stub_req {
    char method[16];
    char path[256];
    char *headers; /* raw header block, NUL-terminated */
    char *body;
    size_t body_len;
};

typedef void (*stub_handler)(struct stub *st, struct stub_conn *c, const struct stub_req *req);

struct stub {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    stub_handler handler;
    void *ctx;
    struct stub_req reqs[STUB_MAXREQS];
    size_t nreqs;
    struct stub_conn *conns;
    size_t open_handles;
};

static void stub_on_write(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

/* Sends a complete response with body on c. */
STUB_UNUSED static void stub_reply_ex(struct stub_conn *c, int status, const char *extra_headers,
                                      const char *body, size_t body_len)
{
    if (c->closing)
        return;
    size_t cap = body_len + 512 + (extra_headers ? strlen(extra_headers) : 0);
    char *out = malloc(cap);
    int n = snprintf(out, cap, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status, body_len,
                     extra_headers ? extra_headers : "");
    memcpy(out + n, body, body_len);
    uv_write_t *w = malloc(sizeof *w);
    w->data = out;
    uv_buf_t b = uv_buf_init(out, (unsigned)((size_t)n + body_len));
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, stub_on_write);
}

STUB_UNUSED static void stub_reply(struct stub_conn *c, int status, const char *body)
{
    stub_reply_ex(c, status, "Content-Type: application/json\r\n", body, strlen(body));
}

/* The value of header name in req (case-insensitive), copied into out. */
STUB_UNUSED static bool stub_header(const struct stub_req *req, const char *name, char *out,
                                    size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = req->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
            return true;
        }
        p = eol + 2;
    }
    return false;
}

static void stub_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct stub_conn *c = h->data;
    if (c->cap - c->len < suggested) {
        c->cap = c->len + suggested;
        c->buf = realloc(c->buf, c->cap);
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void stub_on_conn_closed(uv_handle_t *h)
{
    struct stub_conn *c = h->data;
    struct stub *st = c->st;
    for (struct stub_conn **pp = &st->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    free(c->buf);
    free(c);
    st->open_handles--;
}

STUB_UNUSED static void stub_drop(struct stub_conn *c)
{
    if (!c->closing) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, stub_on_conn_closed);
    }
}

/* Parses as many complete requests as the buffer holds. */
static void stub_parse(struct stub_conn *c)
{
    for (;;) {
        char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (!end)
            return;
        size_t head = (size_t)(end - c->buf) + 4, body_len = 0;
        struct stub_req req;
        memset(&req, 0, sizeof req);
        char *line_end = memmem(c->buf, head, "\r\n", 2);
        req.headers = strndup(line_end + 2, head - (size_t)(line_end + 2 - c->buf));
        char cl[32];
        if (stub_header(&req, "Content-Length", cl, sizeof cl))
            body_len = (size_t)strtoul(cl, NULL, 10);
        if (c->len < head + body_len) {
            free(req.headers);
            return;
        }
        sscanf(c->buf, "%15s %255s", req.method, req.path);
        req.body = malloc(body_len + 1);
        memcpy(req.body, c->buf + head, body_len);
        req.body[body_len] = '\0';
        req.body_len = body_len;
        memmove(c->buf, c->buf + head + body_len, c->len - head - body_len);
        c->len -= head + body_len;
        struct stub *st = c->st;
        if (st->nreqs < STUB_MAXREQS)
            st->reqs[st->nreqs++] = req;
        st->handler(st, c, &st->reqs[st->nreqs - 1]);
        if (c->closing)
            return;
    }
}

static void stub_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct stub_conn *c = s->data;
    (void)b;
    if (n < 0) {
        stub_drop(c);
        return;
    }
    c->len += (size_t)n;
    stub_parse(c);
}

static void stub_on_connection(uv_stream_t *l, int status)
{
    struct stub *st = l->data;
    if (status < 0)
        return;
    struct stub_conn *c = calloc(1, sizeof *c);
    c->st = st;
    uv_tcp_init(st->loop, &c->tcp);
    c->tcp.data = c;
    st->open_handles++;
    c->next = st->conns;
    st->conns = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) == 0)
        uv_read_start((uv_stream_t *)&c->tcp, stub_alloc, stub_on_read);
    else
        stub_drop(c);
}

/* Listens on 127.0.0.1:<ephemeral>; st->port receives the port. */
STUB_UNUSED static void stub_start(struct stub *st, uv_loop_t *loop, stub_handler h, void *ctx)
{
    struct sockaddr_in sa;
    int len = sizeof sa;
    memset(st, 0, sizeof *st);
    st->loop = loop;
    st->handler = h;
    st->ctx = ctx;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &st->listener);
    st->listener.data = st;
    uv_tcp_bind(&st->listener, (const struct sockaddr *)&sa, 0);
    uv_listen((uv_stream_t *)&st->listener, 64, stub_on_connection);
    uv_tcp_getsockname(&st->listener, (struct sockaddr *)&sa, &len);
    st->port = ntohs(sa.sin_port);
    st->open_handles = 1;
}

static void stub_on_listener_closed(uv_handle_t *h)
{
    struct stub *st = h->data;
    st->open_handles--;
}

/* Closes the listener and every connection; frees the recorded requests.
 * The loop must run afterwards for the close callbacks. */
STUB_UNUSED static void stub_stop(struct stub *st)
{
    uv_close((uv_handle_t *)&st->listener, stub_on_listener_closed);
    for (struct stub_conn *c = st->conns; c; c = c->next)
        if (!c->closing) {
            c->closing = true;
            uv_close((uv_handle_t *)&c->tcp, stub_on_conn_closed);
        }
    for (size_t i = 0; i < st->nreqs; i++) {
        free(st->reqs[i].headers);
        free(st->reqs[i].body);
    }
    st->nreqs = 0;
}

/* Requests whose path equals path. */
STUB_UNUSED static size_t stub_count(const struct stub *st, const char *path)
{
    size_t n = 0;
    for (size_t i = 0; i < st->nreqs; i++)
        n += strcmp(st->reqs[i].path, path) == 0;
    return n;
}

static void stub_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs loop until cond(arg) holds; fails the test after timeout_ms. */
STUB_UNUSED static bool stub_run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg,
                                       uint64_t timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, stub_tick, 10, 10);
    uint64_t deadline = uv_hrtime() + timeout_ms * 1000000ULL;
    bool ok;
    while (!(ok = cond(arg)) && uv_hrtime() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

#endif
