/* main.c — argv → config → startup checks → listeners → run → drain → exit
 * code. Boot refusals are logged by boot.c and exit 2; a listener that
 * cannot be bound exits 1; after that server.c owns the process. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "autocert.h"
#include "boot.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "server.h"

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
    int code = boot_checks(&cfg, env_get, "/proc/self/status");
    if (code != 0 || cfg.check_config)
        return code;

    /* A peer that vanishes mid-write must cost one connection, not the
     * process: writes then fail with EPIPE instead of raising SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    static struct server srv;
    static struct relay relay;
    static struct metrics metrics;
    static struct autocert autocert;
    bool autocert_mode = cfg.insecure_listen[0] == '\0';
    /* TLS merge: create the TLS server before this and pass its
     * certificate setter as on_cert instead of NULL (a cached certificate
     * is delivered from inside autocert_init). */
    if (autocert_mode && (code = autocert_init(&autocert, &loop, &cfg, NULL, NULL)) != 0)
        return code;
    uv_loop_init(&loop);
    char err[256];
    server_init(&srv, &loop, &cfg, &relay_hooks, &relay);
    relay_init(&relay, &srv);
    if (!autocert_mode && server_listen(&srv, cfg.insecure_listen, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg.insecure_listen),
             LOG_STR("err", err));
        return 1;
    }
    if (autocert_mode) {
        /* TLS merge: bind the HTTPS listener here, then drop this WARN. */
        LOG0(LOG_WARN, "autocert: this build has no HTTPS listener yet; only ACME runs");
        if ((code = autocert_start(&autocert, &srv, &cfg)) != 0)
            return code;
    }
    if (cfg.metrics_listen[0]) {
        LOGF(LOG_INFO, "starting metrics listener", LOG_STR("listen", cfg.metrics_listen));
        if (metrics_listen(&metrics, &srv, &relay, cfg.metrics_listen, err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg.metrics_listen),
                 LOG_STR("err", err));
            return 1;
        }
    }
    code = server_run(&srv);
    if (autocert_mode)
        autocert_free(&autocert);
    relay_close(&relay);
    uv_loop_close(&loop);
    return code;
}
