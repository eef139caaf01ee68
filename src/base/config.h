/* config.h — command-line flags with Go `flag` syntax (docs/operations.md): -x and
 * --x, "=value" or a separate value, booleans bare or "=true/false", -h
 * prints usage. One table describes every flag; parsing fills struct config
 * and remembers which flags were given explicitly. Durations use Go syntax
 * ("500ms", "30s", "1m30s"). Nothing here touches the network or env.
 * Main thread only (boot and SIGHUP reload, which parses into a copy); a
 * struct config is read-only once parsed, so any thread may read it. */
#ifndef RELAY_CONFIG_H
#define RELAY_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define NS_PER_MS 1000000LL
#define NS_PER_S  1000000000LL

struct config {
    /* the reference's flags (docs/operations.md) */
    const char *domain;
    const char *cert_cache;
    const char *insecure_listen;
    const char *https_listen;
    const char *http_listen;
    const char *metrics_listen;
    const char *health_listen; /* ours: /healthz only, plain HTTP ("" none) */
    bool trust_x_forwarded_for;
    bool https_proxy_protocol;
    int64_t max_connections;
    bool version;
    /* relay knobs (ours; defaults match the reference constants) */
    const char *log_format;                  /* "text" | "json" */
    const char *log_level;                   /* "debug" | "info" | "warn" | "error" */
    const char *config_file;                 /* reloadable settings, re-read on SIGHUP ("" none) */
    int64_t max_message_bytes;               /* 262144 */
    int64_t max_header_bytes;                /* 1 MiB, like Go's DefaultMaxHeaderBytes */
    int64_t max_header_bytes_total;          /* 64 MiB held by unfinished heads, process-wide */
    int64_t max_frames_per_second;           /* per connection; 0 = no limit */
    int64_t max_bytes_per_second_per_server; /* both directions together; 0 = no limit */
    int64_t max_phones_per_server;           /* 16; <= 0 means no cap */
    int64_t phone_backlog_bytes;             /* 4 MiB */
    int64_t workers;                         /* 0 = number of CPUs */
    int64_t rate_limit_burst;                /* 20; 0 disables the per-IP limiter */
    int64_t rate_limit_refill_ns;            /* 6s per token */
    int64_t message_deadline_ns;             /* 30s */
    int64_t heartbeat_interval_ns;           /* 30s */
    int64_t heartbeat_timeout_ns;            /* 30s */
    int64_t write_timeout_ns;                /* 10s */
    int64_t drain_timeout_ns;                /* 10s */
    int64_t grace_period_ns;                 /* 30s */
    int64_t conflict_probe_timeout_ns;       /* 10s */
    int64_t header_timeout_ns;               /* 5s: request head must arrive */
    int64_t request_timeout_ns;              /* 60s: whole request must arrive */
    int64_t idle_timeout_ns;                 /* 120s: keep-alive idle */
    int64_t close_timeout_ns;                /* 5s: wait for the peer's close frame */
    bool check_config;
    /* TLS and ACME (docs/features/tls.md, docs/features/acme.md) */
    const char *acme_directory;     /* Let's Encrypt production */
    const char *acme_ca_bundle;     /* "" = system trust store */
    int64_t acme_renew_before_ns;   /* 720h (30 days) */
    int64_t acme_retry_interval_ns; /* 1m, doubling to 1h */
    const char *tls_cert;           /* static certificate instead of ACME */
    const char *tls_key;
    int64_t tls_handshake_timeout_ns; /* 10s */
    int64_t proxy_header_timeout_ns;  /* 5s (docs/features/proxy-protocol.md) */
    /* FCM push (docs/features/push.md) */
    const char *fcm_base_url;       /* https://fcm.googleapis.com */
    const char *fcm_project;        /* pyrycode-mobile */
    const char *outbound_ca_bundle; /* "" = system trust store */
    int64_t push_timeout_ns;        /* 10s per HTTP call */
    /* cluster mode (docs/features/cluster.md) */
    const char *cluster_nats;      /* bus URLs, comma-separated; "" = cluster off */
    const char *cluster_name;      /* main: [A-Za-z0-9_-], 1..32 */
    const char *cluster_node_name; /* "" = the host name, sanitised */
    const char *cluster_nats_ca;   /* PEM CAs for the bus's TLS; "" = none */
    const char *cluster_nats_cert; /* client certificate chain (with _key); "" = none */
    const char *cluster_nats_key;
    int64_t cluster_lease_ns;           /* 20s, at least 6s */
    int64_t cluster_replicas;           /* 3: KV stream replicas, 1..5 */
    int64_t cluster_ctl_threads;        /* 1: threads running KV operations, 1..16 */
    int64_t cluster_connect_timeout_ns; /* 30s: how long boot waits for the bus */
    /* which flags appeared on the command line, by table index */
    uint64_t explicit_mask;
    /* --cert-cache's default, from $HOME (config_defaults); cert_cache points
     * here unless the flag was given. Copies of a config point into the
     * original's buffer, which main keeps for the process's life. */
    char cert_cache_default[4096];
};

