/* remote.c — phones across nodes (remote.h). The phone's node keeps its
 * remote-bound phones in a table by key (B2P and EVICT name the phone by
 * its key); the owner finds a stub through the registry's phone index.
 * Liveness is per node: every node's shard 0 sends a heartbeat each second
 * on pyry.<c>.all, every shard notes who it heard, and a node silent for
 * REMOTE_SILENCE_MS is gone for every association with it. */
#include "relay/remote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/htab.h"
#include "base/log.h"
#include "cluster/claim.h"
#include "cluster/kv.h"
#include "cluster/node.h"
#include "net/conn.h"
#include "net/server.h"
#include "net/shard.h"
#include "relay/forward.h"
#include "relay/registry.h"
#include "relay/relay_ctl.h"
#include "relay/xclaim.h"

#define MAX_NODES 64

/* A phone's far side: on N the owner, on B (a stub's) the phone's node. */
struct remote {
    struct relay *r;
    struct peer *p; /* NULL once the phone's peer is gone (a job still runs) */
    const struct remote_ops *ops;
    uint64_t epoch; /* the ownership epoch the phone is bound to */
    uint64_t attach_deadline;
    char node[KV_NODE_KEY_MAX + 1];
    char subject[REMOTE_SUBJECT]; /* the far shard's .m subject */
    struct hlink hl;              /* rs->phones (phone side) */
    struct list link;             /* rs->attaching (phone side) or rs->stubs (owner) */
    bool indexed, job_busy;
    bool waiting; /* for this shard's claim of the same id (ops->again when over) */
    bool reread;  /* NOT_OWNER once: the record is read again */
    bool counted; /* in the remote_phones gauge */
    struct node_job job;
    struct relay_task task;
    size_t dev_len;
    char dev[]; /* the phone's device name, for phone_registered */
};

struct heard {
    char id[KV_NODE_KEY_MAX + 1];
    uint64_t last;
    bool down;
};

struct remote_shard {
    remote_send_fn send;
    char prefix[REMOTE_SUBJECT], reply[REMOTE_SUBJECT], node[KV_NODE_KEY_MAX + 1];
    uint64_t epoch;
    struct htab phones;    /* remote-bound phones by key */
    struct list attaching; /* remote-bound phones waiting for the owner */
    struct list stubs;     /* stubs on this shard */
    struct heard heard[MAX_NODES];
    size_t nheard;
    uv_timer_t tick;
    unsigned ticks;
    bool loud; /* shard 0: logs peers up and down (every shard acts on them) */
};

static uint64_t phone_hash(const struct hlink *l)
{
    return CONTAINER_OF(l, struct remote, hl)->p ? CONTAINER_OF(l, struct remote, hl)->p->key : 0;
}

static uint64_t now_ms(const struct relay *r)
{
    return shard_now(r->shard);
}

static int send_to(struct relay *r, const char *subject, uint8_t type, uint64_t key, uint64_t epoch,
                   uint16_t code, uint16_t reason, const void *payload, size_t len,
                   const char *reply)
{
    struct remote_shard *rs = r->rs;
    struct busmsg_hdr h = {.type = type,
                           .close_code = code,
                           .src_shard = (uint16_t)r->shard->id,
                           .reason = reason,
                           .src_node_epoch = rs->epoch,
                           .epoch = epoch,
                           .key = key};
    return rs->send ? rs->send(r, subject, reply, &h, payload, len) : -1;
}

/* ---- node liveness ------------------------------------------------------ */

/* Node id[0..len) was heard at now (a heartbeat, or an association made
 * with it): its entry, created if need be. */
