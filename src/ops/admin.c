/* admin.c — operator endpoints on the loopback metrics listener (never the
 * public one): the held server-ids (paged), connection counts by state, and
 * closing one server-id's binary and phones the way a drain would. A
 * shard's registry and connections are read only on that shard's thread:
 * the handler (on shard 0) does shard 0's part itself, posts a task to
 * every other shard and waits, bounded, for their parts. Tokens, headers
 * and frames are never shown; server-ids and remote addresses are. */
#include "ops/admin.h"

#include "cluster/busmsg.h"
#include "base/siphash.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"
#include "base/log.h"
#include "relay/relay.h"
#include "net/shard.h"
#include "codec/utf8.h"

#define ADMIN_WAIT_NS (2 * 1000000000ULL) /* a shard that does not answer by then: 503 */
#define PAGE_DEFAULT  100
#define PAGE_MAX      1000
#define SID_PARAM_MAX 4096
#define CLOSE_CODE    1001 /* a drain's: the binary reconnects and reclaims */
#define CLOSE_REASON  "shutting down"

enum gather_kind { G_SERVER_IDS, G_CONNECTIONS, G_CLOSE };

struct sid_entry {
    char *sid;
    size_t len;
    bool binary; /* a connected binary holds it (else: grace window) */
    uint64_t uptime_s;
    char remote[64];
    size_t phones;
    uint64_t to_binary, to_phones;
};

struct sid_list {
    struct sid_entry *v;
    size_t n, cap;
    bool more; /* entries past the page were left out */
};

/* Connection states (conn.h) and relay roles on one shard. */
#define NSTATES (CONN_CLOSED + 1)
struct conn_counts {
    size_t state[NSTATES];
    size_t binaries_active, binaries_probing, phones_active, stillborn;
    size_t held, gracing, phones_registered;
};

/* One admin request across the shards. Freed by whoever drops the last
 * reference: the handler may give up waiting before a shard answers. */
struct gather {
    _Atomic int refs;
    uv_mutex_t mu;
    uv_cond_t cv;
    unsigned pending;
    enum gather_kind kind;
    unsigned nshards;
    char *after; /* G_SERVER_IDS: entries sort after this id ("" = from the start) */
    size_t after_len, limit;
    char *sid; /* G_CLOSE */
    size_t sid_len;
    struct sid_list *lists;     /* per shard */
    struct conn_counts *counts; /* per shard */
    bool found;                 /* G_CLOSE results */
    bool closed_binary;
    size_t closed_phones;
};

struct gather_task {
    struct relay_task t;
    struct gather *g;
};

static void free_list(struct sid_list *l);

static void gather_unref(struct gather *g)
{
    if (atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    uv_mutex_destroy(&g->mu);
    uv_cond_destroy(&g->cv);
    for (unsigned i = 0; i < g->nshards; i++)
        free_list(&g->lists[i]); /* parts nobody rendered (a timeout) */
    free(g->after);
    free(g->sid);
    free(g->lists);
    free(g->counts);
    free(g);
}

/* ---- each shard's part (on its own thread) ------------------------------- */

static int cmp_sid(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

static int by_sid(const void *x, const void *y)
{
    const struct sid_entry *a = x, *b = y;
    return cmp_sid(a->sid, a->len, b->sid, b->len);
}

struct collect {
    struct relay *r;
    struct gather *g;
    struct sid_list *out;
};

static void collect_slot(const struct reg_view *s, void *arg)
{
    struct collect *c = arg;
    struct gather *g = c->g;
    if (g->after_len && cmp_sid(s->id, s->id_len, g->after, g->after_len) <= 0)
        return;
    struct sid_list *l = c->out;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    struct sid_entry *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    e->sid = xstrndup(s->id, s->id_len);
    e->len = s->id_len;
    e->phones = s->phones;
    if (s->holder && !s->in_grace) {
        struct peer *b = CONTAINER_OF(s->holder, struct peer, rb);
        e->binary = true;
        uint64_t now = shard_now(c->r->shard);
        e->uptime_s =
            b->ext->since_ms && now > b->ext->since_ms ? (now - b->ext->since_ms) / 1000 : 0;
        peer_remote(b, e->remote, sizeof e->remote);
        e->to_binary = b->ext->bytes_to_binary;
        e->to_phones = b->ext->bytes_to_phones;
    }
}

static void free_list(struct sid_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].sid);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* Keeps the limit smallest entries, sorted. */
static void trim_list(struct sid_list *l, size_t limit)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof *l->v, by_sid);
    while (l->n > limit) {
        free(l->v[--l->n].sid);
        l->more = true;
    }
}

