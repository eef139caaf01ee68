/* config.c — the flag table and a parser with Go `flag` package semantics
 * (docs/operations.md), plus Go duration parsing and formatting. One table gives each
 * flag's name, type, field, default and usage; defaults, parsing, usage and
 * explicit-flag tracking all read it. Values are only parsed and sanity
 * checked here: what they mean for the process (listener rules, environment,
 * production checks, --max-connections) is decided at startup. It reads no
 * environment variables: $HOME is passed in by the caller. */
#include "base/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

enum flag_type { F_STRING, F_BOOL, F_INT, F_DURATION };

struct flag {
    const char *name;
    enum flag_type type;
    size_t offset;
    const char *def; /* default in flag syntax; NULL: computed (cert-cache) */
    const char *usage;
};

#define F(n, t, field, d, u)                                                                       \
    {                                                                                              \
        n, t, offsetof(struct config, field), d, u                                                 \
    }

/* Sorted by name: usage prints in this order, as Go does. */
static const struct flag flags[] = {
    F("acme-ca-bundle", F_STRING, acme_ca_bundle, "",
      "PEM file of CA certificates trusted for the ACME directory (default: system store)"),
    F("acme-directory", F_STRING, acme_directory, "https://acme-v02.api.letsencrypt.org/directory",
      "ACME directory URL (RFC 8555)"),
    F("acme-renew-before", F_DURATION, acme_renew_before_ns, "720h",
      "renew the ACME certificate this long before it expires"),
    F("acme-retry-interval", F_DURATION, acme_retry_interval_ns, "1m",
      "wait between failed ACME issuance attempts (doubles up to 1h)"),
    F("cert-cache", F_STRING, cert_cache, NULL,
      "directory where ACME certificates are cached (created with mode 0700)"),
    F("check-config", F_BOOL, check_config, "false",
      "validate flags and environment, then exit 0 or 2 without listening"),
    F("close-timeout", F_DURATION, close_timeout_ns, "5s",
      "how long to wait for the peer's close frame before dropping the connection"),
    F("cluster-connect-timeout", F_DURATION, cluster_connect_timeout_ns, "30s",
      "how long startup retries the cluster bus before giving up (exit 1)"),
    F("cluster-ctl-threads", F_INT, cluster_ctl_threads, "1",
      "threads that run the cluster's KV operations (claims, releases); the first also keeps "
      "the node lease (at most 16)"),
    F("cluster-lease", F_DURATION, cluster_lease_ns, "20s",
      "cluster node lease: a node cut off from the bus stops serving within it (at least 6s)"),
    F("cluster-name", F_STRING, cluster_name, "main",
      "cluster name: relays with the same name and bus share server-ids (A-Z a-z 0-9 _ -)"),
    F("cluster-nats", F_STRING, cluster_nats, "",
      "NATS URLs of the cluster bus, comma-separated (nats://host:4222,...); empty: cluster off"),
    F("cluster-nats-ca", F_STRING, cluster_nats_ca, "",
      "PEM file of CA certificates that verify the cluster bus's servers (added to the system "
      "store); turns TLS on"),
    F("cluster-nats-cert", F_STRING, cluster_nats_cert, "",
      "PEM client certificate chain for the cluster bus (mutual TLS, with --cluster-nats-key); "
      "turns TLS on"),
    F("cluster-nats-key", F_STRING, cluster_nats_key, "",
      "PEM private key for --cluster-nats-cert"),
    F("cluster-node-name", F_STRING, cluster_node_name, "",
      "this relay's name in the cluster (empty: the host name)"),
    F("cluster-replicas", F_INT, cluster_replicas, "3",
      "replicas of the cluster's KV streams (1 for a one-server bus, at most 5)"),
    F("config-file", F_STRING, config_file, "",
      "file of reloadable settings (log-level, max-connections, max-phones-per-server, "
      "rate-limit-burst, rate-limit-refill), re-read on SIGHUP"),
    F("conflict-probe-timeout", F_DURATION, conflict_probe_timeout_ns, "10s",
      "how long a connected binary has to answer the liveness probe when its server-id is claimed"),
    F("domain", F_STRING, domain, "",
      "public domain for ACME autocert (required unless --insecure-listen is set)"),
    F("drain-timeout", F_DURATION, drain_timeout_ns, "10s",
      "how long graceful shutdown waits for connections to finish"),
    F("fcm-base-url", F_STRING, fcm_base_url, "https://fcm.googleapis.com",
      "base URL of the FCM HTTP v1 API"),
    F("fcm-project", F_STRING, fcm_project, "pyrycode-mobile",
      "Firebase project id for push wakes"),
    F("grace-period", F_DURATION, grace_period_ns, "30s",
      "how long a departed binary's server-id stays reserved for it"),
    F("header-timeout", F_DURATION, header_timeout_ns, "5s",
      "time allowed for a client to send its request headers"),
    F("health-listen", F_STRING, health_listen, "",
      "plain-HTTP address serving only GET /healthz, for platform health checks; empty disables"),
    F("heartbeat-interval", F_DURATION, heartbeat_interval_ns, "30s",
      "time between WebSocket pings"),
    F("heartbeat-timeout", F_DURATION, heartbeat_timeout_ns, "30s",
      "time to wait for a pong before closing the connection"),
    F("http-listen", F_STRING, http_listen, ":80",
      "listen address for ACME HTTP-01 challenges (autocert mode)"),
    F("https-listen", F_STRING, https_listen, ":443", "HTTPS listen address (autocert mode)"),
    F("https-proxy-protocol", F_BOOL, https_proxy_protocol, "false",
      "require a PROXY protocol v2 header before TLS on the HTTPS listener"),
    F("idle-timeout", F_DURATION, idle_timeout_ns, "120s",
      "how long an idle keep-alive HTTP connection is kept open"),
    F("insecure-listen", F_STRING, insecure_listen, "",
      "plain-HTTP listen address (host:port) for behind-proxy mode; disables autocert"),
    F("log-format", F_STRING, log_format, "text", "log line format: text or json"),
    F("log-level", F_STRING, log_level, "info",
      "lowest level logged: debug, info, warn or error (reloadable)"),
    F("max-bytes-per-second-per-server", F_INT, max_bytes_per_second_per_server, "0",
      "bytes a server-id's binary and phones may send per second, both ways together; over it "
      "their sockets are not read until the budget refills (0: no limit)"),
    F("max-connections", F_INT, max_connections, "20",
      "cap on live WebSocket connections; must be positive"),
    F("max-frames-per-second", F_INT, max_frames_per_second, "10000",
      "WebSocket frames a connection may send per second before it is not read for a while "
      "(0: no limit)"),
    F("max-header-bytes", F_INT, max_header_bytes, "1048576",
      "largest request header block accepted, in bytes"),
    F("max-header-bytes-total", F_INT, max_header_bytes_total, "67108864",
      "bytes all unfinished request heads may hold together; over it the largest is refused "
      "with 431"),
    F("max-message-bytes", F_INT, max_message_bytes, "262144",
      "largest WebSocket message accepted, in bytes"),
    F("max-phones-per-server", F_INT, max_phones_per_server, "16",
      "phones allowed per server-id (0 or less: no cap)"),
    F("message-deadline", F_DURATION, message_deadline_ns, "30s",
      "time allowed for a started WebSocket message to arrive in full"),
    F("metrics-listen", F_STRING, metrics_listen, "127.0.0.1:9090",
      "loopback address for the /metrics listener; empty disables it"),
    F("outbound-ca-bundle", F_STRING, outbound_ca_bundle, "",
      "PEM file of CA certificates trusted for outbound HTTPS (default: system store)"),
    F("phone-backlog-bytes", F_INT, phone_backlog_bytes, "4194304",
      "bytes queued for a slow phone before it is disconnected"),
    F("proxy-header-timeout", F_DURATION, proxy_header_timeout_ns, "5s",
      "time allowed for the PROXY protocol v2 header (with --https-proxy-protocol)"),
    F("push-timeout", F_DURATION, push_timeout_ns, "10s",
      "time allowed for each outbound push HTTP call (token fetch, FCM send)"),
    F("rate-limit-burst", F_INT, rate_limit_burst, "20",
      "WebSocket upgrades an IP may make at once before being limited (0 disables)"),
    F("rate-limit-refill", F_DURATION, rate_limit_refill_ns, "6s",
      "time for one rate-limit token to come back"),
    F("request-timeout", F_DURATION, request_timeout_ns, "60s",
      "time allowed for a client to send a whole request"),
    F("tls-cert", F_STRING, tls_cert, "",
      "PEM certificate chain to serve instead of ACME (with --tls-key; reloaded on SIGHUP)"),
    F("tls-handshake-timeout", F_DURATION, tls_handshake_timeout_ns, "10s",
      "time allowed for a TLS handshake to complete"),
    F("tls-key", F_STRING, tls_key, "", "PEM private key for --tls-cert"),
    F("trust-x-forwarded-for", F_BOOL, trust_x_forwarded_for, "false",
      "rate-limit by X-Forwarded-For (only behind a proxy you trust)"),
    F("version", F_BOOL, version, "false", "print the version and exit"),
    F("workers", F_INT, workers, "0", "event-loop threads (0: one per CPU)"),
    F("write-timeout", F_DURATION, write_timeout_ns, "10s",
      "time a write may stall before the connection is dropped"),
};

