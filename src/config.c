/* config.c — the flag table and a parser with Go `flag` package syntax
 * (spec §6.1), plus Go duration parsing and formatting. Values are only
 * parsed and range-checked here; what they mean for the process (listener
 * rules, environment, production checks) is decided at startup. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

enum flag_type { F_STRING, F_BOOL, F_INT, F_DURATION };

struct flag {
    const char *name;
    enum flag_type type;
    size_t offset;
    const char *usage;
};

#define FS(n, field, u) {n, F_STRING, offsetof(struct config, field), u}
#define FB(n, field, u) {n, F_BOOL, offsetof(struct config, field), u}
#define FI(n, field, u) {n, F_INT, offsetof(struct config, field), u}
#define FD(n, field, u) {n, F_DURATION, offsetof(struct config, field), u}

/* Sorted by name: usage prints in this order, as Go does. */
static const struct flag flags[] = {
    FS("cert-cache", cert_cache, "directory for ACME certificates (created 0700)"),
    FB("check-config", check_config, "validate flags and environment, then exit 0 or 2 without binding"),
    FD("close-timeout", close_timeout_ns, "how long to wait for the peer's close frame before dropping TCP"),
    FD("conflict-probe-timeout", conflict_probe_timeout_ns, "how long an incumbent binary has to answer the liveness ping"),
    FS("domain", domain, "public domain for ACME autocert (required unless --insecure-listen)"),
    FD("drain-timeout", drain_timeout_ns, "graceful shutdown deadline"),
    FD("grace-period", grace_period_ns, "how long a departed binary's server-id stays reserved"),
    FD("header-timeout", header_timeout_ns, "time allowed to receive a request head"),
    FD("heartbeat-interval", heartbeat_interval_ns, "time between WebSocket pings"),
    FD("heartbeat-timeout", heartbeat_timeout_ns, "time to wait for a pong before closing 1011"),
    FS("http-listen", http_listen, "ACME HTTP-01 listen address (autocert mode)"),
    FS("https-listen", https_listen, "HTTPS listen address (autocert mode)"),
    FB("https-proxy-protocol", https_proxy_protocol, "require a PROXY protocol v2 header before TLS on the HTTPS listener"),
    FD("idle-timeout", idle_timeout_ns, "keep-alive idle time before an HTTP connection is closed"),
    FS("insecure-listen", insecure_listen, "plain-HTTP listen address (host:port) for behind-proxy mode; disables autocert"),
    FS("log-format", log_format, "log line format: text or json"),
    FI("max-connections", max_connections, "global cap on live WebSocket connections; must be > 0"),
    FI("max-header-bytes", max_header_bytes, "largest request head accepted (HTTP 431 above)"),
    FI("max-message-bytes", max_message_bytes, "largest WebSocket message accepted (close 1009 above)"),
    FI("max-phones-per-server", max_phones_per_server, "phones allowed per server-id (<= 0: no cap)"),
    FD("message-deadline", message_deadline_ns, "time allowed for a started message to complete"),
    FS("metrics-listen", metrics_listen, "loopback address for /metrics; empty disables"),
    FI("phone-backlog-bytes", phone_backlog_bytes, "per-phone outbox budget in bytes"),
    FD("request-timeout", request_timeout_ns, "time allowed to receive a whole request"),
    FB("trust-x-forwarded-for", trust_x_forwarded_for, "key rate limiting on X-Forwarded-For (only behind a trusted proxy)"),
    FB("version", version, "print the version and exit"),
    FI("workers", workers, "event-loop shards (0 = one per CPU)"),
    FD("write-timeout", write_timeout_ns, "time without write progress before a connection is dropped"),
};

_Static_assert(sizeof flags / sizeof flags[0] <= 64, "explicit_mask holds 64 flags");

