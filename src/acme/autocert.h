/* autocert.h — autocert mode's ACME wiring for main.c and boot.c: the
 * step 14a check, the ACME client, its port-80 listener and its place in
 * the drain. The certificate itself goes wherever on_cert sends it (the
 * TLS listener); this module knows nothing of TLS.
 * Main thread only: shard 0's loop, which the ACME client and its listener
 * also run on. */
#ifndef RELAY_AUTOCERT_H
#define RELAY_AUTOCERT_H

#include "acme/acme.h"
#include "acme/acme_http.h"
#include "base/config.h"

struct server;

struct autocert {
    struct acme *acme;
    struct acme_http http;
};

/* Startup check 14a (docs/operations.md): the domain and the cert-cache directory rules.
 * Returns 0, or logs ERROR `autocert setup failed` (err) and returns the
 * exit code 1. Binds nothing (safe under --check-config). */
int autocert_check(const struct config *cfg);

/* Creates the ACME client for loop (which need not be initialised yet:
 * nothing is registered with it here). A usable cached certificate reaches
 * on_cert before this returns, so whatever on_cert feeds must exist.
 * Returns 0, or logs ERROR `autocert setup failed` (err) and returns the
 * exit code 1. */
int autocert_init(struct autocert *ac, uv_loop_t *loop, const struct config *cfg,
                  acme_on_cert_fn on_cert, void *ud);

/* Binds --http-listen on the server's loop, makes the drain stop the
 * client, and starts issuance/renewal. Call after server_init, before
 * server_run. Returns 0, or logs `listener failed` and returns 1. */
int autocert_start(struct autocert *ac, struct server *srv, const struct config *cfg);

/* Releases the client; call after server_run has returned. */
void autocert_free(struct autocert *ac);

#endif