#define NFLAGS (sizeof flags / sizeof flags[0])
_Static_assert(NFLAGS <= 64, "explicit_mask holds 64 flags");

/* What --cert-cache defaults to; rebuilt by config_defaults. */

enum { PARSE_OK = 0, PARSE_SYNTAX = -1, PARSE_RANGE = -2 };

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0)
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
    static const char *const words[] = {"1", "t", "T", "TRUE",  "true",  "True",
                                        "0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i < 6;
            return PARSE_OK;
        }
    }
    return PARSE_SYNTAX;
}

static int lower(int c)
{
    return c | 0x20;
}

/* Go's underscoreOK: '_' only between digits or after a base prefix. */
static bool underscores_ok(const char *s)
{
    char saw = '^';
    bool hexd = false;
    if (*s == '+' || *s == '-')
        s++;
    if (s[0] == '0' && s[1] && strchr("box", lower(s[1]))) {
        hexd = lower(s[1]) == 'x';
        saw = '0';
        s += 2;
    }
    for (; *s; s++) {
        bool digit = (*s >= '0' && *s <= '9') || (hexd && lower(*s) >= 'a' && lower(*s) <= 'f');
        if (digit) {
            saw = '0';
        } else if (*s == '_') {
            if (saw != '0')
                return false;
            saw = '_';
        } else {
            if (saw == '_')
                return false;
            saw = '!';
        }
    }
    return saw != '_';
}

