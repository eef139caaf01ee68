/* checks.c — startup refusals (docs/features/operator-contract.md) as pure functions over
 * injected inputs (an env reader, the text of /proc/self/status, address
 * strings), so every matrix row is unit-testable. The error texts are the
 * reference relay's, word for word; values of secret variables are never
 * copied into them. */
#include "ops/checks.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "push/fcm.h"
#include "base/log.h"
#include "base/netaddr.h"

#define ENV_PRODUCTION      "PYRYCODE_RELAY_PRODUCTION"
#define ENV_SINGLE_INSTANCE "PYRYCODE_RELAY_SINGLE_INSTANCE"
#define ENV_FCM             "PYRYCODE_RELAY_FCM_CREDENTIALS"

bool checks_env_is_one(checks_getenv_fn get, const char *name)
{
    const char *v = get(name);
    return v && strcmp(v, "1") == 0;
}

/* One row of the env contract: a set value must be exactly "1". */
static bool one_or_unset(checks_getenv_fn get, const char *key, struct env_failure *out)
{
    const char *v = get(key);
    char q[96];
    if (!v || strcmp(v, "1") == 0)
        return true;
    log_go_quote(q, sizeof q, v, strlen(v));
    out->key = key;
    snprintf(out->reason, sizeof out->reason, "malformed-value: expected \"1\" or unset, got %s",
             q);
    return false;
}

int checks_env(checks_getenv_fn get, struct env_failure *out)
{
    memset(out, 0, sizeof *out);
    bool ok = one_or_unset(get, ENV_PRODUCTION, out) && one_or_unset(get, ENV_SINGLE_INSTANCE, out);
    if (ok) {
        const char *fcm = get(ENV_FCM);
        if (fcm && !checks_fcm_credentials_valid(fcm)) {
            out->key = ENV_FCM;
            snprintf(out->reason, sizeof out->reason,
                     "malformed-value: not a service-account JSON key (value withheld)");
            ok = false;
        }
    }
    if (ok)
        return 0;
    snprintf(out->err, sizeof out->err, "relay: invalid env-var config: %s: %s", out->key,
             out->reason);
    return -1;
}

int checks_single_instance(checks_getenv_fn get, char *err, size_t cap)
{
    const char *fly = get("FLY_APP_NAME");
    if (!fly || !*fly || checks_env_is_one(get, ENV_SINGLE_INSTANCE))
        return 0;
    snprintf(err, cap,
             "relay: multi-instance deploy detected; set PYRYCODE_RELAY_SINGLE_INSTANCE=1 to "
             "bypass");
    return -1;
}

bool checks_fcm_credentials_valid(const char *value)
{
    struct fcm_creds c;
    if (fcm_creds_parse(value, strlen(value), &c) != 0)
        return false;
    fcm_creds_free(&c);
    return true;
}

int checks_parse_capeff(const char *status, uint64_t *mask)
{
    const char *line = status;
    while (line && strncmp(line, "CapEff:", 7) != 0) {
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    if (!line)
        return -1;
    const char *p = line + 7;
    while (*p == ' ' || *p == '\t')
        p++;
    uint64_t v = 0;
    size_t digits = 0;
    for (; *p && *p != '\n'; p++, digits++) {
        int d = (*p >= '0' && *p <= '9')   ? *p - '0'
                : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
                                           : -1;
        if (d < 0) {
            while (*p == ' ' || *p == '\t' || *p == '\r')
                p++;
            if (*p && *p != '\n')
                return -1; /* trailing junk */
            break;
        }
        v = v << 4 | (uint64_t)d;
    }
    if (digits == 0 || digits > 16)
        return -1;
    *mask = v;
    return 0;
}

static const char *const cap_names[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

const char *checks_cap_name(unsigned bit)
{
    return bit < sizeof cap_names / sizeof cap_names[0] ? cap_names[bit] : NULL;
}

int checks_capeff_allowed(uint64_t mask, char *err, size_t cap)
{
    uint64_t bad = mask & ~(1ULL << 10);
    if (!bad)
        return 0;
    int n = snprintf(err, cap, "relay: process has unexpected effective Linux capabilities: ");
    bool first = true;
    for (unsigned bit = 0; bit < 64 && n > 0 && (size_t)n < cap; bit++) {
        if (!(bad & (1ULL << bit)))
            continue;
        const char *name = checks_cap_name(bit);
        n += name
                 ? snprintf(err + n, cap - (size_t)n, "%s%s (bit %u)", first ? "" : ", ", name, bit)
                 : snprintf(err + n, cap - (size_t)n, "%sbit %u", first ? "" : ", ", bit);
        first = false;
    }
    if (n > 0 && (size_t)n < cap)
        snprintf(err + n, cap - (size_t)n,
                 "; allowlist: [CAP_NET_BIND_SERVICE (bit 10)]; drop with --cap-drop=ALL "
                 "--cap-add=NET_BIND_SERVICE or equivalent");
    return -1;
}

int checks_metrics_addr(const char *addr, char *err, size_t cap)
{
    char host[256], why[160];
    int port;
    struct in_addr v4;
    struct in6_addr v6;
    if (!*addr)
        return 0;
    if (netaddr_split(addr, host, sizeof host, &port, why, sizeof why) != 0) {
        snprintf(err, cap, "relay: invalid metrics listen address %s: %s", addr, why);
        return -1;
    }
    if (inet_pton(AF_INET, host, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127)
        return 0;
    if (inet_pton(AF_INET6, host, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6))
        return 0;
    snprintf(err, cap,
             "relay: metrics listener bind address must be a loopback IP literal (got %s)", addr);
    return -1;
}

int checks_readable_file(const char *flag, const char *path, char *err, size_t cap)
{
    struct stat st;
    if (!*path)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, cap, "relay: %s %s: cannot read the file: %s", flag, path, strerror(errno));
        return -1;
    }
    bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!regular) {
        snprintf(err, cap, "relay: %s %s: not a regular file", flag, path);
        return -1;
    }
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

static size_t list_ports(char *out, size_t cap, const int *ports, size_t n)
{
    int sorted[16];
    size_t k = n < 16 ? n : 16, len = 0;
    memcpy(sorted, ports, k * sizeof *ports);
    qsort(sorted, k, sizeof *sorted, cmp_int);
    len += (size_t)snprintf(out, cap, "[");
    for (size_t i = 0; i < k && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%d", i ? " " : "", sorted[i]);
    if (len < cap)
        len += (size_t)snprintf(out + len, cap - len, "]");
    return len;
}

int checks_ports(const int *actual, size_t nactual, const int *expected, size_t nexpected,
                 char *err, size_t cap)
{
    int surplus[16];
    size_t ns = 0;
    for (size_t i = 0; i < nactual && ns < 16; i++) {
        bool ok = false;
        for (size_t j = 0; j < nexpected; j++)
            ok = ok || actual[i] == expected[j];
        if (!ok)
            surplus[ns++] = actual[i];
    }
    if (!ns)
        return 0;
    char a[128], e[128];
    list_ports(a, sizeof a, surplus, ns);
    list_ports(e, sizeof e, expected, nexpected);
    snprintf(err, cap,
             "relay: process is about to bind a TCP port outside the expected set: unexpected "
             "ports %s; expected ports %s",
             a, e);
    return -1;
}
