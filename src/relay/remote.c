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
#include "base/siphash.h"
#include "base/log.h"
#include "cluster/claim.h"
#include "cluster/kv.h"
#include "cluster/link.h"
#include "cluster/node.h"
#include "codec/utf8.h"
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
    uint64_t epoch;      /* the ownership epoch the phone is bound to */
    uint64_t peer_epoch; /* the far node's epoch and shard: the link it rides */
    uint16_t peer_shard;
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
    uint64_t epoch; /* its node epoch, once known (heartbeat, record, ATTACH) */
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
    bool loud;                  /* shard 0: logs peers up and down (every shard acts on them) */
    bool held;                  /* the bus send buffer is over its high mark: feeders not read */
    struct link_tracker *links; /* sequence numbers per (peer epoch, shard) */
};

static uint64_t phone_hash(const struct hlink *l)
{
    return CONTAINER_OF(l, struct remote, hl)->p ? CONTAINER_OF(l, struct remote, hl)->p->key : 0;
}

static uint64_t now_ms(const struct relay *r)
{
    return shard_now(r->shard);
}

/* Where a message goes: the far shard's subject and, for a tracked link,
 * its node epoch and shard (epoch 0: untracked, link_seq 0). */
struct dest {
    const char *subject;
    uint64_t epoch;
    uint16_t shard;
};

static int send_to(struct relay *r, struct dest d, uint8_t type, uint64_t key, uint64_t epoch,
                   uint16_t code, uint16_t reason, const void *payload, size_t len,
                   const char *reply)
{
    struct remote_shard *rs = r->rs;
    struct busmsg_hdr h = {.type = type,
                           .close_code = code,
                           .src_shard = (uint16_t)r->shard->id,
                           .reason = reason,
                           .src_node_epoch = rs->epoch,
                           .link_seq = d.epoch ? link_tx_next(rs->links, d.epoch, d.shard) : 0,
                           .epoch = epoch,
                           .key = key};
    return rs->send ? rs->send(r, d.subject, reply, &h, payload, len) : -1;
}

