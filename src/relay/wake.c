/* wake.c — routes binaries' push_wake requests to the FCM waker on shard
 * 0's loop: answered in place on shard 0 (or when push is off), posted
 * through an MPSC queue and a uv_async from any other shard. Only
 * admission happens here; an admitted send runs on in push.c without the
 * binary. Refusals are logged, collapsed per refusal text. */
#include "relay/wake.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "net/shard.h"
#include "push/push.h"
#include "relay/relay_ctl.h"

/* A wake from a binary on another shard, on its way to the waker. */
struct wake_req {
    struct mpsc_node node;
    size_t sid_len, conn_id_len, raw_len;
    char data[]; /* server-id, conn id, raw push_wake value */
};

static void admit_wake(struct relay_shared *sh, struct warn_state *ws, uint64_t now_ms,
                       const char *sid, size_t sid_len, const char *conn_id, size_t conn_id_len,
                       const uint8_t *raw, size_t len)
{
    /* Admission only: an admitted send runs on without this binary. */
    uint64_t sup;
    const char *refusal = push_wake(sh->push, sid, sid_len, raw, len);
    if (!refusal || !log_limit_allow(relay_push_limit(ws, refusal), now_ms, &sup))
        return;
    if (sup)
        LOGF(LOG_WARN, "binary_forwarder_push_wake_dropped", LOG_STRN("server_id", sid, sid_len),
             LOG_STRN("binary_conn_id", conn_id, conn_id_len), LOG_STR("err", refusal),
             LOG_NUM("suppressed", sup));
    else
        LOGF(LOG_WARN, "binary_forwarder_push_wake_dropped", LOG_STRN("server_id", sid, sid_len),
             LOG_STRN("binary_conn_id", conn_id, conn_id_len), LOG_STR("err", refusal));
}

void wake_post(struct peer *b, const uint8_t *raw, size_t len)
{
    struct relay_shared *sh = b->relay->sh;
    /* "push off" is the first refusal and needs no waker: answer it here. */
    if (!sh->push || b->relay->shard->id == 0) {
        admit_wake(sh, &b->ext->warns, shard_now(b->relay->shard), b->server_id, b->server_id_len,
                   b->conn_id, b->conn_id_len, raw, len);
        return;
    }
    struct wake_req *w = xmalloc(sizeof *w + b->server_id_len + b->conn_id_len + len);
    w->sid_len = b->server_id_len;
    w->conn_id_len = b->conn_id_len;
    w->raw_len = len;
    memcpy(w->data, b->server_id, w->sid_len);
    memcpy(w->data + w->sid_len, b->conn_id, w->conn_id_len);
    memcpy(w->data + w->sid_len + w->conn_id_len, raw, len);
    mpsc_push(&sh->wakes, &w->node);
    uv_async_send(&sh->wake_async);
}

static void on_wakes(uv_async_t *a)
{
    struct relay_shared *sh = a->data;
    struct mpsc_node *n = mpsc_take_all(&sh->wakes);
    while (n) {
        struct mpsc_node *next = n->next;
        struct wake_req *w = CONTAINER_OF(n, struct wake_req, node);
        admit_wake(sh, &sh->posted_drops, uv_now(a->loop), w->data, w->sid_len,
                   w->data + w->sid_len, w->conn_id_len,
                   (const uint8_t *)w->data + w->sid_len + w->conn_id_len, w->raw_len);
        free(w);
        n = next;
    }
}

void wake_init(struct relay_shared *sh, uv_loop_t *loop)
{
    mpsc_init(&sh->wakes);
    uv_async_init(loop, &sh->wake_async, on_wakes);
    sh->wake_async.data = sh;
}

void wake_shutdown(struct relay_shared *sh)
{
    on_wakes(&sh->wake_async); /* wakes already posted meet the closed waker */
    push_shutdown(sh->push);
}

void wake_close(struct relay_shared *sh)
{
    for (struct mpsc_node *n = mpsc_take_all(&sh->wakes), *next; n; n = next) {
        next = n->next;
        free(CONTAINER_OF(n, struct wake_req, node));
    }
    push_free(sh->push);
    sh->push = NULL;
}
