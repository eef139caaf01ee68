/* main.c — argv → config → startup checks → TLS context → listeners → run
 * → drain → exit code, and what SIGHUP reloads. Boot refusals are logged
 * (one ERROR line with a fix) and exit 2; a certificate that cannot be
 * loaded or a listener that cannot be bound exits 1 (--check-config: 2);
 * after that server.c owns the process. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "acme/autocert.h"
#include "boot.h"
#include "base/config.h"
#include "base/log.h"
#include "ops/metrics.h"
#include "base/notify.h"
#include "push/push.h"
#include "relay/relay.h"
#include "net/server.h"
#include "tls/tls.h"
#include "base/util.h"
#include "base/version.h"
#include "cluster/bus.h"
#include "cluster/node.h"
#include "relay/fence.h"
#include "relay/xnode.h"

static const char *env_get(const char *name)
{
    return getenv(name);
}

/* What a SIGHUP re-reads: the --config-file (on top of the command line,
 * never instead of it) and the static certificate files. */
struct reload_ctx {
    struct config base;     /* defaults + command line, without the file */
    struct config live;     /* what is in force now */
    struct tls_server *tls; /* static certificate (NULL: none) */
    struct relay_shared *sh;
};

static void limits_of(const struct config *c, struct relay_limits *l)
{
    l->max_connections = c->max_connections;
    l->max_phones_per_server = c->max_phones_per_server;
    l->rate_limit_burst = c->rate_limit_burst;
    l->rate_limit_refill_ns = c->rate_limit_refill_ns;
}

/* Appends ",name=value" (or ",name") for something that changed. */
static void note(char *out, size_t cap, const char *name, const char *value)
{
    size_t n = strlen(out);
    snprintf(out + n, cap - n, "%s%s%s%s", n ? "," : "", name, value ? "=" : "",
             value ? value : "");
}

static void reload_failed(const char *err, const char *fix)
{
    LOGF(LOG_ERROR, "reload", LOG_STR("changed", "none"), LOG_STR("err", err), LOG_STR("fix", fix));
}

/* Notes every reloadable limit that differs between the live settings and
 * next; returns true when any did. */
static bool diff_limits(const struct config *live, const struct config *next, char *changed,
                        size_t cap)
{
    static const struct {
        const char *name;
        size_t off;
        bool duration;
    } nums[] = {
        {"max-connections", offsetof(struct config, max_connections), false},
        {"max-phones-per-server", offsetof(struct config, max_phones_per_server), false},
        {"rate-limit-burst", offsetof(struct config, rate_limit_burst), false},
        {"rate-limit-refill", offsetof(struct config, rate_limit_refill_ns), true},
    };
    char buf[64];
    bool any = false;
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        int64_t a = *(const int64_t *)((const char *)live + nums[i].off);
        int64_t b = *(const int64_t *)((const char *)next + nums[i].off);
        if (a == b)
            continue;
        any = true;
        if (nums[i].duration)
            duration_format(buf, sizeof buf, b);
        else
            snprintf(buf, sizeof buf, "%lld", (long long)b);
        note(changed, cap, nums[i].name, buf);
    }
    return any;
}

/* Re-reads the static certificate files into the TLS context (all or
 * nothing); notes "tls-cert" when the served certificate changed. */
static int reload_cert(struct reload_ctx *rc, struct tls_cert_info *after, char *changed,
                       size_t cap)
{
    struct tls_cert_info before;
    char err[512];
    tls_server_cert_info(rc->tls, &before);
    if (tls_server_load_files(rc->tls, rc->base.tls_cert, rc->base.tls_key, err, sizeof err) != 0) {
        reload_failed(err, "fix the file and send SIGHUP again; the previous certificate stays "
                           "in use");
        return -1;
    }
    tls_server_cert_info(rc->tls, after);
    if (memcmp(before.sha256, after->sha256, sizeof before.sha256) != 0)
        note(changed, cap, "tls-cert", NULL);
    return 0;
}

/* SIGHUP: re-read, validate everything, then apply all of it or nothing.
 * One `reload` line says what changed, or why nothing did. New values
 * apply to what happens next (new connections, new handshakes, the next
 * log line); established connections are never dropped by a reload. */