static void part_server_ids(struct relay *r, struct gather *g)
{
    struct collect c = {r, g, &g->lists[r->shard->id]};
    registry_each(r->reg, collect_slot, &c);
    trim_list(c.out, g->limit);
}

static void count_conn(struct conn *c, void *arg)
{
    struct conn_counts *k = arg;
    enum conn_state st = conn_state(c);
    if (st < NSTATES)
        k->state[st]++;
    struct peer *p = conn_hooks_of(c) == &relay_hooks ? conn_owner(c) : NULL;
    if (!p)
        return;
    if (p->state == PEER_STILLBORN)
        k->stillborn++;
    else if (p->role == EP_SERVER && p->state == PEER_PROBING)
        k->binaries_probing++;
    else if (p->role == EP_SERVER && p->state == PEER_ACTIVE)
        k->binaries_active++;
    else if (p->role == EP_CLIENT && p->state == PEER_ACTIVE)
        k->phones_active++;
}

static void part_connections(struct relay *r, struct gather *g)
{
    struct conn_counts *k = &g->counts[r->shard->id];
    conn_each(r->shard, count_conn, k);
    struct reg_counts rc;
    registry_counts(r->reg, &rc);
    k->held = rc.held;
    k->gracing = rc.gracing;
    k->phones_registered = rc.phones;
}

static void close_phone(struct reg_phone *rp, void *arg)
{
    struct gather *g = arg;
    struct peer *p = CONTAINER_OF(rp, struct peer, rp);
    g->closed_phones++;
    if (p->stub) { /* on another node: it closes it (1001 "shutting down" too) */
        p->relay->sh->stub_evict(p, BUSMSG_EVICT_SHUTDOWN);
        return;
    }
    p->binary_closed = true;
    conn_ws_close(p->conn, CLOSE_CODE, CLOSE_REASON, false);
}

static void part_close(struct relay *r, struct gather *g)
{
    struct reg_view v;
    if (!registry_find(r->reg, g->sid, g->sid_len, &v))
        return;
    g->found = true;
    /* Phones first, marked as closed by the binary's side: they get the
     * drain's code and the binary no close notice it would only lose. */
    registry_each_phone_of(r->reg, g->sid, g->sid_len, close_phone, g);
    if (v.holder) {
        struct peer *b = CONTAINER_OF(v.holder, struct peer, rb);
        if (conn_is_open(b->conn)) {
            conn_ws_close(b->conn, CLOSE_CODE, CLOSE_REASON, false);
            g->closed_binary = true;
        }
    }
}

static void run_part(struct relay *r, struct gather *g)
{
    switch (g->kind) {
    case G_SERVER_IDS:
        part_server_ids(r, g);
        break;
    case G_CONNECTIONS:
        part_connections(r, g);
        break;
    case G_CLOSE:
        part_close(r, g);
        break;
    }
}

static void on_task(struct relay *r, struct relay_task *t)
{
    struct gather_task *gt = CONTAINER_OF(t, struct gather_task, t);
    struct gather *g = gt->g;
    free(gt);
    uv_mutex_lock(&g->mu);
    bool wanted = g->pending > 0; /* 0: the handler gave up; do nothing */
    uv_mutex_unlock(&g->mu);
    if (wanted)
        run_part(r, g);
    uv_mutex_lock(&g->mu);
    if (g->pending > 0 && --g->pending == 0)
        uv_cond_signal(&g->cv);
    uv_mutex_unlock(&g->mu);
    gather_unref(g);
}

static void on_discard(struct relay_task *t)
{
    struct gather_task *gt = CONTAINER_OF(t, struct gather_task, t);
    gather_unref(gt->g);
    free(gt);
}

/* Runs g's part on every shard in targets (shard 0's here, the others on
 * their threads). Returns 0 when all answered, -1 on timeout. */