static struct heard *heard_of(struct remote_shard *rs, const char *id, size_t len, bool add,
                              uint64_t now)
{
    for (size_t i = 0; i < rs->nheard; i++)
        if (strlen(rs->heard[i].id) == len && memcmp(rs->heard[i].id, id, len) == 0) {
            if (rs->heard[i].down && rs->loud)
                LOGF(LOG_INFO, "cluster_peer_up", LOG_STR("peer", rs->heard[i].id));
            rs->heard[i].last = now;
            rs->heard[i].down = false;
            return &rs->heard[i];
        }
    if (!add || len > KV_NODE_KEY_MAX)
        return NULL;
    struct heard *h = NULL;
    if (rs->nheard < MAX_NODES)
        h = &rs->heard[rs->nheard++];
    else /* the longest-silent one makes room */
        for (size_t i = 0; i < rs->nheard; i++)
            if (!h || rs->heard[i].last < h->last)
                h = &rs->heard[i];
    memcpy(h->id, id, len);
    h->id[len] = '\0';
    h->last = now;
    h->down = false;
    if (rs->loud)
        LOGF(LOG_INFO, "cluster_peer_up", LOG_STR("peer", h->id));
    return h;
}

/* ---- the phone's node --------------------------------------------------- */

static void unindex(struct remote *rm)
{
    struct remote_shard *rs = rm->r->rs;
    if (rm->counted)
        rm->r->stats.remote_phones--;
    rm->counted = false;
    if (rm->indexed)
        htab_del(&rs->phones, &rm->hl, rm->p->key);
    rm->indexed = false;
    list_remove(&rm->link);
}

static struct peer *phone_by_key(struct relay *r, uint64_t key)
{
    for (struct hlink *l = *htab_chain(&r->rs->phones, key); l; l = l->next) {
        struct remote *rm = CONTAINER_OF(l, struct remote, hl);
        if (rm->p && rm->p->key == key)
            return rm->p;
    }
    return NULL;
}

bool remote_needed(const struct relay *r, const struct peer *p)
{
    uint64_t epoch, rev;
    struct reg_view v;
    if (!r->sh->node || !r->rs)
        return false;
    (void)v;
    return !registry_owner(r->reg, p->server_id, p->server_id_len, &epoch, &rev);
}

static void attach_failed(struct remote *rm, void (*fn)(struct peer *p), enum attach_outcome o)
{
    struct peer *p = rm->p;
    rm->r->stats.attaches[o]++;
    unindex(rm);
    p->rm = NULL;
    free(rm);
    fn(p);
}

/* The record said who owns the server-id: ask it. */
static void on_record(struct relay *r, struct relay_task *t)
{
    struct remote *rm = CONTAINER_OF(t, struct remote, task);
    struct claim_record rec;
    rm->job_busy = false;
    if (!rm->p) {
        free(rm);
        return;
    }
    struct remote_shard *rs = r->rs;
    if (rm->job.outcome != KV_OK || claim_record_parse(&rec, rm->job.got, rm->job.got_len) != 0 ||
        !rec.owned || strcmp(rec.node, rs->node) == 0) {
        attach_failed(rm, rm->ops->no_server, AO_NO_SERVER); /* free, unknown, or ours */
        return;
    }
    snprintf(rm->node, sizeof rm->node, "%s", rec.node);
    int n = snprintf(rm->subject, sizeof rm->subject, "%s%s.%u.m", rs->prefix, rec.node, rec.shard);
    if (n < 0 || (size_t)n >= sizeof rm->subject) {
        attach_failed(rm, rm->ops->no_server, AO_NO_SERVER);
        return;
    }
    uint8_t hash[BUSMSG_HASH];
    kv_hash_of(rm->p->server_id, rm->p->server_id_len, hash);
    rm->attach_deadline = now_ms(r) + REMOTE_ATTACH_MS;
    list_push_back(&rs->attaching, &rm->link);
    if (send_to(r, rm->subject, BUSMSG_ATTACH, rm->p->key, 0, 0, 0, hash, sizeof hash, rs->reply) !=
        0)
        attach_failed(rm, rm->ops->no_server, AO_TIMEOUT);
}