/* Go strconv.ParseUint(s, 0, 64) on an unsigned body. */
static int parse_uint(const char *s, uint64_t *out)
{
    const char *s0 = s;
    unsigned base = 10;
    bool underscores = false;
    uint64_t n = 0;
    if (*s == '\0')
        return PARSE_SYNTAX;
    if (s[0] == '0') {
        bool pre = strlen(s) >= 3 && strchr("box", lower(s[1]));
        base = !pre ? 8 : lower(s[1]) == 'b' ? 2 : lower(s[1]) == 'o' ? 8 : 16;
        s += pre ? 2 : 1;
    }
    for (; *s; s++) {
        unsigned d;
        if (*s == '_') {
            underscores = true;
            continue;
        }
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (lower(*s) >= 'a' && lower(*s) <= 'z')
            d = (unsigned)(lower(*s) - 'a' + 10);
        else
            return PARSE_SYNTAX;
        if (d >= base)
            return PARSE_SYNTAX;
        if (n > (UINT64_MAX - d) / base)
            return PARSE_RANGE;
        n = n * base + d;
    }
    if (underscores && !underscores_ok(s0))
        return PARSE_SYNTAX;
    *out = n;
    return PARSE_OK;
}

/* Go strconv.ParseInt(s, 0, 64): optional sign, then ParseUint's syntax. */
static int parse_int(const char *s, int64_t *out)
{
    bool neg = false;
    uint64_t u;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    int rc = parse_uint(s, &u);
    if (rc != PARSE_OK)
        return rc;
    if (u > (uint64_t)INT64_MAX + neg)
        return PARSE_RANGE;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return PARSE_OK;
}

/* Stores val into f's field. Returns PARSE_OK, PARSE_SYNTAX or PARSE_RANGE. */
static int set_value(struct config *cfg, const struct flag *f, const char *val)
{
    switch (f->type) {
    case F_STRING:
        *(const char **)field(cfg, f) = val;
        return PARSE_OK;
    case F_BOOL:
        return parse_bool(val, field(cfg, f));
    case F_INT:
        return parse_int(val, field(cfg, f));
    case F_DURATION:
        return duration_parse(val, field(cfg, f)) == 0 ? PARSE_OK : PARSE_SYNTAX;
    }
    return PARSE_SYNTAX;
}

/* Fills cfg from the table alone (cert-cache from its computed default). */
static void apply_defaults(struct config *cfg, const char *cert_cache)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->cert_cache_default, sizeof cfg->cert_cache_default, "%s", cert_cache);
    for (size_t i = 0; i < NFLAGS; i++)
        set_value(cfg, &flags[i], flags[i].def ? flags[i].def : cfg->cert_cache_default);
}

void config_defaults(struct config *cfg, const char *home)
{
    char def[sizeof cfg->cert_cache_default];
    if (home && *home)
        snprintf(def, sizeof def, "%s/.pyrycode-relay/certs", home);
    else
        snprintf(def, sizeof def, ".pyrycode-relay/certs");
    apply_defaults(cfg, def);
}

#define QUOTE_CAP 600

/* s as Go's %q prints it (strconv.Quote), into buf (QUOTE_CAP bytes). */
static const char *quote_into(char *buf, const char *s)
{
    log_go_quote(buf, QUOTE_CAP, s, strlen(s));
    return buf;
}

/* A quoted copy of s in a buffer of the enclosing block (no static
 * buffer, so two in one call do not clash). */
#define QUOTED(s) quote_into((char[QUOTE_CAP]){0}, (s))

__attribute__((format(printf, 3, 4))) static void set_err(struct config_error *e, const char *fix,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, sizeof e->err, fmt, ap);
    va_end(ap);
    snprintf(e->fix, sizeof e->fix, "%s", fix);
}

/* Edit distance between a[0..na) and b (insert, delete, substitute, swap
 * of neighbours), capped at 99. */
static size_t distance(const char *a, size_t na, const char *b)
{
    size_t nb = strlen(b);
    size_t d[3][65];
    if (na > 64 || nb > 64)
        return 99;
    for (size_t j = 0; j <= nb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t *cur = d[i % 3], *prev = d[(i - 1) % 3], *prev2 = d[(i + 1) % 3];
        cur[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = prev[j - 1] + cost;
            if (prev[j] + 1 < v)
                v = prev[j] + 1;
            if (cur[j - 1] + 1 < v)
                v = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < v)
                v = prev2[j - 2] + 1;
            cur[j] = v;
        }
    }
    return d[na % 3][nb];
}

