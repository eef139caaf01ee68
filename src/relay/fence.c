/* fence.c — the shards' side of cluster self-fencing (fence.h): the deadline
 * check, the fence itself and the answer to the ctl thread. The registry's
 * grace windows are dropped rather than expired one by one: a fenced node
 * must hold no server-id, since another node may take any of them once the
 * lease has lapsed. */
#include "relay/fence.h"

#include <stdlib.h>

#include "base/log.h"
#include "net/conn.h"
#include "net/shard.h"
#include "relay/registry.h"
#include "relay/relay_ctl.h"
#include "relay/remote.h"

struct fence_task {
    struct relay_task t;
    uint64_t gen;
};

static void close_ws(struct conn *c, void *arg)
{
    (void)arg;
    if (conn_state(c) == CONN_WS_OPEN)
        conn_ws_close(c, WS_CLOSE_GOING_AWAY, "shutting down", false);
}

void fence_shard(struct relay *r)
{
    struct list evicted;
    if (r->fenced)
        return;
    r->fenced = true;
    remote_evict_all(r, BUSMSG_EVICT_SHUTDOWN); /* phones on other nodes */
    conn_each(r->shard, close_ws, NULL);
    list_init(&evicted);
    registry_expire(r->reg, UINT64_MAX, &evicted); /* every grace window, now */
    while (!list_empty(&evicted))                  /* already closing: just unlink */
        list_remove(evicted.next);
    uv_timer_stop(&r->grace_timer);
    r->grace_armed = 0;
}

static void on_fence_task(struct relay *r, struct relay_task *t)
{
    struct fence_task *ft = CONTAINER_OF(t, struct fence_task, t);
    fence_shard(r);
    node_fenced(r->sh->node, r->shard->id, ft->gen);
    free(ft);
}

void fence_request(struct relay_shared *sh, uint64_t gen)
{
    for (unsigned i = 0; i < sh->n; i++) {
        struct fence_task *ft = xcalloc(1, sizeof *ft);
        ft->t.fn = on_fence_task;
        ft->gen = gen;
        relay_post(&sh->relays[i], &ft->t);
    }
}

static void on_fence_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    if (!r->shard->draining)
        fence_serving(r);
}

void fence_start(struct relay *r)
{
    uv_timer_init(r->shard->loop, &r->fence_timer);
    r->fence_timer.data = r;
    uv_timer_start(&r->fence_timer, on_fence_timer, NODE_TICK_MS, NODE_TICK_MS);
}

bool fence_serving(struct relay *r)
{
    if (!r->sh->node || node_serving(r->sh->node, shard_now(r->shard)))
        return true;
    fence_shard(r);
    return false;
}

bool fence_cluster_ready(const struct relay_shared *sh)
{
    if (!sh->node)
        return true;
    if (!node_ready(sh->node, uv_hrtime() / 1000000))
        return false;
    for (unsigned i = 0; i < sh->n; i++)
        if (!atomic_load(&sh->relays[i].bus_up))
            return false;
    return true;
}

bool fence_ready(struct relay *r)
{
    if (!fence_cluster_ready(r->sh))
        return false;
    r->fenced = false;
    return true;
}