static int gather_run(struct relay_shared *sh, struct gather *g, const unsigned *targets,
                      unsigned n)
{
    bool self = false;
    uv_mutex_lock(&g->mu);
    for (unsigned i = 0; i < n; i++) {
        if (targets[i] == 0) {
            self = true;
            continue;
        }
        struct gather_task *gt = xmalloc(sizeof *gt);
        gt->t.fn = on_task;
        gt->t.discard = on_discard;
        gt->g = g;
        atomic_fetch_add(&g->refs, 1);
        g->pending++;
        relay_post(&sh->relays[targets[i]], &gt->t);
    }
    uv_mutex_unlock(&g->mu);
    if (self)
        run_part(&sh->relays[0], g);
    int rc = 0;
    uint64_t deadline = uv_hrtime() + ADMIN_WAIT_NS;
    uv_mutex_lock(&g->mu);
    while (g->pending > 0) {
        uint64_t now = uv_hrtime();
        if (now >= deadline || uv_cond_timedwait(&g->cv, &g->mu, deadline - now) != 0) {
            if (g->pending > 0) {
                g->pending = 0; /* late parts see this and do nothing */
                rc = -1;
            }
            break;
        }
    }
    uv_mutex_unlock(&g->mu);
    return rc;
}

static struct gather *gather_new(enum gather_kind kind, unsigned nshards)
{
    struct gather *g = xcalloc(1, sizeof *g);
    atomic_init(&g->refs, 1);
    uv_mutex_init(&g->mu);
    uv_cond_init(&g->cv);
    g->kind = kind;
    g->nshards = nshards;
    g->lists = xcalloc(nshards, sizeof *g->lists);
    g->counts = xcalloc(nshards, sizeof *g->counts);
    return g;
}

/* ---- rendering ----------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static void putf(struct dbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        dbuf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string. Server-ids are arbitrary bytes: invalid UTF-8 is shown
 * byte by byte as \u00XX (lossy, but always valid JSON). */
static void put_json_str(struct dbuf *b, const char *s, size_t n);

size_t admin_json_string(char *out, size_t cap, const char *s, size_t n)
{
    struct dbuf b = {0};
    put_json_str(&b, s, n);
    size_t len = b.len < cap ? b.len : (cap ? cap - 1 : 0);
    if (cap) {
        memcpy(out, b.p, len);
        out[len] = '\0';
    }
    free(b.p);
    return b.len;
}

static void put_json_str(struct dbuf *b, const char *s, size_t n)
{
    bool utf8 = utf8_valid((const uint8_t *)s, n);
    dbuf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            dbuf_put(b, e, 2);
        } else if (c < 0x20 || c == 0x7F || (c >= 0x80 && !utf8)) {
            putf(b, "\\u%04x", c);
        } else {
            dbuf_put(b, (const char *)&c, 1);
        }
    }
    dbuf_put(b, "\"", 1);
}

static void respond_json(struct conn *c, int status, struct dbuf *b)
{
    conn_http_respond(c, status, "application/json; charset=utf-8", "Cache-Control: no-store\r\n",
                      b->p ? b->p : "", b->len, true);
    free(b->p);
}

static void respond_error(struct conn *c, int status, const char *msg, const char *extra)
{
    struct dbuf b = {0};
    putf(&b, "{\"error\":");
    put_json_str(&b, msg, strlen(msg));
    dbuf_put(&b, "}", 1);
    conn_http_respond(c, status, "application/json; charset=utf-8", extra, b.p, b.len, true);
    free(b.p);
}

/* ---- query and path parsing ------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into a malloc'd buffer (and '+' to space when
 * form is set). Returns NULL on a bad escape. */
char *admin_pct_decode(const char *s, size_t n, bool form, size_t *out_len)
{
    char *o = xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            o[k++] = form && s[i] == '+' ? ' ' : s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (i + 2 >= n || hi < 0 || lo < 0) {
            free(o);
            return NULL;
        }
        o[k++] = (char)(hi << 4 | lo);
        i += 2;
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

/* The query string after the path. The request head parser keeps the path
 * as a slice of the raw request line, so the target's query follows it
 * there, up to the space before the HTTP version. */
static size_t query_of(const char *path, size_t plen, const char **q)
{
    const char *p = path + plen;
    *q = p;
    if (*p != '?')
        return 0;
    size_t n = 1;
    while (n < 2 * SID_PARAM_MAX && (unsigned char)p[n] > 0x20 && p[n] != '#')
        n++;
    *q = p + 1;
    return n - 1;
}

/* Finds name=value in the query; returns the decoded value or NULL. */
char *admin_query_param(const char *q, size_t qlen, const char *name, size_t *vlen, bool *bad)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < qlen;) {
        size_t j = i;
        while (j < qlen && q[j] != '&')
            j++;
        if (j - i > nlen && memcmp(q + i, name, nlen) == 0 && q[i + nlen] == '=') {
            char *v = admin_pct_decode(q + i + nlen + 1, j - i - nlen - 1, true, vlen);
            if (!v)
                *bad = true;
            return v;
        }
        i = j + 1;
    }
    return NULL;
}