const char *config_suggest(const char *name, size_t len)
{
    const char *best = NULL;
    size_t best_d = len / 3 > 2 ? len / 3 : 2; /* farther than this is no suggestion */
    for (size_t i = 0; i < NFLAGS; i++) {
        size_t d = distance(name, len, flags[i].name);
        size_t flen = strlen(flags[i].name);
        /* A case slip or a prefix ("--heartbeat") counts as close. */
        if (d > 0 && len >= 4 && len < flen && memcmp(flags[i].name, name, len) == 0)
            d = 1;
        if (flen == len && strncasecmp(flags[i].name, name, len) == 0)
            d = 0;
        if (d <= best_d && (!best || d < best_d)) {
            best = flags[i].name;
            best_d = d;
        }
    }
    return best;
}

/* What to write instead of a value of f's type. */
static void type_fix(char *out, size_t cap, const struct flag *f)
{
    switch (f->type) {
    case F_DURATION:
        snprintf(out, cap,
                 "pass --%s a duration: a number with a unit (ns, us, ms, s, m, h) such as %s, "
                 "500ms or 1m30s",
                 f->name, f->def);
        break;
    case F_INT:
        snprintf(out, cap, "pass --%s a whole number such as %s", f->name, f->def);
        break;
    case F_BOOL:
        snprintf(out, cap, "write --%s alone for true, or --%s=false (also 1/0, t/f)", f->name,
                 f->name);
        break;
    case F_STRING:
        snprintf(out, cap, "pass --%s a value", f->name);
        break;
    }
}

/* Sets f from val or reports Go's message for a bad value. */
static enum config_result set_flag(struct config *cfg, const struct flag *f, const char *val,
                                   struct config_error *e)
{
    char fix[256];
    int rc = set_value(cfg, f, val);
    if (rc == PARSE_OK) {
        cfg->explicit_mask |= 1ULL << (f - flags);
        return CONFIG_OK;
    }
    type_fix(fix, sizeof fix, f);
    set_err(e, fix, "invalid %svalue %s for %s-%s: %s", f->type == F_BOOL ? "boolean " : "",
            QUOTED(val), f->type == F_BOOL ? "" : "flag ", f->name,
            rc == PARSE_RANGE ? "value out of range" : "parse error");
    return CONFIG_ERROR;
}

/* Go's FlagSet.parseOne for argv[*i]. Returns CONFIG_OK with *stop set
 * when flags have ended, CONFIG_OK to go on, or HELP/ERROR. */
static enum config_result parse_one(struct config *cfg, int argc, char **argv, int *i, bool *stop,
                                    FILE *usage, struct config_error *e)
{
    const char *s = argv[*i];
    char fix[256];
    *stop = true;
    if (s[0] != '-' || s[1] == '\0')
        return CONFIG_OK; /* a positional argument or "-" */
    const char *name = s + 1 + (s[1] == '-');
    if (s[1] == '-' && s[2] == '\0') {
        (*i)++; /* "--" is consumed and ends the flags */
        return CONFIG_OK;
    }
    if (*name == '\0' || *name == '-' || *name == '=') {
        set_err(e, "write flags as --name=value or --name value", "bad flag syntax: %s", s);
        return CONFIG_ERROR;
    }
    (*i)++;
    const char *eq = strchr(name + 1, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    const struct flag *f = find_flag(name, nlen);
    if (!f && ((nlen == 1 && name[0] == 'h') || (nlen == 4 && memcmp(name, "help", 4) == 0))) {
        config_usage(usage, cfg);
        return CONFIG_HELP;
    }
    if (!f) {
        const char *near = config_suggest(name, nlen);
        if (near)
            snprintf(fix, sizeof fix, "did you mean --%s? (pyrycode-relay -h lists every flag)",
                     near);
        else
            snprintf(fix, sizeof fix, "pyrycode-relay -h lists every flag");
        set_err(e, fix, "flag provided but not defined: -%.*s", (int)nlen, name);
        return CONFIG_ERROR;
    }
    *stop = false;
    if (eq)
        return set_flag(cfg, f, eq + 1, e);
    if (f->type == F_BOOL)
        return set_flag(cfg, f, "true", e);
    if (*i >= argc) {
        snprintf(fix, sizeof fix, "give it a value: --%s=VALUE or --%s VALUE", f->name, f->name);
        set_err(e, fix, "flag needs an argument: -%s", f->name);
        return CONFIG_ERROR;
    }
    return set_flag(cfg, f, argv[(*i)++], e);
}

enum config_result config_parse(struct config *cfg, int argc, char **argv, FILE *usage,
                                struct config_error *e)
{
    int i = 1;
    bool stop = false;
    memset(e, 0, sizeof *e);
    while (i < argc && !stop) {
        enum config_result rc = parse_one(cfg, argc, argv, &i, &stop, usage, e);
        if (rc != CONFIG_OK)
            return rc;
    }
    return CONFIG_OK;
}

const char *config_prescan(int argc, char **argv, const char *name)
{
    const char *val = NULL;
    size_t nlen = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (s[0] != '-' || s[1] == '\0' || strcmp(s, "--") == 0)
            break;
        s += 1 + (s[1] == '-');
        if (strncmp(s, name, nlen) == 0 && s[nlen] == '=') {
            val = s + nlen + 1;
        } else if (strncmp(s, name, nlen) == 0 && s[nlen] == '\0' && i + 1 < argc) {
            val = argv[++i];
        } else if (!strchr(s, '=')) { /* skip the value of another flag */
            const struct flag *f = find_flag(s, strlen(s));
            if (f && f->type != F_BOOL)
                i++;
        }
    }
    return val;
}