static void record_done(struct node_job *j)
{
    struct remote *rm = CONTAINER_OF(j, struct remote, job);
    relay_post(rm->r, &rm->task);
}

static void record_discard(struct node_job *j)
{
    free(CONTAINER_OF(j, struct remote, job));
}

static void task_discard(struct relay_task *t)
{
    free(CONTAINER_OF(t, struct remote, task));
}

static void read_record(struct remote *rm);

void remote_attach(struct peer *p, const char *dev, size_t dev_len, const struct remote_ops *ops)
{
    struct relay *r = p->relay;
    struct remote *rm = xcalloc(1, sizeof *rm + dev_len + 1);
    rm->r = r;
    rm->p = p;
    rm->ops = ops;
    memcpy(rm->dev, dev, dev_len);
    rm->dev_len = dev_len;
    p->rm = rm;
    p->state = PEER_PROBING;
    conn_pause_reading(p->conn, true);
    htab_add(&r->rs->phones, &rm->hl, p->key, 1);
    rm->indexed = true;
    list_init(&rm->link); /* on rs->attaching while it waits with a deadline */
    if (xclaim_pending(r, p->server_id, p->server_id_len)) {
        /* its binary connected here a moment ago and is still claiming:
         * a phone that waits is registered here, as on one relay */
        rm->waiting = true;
        rm->attach_deadline = now_ms(r) + REMOTE_ATTACH_MS;
        list_push_back(&r->rs->attaching, &rm->link);
        return;
    }
    read_record(rm);
}

/* The record says which node owns the id (a ctl job, leader read). */
static void read_record(struct remote *rm)
{
    struct relay *r = rm->r;
    struct peer *p = rm->p;
    memset(&rm->job, 0, sizeof rm->job);
    rm->job.op = KV_OP_GET;
    rm->job.bucket = KV_SIDS;
    rm->job.key = p->server_id; /* the peer outlives the job, or rm->p says it did not */
    rm->job.keylen = p->server_id_len;
    rm->job.done = record_done;
    rm->job.discard = record_discard;
    rm->task.fn = on_record;
    rm->task.discard = task_discard;
    rm->job_busy = true;
    node_submit(r->sh->node, &rm->job);
}

/* The claim the phone waited for is over (or its wait is): as a new phone. */
static void wait_over(struct remote *rm)
{
    struct peer *p = rm->p;
    const struct remote_ops *ops = rm->ops;
    size_t dev_len = rm->dev_len;
    char *dev = xmalloc(dev_len + 1);
    memcpy(dev, rm->dev, dev_len);
    unindex(rm);
    p->rm = NULL;
    free(rm);
    conn_pause_reading(p->conn, false); /* a local phone is read from the start */
    ops->again(p, dev, dev_len);
    free(dev);
}

/* ATTACH_OK, NO_SERVER, AT_CAP, NOT_OWNER for phone `key`. */
static void on_attach_reply(struct relay *r, const struct busmsg_hdr *h)
{
    struct peer *p = phone_by_key(r, h->key);
    if (!p || p->state != PEER_PROBING || !p->rm)
        return;
    struct remote *rm = p->rm;
    if (h->type == BUSMSG_ATTACH_OK) {
        rm->epoch = h->epoch;
        list_remove(&rm->link);
        r->stats.attaches[AO_OK]++;
        r->stats.remote_phones++;
        rm->counted = true;
        heard_of(r->rs, rm->node, strlen(rm->node), true, now_ms(r));
        rm->ops->registered(p, rm->dev, rm->dev_len);
        if (h->reason & BUSMSG_ATTACH_PAUSED)
            conn_pause_reading(p->conn, true);
        return;
    }
    if (h->type == BUSMSG_NOT_OWNER && !rm->reread) {
        /* a handover or install in progress: read the record once more */
        rm->reread = true;
        list_remove(&rm->link);
        read_record(rm);
        return;
    }
    if (h->type == BUSMSG_AT_CAP)
        attach_failed(rm, rm->ops->at_cap, AO_AT_CAP);
    else
        attach_failed(rm, rm->ops->no_server,
                      h->type == BUSMSG_NOT_OWNER ? AO_NOT_OWNER : AO_NO_SERVER);
}