void config_defaults(struct config *cfg, const char *home)
{
    static char cache[4096];
    memset(cfg, 0, sizeof *cfg);
    if (home && *home)
        snprintf(cache, sizeof cache, "%s/.pyrycode-relay/certs", home);
    else
        snprintf(cache, sizeof cache, ".pyrycode-relay/certs");
    cfg->domain = "";
    cfg->cert_cache = cache;
    cfg->insecure_listen = "";
    cfg->https_listen = ":443";
    cfg->http_listen = ":80";
    cfg->metrics_listen = "127.0.0.1:9090";
    cfg->max_connections = 20;
    cfg->log_format = "text";
    cfg->max_message_bytes = 262144;
    cfg->max_header_bytes = 1 << 20;
    cfg->max_phones_per_server = 16;
    cfg->phone_backlog_bytes = 4 << 20;
    cfg->workers = 0;
    cfg->message_deadline_ns = 30 * NS_PER_S;
    cfg->heartbeat_interval_ns = 30 * NS_PER_S;
    cfg->heartbeat_timeout_ns = 30 * NS_PER_S;
    cfg->write_timeout_ns = 10 * NS_PER_S;
    cfg->drain_timeout_ns = 10 * NS_PER_S;
    cfg->grace_period_ns = 30 * NS_PER_S;
    cfg->conflict_probe_timeout_ns = 10 * NS_PER_S;
    cfg->header_timeout_ns = 5 * NS_PER_S;
    cfg->request_timeout_ns = 60 * NS_PER_S;
    cfg->idle_timeout_ns = 120 * NS_PER_S;
    cfg->close_timeout_ns = 5 * NS_PER_S;
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static void *field(struct config *cfg, const struct flag *f)
{
    return (char *)cfg + f->offset;
}

static const void *cfield(const struct config *cfg, const struct flag *f)
{
    return (const char *)cfg + f->offset;
}

/* Go strconv.ParseBool. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Go strconv.ParseInt(s, 0, 64): sign, then 0x/0o/0b/0 prefixes;
 * underscores only between digits after a base prefix. Returns 0, -1
 * (syntax) or -2 (range). */
static int parse_int(const char *s, int64_t *out)
{
    bool neg = false;
    int base = 10;
    const char *p = s;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    bool prefixed = false;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        base = 16, p += 2, prefixed = true;
    else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O'))
        base = 8, p += 2, prefixed = true;
    else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B'))
        base = 2, p += 2, prefixed = true;
    else if (p[0] == '0' && p[1])
        base = 8, p += 1, prefixed = true;
    if (!*p)
        return -1;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool last_us = true;
    for (; *p; p++) {
        if (*p == '_') {
            if (!prefixed || last_us)
                return -1;
            last_us = true;
            continue;
        }
        int d = *p >= '0' && *p <= '9'   ? *p - '0'
                : *p >= 'a' && *p <= 'z' ? *p - 'a' + 10
                : *p >= 'A' && *p <= 'Z' ? *p - 'A' + 10
                                         : 99;
        if (d >= base)
            return -1;
        if (v > (limit - (uint64_t)d) / (uint64_t)base)
            return -2;
        v = v * (uint64_t)base + (uint64_t)d;
        last_us = false;
    }
    if (last_us)
        return -1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int set_value(struct config *cfg, const struct flag *f, const char *val, FILE *err,
                     const char *dash)
{
    int rc = 0;
    switch (f->type) {
    case F_STRING:
        *(const char **)field(cfg, f) = val;
        return 0;
    case F_BOOL:
        rc = parse_bool(val, field(cfg, f));
        break;
    case F_INT:
        rc = parse_int(val, field(cfg, f));
        break;
    case F_DURATION:
        rc = duration_parse(val, field(cfg, f));
        break;
    }
    if (rc != 0) {
        fprintf(err, "invalid value \"%s\" for flag %s%s: %s\n", val, dash, f->name,
                rc == -2 ? "value out of range" : "parse error");
        return -1;
    }
    return 0;
}

static enum config_result usage_error(FILE *err)
{
    config_usage(err);
    return CONFIG_ERROR;
}

enum config_result config_parse(struct config *cfg, int argc, char **argv, FILE *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0')
            break; /* first positional argument ends the flags */
        const char *name = a + 1;
        if (*name == '-') {
            name++;
            if (*name == '\0')
                break; /* "--" terminator */
        }
        if (*name == '-' || *name == '=') {
            fprintf(err, "bad flag syntax: %s\n", a);
            return usage_error(err);
        }
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag *f = find_flag(name, nlen);
        if (!f) {
            if (str_eq(name, nlen, "h") || str_eq(name, nlen, "help")) {
                config_usage(err);
                return CONFIG_HELP;
            }
            fprintf(err, "flag provided but not defined: -%.*s\n", (int)nlen, name);
            return usage_error(err);
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (f->type == F_BOOL) {
            val = "true";
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(err, "flag needs an argument: -%s\n", f->name);
            return usage_error(err);
        }
        if (set_value(cfg, f, val, err, "-") != 0)
            return usage_error(err);
        cfg->explicit_mask |= 1ULL << (f - flags);
    }
    return CONFIG_OK;
}

bool config_flag_given(const struct config *cfg, const char *name)
{
    const struct flag *f = find_flag(name, strlen(name));
    return f && (cfg->explicit_mask & (1ULL << (f - flags)));
}

int config_validate(const struct config *cfg, FILE *err)
{
    enum log_format fmt;
    char buf[64];
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const struct flag *f = &flags[i];
        if (f->type == F_DURATION && *(const int64_t *)cfield(cfg, f) <= 0) {
            duration_format(buf, sizeof buf, *(const int64_t *)cfield(cfg, f));
            fprintf(err, "invalid --%s \"%s\": must be a positive duration\n", f->name, buf);
            return -1;
        }
    }
    static const char *const size_names[] = {"max-message-bytes", "max-header-bytes",
                                             "phone-backlog-bytes"};
    const int64_t sizes[] = {cfg->max_message_bytes, cfg->max_header_bytes,
                             cfg->phone_backlog_bytes};
    for (size_t i = 0; i < 3; i++) {
        if (sizes[i] <= 0 || sizes[i] > (int64_t)UINT32_MAX) {
            fprintf(err, "invalid --%s %lld: must be between 1 and %u\n", size_names[i],
                    (long long)sizes[i], UINT32_MAX);
            return -1;
        }
    }
    if (cfg->workers < 0 || cfg->workers > 256) {
        fprintf(err, "invalid --workers %lld: must be between 0 and 256\n",
                (long long)cfg->workers);
        return -1;
    }
    if (log_format_parse(cfg->log_format, &fmt) != 0) {
        fprintf(err, "invalid --log-format \"%s\": must be text or json\n", cfg->log_format);
        return -1;
    }
    return 0;
}

void config_usage(FILE *out)
{
    struct config def;
    char buf[64];
    config_defaults(&def, getenv("HOME"));
    fprintf(out, "Usage of pyrycode-relay:\n");
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const struct flag *f = &flags[i];
        static const char *const types[] = {"string", "", "int", "duration"};
        fprintf(out, "  -%s%s%s\n    \t%s", f->name, f->type == F_BOOL ? "" : " ",
                types[f->type], f->usage);
        const void *v = cfield(&def, f);
        if (f->type == F_STRING && **(const char *const *)v)
            fprintf(out, " (default \"%s\")", *(const char *const *)v);
        else if (f->type == F_INT && *(const int64_t *)v)
            fprintf(out, " (default %lld)", (long long)*(const int64_t *)v);
        else if (f->type == F_DURATION && *(const int64_t *)v) {
            duration_format(buf, sizeof buf, *(const int64_t *)v);
            fprintf(out, " (default %s)", buf);
        }
        fprintf(out, "\n");
    }
}

