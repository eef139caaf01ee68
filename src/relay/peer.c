/* peer.c — making a peer (for a connection, relay.c, or a phone on
 * another node, remote.c) and the questions about one that the lifecycle
 * and the forwarders (forward.c) both ask: which binary a phone talks to,
 * and where a peer connects from. */
#include "relay/peer.h"

#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "net/conn.h"

struct peer *peer_alloc(struct relay *r, enum relay_endpoint ep, const char *sid, size_t sid_len,
                        uint64_t key)
{
    const char *prefix = ep == EP_SERVER ? "server-" : "client-";
    size_t id_len = strlen(prefix) + sid_len + 17;
    /* One allocation: the conn id lives after the struct and the server-id
     * is the slice of it between the prefix and the key's suffix. */
    struct peer *p = xcalloc(1, sizeof *p + id_len + 1);
    p->relay = r;
    p->role = ep;
    p->key = key;
    p->conn_id = p->id_buf;
    p->conn_id_len = id_len;
    memcpy(p->id_buf, prefix, 7);
    memcpy(p->id_buf + 7, sid, sid_len);
    snprintf(p->id_buf + 7 + sid_len, 18, "-%016llx", (unsigned long long)key);
    p->server_id = p->id_buf + 7;
    p->server_id_len = sid_len;
    if (ep == EP_SERVER) {
        list_init(&p->probes);
        p->ext = xcalloc(1, sizeof *p->ext);
    } else {
        list_init(&p->rp.link);
        p->rp.key = key;
        p->rp.conn_id = p->conn_id;
        p->rp.conn_id_len = id_len;
    }
    return p;
}

struct peer *peer_binary_of(const struct peer *p)
{
    struct reg_binary *rb = registry_phone_binary(p->relay->reg, &p->rp);
    return rb ? CONTAINER_OF(rb, struct peer, rb) : NULL;
}

void peer_remote(const struct peer *p, char *out, size_t cap)
{
    conn_remote(p->conn, out, cap);
}