void remote_phone_message(struct peer *p, const uint8_t *data, size_t len)
{
    struct remote *rm = p->rm;
    if (send_to(p->relay, rm->subject, BUSMSG_P2B, p->key, rm->epoch, 0, 0, data, len, NULL) != 0) {
        /* the bus refused (disconnected): the phone re-dials, as when its
         * binary is gone */
        LOGF(LOG_INFO, "phone_forwarder_send_failed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len),
             LOG_STR("err", "relay: cluster bus unavailable"));
        conn_ws_close(p->conn, WS_CLOSE_NORMAL, "", false);
    }
}

void remote_phone_ended(struct peer *p, uint16_t code)
{
    struct remote *rm = p->rm;
    if (!rm)
        return;
    if (p->state == PEER_ACTIVE && code && !p->binary_closed)
        send_to(p->relay, rm->subject, BUSMSG_NOTICE, p->key, rm->epoch, code, 0, NULL, 0, NULL);
    unindex(rm);
}

void remote_phone_free(struct peer *p)
{
    struct remote *rm = p->rm;
    if (!rm || p->stub)
        return;
    unindex(rm);
    p->rm = NULL;
    rm->p = NULL;
    if (!rm->job_busy)
        free(rm);
}

/* B2P: a frame and/or close directive for remote-bound phone key. */
static void on_b2p(struct relay *r, const struct busmsg_hdr *h, const uint8_t *frame, size_t len)
{
    struct peer *p = phone_by_key(r, h->key);
    if (!p || !p->rm || p->state != PEER_ACTIVE)
        return; /* gone */
    if (h->epoch != p->rm->epoch) {
        r->stats.stale_dropped++; /* a message of an older owner */
        return;
    }
    forward_deliver(NULL, p, len || !h->close_code ? frame : NULL, len, h->close_code);
    if (h->close_code) /* the binary closed it: drop the stub, no notice */
        send_to(r, p->rm->subject, BUSMSG_DETACH, p->key, p->rm->epoch, 0, 0, NULL, 0, NULL);
}

/* EVICT for phone key (RECLAIMED, GRACE_EXPIRED, BINARY_GONE, NO_BINARY, SHUTDOWN). */
static void on_evict(struct relay *r, const struct busmsg_hdr *h)
{
    struct busmsg_close c;
    struct peer *p = phone_by_key(r, h->key);
    if (!p || !p->rm || busmsg_evict_close(h->reason, &c) != 0)
        return;
    if (h->reason == BUSMSG_EVICT_BINARY_GONE)
        LOGF(LOG_INFO, "phone_forwarder_send_failed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len),
             LOG_STR("err", "relay: binary connection closed"));
    else if (h->reason == BUSMSG_EVICT_NO_BINARY)
        LOGF(LOG_INFO, "phone_forwarder_no_binary",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len));
    p->binary_closed = true; /* the owner dropped its stub already: no notice */
    conn_ws_close(p->conn, c.code, c.reason, false);
}

/* ---- the owner: stubs --------------------------------------------------- */

static struct peer *stub_new(struct relay *r, const char *sid, size_t len, uint64_t key)
{
    size_t id_len = 7 + len + 17;
    struct peer *p = xcalloc(1, sizeof *p + id_len + 1);
    p->relay = r;
    p->role = EP_CLIENT;
    p->state = PEER_ACTIVE;
    p->key = key;
    p->conn_id = p->id_buf;
    p->conn_id_len = id_len;
    memcpy(p->id_buf, "client-", 7);
    memcpy(p->id_buf + 7, sid, len);
    snprintf(p->id_buf + 7 + len, 18, "-%016llx", (unsigned long long)key);
    p->server_id = p->id_buf + 7;
    p->server_id_len = len;
    list_init(&p->rp.link);
    p->rp.key = key;
    p->rp.conn_id = p->conn_id;
    p->rp.conn_id_len = id_len;
    p->stub = true;
    p->rm = xcalloc(1, sizeof *p->rm);
    p->rm->r = r;
    p->rm->p = p;
    list_init(&p->rm->link);
    return p;
}