/* ---- durations (Go time.ParseDuration / Duration.String) --------------- */

static int unit_ns(const char *s, size_t *len, uint64_t *ns)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {{"ns", 1},
                 {"us", 1000},
                 {"\xc2\xb5s", 1000},
                 {"\xce\xbcs", 1000},
                 {"ms", 1000000},
                 {"s", 1000000000ULL},
                 {"m", 60000000000ULL},
                 {"h", 3600000000000ULL}};
    size_t n = 0;
    while (s[n] && s[n] != '.' && !(s[n] >= '0' && s[n] <= '9'))
        n++;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strlen(units[i].name) == n && strncmp(s, units[i].name, n) == 0) {
            *len = n;
            *ns = units[i].ns;
            return 0;
        }
    }
    return -1;
}

int duration_parse(const char *s, int64_t *ns)
{
    const char *p = s;
    bool neg = false;
    uint64_t total = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (strcmp(p, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (!*p)
        return -1;
    while (*p) {
        uint64_t whole = 0, frac = 0, scale = 1;
        bool digits = false;
        if (!(*p == '.' || (*p >= '0' && *p <= '9')))
            return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (whole > (UINT64_MAX - 9) / 10)
                return -1;
            whole = whole * 10 + (uint64_t)(*p - '0');
            digits = true;
        }
        if (*p == '.') {
            p++;
            for (; *p >= '0' && *p <= '9'; p++) {
                digits = true;
                if (scale < 1000000000000000000ULL) { /* further digits cannot matter */
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    scale *= 10;
                }
            }
        }
        if (!digits)
            return -1;
        size_t ulen;
        uint64_t unit;
        if (unit_ns(p, &ulen, &unit) != 0)
            return -1;
        p += ulen;
        if (whole > ((uint64_t)1 << 63) / unit)
            return -1;
        uint64_t v = whole * unit;
        /* fraction * unit / scale without overflow: unit <= 3.6e12, frac < scale */
        long double f = (long double)frac * (long double)unit / (long double)scale;
        v += (uint64_t)f;
        if (v > ((uint64_t)1 << 63) || total > ((uint64_t)1 << 63) - v)
            return -1;
        total += v;
    }
    if (total > (uint64_t)INT64_MAX && !(neg && total == (uint64_t)1 << 63))
        return -1;
    *ns = neg ? (int64_t)(0 - total) : (int64_t)total;
    return 0;
}

/* Writes v/unit with up to digits fractional digits, trailing zeros cut. */
static size_t fmt_frac(char *buf, uint64_t v, uint64_t unit)
{
    uint64_t whole = v / unit, frac = v % unit;
    int n = sprintf(buf, "%llu", (unsigned long long)whole);
    if (frac) {
        char digits[24];
        size_t dl = 0;
        for (uint64_t u = unit / 10; u >= 1; u /= 10) /* leading zeros included */
            digits[dl++] = (char)('0' + (frac / u) % 10);
        digits[dl] = '\0';
        while (dl && digits[dl - 1] == '0')
            digits[--dl] = '\0';
        n += sprintf(buf + n, ".%s", digits);
    }
    return (size_t)n;
}

int duration_format(char *out, size_t cap, int64_t ns)
{
    char buf[64];
    size_t n = 0;
    uint64_t u = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    if (ns < 0)
        buf[n++] = '-';
    if (u == 0) {
        n += (size_t)sprintf(buf + n, "0s");
    } else if (u < 1000) {
        n += (size_t)sprintf(buf + n, "%lluns", (unsigned long long)u);
    } else if (u < 1000000) {
        n += fmt_frac(buf + n, u, 1000);
        n += (size_t)sprintf(buf + n, "\xc2\xb5s");
    } else if (u < 1000000000) {
        n += fmt_frac(buf + n, u, 1000000);
        n += (size_t)sprintf(buf + n, "ms");
    } else {
        uint64_t h = u / 3600000000000ULL, rem = u % 3600000000000ULL;
        uint64_t m = rem / 60000000000ULL, sns = rem % 60000000000ULL;
        if (h)
            n += (size_t)sprintf(buf + n, "%lluh", (unsigned long long)h);
        if (h || m)
            n += (size_t)sprintf(buf + n, "%llum", (unsigned long long)m);
        n += fmt_frac(buf + n, sns, 1000000000ULL);
        buf[n++] = 's';
        buf[n] = '\0';
    }
    return snprintf(out, cap, "%s", buf);
}