static void reload(struct server *srv, void *arg)
{
    struct reload_ctx *rc = arg;
    struct config next = rc->base;
    struct config_error ce;
    struct tls_cert_info cert;
    char changed[512] = "";
    (void)srv;
    if (!rc->base.config_file[0] && !rc->tls) {
        LOGF(LOG_INFO, "reload", LOG_STR("changed", "none"),
             LOG_STR("reason", "nothing reloadable is configured (no --config-file, no "
                               "--tls-cert)"));
        return;
    }
    if (next.config_file[0] && (config_file_apply(&next, next.config_file, &ce) != 0 ||
                                config_validate(&next, &ce) != 0)) {
        reload_failed(ce.err, ce.fix);
        return;
    }
    if (next.max_connections <= 0) {
        reload_failed("relay: max-connections must be positive",
                      "set max-connections in --config-file to a positive count");
        return;
    }
    if (rc->tls && reload_cert(rc, &cert, changed, sizeof changed) != 0)
        return;
    enum log_level old_level = log_get_level(), new_level = LOG_INFO;
    log_level_parse(next.log_level, &new_level);
    if (strcmp(next.log_level, rc->live.log_level) != 0)
        note(changed, sizeof changed, "log-level", next.log_level);
    /* The reload line is written at the more verbose of the two levels, so
     * turning the level up to warn still says so once. */
    log_set_level(new_level < old_level ? new_level : old_level);
    if (diff_limits(&rc->live, &next, changed, sizeof changed)) {
        struct relay_limits l;
        limits_of(&next, &l);
        relay_set_limits(rc->sh, &l);
    }
    rc->live = next;
    /* One line: what changed (or why nothing did) and, with a static
     * certificate, which one is now served and until when. */
    struct log_field f[4];
    size_t n = 0;
    f[n++] = LOG_STR("changed", changed[0] ? changed : "none");
    if (!changed[0])
        f[n++] = LOG_STR("reason", "the settings and the certificate are the ones in use");
    if (rc->tls) {
        f[n++] = LOG_STR("subject", cert.subject);
        f[n++] = LOG_STR("not_after", cert.not_after);
    }
    log_event(LOG_INFO, "reload", f, n);
    log_set_level(new_level);
}

/* One line per certificate load: what new handshakes will present. */
static void log_cert(const struct tls_server *ts, const char *source)
{
    struct tls_cert_info info;
    if (tls_server_cert_info(ts, &info) == 0)
        LOGF(LOG_INFO, "tls certificate loaded", LOG_STR("source", source),
             LOG_STR("subject", info.subject), LOG_STR("not_after", info.not_after));
}

/* ACME delivered a certificate (cached or new): new handshakes use it. */
static void on_acme_cert(void *ud, const char *chain, size_t chain_len, const char *key,
                         size_t key_len)
{
    char err[512];
    if (tls_server_set_cert_pem(ud, chain, chain_len, key, key_len, err, sizeof err) != 0)
        LOGF(LOG_ERROR, "acme certificate rejected by TLS", LOG_STR("err", err));
    else
        log_cert(ud, "acme");
}

/* Autocert mode's TLS context, the one place certificates come from.
 * With --tls-cert/--tls-key it serves those files (reloaded on SIGHUP, see
 * reload_certs). Without them it starts empty: HTTPS handshakes fail with
 * an alert until the ACME engine installs a certificate into it with
 * tls_server_set_cert_pem — ACME wiring hooks in here. Returns NULL after
 * logging the reason (exit 1). */
static struct tls_server *autocert_tls(const struct config *cfg)
{
    char err[512];
    struct tls_server *ts = tls_server_new(err, sizeof err);
    if (!ts) {
        LOGF(LOG_ERROR, "refusing to start: cannot create the TLS context", LOG_STR("err", err));
        return NULL;
    }
    if (!cfg->tls_cert[0])
        return ts; /* ACME mode: certificates arrive through tls_server_set_cert_pem */
    if (tls_server_load_files(ts, cfg->tls_cert, cfg->tls_key, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: cannot load --tls-cert/--tls-key", LOG_STR("err", err),
             LOG_STR("fix", "point --tls-cert at a PEM chain (leaf first) and --tls-key at its "
                            "unencrypted PEM key, both readable by the relay's user"));
        tls_server_free(ts);
        return NULL;
    }
    log_cert(ts, "files");
    return ts;
}

