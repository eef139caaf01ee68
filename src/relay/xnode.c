/* xnode.c — a shard on the cluster bus (xnode.h). Messages are the 40-byte
 * header of cluster/busmsg and a payload; a CLAIM's reply subject is the
 * claimant shard's own subject, which also names the claimant's node and
 * shard for the record the owner writes on a handover. */
#include "relay/xnode.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cluster/bus.h"
#include "cluster/busmsg.h"
#include "cluster/claim.h"
#include "cluster/kv.h"
#include "cluster/node.h"
#include "net/conn.h"
#include "net/server.h"
#include "net/shard.h"
#include "relay/fence.h"
#include "relay/registry.h"
#include "relay/relay.h"
#include "relay/relay_ctl.h"
#include "relay/remote.h"
#include "relay/xclaim.h"

#define SUBJECT_MAX 160

struct xnode {
    struct relay *r;
    const char *creds;
    struct natsopt_tls tls; /* the strings are argv's */
    struct bus *bus;
    bool closing;                  /* bus_close in progress */
    bool reopen;                   /* open again once the close is done */
    void (*cont)(struct shard *s); /* the loop is stopping: continue after the close */
    char base[SUBJECT_MAX];        /* pyry.<c>.s.<node>.<k>: .m messages, .q<req> replies */
    char self[SUBJECT_MAX];        /* base.> (the subscription) */
    char all[SUBJECT_MAX];         /* pyry.<c>.all */
    char prefix[SUBJECT_MAX];      /* pyry.<c>.s. */
    uint64_t epoch;                /* our node epoch */
    uint64_t base_in[5];           /* counters of closed connections, carried over */
};

/* The owner's side of one CLAIM in progress. */
struct handover {
    struct xnode *x;
    uint64_t req;
    char reply[SUBJECT_MAX];
    struct claim_record to; /* the claimant: node, node epoch, shard */
    bool takeover;
    struct node_job job;
    struct relay_task task;
    size_t len;
    char sid[];
};

static void open_bus(struct xnode *x);
static void bus_sample(struct relay *r);

/* ---- sending ------------------------------------------------------------ */

static int publish(struct xnode *x, const char *subject, const char *reply,
                   const struct busmsg_hdr *h, const void *payload, size_t len)
{
    uint8_t hdr[BUSMSG_HEADER];
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, len}};
    if (!x->bus || x->closing)
        return -1;
    busmsg_encode(hdr, h);
    int rc = reply ? bus_publish_request(x->bus, subject, reply, iov, len ? 2 : 1)
                   : bus_publish(x->bus, subject, iov, len ? 2 : 1);
    return rc == 0 ? 0 : -1;
}

static void reply_to(struct xnode *x, const char *reply, uint8_t type, uint64_t req, uint64_t epoch,
                     uint16_t reason)
{
    struct busmsg_hdr h = {.type = type,
                           .src_shard = (uint16_t)x->r->shard->id,
                           .src_node_epoch = x->epoch,
                           .epoch = epoch,
                           .key = req,
                           .reason = reason};
    publish(x, reply, NULL, &h, NULL, 0);
}

static int xsend(struct relay *r, const char *subject, const char *reply, struct busmsg_hdr *h,
                 const void *payload, size_t len)
{
    return r->xnode ? publish(r->xnode, subject, reply, h, payload, len) : -1;
}

static int send_claim(struct relay *r, const char *node, uint16_t shard, const char *sid,
                      size_t len, uint64_t req)
{
    struct xnode *x = r->xnode;
    char subject[SUBJECT_MAX], reply[SUBJECT_MAX];
    uint8_t hash[BUSMSG_HASH];
    if (!x || !atomic_load(&x->r->bus_up))
        return -1;
    int n = snprintf(subject, sizeof subject, "%s%s.%u.m", x->prefix, node, shard);
    int m = snprintf(reply, sizeof reply, "%s.q%016llx", x->base, (unsigned long long)req);
    if (n < 0 || (size_t)n >= sizeof subject || m < 0 || (size_t)m >= sizeof reply)
        return -1;
    kv_hash_of(sid, len, hash);
    struct busmsg_hdr h = {.type = BUSMSG_CLAIM,
                           .src_shard = (uint16_t)r->shard->id,
                           .src_node_epoch = x->epoch,
                           .key = req};
    return publish(x, subject, reply, &h, hash, sizeof hash);
}

/* ---- the owner's side of a CLAIM ---------------------------------------- */