/* ---- endpoints ---------------------------------------------------------------- */

/* Moves every shard's sorted page into *all and keeps the first limit.
 * Returns true when entries were left out (a next page exists). */
static bool merge_parts(struct gather *g, unsigned nshards, struct sid_list *all)
{
    bool more = false;
    for (unsigned i = 0; i < nshards; i++) {
        struct sid_list *l = &g->lists[i];
        more = more || l->more;
        for (size_t k = 0; k < l->n; k++) {
            if (all->n == all->cap) {
                all->cap = all->cap ? all->cap * 2 : 64;
                all->v = xrealloc(all->v, all->cap * sizeof *all->v);
            }
            all->v[all->n++] = l->v[k];
        }
        free(l->v);
        l->v = NULL;
        l->n = 0;
    }
    trim_list(all, g->limit);
    return more || all->more;
}

/* Runs g on every shard. On a timeout, answers 503 and drops g. */
static bool gather_all(struct conn *c, struct relay_shared *sh, struct gather *g)
{
    unsigned targets[256];
    for (unsigned i = 0; i < sh->n; i++)
        targets[i] = i;
    if (gather_run(sh, g, targets, sh->n) == 0)
        return true;
    gather_unref(g);
    respond_error(c, 503, "a shard did not answer in time", NULL);
    return false;
}

static void server_ids(struct conn *c, struct relay_shared *sh, const char *path, size_t plen)
{
    const char *q;
    size_t qlen = query_of(path, plen, &q), llen = 0;
    bool bad = false;
    struct gather *g = gather_new(G_SERVER_IDS, sh->n);
    g->limit = PAGE_DEFAULT;
    char *lim = admin_query_param(q, qlen, "limit", &llen, &bad);
    if (lim) {
        char *end;
        long v = strtol(lim, &end, 10);
        if (*lim == '\0' || *end != '\0' || v < 1 || v > PAGE_MAX)
            bad = true;
        else
            g->limit = (size_t)v;
        free(lim);
    }
    g->after = admin_query_param(q, qlen, "after", &g->after_len, &bad);
    if (bad) {
        gather_unref(g);
        respond_error(c, 400, "limit must be 1-1000 and after a percent-encoded server-id", NULL);
        return;
    }
    if (!gather_all(c, sh, g))
        return;
    struct sid_list all = {0};
    bool more = merge_parts(g, sh->n, &all);
    struct dbuf b = {0};
    putf(&b, "{\"server_ids\":[");
    for (size_t i = 0; i < all.n; i++) {
        struct sid_entry *e = &all.v[i];
        const char *open = i ? ",{\"server_id\":" : "{\"server_id\":";
        dbuf_put(&b, open, strlen(open));
        put_json_str(&b, e->sid, e->len);
        if (e->binary) {
            putf(&b, ",\"state\":\"connected\",\"binary_uptime_seconds\":%llu,\"remote\":",
                 (unsigned long long)e->uptime_s);
            put_json_str(&b, e->remote, strlen(e->remote));
            putf(&b,
                 ",\"phones\":%zu,\"bytes_phones_to_binary\":%llu,\"bytes_binary_to_phones\":%llu}",
                 e->phones, (unsigned long long)e->to_binary, (unsigned long long)e->to_phones);
        } else {
            putf(&b, ",\"state\":\"grace\",\"phones\":%zu}", e->phones);
        }
    }
    dbuf_put(&b, "],\"next_after\":", strlen("],\"next_after\":"));
    if (more && all.n)
        put_json_str(&b, all.v[all.n - 1].sid, all.v[all.n - 1].len);
    else
        dbuf_put(&b, "null", 4);
    dbuf_put(&b, "}", 1);
    free_list(&all);
    gather_unref(g);
    respond_json(c, 200, &b);
}

static const char *const state_names[NSTATES] = {
    [CONN_PROXY_HEADER] = "proxy_header",
    [CONN_TLS_HANDSHAKE] = "tls_handshake",
    [CONN_HTTP_HEAD] = "http_head",
    [CONN_HTTP_BODY] = "http_body",
    [CONN_HTTP_IDLE] = "http_idle",
    [CONN_HTTP_CLOSING] = "http_closing",
    [CONN_WS_OPEN] = "ws_open",
    [CONN_WS_CLOSING] = "ws_closing",
    [CONN_WS_DONE] = "ws_done",
    [CONN_LINGER] = "linger",
    [CONN_CLOSED] = "closed",
};

