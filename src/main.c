/* main.c — argv → config → startup checks → listeners → run → drain → exit
 * code. Boot refusals are logged by boot.c and exit 2; a listener that
 * cannot be bound exits 1; after that server.c owns the process. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "boot.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "push.h"
#include "relay.h"
#include "server.h"
#include "util.h"

static const char *env_get(const char *name)
{
    return getenv(name);
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
    if (code != 0 || cfg.check_config) {
        fcm_creds_free(&creds);
        return code;
    }

    /* A peer that vanishes mid-write must cost one connection, not the
     * process: writes then fail with EPIPE instead of raising SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    static struct server srv;
    static struct relay_shared shared;
    static struct metrics metrics;
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
    if (server_listen(&srv, cfg.insecure_listen, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg.insecure_listen),
             LOG_STR("err", err));
        return 1;
    }
    if (cfg.metrics_listen[0]) {
        LOGF(LOG_INFO, "starting metrics listener", LOG_STR("listen", cfg.metrics_listen));
        if (metrics_listen(&metrics, &srv, relay, cfg.metrics_listen, err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg.metrics_listen),
                 LOG_STR("err", err));
            return 1;
        }
    }
    code = server_run(&srv);
    relay_close(&shared);
    free(relays);
    server_free(&srv);
    uv_loop_close(&loop);
    return code;
}