/* "pyry.<c>.s.<node>.<k>.q<16 hex>" → the claimant's node and shard. */
static bool parse_reply(const struct xnode *x, const char *reply, struct claim_record *to)
{
    size_t plen = strlen(x->prefix);
    if (!reply || strncmp(reply, x->prefix, plen) != 0)
        return false;
    const char *node = reply + plen, *dot = strchr(node, '.');
    if (!dot || dot == node || (size_t)(dot - node) > CLAIM_NODE_ID_MAX)
        return false;
    char *end;
    unsigned long k = strtoul(dot + 1, &end, 10);
    if (end == dot + 1 || k >= BUSMSG_MAX_SHARDS || strncmp(end, ".q", 2) != 0)
        return false;
    memcpy(to->node, node, (size_t)(dot - node));
    to->node[dot - node] = '\0';
    to->shard = (uint16_t)k;
    to->owned = true;
    return claim_node_id_valid(to->node, strlen(to->node));
}

static void close_phones(struct list *evicted)
{
    while (!list_empty(evicted)) {
        struct reg_phone *rp = CONTAINER_OF(evicted->next, struct reg_phone, link);
        struct peer *p = CONTAINER_OF(rp, struct peer, rp);
        list_remove(&rp->link);
        if (p->stub)
            remote_stub_evict(p, BUSMSG_EVICT_RECLAIMED);
        else
            conn_ws_close(p->conn, 4404, "binary reclaimed server-id", false);
    }
}

/* The record now names the claimant: drop the slot, close what it held,
 * answer HANDOVER with the new epoch. */
static void handed_over(struct handover *ho)
{
    struct relay *r = ho->x->r;
    struct list evicted;
    bool held;
    list_init(&evicted);
    struct reg_binary *holder = registry_drop(r->reg, ho->sid, ho->len, &evicted, &held);
    close_phones(&evicted);
    struct peer *b = holder ? CONTAINER_OF(holder, struct peer, rb) : NULL;
    if (b && b->state == PEER_ACTIVE) {
        if (ho->takeover)
            conn_ws_close(b->conn, WS_CLOSE_INTERNAL, "heartbeat timeout", false);
        else /* reconnected here while the record moved: it lost */
            conn_ws_close(b->conn, 4409, "server-id already claimed", false);
    }
    LOGF(LOG_INFO, "cluster_handover", LOG_STRN("server_id", ho->sid, ho->len),
         LOG_STR("peer", ho->to.node), LOG_NUM("epoch", ho->job.rev),
         LOG_STR("reason", ho->takeover ? "takeover" : "reclaim"));
    reply_to(ho->x, ho->reply, BUSMSG_HANDOVER, ho->req, ho->job.rev,
             ho->takeover ? BUSMSG_HANDOVER_TAKEOVER : BUSMSG_HANDOVER_RECLAIM);
}

static void on_cas_task(struct relay *r, struct relay_task *t)
{
    struct handover *ho = CONTAINER_OF(t, struct handover, task);
    uint64_t epoch, rev;
    (void)r;
    if (ho->job.outcome == KV_OK && registry_owner(r->reg, ho->sid, ho->len, &epoch, &rev))
        handed_over(ho);
    else
        reply_to(ho->x, ho->reply, BUSMSG_NOT_OWNER, ho->req, 0, 0);
    free(ho);
}

static void cas_done(struct node_job *j)
{
    struct handover *ho = CONTAINER_OF(j, struct handover, job);
    relay_post(ho->x->r, &ho->task);
}

static void ho_free_job(struct node_job *j)
{
    free(CONTAINER_OF(j, struct handover, job));
}

static void ho_free_task(struct relay_task *t)
{
    free(CONTAINER_OF(t, struct handover, task));
}

/* Moves the record to the claimant (this node is its single writer). */
static void hand_over(struct handover *ho)
{
    struct relay *r = ho->x->r;
    uint64_t epoch, rev;
    if (!fence_serving(r) || !registry_owner(r->reg, ho->sid, ho->len, &epoch, &rev) || !epoch) {
        reply_to(ho->x, ho->reply, BUSMSG_NOT_OWNER, ho->req, 0, 0);
        free(ho);
        return;
    }
    struct node_job *j = &ho->job;
    j->op = KV_OP_CAS;
    j->bucket = KV_SIDS;
    j->key = ho->sid;
    j->keylen = ho->len;
    j->len = claim_record_format(&ho->to, j->val, sizeof j->val);
    j->last = rev;
    j->done = cas_done;
    j->discard = ho_free_job;
    ho->task.fn = on_cas_task;
    ho->task.discard = ho_free_task;
    node_submit(r->sh->node, j);
}

static void on_verdict(void *arg, int verdict)
{
    struct handover *ho = arg;
    if (verdict == 1) {
        reply_to(ho->x, ho->reply, BUSMSG_CONFLICT, ho->req, 0, 0);
        free(ho);
    } else if (verdict == 0) {
        ho->takeover = true;
        hand_over(ho);
    } else {
        reply_to(ho->x, ho->reply, BUSMSG_NOT_OWNER, ho->req, 0, 0);
        free(ho);
    }
}