/* Refusals found before the startup checks: one ERROR line, exit 2. */
static int refuse(const char *msg, const struct config_error *ce)
{
    LOGF(LOG_ERROR, msg, LOG_STR("err", ce->err), LOG_STR("fix", ce->fix));
    return 2;
}

/* Everything that needs no listener: flags, --config-file, values, the
 * startup checks (docs/operations.md) and the certificate. Returns -1 to go on,
 * else the exit code. */
static int configure(struct config *cfg, struct reload_ctx *rc, int argc, char **argv,
                     struct fcm_creds *creds, struct tls_server **tls)
{
    struct config_error ce;
    enum log_format fmt = LOG_FORMAT_TEXT;
    enum log_level level = LOG_INFO;
    /* Known before parsing, so a bad flag is refused in the chosen format. */
    const char *f = config_prescan(argc, argv, "log-format");
    if (f)
        log_format_parse(f, &fmt);
    log_setup(fmt, LOG_INFO, 2);
    config_defaults(cfg, getenv("HOME"));
    switch (config_parse(cfg, argc, argv, stderr, &ce)) {
    case CONFIG_HELP:
        return 0;
    case CONFIG_ERROR:
        return refuse("refusing to start: invalid flag", &ce);
    case CONFIG_OK:
        break;
    }
    log_format_parse(cfg->log_format, &fmt); /* unchanged if invalid (refused below) */
    log_setup(fmt, LOG_INFO, 2);
    rc->base = *cfg;
    if (cfg->config_file[0] && config_file_apply(cfg, cfg->config_file, &ce) != 0)
        return refuse("refusing to start: invalid --config-file", &ce);
    if (config_validate(cfg, &ce) != 0)
        return refuse("refusing to start: invalid flag value", &ce);
    log_level_parse(cfg->log_level, &level);
    log_setup(fmt, level, 2);
    if (cfg->version) {
        printf("%s\n", RELAY_VERSION);
        return 0;
    }
    int code = boot_checks(cfg, env_get, "/proc/self/status", creds);
    if (code == 0 && !cfg->insecure_listen[0] && !(*tls = autocert_tls(cfg)))
        code = 1;
    if (code != 0) {
        fcm_creds_free(creds);
        /* --check-config answers yes (0) or no (2), nothing else */
        return cfg->check_config ? 2 : code;
    }
    if (cfg->check_config) {
        LOGF(LOG_INFO, "configuration ok", LOG_STR("version", RELAY_VERSION),
             LOG_STR("mode", cfg->insecure_listen[0] ? "insecure"
                             : cfg->tls_cert[0]      ? "static-cert"
                                                     : "autocert"));
        tls_server_free(*tls);
        fcm_creds_free(creds);
        return 0;
    }
    rc->live = *cfg;
    return -1;
}

/* The loopback metrics listener and the /healthz-only one, each announced
 * once bound. Returns 0, or 1 after logging `listener failed`. */
static int bind_side_listeners(struct server *srv, const struct config *cfg,
                               struct metrics *metrics, struct relay *relay)
{
    char err[256];
    if (cfg->metrics_listen[0]) {
        LOGF(LOG_INFO, "starting metrics listener", LOG_STR("listen", cfg->metrics_listen));
        if (metrics_listen(metrics, srv, relay, cfg->metrics_listen, err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg->metrics_listen),
                 LOG_STR("err", err),
                 LOG_STR("fix", "free the address or pick another loopback one with "
                                "--metrics-listen (empty disables it)"));
            return 1;
        }
        server_log_listening(metrics->listener, "metrics");
    }
    if (cfg->health_listen[0]) {
        static const struct conn_opts health_opts = {.hooks = &relay_health_hooks};
        if (server_listen_opts(srv, cfg->health_listen, &health_opts, err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg->health_listen),
                 LOG_STR("err", err),
                 LOG_STR("fix", "free the address or pick another with --health-listen"));
            return 1;
        }
        server_log_listening(&srv->listeners[srv->nlisteners - 1].tcp, "health");
    }
    return 0;
}

