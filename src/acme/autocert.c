/* autocert.c — glue between the boot sequence and the ACME client: logs
 * the reference's `autocert setup failed` refusal (exit 1), binds the HTTP-01
 * listener, registers acme_stop as a drain hook. No policy of its own. */
#include "acme/autocert.h"

#include <string.h>

#include "base/log.h"
#include "net/server.h"

#define FIX_SETUP                                                                                  \
    "give --domain a plain DNS name and --cert-cache a directory the relay's user owns with "      \
    "mode 0700 (or a path it may create)"

int autocert_check(const struct config *cfg)
{
    char err[1024];
    int rc = cfg->check_config ? acme_check_config_dry(cfg, err, sizeof err)
                               : acme_check_config(cfg, err, sizeof err);
    if (rc != 0) {
        LOGF(LOG_ERROR, "autocert setup failed", LOG_STR("err", err), LOG_STR("fix", FIX_SETUP));
        return 1;
    }
    return 0;
}

static void on_drain(void *arg)
{
    acme_stop(arg);
}

int autocert_init(struct autocert *ac, uv_loop_t *loop, const struct config *cfg,
                  acme_on_cert_fn on_cert, void *ud)
{
    char err[1024];
    memset(ac, 0, sizeof *ac);
    ac->acme = acme_new(loop, cfg, on_cert, ud, err, sizeof err);
    if (!ac->acme) {
        LOGF(LOG_ERROR, "autocert setup failed", LOG_STR("err", err), LOG_STR("fix", FIX_SETUP));
        return 1;
    }
    return 0;
}

int autocert_start(struct autocert *ac, struct server *srv, const struct config *cfg)
{
    char err[1024];
    if (acme_http_listen(&ac->http, srv, ac->acme, cfg->http_listen, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "listener failed", LOG_STR("addr", cfg->http_listen), LOG_STR("err", err),
             LOG_STR("fix", "free the address or pick another with --http-listen"));
        return 1;
    }
    server_log_listening(ac->http.listener, "http-01");
    server_add_drain_hook(srv, on_drain, ac->acme);
    acme_start(ac->acme);
    return 0;
}

void autocert_free(struct autocert *ac)
{
    acme_free(ac->acme);
    ac->acme = NULL;
}