bool config_flag_given(const struct config *cfg, const char *name)
{
    const struct flag *f = find_flag(name, strlen(name));
    return f && (cfg->explicit_mask & (1ULL << (f - flags)));
}

static int64_t int_field(const struct config *cfg, const char *name)
{
    return *(const int64_t *)cfield(cfg, find_flag(name, strlen(name)));
}

/* Every duration flag must be positive. */
static int validate_durations(const struct config *cfg, struct config_error *e)
{
    char buf[48], fix[256];
    for (size_t i = 0; i < NFLAGS; i++) {
        if (flags[i].type != F_DURATION)
            continue;
        int64_t v = *(const int64_t *)cfield(cfg, &flags[i]);
        if (v <= 0) {
            duration_format(buf, sizeof buf, v);
            snprintf(fix, sizeof fix,
                     "pass a positive duration such as %s (the default), or omit --%s",
                     flags[i].def, flags[i].name);
            set_err(e, fix, "invalid --%s \"%s\": must be a positive duration", flags[i].name, buf);
            return -1;
        }
    }
    return 0;
}

/* Byte sizes: positive, and within 32-bit offsets and lengths. */
static int validate_sizes(const struct config *cfg, struct config_error *e)
{
    static const char *const sizes[] = {"max-message-bytes", "max-header-bytes",
                                        "phone-backlog-bytes"};
    char fix[256];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const struct flag *f = find_flag(sizes[i], strlen(sizes[i]));
        snprintf(fix, sizeof fix,
                 "pass a byte count from 1 to 1073741824, or omit --%s for the default (%s)",
                 sizes[i], f->def);
        if (int_field(cfg, sizes[i]) <= 0) {
            set_err(e, fix, "invalid --%s %lld: must be a positive number of bytes", sizes[i],
                    (long long)int_field(cfg, sizes[i]));
            return -1;
        }
        if (int_field(cfg, sizes[i]) > (1LL << 30)) { /* offsets and lengths are 32-bit */
            set_err(e, fix, "invalid --%s %lld: must be at most 1073741824 bytes", sizes[i],
                    (long long)int_field(cfg, sizes[i]));
            return -1;
        }
    }
    return 0;
}

/* The other numeric limits, each with its own range. */
static int validate_limits(const struct config *cfg, struct config_error *e)
{
    if (cfg->max_header_bytes_total <= 0) {
        set_err(e,
                "pass a positive byte count, or omit --max-header-bytes-total for the default "
                "(67108864)",
                "invalid --max-header-bytes-total %lld: must be a positive number of bytes",
                (long long)cfg->max_header_bytes_total);
        return -1;
    }
    if (cfg->max_bytes_per_second_per_server < 0) {
        set_err(e, "pass 0 for no limit or a number of bytes per second",
                "invalid --max-bytes-per-second-per-server %lld: must be 0 (no limit) or positive",
                (long long)cfg->max_bytes_per_second_per_server);
        return -1;
    }
    if (cfg->max_frames_per_second < 0 || cfg->max_frames_per_second > 1000000000) {
        set_err(e, "pass 0 for no limit or a rate from 1 to 1000000000 (default 10000)",
                "invalid --max-frames-per-second %lld: must be 0 (no limit) or between 1 and "
                "1000000000",
                (long long)cfg->max_frames_per_second);
        return -1;
    }
    if (cfg->rate_limit_burst < 0) {
        set_err(e, "pass 0 to turn the per-IP limiter off, or a positive burst (default 20)",
                "invalid --rate-limit-burst %lld: must be 0 (off) or positive",
                (long long)cfg->rate_limit_burst);
        return -1;
    }
    if (cfg->workers < 0 || cfg->workers > 256) {
        set_err(e, "pass 0 for one shard per CPU, or a thread count up to 256",
                "invalid --workers %lld: must be between 0 and 256", (long long)cfg->workers);
        return -1;
    }
    return 0;
}