/* The FCM waker, when a service account was given. */
static struct push_waker *start_push(uv_loop_t *loop, const struct config *cfg,
                                     struct fcm_creds *creds)
{
    struct push_config pcfg = {.fcm_base_url = cfg->fcm_base_url,
                               .fcm_project = cfg->fcm_project,
                               .ca_bundle = cfg->outbound_ca_bundle,
                               .timeout_ms = (uint64_t)(cfg->push_timeout_ns / NS_PER_MS)};
    if (pcfg.timeout_ms == 0)
        pcfg.timeout_ms = 1;
    return push_new(loop, &pcfg, creds);
}

/* The bus's TLS files (--cluster-nats-ca/-cert/-key), NULL when none is
 * given. The node and every shard keep the pointer: it is static. */
static const struct natsopt_tls *bus_tls(const struct config *cfg)
{
    static struct natsopt_tls t;
    t = (struct natsopt_tls){
        .ca = cfg->cluster_nats_ca, .cert = cfg->cluster_nats_cert, .key = cfg->cluster_nats_key};
    return natsopt_tls_on(&t) ? &t : NULL;
}

/* Boot step 12b (docs/features/cluster.md): with --cluster-nats, join the
 * cluster before anything is set up to serve. Returns 0 (*out NULL without
 * a bus), or 1 after logging. */