/* Why a flag, value or config file was refused: one sentence naming the
 * flag (or file and line), and what to write instead. */
struct config_error {
    char err[1024];
    char fix[512];
};

#define CONFIG_FILE_MAX (64 * 1024)

enum config_result {
    CONFIG_OK = 0,
    CONFIG_HELP = 1,   /* -h/--help: usage printed, exit 0 */
    CONFIG_ERROR = -1, /* *e filled in, exit 2 */
};

/* Fills cfg with every default. home is $HOME (may be NULL) for --cert-cache. */
void config_defaults(struct config *cfg, const char *home);

/* Parses argv[1..argc) into cfg (call config_defaults first). Stops at the
 * first non-flag argument or after "--", like Go. -h prints the usage to
 * usage and returns CONFIG_HELP; a bad flag or value fills *e (Go's
 * sentence in err, with the closest known flag suggested for an unknown
 * one) and returns CONFIG_ERROR. Strings in cfg point into argv. */
enum config_result config_parse(struct config *cfg, int argc, char **argv, FILE *usage,
                                struct config_error *e);

/* The value of the last -name/--name flag before the flags end (so a
 * refusal found while parsing can already use --log-format), or NULL. */
const char *config_prescan(int argc, char **argv, const char *name);

/* The known flag closest to name[0..len) (a typo, a case slip, a prefix),
 * or NULL when none is close. */
const char *config_suggest(const char *name, size_t len);

/* Checks values that parse but make no sense (non-positive durations and
 * sizes, unknown --log-format or --log-level). Fills *e naming the flag
 * and returns -1, else 0. --max-connections is left to the startup checks
 * (startup check 5, docs/operations.md). */
int config_validate(const struct config *cfg, struct config_error *e);

/* Applies the reloadable settings of the --config-file at path to cfg:
 * lines "name = value" (names as the flags, without dashes), '#' comments.
 * Only log-level, max-connections, max-phones-per-server, rate-limit-burst
 * and rate-limit-refill may appear, and none that was also given on the
 * command line. Returns 0, or -1 with *e naming the file and line (cfg may
 * then be partly changed: apply to a copy). */
int config_file_apply(struct config *cfg, const char *path, struct config_error *e);

/* True when the flag named name (without dashes) was given explicitly. */
bool config_flag_given(const struct config *cfg, const char *name);

/* Writes the usage text (Go flag.PrintDefaults layout) to out, with the
 * defaults config_defaults put in cfg (its --cert-cache default). */
void config_usage(FILE *out, const struct config *cfg);

/* Parses a Go duration ("300ms", "-1.5h", "2h45m", "0"). Returns 0 and
 * stores nanoseconds in *ns, or -1 on syntax error or overflow. */
int duration_parse(const char *s, int64_t *ns);

/* Formats ns as Go's time.Duration.String() would ("1m30s", "500ms").
 * Returns the length written. */
int duration_format(char *out, size_t cap, int64_t ns);

#endif