static void on_claim(struct xnode *x, const struct busmsg_hdr *h, const uint8_t *hash,
                     const char *reply)
{
    struct relay *r = x->r;
    struct claim_record to;
    const char *sid;
    size_t len;
    struct reg_view v;
    memset(&to, 0, sizeof to);
    if (!parse_reply(x, reply, &to) || !h->src_node_epoch)
        return; /* nobody to answer */
    to.epoch = h->src_node_epoch;
    if (!fence_serving(r) || !registry_find_owned(r->reg, hash, &sid, &len) ||
        !registry_find(r->reg, sid, len, &v)) {
        reply_to(x, reply, BUSMSG_NOT_OWNER, h->key, 0, 0);
        return;
    }
    struct handover *ho = xcalloc(1, sizeof *ho + len);
    ho->x = x;
    ho->req = h->key;
    snprintf(ho->reply, sizeof ho->reply, "%s", reply);
    ho->to = to;
    ho->len = len;
    memcpy(ho->sid, sid, len);
    reply_to(x, reply, BUSMSG_CLAIM_ACK, h->key, 0, 0); /* alive: wait for the verdict */
    LOGF(LOG_INFO, "cluster_claim_forwarded", LOG_STRN("server_id", sid, len),
         LOG_STR("peer", to.node));
    struct peer *inc = v.holder ? CONTAINER_OF(v.holder, struct peer, rb) : NULL;
    if (!v.in_grace && inc && inc->state == PEER_ACTIVE)
        relay_probe_remote(inc, on_verdict, ho); /* as a local second claim */
    else
        hand_over(ho); /* in grace: any claim is a reclaim */
}

/* ---- receiving ---------------------------------------------------------- */

static void on_msg(void *ud, const struct bus_msg *m)
{
    struct xnode *x = ud;
    struct busmsg_hdr h;
    const uint8_t *payload;
    size_t plen;
    if (busmsg_decode(m->data, m->len, (size_t)x->r->srv->cfg->max_message_bytes, &h, &payload,
                      &plen) != 0)
        return;
    switch (h.type) {
    case BUSMSG_CLAIM:
        on_claim(x, &h, payload, m->reply);
        return;
    case BUSMSG_CLAIM_ACK:
        xclaim_acked(x->r, h.key);
        return;
    case BUSMSG_CONFLICT:
        xclaim_reply(x->r, h.key, CLAIM_R_REPLY_CONFLICT, 0, false);
        return;
    case BUSMSG_HANDOVER:
        xclaim_reply(x->r, h.key, CLAIM_R_HANDOVER, h.epoch, h.reason == BUSMSG_HANDOVER_TAKEOVER);
        return;
    case BUSMSG_NOT_OWNER:
        xclaim_reply(x->r, h.key, CLAIM_R_NOT_OWNER, 0, false);
        return;
    default:
        remote_on_msg(x->r, &h, payload, plen, m->reply);
        return;
    }
}

static void on_event(void *ud, enum bus_event ev)
{
    struct xnode *x = ud;
    if (ev == BUS_DISCONNECTED || ev == BUS_CLOSED)
        atomic_store(&x->r->bus_up, false);
    else if (ev == BUS_RECONNECTED) {
        atomic_store(&x->r->bus_up, true);
        remote_bus_reconnected(x->r);
    }
    if (ev == BUS_SLOW_CONSUMER) { /* the bus dropped messages: the sequences tell whose */
        x->r->stats.link_resets[LR_SLOW_CONSUMER]++;
        LOGF(LOG_WARN, "cluster_slow_consumer", LOG_NUM("shard", x->r->shard->id));
    } else if (ev != BUS_RECONNECTED && ev != BUS_DISCONNECTED)
        LOGF(LOG_WARN, "cluster_bus_event", LOG_STR("event", bus_event_name(ev)),
             LOG_NUM("shard", x->r->shard->id));
}

/* ---- lifetime ----------------------------------------------------------- */