/* The certificate pair and the logging choices. */
static int validate_strings(const struct config *cfg, struct config_error *e)
{
    enum log_format fmt;
    enum log_level level;
    if ((cfg->tls_cert[0] != '\0') != (cfg->tls_key[0] != '\0')) {
        set_err(e,
                "give both --tls-cert and --tls-key for a static certificate, or neither to "
                "use ACME",
                "invalid --%s: --tls-cert and --tls-key must be given together",
                cfg->tls_cert[0] ? "tls-key" : "tls-cert");
        return -1;
    }
    if (log_format_parse(cfg->log_format, &fmt) != 0) {
        set_err(e, "use --log-format=text or --log-format=json",
                "invalid --log-format %s: must be \"text\" or \"json\"", QUOTED(cfg->log_format));
        return -1;
    }
    if (log_level_parse(cfg->log_level, &level) != 0) {
        set_err(e, "use --log-level=debug, info, warn or error",
                "invalid --log-level %s: must be \"debug\", \"info\", \"warn\" or \"error\"",
                QUOTED(cfg->log_level));
        return -1;
    }
    return 0;
}

static bool name_chars(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
            return false;
    return true;
}

/* Each comma-separated URL: [nats:// | tls://][user[:pass]@]host[:port],
 * no blanks, no empty entries. */
static bool urls_valid(const char *urls)
{
    const char *s = urls;
    for (;;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *sep = memmem(s, len, "://", 3);
        if (len == 0 || memchr(s, ' ', len) || memchr(s, '\t', len))
            return false;
        if (sep && !((sep - s == 4 && memcmp(s, "nats", 4) == 0) ||
                     (sep - s == 3 && memcmp(s, "tls", 3) == 0)))
            return false;
        if (sep && (size_t)(sep + 3 - s) == len)
            return false; /* a scheme and nothing after it */
        if (!end)
            return true;
        s = end + 1;
    }
}

/* The cluster flags (checked whether or not the cluster is on, so a typo
 * is found before the day it is turned on). */
static int validate_cluster(const struct config *cfg, struct config_error *e)
{
    if (cfg->cluster_nats[0] && !urls_valid(cfg->cluster_nats)) {
        set_err(e,
                "write --cluster-nats as nats://host:4222[,nats://host2:4222...] (tls:// for TLS)",
                "invalid --cluster-nats %s: want comma-separated nats:// or tls:// URLs",
                QUOTED(cfg->cluster_nats));
        return -1;
    }
    if ((cfg->cluster_nats_cert[0] != '\0') != (cfg->cluster_nats_key[0] != '\0')) {
        set_err(e,
                "give both --cluster-nats-cert and --cluster-nats-key for mutual TLS, or neither",
                "invalid --%s: --cluster-nats-cert and --cluster-nats-key must be given together",
                cfg->cluster_nats_cert[0] ? "cluster-nats-key" : "cluster-nats-cert");
        return -1;
    }
    if (!name_chars(cfg->cluster_name, 32)) {
        set_err(e, "use 1 to 32 characters of A-Z a-z 0-9 _ -, or omit it for \"main\"",
                "invalid --cluster-name %s", QUOTED(cfg->cluster_name));
        return -1;
    }
    if (cfg->cluster_node_name[0] && !name_chars(cfg->cluster_node_name, 55)) {
        set_err(e, "use 1 to 55 characters of A-Z a-z 0-9 _ -, or omit it for the host name",
                "invalid --cluster-node-name %s", QUOTED(cfg->cluster_node_name));
        return -1;
    }
    if (cfg->cluster_lease_ns < 6 * NS_PER_S) {
        char buf[48];
        duration_format(buf, sizeof buf, cfg->cluster_lease_ns);
        set_err(e, "pass at least 6s (20s, the default, rides out a bus leader election)",
                "invalid --cluster-lease \"%s\": must be at least 6s", buf);
        return -1;
    }
    if (cfg->cluster_replicas < 1 || cfg->cluster_replicas > 5) {
        set_err(e, "pass 3 (the default) for a 3-server bus, 1 for a single server, at most 5",
                "invalid --cluster-replicas %lld: must be from 1 to 5",
                (long long)cfg->cluster_replicas);
        return -1;
    }
    if (cfg->cluster_ctl_threads < 1 || cfg->cluster_ctl_threads > 16) {
        set_err(e, "pass 1 (the default); more only when claims queue behind each other",
                "invalid --cluster-ctl-threads %lld: must be from 1 to 16",
                (long long)cfg->cluster_ctl_threads);
        return -1;
    }
    return 0;
}

int config_validate(const struct config *cfg, struct config_error *e)
{
    memset(e, 0, sizeof *e);
    if (validate_durations(cfg, e) != 0 || validate_sizes(cfg, e) != 0 ||
        validate_limits(cfg, e) != 0 || validate_strings(cfg, e) != 0 ||
        validate_cluster(cfg, e) != 0)
        return -1;
    return 0;
}

/* The " (default …)" suffix Go prints for a non-zero default. */
static void print_default(FILE *out, const struct config *def, const struct flag *f)
{
    const void *v = cfield(def, f);
    char buf[48];
    if (f->type == F_STRING && **(const char *const *)v) {
        fprintf(out, " (default %s)", QUOTED(*(const char *const *)v));
    } else if (f->type == F_BOOL && *(const bool *)v) {
        fprintf(out, " (default true)");
    } else if (f->type == F_INT && *(const int64_t *)v) {
        fprintf(out, " (default %lld)", (long long)*(const int64_t *)v);
    } else if (f->type == F_DURATION && *(const int64_t *)v) {
        duration_format(buf, sizeof buf, *(const int64_t *)v);
        fprintf(out, " (default %s)", buf);
    }
}