static void stub_free(struct peer *p)
{
    if (!list_empty(&p->rm->link))
        p->relay->stats.stubs--;
    list_remove(&p->rm->link);
    free(p->rm);
    free(p->wrap);
    free(p);
}

static bool parse_node(const struct remote_shard *rs, const char *subject, char *node)
{
    size_t n = strlen(rs->prefix);
    if (!subject || strncmp(subject, rs->prefix, n) != 0)
        return false;
    const char *s = subject + n, *dot = strchr(s, '.');
    if (!dot || dot == s || (size_t)(dot - s) > KV_NODE_KEY_MAX)
        return false;
    memcpy(node, s, (size_t)(dot - s));
    node[dot - s] = '\0';
    return true;
}

/* ATTACH{h} of phone key from the shard whose subject is reply. */
static void on_attach(struct relay *r, const struct busmsg_hdr *h, const uint8_t *hash,
                      const char *reply)
{
    const char *sid;
    size_t len;
    uint64_t epoch, rev;
    char node[KV_NODE_KEY_MAX + 1];
    if (!reply || strlen(reply) >= REMOTE_SUBJECT || !parse_node(r->rs, reply, node))
        return;
    if (!registry_find_owned(r->reg, hash, &sid, &len) ||
        !registry_owner(r->reg, sid, len, &epoch, &rev)) {
        send_to(r, reply, BUSMSG_NOT_OWNER, h->key, 0, 0, 0, NULL, 0, NULL);
        return;
    }
    struct peer *p = stub_new(r, sid, len, h->key);
    switch (registry_add_phone(r->reg, &p->rp, sid, len)) {
    case REG_ADD_NO_SERVER:
        stub_free(p);
        send_to(r, reply, BUSMSG_NO_SERVER, h->key, 0, 0, 0, NULL, 0, NULL);
        return;
    case REG_ADD_AT_CAP:
        stub_free(p);
        send_to(r, reply, BUSMSG_AT_CAP, h->key, 0, 0, 0, NULL, 0, NULL);
        return;
    case REG_ADD_OK:
        break;
    }
    struct peer *b = peer_binary_of(p);
    p->bound_binary = b ? b->key : 0;
    p->rm->epoch = epoch;
    snprintf(p->rm->subject, sizeof p->rm->subject, "%s", reply);
    snprintf(p->rm->node, sizeof p->rm->node, "%s", node);
    list_push_back(&r->rs->stubs, &p->rm->link);
    r->stats.stubs++;
    heard_of(r->rs, node, strlen(node), true, now_ms(r));
    send_to(r, reply, BUSMSG_ATTACH_OK, h->key, epoch, 0,
            b && b->phones_paused ? BUSMSG_ATTACH_PAUSED : 0, NULL, 0, NULL);
}

static struct peer *stub_by_key(struct relay *r, const struct busmsg_hdr *h)
{
    struct reg_phone *rp = registry_phone_by_key(r->reg, h->key);
    struct peer *p = rp ? CONTAINER_OF(rp, struct peer, rp) : NULL;
    if (!p || !p->stub)
        return NULL;
    if (p->rm->epoch != h->epoch) {
        r->stats.stale_dropped++;
        return NULL;
    }
    return p;
}

void remote_stub_route(struct peer *stub, const uint8_t *frame, size_t len, uint16_t code)
{
    struct remote *rm = stub->rm;
    if (code)
        stub->binary_closed = true; /* its node sends DETACH, no notice */
    send_to(stub->relay, rm->subject, BUSMSG_B2P, stub->key, rm->epoch, code, 0, frame,
            frame ? len : 0, NULL);
}

