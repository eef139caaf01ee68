/* peer.c — the questions about a peer that both the lifecycle (relay.c)
 * and the forwarders (forward.c) ask: which binary a phone talks to, and
 * where a peer connects from. It changes nothing. */
#include "relay/peer.h"

#include "net/conn.h"

struct peer *peer_binary_of(const struct peer *p)
{
    struct reg_binary *rb = registry_phone_binary(p->relay->reg, &p->rp);
    return rb ? CONTAINER_OF(rb, struct peer, rb) : NULL;
}

void peer_remote(const struct peer *p, char *out, size_t cap)
{
    conn_remote(p->conn, out, cap);
}
