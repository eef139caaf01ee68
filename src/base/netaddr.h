/* netaddr.h — listen addresses as operators write them for Go's net.Listen:
 * "host:port", ":port" (every interface), "[v6]:port". Parsing and
 * resolution only; binding is the server's job.
 * Any thread, no state; netaddr_resolve may block (getaddrinfo), so it is for
 * boot, not a loop. */
#ifndef RELAY_NETADDR_H
#define RELAY_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Splits addr into host (brackets removed, may be empty) and port 1..65535.
 * Returns 0, or -1 with a short reason ("missing port in address", ...)
 * written to err. */
int netaddr_split(const char *addr, char *host, size_t host_cap, int *port, char *err,
                  size_t err_cap);

/* Resolves addr into *out (numeric hosts without DNS; an empty host means
 * 0.0.0.0). Returns 0, or -1 with a reason in err. */
int netaddr_resolve(const char *addr, struct sockaddr_storage *out, char *err, size_t err_cap);

/* Writes an IPv4/IPv6 socket address as "1.2.3.4:80" or "[::1]:80". */
void netaddr_format(const struct sockaddr *sa, char *out, size_t cap);

#endif