void config_usage(FILE *out, const struct config *cfg)
{
    static const char *const types[] = {"string", "", "int", "duration"};
    struct config def;
    apply_defaults(&def, cfg->cert_cache_default);
    fprintf(out, "Usage of pyrycode-relay:\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        const struct flag *f = &flags[i];
        fprintf(out, "  -%s%s%s\n    \t%s", f->name, f->type == F_BOOL ? "" : " ", types[f->type],
                f->usage);
        print_default(out, &def, f);
        fprintf(out, "\n");
    }
}

/* ---- durations: Go time.ParseDuration and Duration.String ------------- */

#define DUR_LIMIT ((uint64_t)1 << 63)

/* The unit at s (letters up to the next digit or '.'); 0 if unknown. */
static uint64_t unit_ns(const char *s, size_t *len)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1},           {"us", 1000},         {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
        {"\xce\xbcs", 1000},                                            /* U+03BC Greek mu */
        {"ms", 1000000},     {"s", 1000000000ULL}, {"m", 60000000000ULL}, {"h", 3600000000000ULL}};
    size_t n = 0;
    while (s[n] && s[n] != '.' && !(s[n] >= '0' && s[n] <= '9'))
        n++;
    *len = n;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].name) == n && memcmp(s, units[i].name, n) == 0)
            return units[i].ns;
    return 0;
}

/* Go's leadingInt: digits into *x; -1 once the value passes 2^63. */
static int leading_int(const char **s, uint64_t *x)
{
    for (*x = 0; **s >= '0' && **s <= '9'; (*s)++) {
        if (*x > DUR_LIMIT / 10)
            return -1;
        *x = *x * 10 + (uint64_t)(**s - '0');
        if (*x > DUR_LIMIT)
            return -1;
    }
    return 0;
}

/* Go's leadingFraction: digits into *x and *scale, keeping precision only
 * while it fits. */
static void leading_fraction(const char **s, uint64_t *x, double *scale)
{
    bool overflow = false;
    for (*x = 0, *scale = 1; **s >= '0' && **s <= '9'; (*s)++) {
        if (overflow)
            continue;
        if (*x > (DUR_LIMIT - 1) / 10) {
            overflow = true;
            continue;
        }
        uint64_t y = *x * 10 + (uint64_t)(**s - '0');
        if (y > DUR_LIMIT) {
            overflow = true;
            continue;
        }
        *x = y;
        *scale *= 10;
    }
}

/* One "<number><unit>" term at *s in nanoseconds (at most 2^63), or -1. */
static int duration_term(const char **s, uint64_t *v)
{
    uint64_t f = 0, unit;
    double scale = 1;
    size_t ulen;
    const char *p = *s;
    if (!(*p == '.' || (*p >= '0' && *p <= '9')))
        return -1;
    if (leading_int(&p, v) != 0)
        return -1;
    bool pre = p != *s;
    bool post = false;
    if (*p == '.') {
        const char *start = ++p;
        leading_fraction(&p, &f, &scale);
        post = p != start;
    }
    if (!pre && !post)
        return -1;
    unit = unit_ns(p, &ulen);
    if (ulen == 0 || unit == 0 || *v > DUR_LIMIT / unit)
        return -1;
    *v *= unit;
    if (f > 0) {
        /* The same double arithmetic as Go, to the last nanosecond. */
        *v += (uint64_t)((double)f * ((double)unit / scale));
        if (*v > DUR_LIMIT)
            return -1;
    }
    *s = p + ulen;
    return 0;
}

int duration_parse(const char *s, int64_t *ns)
{
    bool neg = false;
    uint64_t d = 0, v;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (*s == '\0')
        return -1;
    while (*s) {
        if (duration_term(&s, &v) != 0)
            return -1;
        d += v;
        if (d > DUR_LIMIT)
            return -1;
    }
    if (!neg && d > (uint64_t)INT64_MAX)
        return -1;
    *ns = neg ? (int64_t)(0 - d) : (int64_t)d;
    return 0;
}

/* Go's fmtFrac: writes v's last prec digits as ".ddd" (trailing zeros
 * dropped, nothing if all zero) ending before buf[w]; returns the new w
 * and leaves v divided by 10^prec. */
static int fmt_frac(char *buf, int w, uint64_t *v, int prec)
{
    bool print = false;
    for (int i = 0; i < prec; i++) {
        unsigned digit = (unsigned)(*v % 10);
        print = print || digit != 0;
        if (print)
            buf[--w] = (char)('0' + digit);
        *v /= 10;
    }
    if (print)
        buf[--w] = '.';
    return w;
}