static int start_cluster(const struct config *cfg, unsigned shards, struct node **out)
{
    char name[NODE_NAME_MAX + 1], host[256] = "", err[512], bus[NODE_URLS_LOGMAX];
    if (!cfg->cluster_nats[0])
        return 0;
    if (bus_global_init(err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: cluster bus unavailable", LOG_STR("err", err));
        return 1;
    }
    gethostname(host, sizeof host - 1);
    if (node_name_from(cfg->cluster_node_name, host, name, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: invalid flag value", LOG_STR("err", err));
        return 2; /* config_validate refuses it first */
    }
    const char *creds = getenv("PYRYCODE_RELAY_NATS_CREDS");
    struct node_params p = {
        .urls = cfg->cluster_nats,
        .creds_file = creds && creds[0] ? creds : NULL,
        .tls = bus_tls(cfg),
        .cluster = cfg->cluster_name,
        .name = name,
        .lease_ms = (uint64_t)(cfg->cluster_lease_ns / NS_PER_MS),
        .replicas = (int)cfg->cluster_replicas,
        .ctl_threads = (unsigned)cfg->cluster_ctl_threads,
        .connect_ms = (uint64_t)(cfg->cluster_connect_timeout_ns / NS_PER_MS),
        .min_payload = cfg->max_message_bytes + 1024,
        .shards = shards,
    };
    if (node_start(out, &p, err, sizeof err) != 0) {
        node_urls_for_log(cfg->cluster_nats, bus, sizeof bus);
        LOGF(LOG_ERROR, "refusing to start: cluster bus unavailable", LOG_STR("err", err),
             LOG_STR("bus", bus),
             LOG_STR("fix",
                     "start the NATS servers (with JetStream) named by --cluster-nats, or "
                     "check the URLs, credentials, TLS files (--cluster-nats-ca/-cert/-key) and "
                     "--cluster-replicas against them"));
        bus_global_shutdown();
        return 1;
    }
    return 0;
}

/* The node lost its lease: every shard fences and leaves the bus. */
static void on_node_fence(void *ud, uint64_t gen)
{
    fence_request(ud, gen);
    xnode_close_all(ud);
}

/* Registered again under a new node id: back on the bus under it. */
static void on_node_registered(void *ud)
{
    xnode_reopen_all(ud);
}

/* The shards exist: they fence with the node and join the bus from now on. */
static void join_cluster(struct node *node, struct relay_shared *sh, struct server *srv)
{
    if (!node)
        return;
    sh->node = node;
    for (unsigned i = 0; i < sh->n; i++)
        fence_start(&sh->relays[i]);
    const char *creds = getenv("PYRYCODE_RELAY_NATS_CREDS");
    xnode_start(sh, creds && creds[0] ? creds : NULL, bus_tls(srv->cfg));
    node_run(node, (struct node_hooks){
                       .on_fence = on_node_fence, .on_registered = on_node_registered, .ud = sh});
}

/* After the drain: release the node lease, then cnats itself. */
static void leave_cluster(struct relay_shared *sh)
{
    if (!sh->node)
        return;
    node_stop(sh->node);
    sh->node = NULL;
    bus_global_shutdown();
}

/* The public listener: HTTPS in autocert mode (behind the Host check,
 * optionally behind PROXY v2), plain HTTP in insecure mode. Returns 0, or 1
 * after logging `listener failed`. */
static int bind_public(struct server *srv, const struct config *cfg, struct tls_server *tls)
{
    char err[256];
    const char *addr = tls ? cfg->https_listen : cfg->insecure_listen;
    struct conn_opts opts = {
        .hooks = &relay_hooks,
        .tls = tls,
        .proxy_protocol = tls && cfg->https_proxy_protocol,
        .domain = tls ? cfg->domain : NULL,
    };
    if (server_listen_opts(srv, addr, &opts, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", addr), LOG_STR("err", err),
             LOG_STR("fix", "free the address (another process holds it?) or pick another one"));
        return 1;
    }
    server_log_listening(&srv->listeners[0].tcp, tls ? "https" : "public");
    return 0;
}

int main(int argc, char **argv)
{
    /* SIGHUP never terminates, not even before the loop handles it. */
    signal(SIGHUP, SIG_IGN);
    /* On main's stack: every thread they are shared with is joined first. */
    struct config cfg;
    struct reload_ctx rc;
    struct fcm_creds creds;
    struct tls_server *tls = NULL;
    memset(&cfg, 0, sizeof cfg);
    memset(&rc, 0, sizeof rc);
    memset(&creds, 0, sizeof creds);
    int code = configure(&cfg, &rc, argc, argv, &creds, &tls);
    if (code >= 0)
        return code;

    /* A peer that vanishes mid-write must cost one connection, not the
     * process: writes then fail with EPIPE instead of raising SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    struct server srv;
    struct relay_shared shared;
    struct metrics metrics;
    struct autocert autocert;
    memset(&srv, 0, sizeof srv);
    memset(&shared, 0, sizeof shared);
    memset(&metrics, 0, sizeof metrics);
    memset(&autocert, 0, sizeof autocert);
    /* ACME runs in autocert mode unless static certificates were given; a
     * cached certificate is delivered from inside autocert_init. */
    bool acme_on = tls && !cfg.tls_cert[0];
    if (acme_on && (code = autocert_init(&autocert, &loop, &cfg, on_acme_cert, tls)) != 0) {
        tls_server_free(tls);
        fcm_creds_free(&creds);
        return code;
    }
    uv_loop_init(&loop);
    /* --workers 0: one shard per CPU the process may run on. */
    unsigned workers = cfg.workers > 0 ? (unsigned)cfg.workers : uv_available_parallelism();
    struct node *node = NULL;
    if ((code = start_cluster(&cfg, workers, &node)) != 0) {
        uv_loop_close(&loop);
        tls_server_free(tls);
        fcm_creds_free(&creds);
        return code;
    }
    server_init(&srv, &loop, &cfg, workers, &relay_hooks);
    struct relay *relays = xcalloc(srv.nshards, sizeof *relays);
    relay_init(relays, &shared, &srv);
    struct relay *relay = &relays[0];
    join_cluster(node, &shared, &srv);
    if (creds.key)
        shared.push = start_push(&loop, &cfg, &creds);
    if ((code = bind_public(&srv, &cfg, tls)) != 0)
        return code;
    rc.tls = tls && cfg.tls_cert[0] ? tls : NULL;
    rc.sh = &shared;
    server_on_reload(&srv, reload, &rc);
    if (acme_on && (code = autocert_start(&autocert, &srv, &cfg)) != 0)
        return code;
    if ((code = bind_side_listeners(&srv, &cfg, &metrics, relay)) != 0)
        return code;
    LOGF(LOG_INFO, "ready", LOG_STR("version", RELAY_VERSION), LOG_NUM("workers", srv.nshards));
    notify_ready("serving");
    code = server_run(&srv);
    leave_cluster(&shared);
    if (acme_on)
        autocert_free(&autocert);
    relay_close(&shared);
    free(relays);
    server_free(&srv);
    tls_server_free(tls);
    uv_loop_close(&loop);
    return code;
}
