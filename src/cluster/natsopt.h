/* natsopt.h — what every connection of a relay to the cluster bus shares
 * (cluster.md §2): the server list kept in the operator's order ("own
 * server first"), the connection name and credentials, 1 s pings with 2 out,
 * reconnecting forever every 250 ms; and cnats' last error text for a
 * status. The ctl connection (cluster/kv) and every shard's data connection
 * (cluster/bus) start from these.
 * Threads: any; natsopt_last_error reads cnats' thread-local error. */
#ifndef RELAY_CLUSTER_NATSOPT_H
#define RELAY_CLUSTER_NATSOPT_H

#include <nats/nats.h>

#define NATSOPT_RECONNECT_WAIT_MS 250

/* Sets the comma-separated urls (blanks around each trimmed, at most 64),
 * name and creds_file (either may be NULL) and the common timings on o. */
natsStatus natsopt_common(natsOptions *o, const char *urls, const char *name,
                          const char *creds_file);

/* cnats' thread-local last error text when it belongs to status s (it is not
 * cleared between calls: a timeout would show an older error's text),
 * without its "(file.c:123): " prefix and never repeating s's own text; ""
 * otherwise. */
const char *natsopt_last_error(natsStatus s);

#endif