static void open_bus(struct xnode *x)
{
    struct relay *r = x->r;
    const struct config *cfg = r->srv->cfg;
    char node[KV_NODE_KEY_MAX + 1], name[KV_NODE_KEY_MAX + 32], err[BUS_ERR_MAX];
    node_identity(r->sh->node, node, &x->epoch);
    snprintf(x->prefix, sizeof x->prefix, "pyry.%s.s.", cfg->cluster_name);
    int n = snprintf(x->base, sizeof x->base, "%s%s.%u", x->prefix, node, r->shard->id);
    if (n < 0 || (size_t)n + 2 >= sizeof x->self)
        abort(); /* a 32-byte cluster name and a 64-byte node id always fit */
    memcpy(x->self, x->base, (size_t)n);
    memcpy(x->self + n, ".>", 3);
    snprintf(x->all, sizeof x->all, "pyry.%s.all", cfg->cluster_name);
    snprintf(name, sizeof name, "pyry-%s-%u", node, r->shard->id);
    struct bus_params p = {.urls = cfg->cluster_nats,
                           .creds_file = x->creds,
                           .tls = &x->tls,
                           .name = name,
                           .self_subject = x->self,
                           .all_subject = x->all};
    struct bus_cbs cbs = {.on_msg = on_msg, .on_event = on_event};
    if (bus_open(&x->bus, r->shard->loop, &p, &cbs, x, err, sizeof err) != 0) {
        x->bus = NULL; /* not ready; the next re-registration tries again */
        LOGF(LOG_ERROR, "cluster_bus_event", LOG_STR("event", "open_failed"),
             LOG_NUM("shard", r->shard->id), LOG_STR("err", err));
        return;
    }
    remote_set_identity(r, x->prefix, x->base, node, x->epoch);
    atomic_store(&x->r->bus_up, true);
}

static void on_closed(void *ud)
{
    struct xnode *x = ud;
    x->bus = NULL;
    x->closing = false;
    if (x->cont) {
        void (*cont)(struct shard *) = x->cont;
        x->cont = NULL;
        cont(x->r->shard);
        return;
    }
    if (x->reopen) {
        x->reopen = false;
        open_bus(x);
    }
}

static void close_bus(struct xnode *x)
{
    atomic_store(&x->r->bus_up, false);
    if (x->bus && !x->closing) {
        bus_sample(x->r); /* a reopened bus counts on from here */
        const struct relay_stats *st = &x->r->stats;
        x->base_in[0] = st->bus_msgs[0];
        x->base_in[1] = st->bus_msgs[1];
        x->base_in[2] = st->bus_bytes[0];
        x->base_in[3] = st->bus_bytes[1];
        x->base_in[4] = st->bus_disconnects;
        x->closing = true;
        bus_close(x->bus, on_closed, x);
    }
}

static void on_open_task(struct relay *r, struct relay_task *t)
{
    struct xnode *x = r->xnode;
    free(t);
    if (r->shard->draining)
        return;
    if (x->bus || x->closing) { /* a new node id: close, then open under it */
        x->reopen = true;
        close_bus(x);
        return;
    }
    open_bus(x);
}

static void post_open(struct relay_shared *sh)
{
    for (unsigned i = 0; i < sh->n; i++) {
        struct relay_task *t = xcalloc(1, sizeof *t);
        t->fn = on_open_task;
        relay_post(&sh->relays[i], t);
    }
}

static void bus_sample(struct relay *r)
{
    struct xnode *x = r->xnode;
    if (!x || !x->bus || x->closing)
        return;
    const struct bus_counters *c = bus_counters(x->bus);
    r->stats.bus_msgs[0] = x->base_in[0] + c->msgs_in;
    r->stats.bus_msgs[1] = x->base_in[1] + c->msgs_out;
    r->stats.bus_bytes[0] = x->base_in[2] + c->bytes_in;
    r->stats.bus_bytes[1] = x->base_in[3] + c->bytes_out;
    r->stats.bus_disconnects = x->base_in[4] + c->disconnects;
    r->stats.bus_buffered = bus_buffered(x->bus);
}

void xnode_start(struct relay_shared *sh, const char *creds_file, const struct natsopt_tls *tls)
{
    for (unsigned i = 0; i < sh->n; i++) {
        struct xnode *x = xcalloc(1, sizeof *x);
        x->r = &sh->relays[i];
        x->creds = creds_file;
        if (tls)
            x->tls = *tls;
        sh->relays[i].xnode = x;
    }
    sh->send_claim = send_claim;
    sh->remote_p2b = remote_phone_message;
    sh->stub_route = remote_stub_route;
    sh->stub_evict = remote_stub_evict;
    sh->stub_pause = remote_stub_pause;
    sh->bus_sample = bus_sample;
    sh->shard_stop = xnode_stop;
    remote_start(sh, xsend);
    post_open(sh);
}

void xnode_reopen_all(struct relay_shared *sh)
{
    post_open(sh);
}

static void on_close_task(struct relay *r, struct relay_task *t)
{
    free(t);
    if (r->xnode)
        close_bus(r->xnode);
}

void xnode_close_all(struct relay_shared *sh)
{
    for (unsigned i = 0; i < sh->n; i++) {
        struct relay_task *t = xcalloc(1, sizeof *t);
        t->fn = on_close_task;
        relay_post(&sh->relays[i], t);
    }
}

bool xnode_stop(struct relay *r, void (*cont)(struct shard *s))
{
    struct xnode *x = r->xnode;
    if (!x || (!x->bus && !x->closing))
        return false;
    x->cont = cont;
    x->reopen = false;
    close_bus(x);
    return true;
}