static int fmt_int(char *buf, int w, uint64_t v)
{
    do {
        buf[--w] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    return w;
}

/* Builds the text right to left in buf[0..32); returns where it starts. */
static int format_rev(char buf[32], int64_t ns)
{
    int w = 32;
    uint64_t u = ns < 0 ? 0 - (uint64_t)ns : (uint64_t)ns;
    if (u == 0) {
        buf[--w] = 's';
        buf[--w] = '0';
        return w;
    }
    buf[--w] = 's';
    if (u < 1000) {
        buf[--w] = 'n';
        w = fmt_int(buf, w, u);
    } else if (u < 1000000) {
        w -= 2;
        memcpy(buf + w, "\xc2\xb5", 2); /* µ, as Go prints it */
        w = fmt_frac(buf, w, &u, 3);
        w = fmt_int(buf, w, u);
    } else if (u < 1000000000) {
        buf[--w] = 'm';
        w = fmt_frac(buf, w, &u, 6);
        w = fmt_int(buf, w, u);
    } else {
        w = fmt_frac(buf, w, &u, 9);
        w = fmt_int(buf, w, u % 60);
        if ((u /= 60) > 0) {
            buf[--w] = 'm';
            w = fmt_int(buf, w, u % 60);
            if ((u /= 60) > 0) {
                buf[--w] = 'h';
                w = fmt_int(buf, w, u);
            }
        }
    }
    if (ns < 0)
        buf[--w] = '-';
    return w;
}

int duration_format(char *out, size_t cap, int64_t ns)
{
    char buf[32];
    int w = format_rev(buf, ns);
    return snprintf(out, cap, "%.*s", 32 - w, buf + w);
}

/* ---- --config-file: the reloadable settings ----------------------------- */

static const char *const reloadable[] = {"log-level", "max-connections", "max-phones-per-server",
                                         "rate-limit-burst", "rate-limit-refill"};

static bool is_reloadable(const char *name)
{
    for (size_t i = 0; i < sizeof reloadable / sizeof reloadable[0]; i++)
        if (strcmp(reloadable[i], name) == 0)
            return true;
    return false;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* One "name = value" line of path (lineno for messages). */
static int apply_line(struct config *cfg, const char *path, int lineno, char *line,
                      struct config_error *e)
{
    char fix[256];
    char *eq = strchr(line, '=');
    if (!eq) {
        set_err(e, "write one setting per line as name = value (# starts a comment)",
                "%s:%d: expected name = value", path, lineno);
        return -1;
    }
    *eq = '\0';
    char *name = trim(line), *val = trim(eq + 1);
    size_t vlen = strlen(val);
    if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
        val[vlen - 1] = '\0';
        val++;
    }
    if (name[0] == '-')
        name += 1 + (name[1] == '-');
    const struct flag *f = find_flag(name, strlen(name));
    if (!f || !is_reloadable(name)) {
        const char *near = f ? NULL : config_suggest(name, strlen(name));
        snprintf(fix, sizeof fix,
                 "%s%s%sthe file holds only log-level, max-connections, max-phones-per-server, "
                 "rate-limit-burst and rate-limit-refill; everything else is a command-line flag",
                 near ? "did you mean " : "", near ? near : "", near ? "? " : "");
        set_err(e, fix, "%s:%d: %s %s", path, lineno, QUOTED(name),
                f ? "cannot be set in --config-file" : "is not a setting");
        return -1;
    }
    if (cfg->explicit_mask & (1ULL << (f - flags))) {
        snprintf(fix, sizeof fix,
                 "set %s in one place: remove --%s from the command line to make it reloadable",
                 f->name, f->name);
        set_err(e, fix, "%s:%d: %s is also given on the command line", path, lineno, f->name);
        return -1;
    }
    if (f->offset == offsetof(struct config, log_level)) {
        enum log_level level;
        if (log_level_parse(val, &level) != 0) {
            set_err(e, "use debug, info, warn or error", "%s:%d: invalid log-level %s", path,
                    lineno, QUOTED(val));
            return -1;
        }
        cfg->log_level = log_level_name(level); /* a literal: outlives the file's text */
        return 0;
    }
    int rc = set_value(cfg, f, val);
    if (rc != PARSE_OK) {
        type_fix(fix, sizeof fix, f);
        set_err(e, fix, "%s:%d: invalid value %s for %s: %s", path, lineno, QUOTED(val), f->name,
                rc == PARSE_RANGE ? "value out of range" : "parse error");
        return -1;
    }
    return 0;
}

int config_file_apply(struct config *cfg, const char *path, struct config_error *e)
{
    char text[CONFIG_FILE_MAX + 1];
    memset(e, 0, sizeof *e);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        set_err(e, "create the file, fix the path, or drop --config-file", "--config-file %s: %s",
                path, strerror(errno));
        return -1;
    }
    size_t n = fread(text, 1, sizeof text, fp);
    bool bad = ferror(fp);
    fclose(fp);
    if (bad || n > CONFIG_FILE_MAX) {
        set_err(e, "--config-file holds five settings; point it at the right file",
                "--config-file %s: %s", path, bad ? "read error" : "larger than 64 KiB");
        return -1;
    }
    text[n] = '\0';
    int lineno = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *t = trim(line);
        if (*t && apply_line(cfg, path, lineno, t, e) != 0)
            return -1;
    }
    return 0;
}
