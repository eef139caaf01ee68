/* proxyproto.h — an incremental reader for the PROXY protocol v2 header
 * (docs/features/proxy-protocol.md). Pure: bytes in, "need more / done / reject" out, no I/O and
 * no allocation. It accepts only version 2, command PROXY, TCP over IPv4 or
 * IPv6; v1 text headers, LOCAL, UNSPEC, UDP and UNIX are rejected. TLVs are
 * skipped unread.
 * Pure: any thread. */
#ifndef RELAY_PROXYPROTO_H
#define RELAY_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROXYPROTO_SIG_LEN   12
#define PROXYPROTO_FIXED_LEN 16 /* signature, version/command, family, length */
#define PROXYPROTO_ADDR_MAX  36 /* TCP6: two addresses and two ports */

enum proxyproto_err {
    PP_E_SIGNATURE = -1, /* not a v2 header (v1 text, TLS, HTTP, garbage) */
    PP_E_VERSION = -2,   /* version nibble is not 2 */
    PP_E_COMMAND = -3,   /* LOCAL or an unknown command */
    PP_E_FAMILY = -4,    /* UNSPEC, UDP, UNIX or unknown */
    PP_E_LENGTH = -5,    /* address block shorter than the family needs */
};

struct proxyproto {
    uint8_t head[PROXYPROTO_FIXED_LEN + PROXYPROTO_ADDR_MAX]; /* collected bytes */
    uint32_t have;  /* bytes consumed so far (all of head's, then skipped TLVs) */
    uint32_t total; /* whole header length once the fixed part is in, else 0 */
    /* results, valid once proxyproto_feed returned > 0 */
    int family;        /* AF_INET or AF_INET6 */
    uint8_t src[16];   /* source address (4 bytes for AF_INET) */
    uint16_t src_port; /* host byte order */
};

/* Prepares p for a new connection. */
void proxyproto_init(struct proxyproto *p);

/* Feeds buf[0..len). Returns 0 when every byte was absorbed and more are
 * needed; > 0 when the header is complete: the count of bytes of buf that
 * belonged to it (the rest is the next protocol's, e.g. a TLS ClientHello),
 * with family/src/src_port filled in; < 0 (enum proxyproto_err) when the
 * header is unacceptable. A rejection is final; a signature mismatch is
 * reported at the first byte that differs. */
ssize_t proxyproto_feed(struct proxyproto *p, const uint8_t *buf, size_t len);

/* Short text for an error code (for tests and debugging, not for logs). */
const char *proxyproto_strerror(int err);

#endif