static struct dest dest_of(const struct remote *rm)
{
    return (struct dest){rm->subject, rm->peer_epoch, rm->peer_shard};
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

/* heard_of, also noting the node's epoch (0: keep what is known). */
static void note_heard(struct remote_shard *rs, const char *id, size_t len, uint64_t epoch,
                       uint64_t now)
{
    struct heard *h = heard_of(rs, id, len, true, now);
    if (h && epoch)
        h->epoch = epoch;
}

/* The node id of incarnation epoch, or NULL when it was never heard of. */
static const char *node_of_epoch(const struct remote_shard *rs, uint64_t epoch)
{
    for (size_t i = 0; i < rs->nheard; i++)
        if (rs->heard[i].epoch == epoch)
            return rs->heard[i].id;
    return NULL;
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
    rm->peer_epoch = rec.epoch;
    rm->peer_shard = rec.shard;
    if (send_to(r, dest_of(rm), BUSMSG_ATTACH, rm->p->key, 0, 0, 0, hash, sizeof hash, rs->reply) !=
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
static void reset_link(struct relay *r, uint64_t epoch, uint16_t shard, const char *reason,
                       bool tell);

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
        note_heard(r->rs, rm->node, strlen(rm->node), rm->peer_epoch, now_ms(r));
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
    if (send_to(p->relay, dest_of(rm), BUSMSG_P2B, p->key, rm->epoch, 0, 0, data, len, NULL) != 0) {
        /* the bus refused (disconnected): the message is lost, so is the
         * link (its sequence number went unsent: the owner sees the gap) */
        LOGF(LOG_INFO, "phone_forwarder_send_failed",
             LOG_STRN("server_id", p->server_id, p->server_id_len),
             LOG_STRN("conn_id", p->conn_id, p->conn_id_len),
             LOG_STR("err", "relay: cluster bus unavailable"));
        p->binary_closed = true; /* the owner's reset tells the binary */
        conn_ws_close(p->conn, WS_CLOSE_INTERNAL, "cluster link lost", false);
    }
}

void remote_phone_ended(struct peer *p, uint16_t code)
{
    struct remote *rm = p->rm;
    if (!rm)
        return;
    if (p->state == PEER_ACTIVE && code && !p->binary_closed)
        send_to(p->relay, dest_of(rm), BUSMSG_NOTICE, p->key, rm->epoch, code, 0, NULL, 0, NULL);
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
    if (len && !utf8_valid(frame, len)) { /* the owner checked it: changed on the way */
        reset_link(r, h->src_node_epoch, h->src_shard, "corrupt", true);
        return;
    }
    forward_deliver(NULL, p, len || !h->close_code ? frame : NULL, len, h->close_code);
    if (h->close_code) /* the binary closed it: drop the stub, no notice */
        send_to(r, dest_of(p->rm), BUSMSG_DETACH, p->key, p->rm->epoch, 0, 0, NULL, 0, NULL);
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
    struct peer *p = peer_alloc(r, EP_CLIENT, sid, len, key);
    p->state = PEER_ACTIVE;
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
    struct dest back = {reply, h->src_node_epoch, h->src_shard}; /* the phone's link */
    if (!registry_find_owned(r->reg, hash, &sid, &len) ||
        !registry_owner(r->reg, sid, len, &epoch, &rev)) {
        send_to(r, back, BUSMSG_NOT_OWNER, h->key, 0, 0, 0, NULL, 0, NULL);
        return;
    }
    struct peer *p = stub_new(r, sid, len, h->key);
    switch (registry_add_phone(r->reg, &p->rp, sid, len)) {
    case REG_ADD_NO_SERVER:
        stub_free(p);
        send_to(r, back, BUSMSG_NO_SERVER, h->key, 0, 0, 0, NULL, 0, NULL);
        return;
    case REG_ADD_AT_CAP:
        stub_free(p);
        send_to(r, back, BUSMSG_AT_CAP, h->key, 0, 0, 0, NULL, 0, NULL);
        return;
    case REG_ADD_OK:
        break;
    }
    struct peer *b = peer_binary_of(p);
    p->bound_binary = b ? b->key : 0;
    p->rm->epoch = epoch;
    p->rm->peer_epoch = h->src_node_epoch;
    p->rm->peer_shard = h->src_shard;
    snprintf(p->rm->subject, sizeof p->rm->subject, "%s", reply);
    snprintf(p->rm->node, sizeof p->rm->node, "%s", node);
    list_push_back(&r->rs->stubs, &p->rm->link);
    r->stats.stubs++;
    note_heard(r->rs, node, strlen(node), h->src_node_epoch, now_ms(r));
    send_to(r, back, BUSMSG_ATTACH_OK, h->key, epoch, 0,
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
    send_to(stub->relay, dest_of(rm), BUSMSG_B2P, stub->key, rm->epoch, code, 0, frame,
            frame ? len : 0, NULL);
}

void remote_stub_pause(struct peer *stub, bool pause)
{
    uint8_t hash[BUSMSG_HASH];
    kv_hash_of(stub->server_id, stub->server_id_len, hash);
    send_to(stub->relay, dest_of(stub->rm), pause ? BUSMSG_XOFF : BUSMSG_XON, stub->key,
            stub->rm->epoch, 0, 0, hash, sizeof hash, NULL);
}

/* XOFF / XON for remote-bound phone key: its binary's outbox passed the
 * high mark / fell below the low one (cluster.md §4.3). */
static void on_xoff(struct relay *r, const struct busmsg_hdr *h)
{
    struct peer *p = phone_by_key(r, h->key);
    if (p && p->rm && p->state == PEER_ACTIVE && h->epoch == p->rm->epoch)
        conn_pause_reading(p->conn, h->type == BUSMSG_XOFF);
}

void remote_stub_evict(struct peer *stub, int reason)
{
    struct busmsg_close c;
    if (busmsg_evict_close((unsigned)reason, &c) != 0)
        return;
    send_to(stub->relay, dest_of(stub->rm), BUSMSG_EVICT, stub->key, stub->rm->epoch, c.code,
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

/* A message for a stub this shard no longer has (dropped by a link loss or
 * a silent node the phone's side never heard of, or evicted a moment ago):
 * the phone must not go on talking into the void; close it 1011. */
static void stub_unknown(struct relay *r, const struct busmsg_hdr *h)
{
    struct remote_shard *rs = r->rs;
    const char *node = node_of_epoch(rs, h->src_node_epoch);
    char subject[REMOTE_SUBJECT];
    if (!node)
        return;
    int w = snprintf(subject, sizeof subject, "%s%s.%u.m", rs->prefix, node, h->src_shard);
    if (w > 0 && (size_t)w < sizeof subject)
        send_to(r, (struct dest){subject, h->src_node_epoch, h->src_shard}, BUSMSG_EVICT, h->key,
                h->epoch, 1011, BUSMSG_EVICT_LINK_LOST, NULL, 0, NULL);
}

static void on_p2b(struct relay *r, const struct busmsg_hdr *h, const uint8_t *data, size_t len)
{
    struct peer *p = stub_by_key(r, h);
    if (!p) {
        stub_unknown(r, h);
        return;
    }
    if (!utf8_valid(data, len)) {
        /* the phone's node checked this text: bytes changed on the way (a
         * message cut short when the server dropped this connection) */
        reset_link(r, h->src_node_epoch, h->src_shard, "corrupt", true);
        return;
    }
    forward_phone_frame(p, (uint8_t *)data, len);
}

/* ---- heartbeats and silence ---------------------------------------------- */

static void on_hb(struct relay *r, const struct busmsg_hdr *hdr, const uint8_t *payload, size_t len)
{
    uint16_t shards;
    const char *node;
    size_t nlen;
    struct remote_shard *rs = r->rs;
    if (busmsg_hb_parse(payload, len, &shards, &node, &nlen) != 0)
        return;
    if (nlen == strlen(rs->node) && memcmp(node, rs->node, nlen) == 0)
        return; /* our own shard 0 (other shards' connections hear it) */
    note_heard(rs, node, nlen, hdr->src_node_epoch, now_ms(r));
    static const uint8_t zero_key[16];
    uint64_t superseded;
    if (rs->links) /* keeps the tracker's peer alive (and lets it forget old ones) */
        link_heartbeat(rs->links, siphash24(zero_key, node, nlen), hdr->src_node_epoch, shards,
                       now_ms(r), &superseded);
}

/* Which associations a loss takes down: every one with node id `node`
 * (it went silent), or those riding link (epoch, shard) (shard
 * LINK_ALL_SHARDS: any shard of that incarnation). */
#define LINK_ALL_SHARDS 0xffff
struct lost {
    const char *node;
    uint64_t epoch;
    uint16_t shard;
    bool all; /* every association (the send buffer overflowed) */
};

static bool rides(const struct remote *rm, const struct lost *l)
{
    if (l->all)
        return true;
    if (l->node)
        return strcmp(rm->node, l->node) == 0;
    return rm->peer_epoch == l->epoch &&
           (l->shard == LINK_ALL_SHARDS || rm->peer_shard == l->shard);
}

/* Closes what the loss takes down: phones here 1011 "cluster link lost"
 * (no notice: nobody to send it to), stubs of phones there dropped with a
 * 1011 close notice to their binary. Returns how many. */
static size_t drop_lost(struct relay *r, const struct lost *l)
{
    struct remote_shard *rs = r->rs;
    size_t n = 0;
    for (size_t i = 0; i < rs->phones.nb; i++)
        for (struct hlink *h = rs->phones.b[i]; h; h = h->next) {
            struct remote *rm = CONTAINER_OF(h, struct remote, hl);
            if (rm->p && rm->p->state == PEER_ACTIVE && !rm->p->binary_closed && rides(rm, l)) {
                rm->p->binary_closed = true;
                conn_ws_close(rm->p->conn, WS_CLOSE_INTERNAL, "cluster link lost", false);
                n++;
            }
        }
    for (struct list *it = rs->stubs.next, *next; it != &rs->stubs; it = next) {
        next = it->next;
        struct peer *p = CONTAINER_OF(it, struct remote, link)->p;
        if (!rides(p->rm, l))
            continue;
        forward_phone_gone(p, WS_CLOSE_INTERNAL); /* its binary learns: 1011 */
        registry_remove_phone(r->reg, &p->rp);
        stub_free(p);
        n++;
    }
    return n;
}

/* Node `id` went silent: close what is bound to it. */
static void node_down(struct relay *r, const char *id)
{
    struct lost l = {.node = id};
    if (drop_lost(r, &l))
        r->stats.link_resets[LR_PEER_DOWN]++;
}

/* Link (epoch, shard) lost messages (or the peer reset it): drop what
 * rides it, tell the peer unless it told us, log once. */
static void reset_link(struct relay *r, uint64_t epoch, uint16_t shard, const char *reason,
                       bool tell)
{
    struct remote_shard *rs = r->rs;
    struct lost l = {.epoch = epoch, .shard = shard};
    size_t n = drop_lost(r, &l);
    r->stats.link_resets[LR_GAP]++;
    const char *node = node_of_epoch(rs, epoch);
    LOGF(LOG_WARN, "cluster_link_reset", LOG_STR("peer", node ? node : "?"),
         LOG_NUM("epoch", epoch), LOG_NUM("shard", shard), LOG_STR("reason", reason),
         LOG_NUM("closed", n));
    if (!tell || !node)
        return;
    char subject[REMOTE_SUBJECT];
    int w = snprintf(subject, sizeof subject, "%s%s.%u.m", rs->prefix, node, shard);
    /* Sequenced like the data it replaces: should it be lost, the gap it
     * leaves makes the peer reset the link by itself. */
    if (w > 0 && (size_t)w < sizeof subject)
        send_to(r, (struct dest){subject, epoch, shard}, BUSMSG_LINK_RESET, 0, 0, 0, 0, NULL, 0,
                NULL);
}

/* Judges a tracked message's sequence; false when it must be dropped. */
static bool link_ok(struct relay *r, const struct busmsg_hdr *h)
{
    struct remote_shard *rs = r->rs;
    enum link_verdict v;
    if (h->type == BUSMSG_SYNC)
        v = link_rx_sync(rs->links, h->src_node_epoch, h->src_shard, h->link_seq);
    else if (h->link_seq)
        v = link_rx(rs->links, h->src_node_epoch, h->src_shard, h->link_seq);
    else
        return true; /* untracked (heartbeats, claims) */
    switch (v) {
    case LINK_OK:
        return h->type != BUSMSG_SYNC;
    case LINK_GAP:
        reset_link(r, h->src_node_epoch, h->src_shard, "gap", true);
        return h->type != BUSMSG_SYNC; /* it starts the count that follows */
    case LINK_BACKWARDS:
        reset_link(r, h->src_node_epoch, h->src_shard, "backwards", true);
        return false;
    case LINK_STALE:
        r->stats.stale_dropped++;
        return false;
    case LINK_INVALID:
        return false;
    }
    return false;
}

/* SYNC{last} on every link that carried traffic since the last round (all:
 * every link, after a reconnect), so a lost last message is noticed too. */
static void sync_one(void *ctx, uint64_t epoch, uint16_t shard, uint64_t last)
{
    struct relay *r = ctx;
    struct remote_shard *rs = r->rs;
    const char *node = node_of_epoch(rs, epoch);
    char subject[REMOTE_SUBJECT];
    if (!node)
        return;
    int w = snprintf(subject, sizeof subject, "%s%s.%u.m", rs->prefix, node, shard);
    if (w <= 0 || (size_t)w >= sizeof subject)
        return;
    struct busmsg_hdr h = {.type = BUSMSG_SYNC,
                           .src_shard = (uint16_t)r->shard->id,
                           .src_node_epoch = rs->epoch,
                           .link_seq = last};
    if (rs->send)
        rs->send(r, subject, NULL, &h, NULL, 0);
}

/* Holds (or releases) every socket that feeds this shard's bus: its
 * remote-bound phones and the binaries with stubs here. */
static void hold_feeders(struct relay *r, bool on)
{
    struct remote_shard *rs = r->rs;
    for (size_t i = 0; i < rs->phones.nb; i++)
        for (struct hlink *h = rs->phones.b[i]; h; h = h->next) {
            struct remote *rm = CONTAINER_OF(h, struct remote, hl);
            if (rm->p && rm->p->conn)
                conn_bus_hold(rm->p->conn, on);
        }
    for (struct list *it = rs->stubs.next; it != &rs->stubs; it = it->next) {
        struct peer *b = peer_binary_of(CONTAINER_OF(it, struct remote, link)->p);
        if (b && b->conn)
            conn_bus_hold(b->conn, on);
    }
}

/* cluster.md §4.3: past 16 MiB waiting in the bus send buffer the sockets
 * that feed it stop being read until it is below 4 MiB; past 64 MiB (the
 * server's own limit) every association is reset rather than let cnats'
 * buffer grow without bound. */
static void check_buffer(struct relay *r)
{
    struct remote_shard *rs = r->rs;
    uint64_t buffered = atomic_load_explicit(&r->stats.bus_buffered, memory_order_relaxed);
    if (buffered > REMOTE_BUF_RESET) {
        struct lost l = {.all = true};
        r->stats.link_resets[LR_BUFFER]++;
        LOGF(LOG_WARN, "cluster_link_reset", LOG_STR("peer", "*"), LOG_STR("reason", "buffer"),
             LOG_NUM("closed", drop_lost(r, &l)));
    }
    if (!rs->held && buffered > REMOTE_BUF_HIGH) {
        rs->held = true;
        hold_feeders(r, true);
    } else if (rs->held && buffered < REMOTE_BUF_LOW) {
        rs->held = false;
        hold_feeders(r, false);
    }
}

static void peer_silent(void *ctx, uint64_t epoch)
{
    (void)ctx, (void)epoch; /* the heard table closes what was bound to it */
}

void remote_bus_reconnected(struct relay *r)
{
    if (r->rs && r->rs->links)
        link_tx_sync(r->rs->links, true, sync_one, r); /* what went missing while away */
}

static void on_tick(uv_timer_t *t)
{
    struct relay *r = t->data;
    struct remote_shard *rs = r->rs;
    uint64_t now = now_ms(r);
    rs->ticks++;
    if (r->shard->id == 0 && rs->node[0] && rs->ticks % (REMOTE_HB_MS / 250) == 0) {
        uint8_t hb[2 + KV_NODE_KEY_MAX];
        size_t n = busmsg_hb_payload(hb, (uint16_t)r->sh->n, rs->node, strlen(rs->node));
        char all[REMOTE_SUBJECT];
        snprintf(all, sizeof all, "pyry.%s.all", r->srv->cfg->cluster_name);
        send_to(r, (struct dest){all, 0, 0}, BUSMSG_HB, 0, 0, 0, 0, hb, n, NULL);
    }
    if (rs->links && rs->ticks % (REMOTE_HB_MS / 250) == 0) {
        link_tx_sync(rs->links, false, sync_one, r);
        link_check(rs->links, now, peer_silent, NULL); /* silence itself: node_down */
    }
    int64_t up = 0;
    for (size_t i = 0; i < rs->nheard; i++)
        up += !rs->heard[i].down && strcmp(rs->heard[i].id, rs->node) != 0;
    r->stats.peers = up;
    if (r->sh->bus_sample)
        r->sh->bus_sample(r);
    check_buffer(r);
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
    if (!r->rs || !r->rs->links)
        return;
    if (!link_ok(r, h))
        return;
    if (h->type == BUSMSG_LINK_RESET) { /* the peer dropped what rides our link */
        reset_link(r, h->src_node_epoch, h->src_shard, "peer", false);
        return;
    }
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
        on_hb(r, h, payload, len);
        return;
    case BUSMSG_XOFF:
    case BUSMSG_XON:
        on_xoff(r, h);
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
    if (rs->epoch != epoch || !rs->links) { /* a new incarnation starts new links */
        link_tracker_free(rs->links);
        rs->links = link_tracker_new(REMOTE_SILENCE_MS, 60000);
    }
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
    link_tracker_free(rs->links);
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