void remote_stub_evict(struct peer *stub, int reason)
{
    struct busmsg_close c;
    if (busmsg_evict_close((unsigned)reason, &c) != 0)
        return;
    send_to(stub->relay, stub->rm->subject, BUSMSG_EVICT, stub->key, stub->rm->epoch, c.code,
            (uint16_t)reason, NULL, 0, NULL);
    registry_remove_phone(stub->relay->reg, &stub->rp);
    stub_free(stub);
}

void remote_evict_all(struct relay *r, enum busmsg_evict reason)
{
    if (!r->rs)
        return;
    while (!list_empty(&r->rs->stubs))
        remote_stub_evict(CONTAINER_OF(r->rs->stubs.next, struct remote, link)->p, reason);
}

/* NOTICE (the phone left) or DETACH (closed by a directive) of a stub. */
static void on_stub_gone(struct relay *r, const struct busmsg_hdr *h)
{
    struct peer *p = stub_by_key(r, h);
    if (!p)
        return;
    if (h->type == BUSMSG_NOTICE)
        forward_phone_gone(p, h->close_code);
    registry_remove_phone(r->reg, &p->rp);
    stub_free(p);
}

static void on_p2b(struct relay *r, const struct busmsg_hdr *h, const uint8_t *data, size_t len)
{
    struct peer *p = stub_by_key(r, h);
    if (p)
        forward_phone_frame(p, (uint8_t *)data, len);
}

/* ---- heartbeats and silence ---------------------------------------------- */

static void on_hb(struct relay *r, const uint8_t *payload, size_t len)
{
    uint16_t shards;
    const char *node;
    size_t nlen;
    struct remote_shard *rs = r->rs;
    if (busmsg_hb_parse(payload, len, &shards, &node, &nlen) != 0)
        return;
    if (nlen == strlen(rs->node) && memcmp(node, rs->node, nlen) == 0)
        return; /* our own shard 0 (other shards' connections hear it) */
    heard_of(rs, node, nlen, true, now_ms(r));
}

