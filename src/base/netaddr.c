/* netaddr.c — host:port parsing with Go's rules (bracketed IPv6, empty host
 * = all interfaces, port must be a number 1..65535) and resolution to a
 * sockaddr. Hostnames go through getaddrinfo; nothing is bound here. */
#include "base/netaddr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int netaddr_split(const char *addr, char *host, size_t host_cap, int *port, char *err,
                  size_t err_cap)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hlen;
    if (!colon) {
        snprintf(err, err_cap, "address %s: missing port in address", addr);
        return -1;
    }
    hlen = (size_t)(colon - addr);
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end + 1 != colon) {
            snprintf(err, err_cap, "address %s: missing ']' in address", addr);
            return -1;
        }
        h = addr + 1;
        hlen = (size_t)(end - h);
    } else if (memchr(addr, ':', hlen)) {
        snprintf(err, err_cap, "address %s: too many colons in address", addr);
        return -1;
    }
    if (hlen >= host_cap) {
        snprintf(err, err_cap, "address %s: host too long", addr);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    const char *p = colon + 1;
    char *end;
    long v = strtol(p, &end, 10);
    if (*p == '\0' || *end != '\0' || *p == '-' || *p == '+' || v < 1 || v > 65535) {
        snprintf(err, err_cap, "address %s: invalid port %s (must be 1-65535)", addr, p);
        return -1;
    }
    *port = (int)v;
    return 0;
}

int netaddr_resolve(const char *addr, struct sockaddr_storage *out, char *err, size_t err_cap)
{
    char host[256];
    int port;
    if (netaddr_split(addr, host, sizeof host, &port, err, err_cap) != 0)
        return -1;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (host[0] == '\0' || inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, err_cap, "address %s: cannot resolve host %s: %s", addr, host,
                 gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (out->ss_family == AF_INET)
        v4->sin_port = htons((uint16_t)port);
    else
        v6->sin6_port = htons((uint16_t)port);
    return 0;
}

void netaddr_format(const struct sockaddr *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        port = ntohs(v4->sin_port);
        snprintf(out, cap, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        port = ntohs(v6->sin6_port);
        snprintf(out, cap, "[%s]:%d", host, port);
    } else {
        snprintf(out, cap, "?");
    }
}