static void connections(struct conn *c, struct relay_shared *sh)
{
    struct gather *g = gather_new(G_CONNECTIONS, sh->n);
    if (!gather_all(c, sh, g))
        return;
    struct conn_counts t = {0};
    size_t total = 0;
    for (unsigned i = 0; i < sh->n; i++) {
        struct conn_counts *k = &g->counts[i];
        for (int s = 0; s < NSTATES; s++) {
            t.state[s] += k->state[s];
            total += k->state[s];
        }
        t.binaries_active += k->binaries_active;
        t.binaries_probing += k->binaries_probing;
        t.phones_active += k->phones_active;
        t.stillborn += k->stillborn;
        t.held += k->held;
        t.gracing += k->gracing;
        t.phones_registered += k->phones_registered;
    }
    struct dbuf b = {0};
    putf(&b, "{\"shards\":%u,\"total\":%zu,\"by_state\":{", sh->n, total);
    for (int s = 0; s < NSTATES; s++)
        putf(&b, "%s\"%s\":%zu", s ? "," : "", state_names[s], t.state[s]);
    putf(&b,
         "},\"websockets\":{\"binaries\":%zu,\"binaries_probing\":%zu,\"phones\":%zu,"
         "\"rejected_closing\":%zu},",
         t.binaries_active, t.binaries_probing, t.phones_active, t.stillborn);
    putf(&b, "\"registry\":{\"server_ids\":%zu,\"in_grace\":%zu,\"phones\":%zu}}", t.held,
         t.gracing, t.phones_registered);
    gather_unref(g);
    respond_json(c, 200, &b);
}

static void close_server_id(struct conn *c, struct relay_shared *sh, const char *enc,
                            size_t enc_len)
{
    size_t len;
    char *sid = admin_pct_decode(enc, enc_len, false, &len);
    if (!sid || len == 0) {
        free(sid);
        respond_error(c, 400, "the server-id in the path is empty or badly percent-encoded", NULL);
        return;
    }
    struct gather *g = gather_new(G_CLOSE, sh->n);
    g->sid = sid;
    g->sid_len = len;
    unsigned owner = sh->n == 1 ? 0 : (unsigned)(siphash24(sh->shard_key, sid, len) % sh->n);
    if (gather_run(sh, g, &owner, 1) != 0) {
        gather_unref(g);
        respond_error(c, 503, "the shard did not answer in time", NULL);
        return;
    }
    if (!g->found) {
        gather_unref(g);
        respond_error(c, 404, "no such server-id", NULL);
        return;
    }
    char remote[64];
    conn_remote(c, remote, sizeof remote);
    LOGF(LOG_INFO, "admin_close", LOG_STRN("server_id", sid, len),
         LOG_NUM("binary", g->closed_binary), LOG_NUM("phones", g->closed_phones),
         LOG_NUM("close_code", CLOSE_CODE), LOG_STR("remote", remote));
    struct dbuf b = {0};
    putf(&b, "{\"server_id\":");
    put_json_str(&b, sid, len);
    putf(&b, ",\"closed_binary\":%s,\"closed_phones\":%zu,\"close_code\":%d}",
         g->closed_binary ? "true" : "false", g->closed_phones, CLOSE_CODE);
    gather_unref(g);
    respond_json(c, 200, &b);
}

bool admin_handle(struct conn *c, const struct http_req *r, struct relay_shared *sh)
{
    size_t plen;
    const char *path = http_req_path(r, &plen);
    static const char prefix[] = "/debug/server-ids/", suffix[] = "/close";
    const size_t pre = sizeof prefix - 1, suf = sizeof suffix - 1;
    if (str_eq(path, plen, "/debug/server-ids") || str_eq(path, plen, "/debug/connections")) {
        if (r->method != HTTP_GET) {
            respond_error(c, 405, "use GET", "Allow: GET\r\n");
            return true;
        }
        if (plen == strlen("/debug/server-ids"))
            server_ids(c, sh, path, plen);
        else
            connections(c, sh);
        return true;
    }
    if (plen > pre + suf && memcmp(path, prefix, pre) == 0 &&
        memcmp(path + plen - suf, suffix, suf) == 0) {
        if (r->method != HTTP_POST) {
            respond_error(c, 405, "use POST", "Allow: POST\r\n");
            return true;
        }
        close_server_id(c, sh, path + pre, plen - pre - suf);
        return true;
    }
    return false;
}
