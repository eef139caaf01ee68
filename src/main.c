/* main.c — argv → config → startup checks → TLS context → listeners → run
 * → drain → exit code. Boot refusals are logged by boot.c and exit 2; a
 * certificate that cannot be loaded or a listener that cannot be bound
 * exits 1; after that server.c owns the process. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "autocert.h"
#include "boot.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "push.h"
#include "relay.h"
#include "server.h"
#include "tls.h"
#include "util.h"

static const char *env_get(const char *name)
{
    return getenv(name);
}

/* SIGHUP in static-certificate mode: new handshakes get the files' current
 * contents; established connections keep theirs. A bad file changes
 * nothing but the log. */
static void reload_certs(struct server *srv, void *arg)
{
    struct tls_server *ts = arg;
    const struct config *cfg = srv->cfg;
    char err[512];
    if (tls_server_load_files(ts, cfg->tls_cert, cfg->tls_key, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "tls certificate reload failed; keeping the previous certificate",
             LOG_STR("err", err));
        return;
    }
    LOGF(LOG_INFO, "tls certificate reloaded", LOG_STR("path", cfg->tls_cert));
}

/* ACME delivered a certificate (cached or new): new handshakes use it. */
static void on_acme_cert(void *ud, const char *chain, size_t chain_len, const char *key,
                         size_t key_len)
{
    char err[512];
    if (tls_server_set_cert_pem(ud, chain, chain_len, key, key_len, err, sizeof err) != 0)
        LOGF(LOG_ERROR, "acme certificate rejected by TLS", LOG_STR("err", err));
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
        LOGF(LOG_ERROR, "refusing to start: cannot load --tls-cert/--tls-key", LOG_STR("err", err));
        tls_server_free(ts);
        return NULL;
    }
    return ts;
}

int main(int argc, char **argv)
{
    struct config cfg;
    config_defaults(&cfg, getenv("HOME"));
    switch (config_parse(&cfg, argc, argv, stderr)) {
    case CONFIG_HELP:
        return 0;
    case CONFIG_ERROR:
        return 2;
    case CONFIG_OK:
        break;
    }
    if (config_validate(&cfg, stderr) != 0)
        return 2;
    enum log_format fmt = LOG_FORMAT_TEXT;
    log_format_parse(cfg.log_format, &fmt);
    log_setup(fmt, LOG_INFO, 2);
    if (cfg.version) {
        printf("%s\n", RELAY_VERSION);
        return 0;
    }
    struct fcm_creds creds;
    int code = boot_checks(&cfg, env_get, "/proc/self/status", &creds);
    if (code != 0) {
        fcm_creds_free(&creds);
        return code;
    }
    struct tls_server *tls = NULL;
    if (!cfg.insecure_listen[0] && !(tls = autocert_tls(&cfg))) {
        fcm_creds_free(&creds);
        return 1;
    }
    if (cfg.check_config) {
        tls_server_free(tls);
        fcm_creds_free(&creds);
        return 0;
    }

    /* A peer that vanishes mid-write must cost one connection, not the
     * process: writes then fail with EPIPE instead of raising SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    static struct server srv;
    static struct relay_shared shared;
    static struct metrics metrics;
    static struct autocert autocert;
    /* ACME runs in autocert mode unless static certificates were given; a
     * cached certificate is delivered from inside autocert_init. */
    bool acme_on = tls && !cfg.tls_cert[0];
    if (acme_on && (code = autocert_init(&autocert, &loop, &cfg, on_acme_cert, tls)) != 0) {
        tls_server_free(tls);
        fcm_creds_free(&creds);
        return code;
    }
    uv_loop_init(&loop);
    char err[256];
    /* --workers 0: one shard per CPU the process may run on. */
    unsigned workers = cfg.workers > 0 ? (unsigned)cfg.workers : uv_available_parallelism();
    server_init(&srv, &loop, &cfg, workers, &relay_hooks);
    struct relay *relays = xcalloc(srv.nshards, sizeof *relays);
    relay_init(relays, &shared, &srv);
    struct relay *relay = &relays[0];
    if (creds.key) {
        struct push_config pcfg = {.fcm_base_url = cfg.fcm_base_url,
                                   .fcm_project = cfg.fcm_project,
                                   .ca_bundle = cfg.outbound_ca_bundle,
                                   .timeout_ms = (uint64_t)(cfg.push_timeout_ns / NS_PER_MS)};
        if (pcfg.timeout_ms == 0)
            pcfg.timeout_ms = 1;
        shared.push = push_new(&loop, &pcfg, &creds);
    }
    const char *public_addr = tls ? cfg.https_listen : cfg.insecure_listen;
    /* Autocert mode: HTTPS behind the Host check, optionally behind PROXY v2.
     * (The HTTP-01 listener on --http-listen belongs to the ACME wiring.) */
    struct conn_opts public_opts = {
        .hooks = &relay_hooks,
        .tls = tls,
        .proxy_protocol = tls && cfg.https_proxy_protocol,
        .domain = tls ? cfg.domain : NULL,
    };
    if (server_listen_opts(&srv, public_addr, &public_opts, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", public_addr), LOG_STR("err", err));
        return 1;
    }
    if (tls && cfg.tls_cert[0])
        server_on_reload(&srv, reload_certs, tls);
    if (acme_on && (code = autocert_start(&autocert, &srv, &cfg)) != 0)
        return code;
    if (cfg.metrics_listen[0]) {
        LOGF(LOG_INFO, "starting metrics listener", LOG_STR("listen", cfg.metrics_listen));
        if (metrics_listen(&metrics, &srv, relay, cfg.metrics_listen, err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg.metrics_listen),
                 LOG_STR("err", err));
            return 1;
        }
    }
    code = server_run(&srv);
    if (acme_on)
        autocert_free(&autocert);
    relay_close(&shared);
    free(relays);
    server_free(&srv);
    tls_server_free(tls);
    uv_loop_close(&loop);
    return code;
}
