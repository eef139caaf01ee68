/* main.c — argv → config → startup checks → listener → run → drain → exit
 * code. Boot refusals are ERROR lines with the spec's exact wording (§6.3)
 * and exit 2; everything after the listener is bound is server.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "netaddr.h"
#include "relay.h"
#include "server.h"

#define FIX_MUTEX                                                                                  \
    "use --insecure-listen alone (proxy-fronted plaintext mode), OR use --domain with optional "   \
    "--http-listen / --https-listen (autocert mode); the new flags configure the autocert "        \
    "listeners and have no effect in insecure mode"
#define FIX_MAXCONN "pass a positive connection count, or omit the flag for the default"

/* Spec §6.3 steps 3-5: the checks that need nothing but the flags. */
static int check_flags(const struct config *cfg)
{
    bool insecure = cfg->insecure_listen[0] != '\0';
    if (!insecure && cfg->domain[0] == '\0') {
        LOG0(LOG_ERROR, "either --domain (for autocert) or --insecure-listen (for behind-proxy "
                        "mode) must be set");
        return -1;
    }
    if (insecure &&
        (config_flag_given(cfg, "http-listen") || config_flag_given(cfg, "https-listen") ||
         config_flag_given(cfg, "https-proxy-protocol"))) {
        LOGF(LOG_ERROR,
             "refusing to start: --insecure-listen is mutually exclusive with --http-listen / "
             "--https-listen / --https-proxy-protocol",
             LOG_STR("fix", FIX_MUTEX));
        return -1;
    }
    if (cfg->max_connections <= 0) {
        char err[128];
        snprintf(err, sizeof err, "max-connections %lld: relay: connection cap must be positive",
                 (long long)cfg->max_connections);
        LOGF(LOG_ERROR, "refusing to start: invalid --max-connections", LOG_STR("err", err),
             LOG_NUM("value", cfg->max_connections), LOG_STR("fix", FIX_MAXCONN));
        return -1;
    }
    if (!insecure) {
        LOGF(LOG_ERROR, "refusing to start: autocert mode is not available in this build",
             LOG_STR("err", "relay: --domain needs TLS support, which is not built yet"),
             LOG_STR("fix", "run behind a TLS-terminating proxy with --insecure-listen"));
        return -1;
    }
    return 0;
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
    if (check_flags(&cfg) != 0)
        return 2;
    if (cfg.check_config)
        return 0;

    LOGF(LOG_INFO, "starting", LOG_STR("version", RELAY_VERSION), LOG_STR("mode", "insecure"),
         LOG_STR("listen", cfg.insecure_listen));

    char err[256];
    char host[256];
    int port;
    if (netaddr_split(cfg.insecure_listen, host, sizeof host, &port, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: invalid listener address", LOG_STR("err", err),
             LOG_STR("addr", cfg.insecure_listen));
        return 2;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    static struct server srv;
    static struct relay relay;
    server_init(&srv, &loop, &cfg, &relay_hooks, &relay);
    relay_init(&relay, &srv);
    if (server_listen(&srv, cfg.insecure_listen, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg.insecure_listen),
             LOG_STR("err", err));
        return 1;
    }
    int code = server_run(&srv);
    relay_close(&relay);
    uv_loop_close(&loop);
    return code;
}