/* Node `id` went silent: close what is bound to it. */
static void node_down(struct relay *r, const char *id)
{
    struct remote_shard *rs = r->rs;
    for (size_t i = 0; i < rs->phones.nb; i++)
        for (struct hlink *l = rs->phones.b[i]; l; l = l->next) {
            struct remote *rm = CONTAINER_OF(l, struct remote, hl);
            if (rm->p && rm->p->state == PEER_ACTIVE && strcmp(rm->node, id) == 0) {
                rm->p->binary_closed = true; /* nobody to notify */
                conn_ws_close(rm->p->conn, WS_CLOSE_INTERNAL, "cluster link lost", false);
            }
        }
    for (struct list *it = rs->stubs.next, *next; it != &rs->stubs; it = next) {
        next = it->next;
        struct peer *p = CONTAINER_OF(it, struct remote, link)->p;
        if (strcmp(p->rm->node, id) != 0)
            continue;
        forward_phone_gone(p, WS_CLOSE_INTERNAL); /* its binary learns: 1011 */
        registry_remove_phone(r->reg, &p->rp);
        stub_free(p);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct relay *r = t->data;
    struct remote_shard *rs = r->rs;
    uint64_t now = now_ms(r);
    if (r->shard->id == 0 && rs->node[0] && ++rs->ticks % (REMOTE_HB_MS / 250) == 0) {
        uint8_t hb[2 + KV_NODE_KEY_MAX];
        size_t n = busmsg_hb_payload(hb, (uint16_t)r->sh->n, rs->node, strlen(rs->node));
        char all[REMOTE_SUBJECT];
        snprintf(all, sizeof all, "pyry.%s.all", r->srv->cfg->cluster_name);
        send_to(r, all, BUSMSG_HB, 0, 0, 0, 0, hb, n, NULL);
    }
    int64_t up = 0;
    for (size_t i = 0; i < rs->nheard; i++)
        up += !rs->heard[i].down && strcmp(rs->heard[i].id, rs->node) != 0;
    r->stats.peers = up;
    if (r->sh->bus_sample)
        r->sh->bus_sample(r);
    for (size_t i = 0; i < rs->nheard; i++)
        if (!rs->heard[i].down && now - rs->heard[i].last > REMOTE_SILENCE_MS) {
            rs->heard[i].down = true;
            if (rs->loud)
                LOGF(LOG_WARN, "cluster_peer_down", LOG_STR("peer", rs->heard[i].id));
            node_down(r, rs->heard[i].id);
        }
    for (struct list *it = rs->attaching.next, *next; it != &rs->attaching; it = next) {
        next = it->next;
        struct remote *rm = CONTAINER_OF(it, struct remote, link);
        if (rm->waiting && (!xclaim_pending(r, rm->p->server_id, rm->p->server_id_len) ||
                            rm->attach_deadline <= now))
            wait_over(rm);
        else if (!rm->waiting && rm->attach_deadline <= now)
            attach_failed(rm, rm->ops->no_server, AO_TIMEOUT);
    }
}

/* ---- wiring ------------------------------------------------------------- */

void remote_on_msg(struct relay *r, const struct busmsg_hdr *h, const uint8_t *payload, size_t len,
                   const char *reply)
{
    if (!r->rs)
        return;
    switch (h->type) {
    case BUSMSG_ATTACH:
        on_attach(r, h, payload, reply);
        return;
    case BUSMSG_ATTACH_OK:
    case BUSMSG_NO_SERVER:
    case BUSMSG_AT_CAP:
    case BUSMSG_NOT_OWNER:
        on_attach_reply(r, h);
        return;
    case BUSMSG_P2B:
        on_p2b(r, h, payload, len);
        return;
    case BUSMSG_B2P:
        on_b2p(r, h, payload, len);
        return;
    case BUSMSG_NOTICE:
    case BUSMSG_DETACH:
        on_stub_gone(r, h);
        return;
    case BUSMSG_EVICT:
        on_evict(r, h);
        return;
    case BUSMSG_HB:
        on_hb(r, payload, len);
        return;
    default:
        return;
    }
}

void remote_set_identity(struct relay *r, const char *prefix, const char *base, const char *node,
                         uint64_t epoch)
{
    struct remote_shard *rs = r->rs;
    snprintf(rs->prefix, sizeof rs->prefix, "%s", prefix);
    snprintf(rs->reply, sizeof rs->reply, "%s.m", base);
    snprintf(rs->node, sizeof rs->node, "%s", node);
    rs->epoch = epoch;
}

void remote_close(struct relay *r)
{
    struct remote_shard *rs = r->rs;
    if (!rs)
        return;
    while (!list_empty(&rs->stubs)) { /* a fence or drain normally left none */
        struct peer *p = CONTAINER_OF(rs->stubs.next, struct remote, link)->p;
        registry_remove_phone(r->reg, &p->rp);
        stub_free(p);
    }
    htab_free(&rs->phones);
    free(rs);
    r->rs = NULL;
}

void remote_start(struct relay_shared *sh, remote_send_fn send)
{
    for (unsigned i = 0; i < sh->n; i++) {
        struct relay *r = &sh->relays[i];
        struct remote_shard *rs = xcalloc(1, sizeof *rs);
        rs->send = send;
        rs->loud = i == 0;
        htab_init(&rs->phones, 16, phone_hash);
        list_init(&rs->attaching);
        list_init(&rs->stubs);
        uv_timer_init(r->shard->loop, &rs->tick);
        rs->tick.data = r;
        uv_timer_start(&rs->tick, on_tick, 250, 250);
        r->rs = rs;
    }
}
