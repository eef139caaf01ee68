/* natsopt.h — what every connection of a relay to the cluster bus shares
 * (cluster.md §2): the server list kept in the operator's order ("own
 * server first"), the connection name and credentials, 1 s pings with 2 out,
 * reconnecting forever every 250 ms; and cnats' last error text for a
 * status. The ctl connection (cluster/kv) and every shard's data connection
 * (cluster/bus) start from these.
 * Threads: any; natsopt_last_error reads cnats' thread-local error. */
#ifndef RELAY_CLUSTER_NATSOPT_H
#define RELAY_CLUSTER_NATSOPT_H

#include <stdbool.h>

#include <nats/nats.h>

#define NATSOPT_RECONNECT_WAIT_MS 250

/* TLS to the bus (--cluster-nats-ca, --cluster-nats-cert/-key): PEM file
 * paths, each NULL or "" when not given; cert and key go together. */
struct natsopt_tls {
    const char *ca;   /* CAs that verify the servers */
    const char *cert; /* client certificate chain (mutual TLS) */
    const char *key;  /* its private key */
};

/* True when t asks for TLS (a CA or a client certificate is given). */
bool natsopt_tls_on(const struct natsopt_tls *t);

/* Sets the comma-separated urls (blanks around each trimmed, at most 64),
 * name and creds_file (either may be NULL) and the common timings on o.
 * With tls (NULL: none) asking for it, every connection uses TLS, verifying
 * the servers against tls->ca and presenting tls->cert; cnats reads the
 * files here (a file it cannot use fails with its text in
 * natsopt_last_error). */
natsStatus natsopt_common(natsOptions *o, const char *urls, const char *name,
                          const char *creds_file, const struct natsopt_tls *tls);

/* cnats' thread-local last error text when it belongs to status s (it is not
 * cleared between calls: a timeout would show an older error's text),
 * without its "(file.c:123): " prefix and never repeating s's own text; ""
 * otherwise. */
const char *natsopt_last_error(natsStatus s);

#endif
