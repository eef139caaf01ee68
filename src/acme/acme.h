/* acme.h — an RFC 8555 ACME client for exactly one domain (--domain) with
 * the HTTP-01 challenge, its certificate cache in --cert-cache, and
 * renewal while the relay runs.
 *
 * Threads: every issuance attempt is one job on libuv's thread pool
 * (uv_queue_work) doing blocking libcurl easy calls; the event loop is
 * never blocked. Everything else — the functions below except
 * acme_http01_lookup, and every callback — runs on the loop thread.
 *
 * Files in the cache directory (all 0600, written atomically):
 *   acme_account.key   the account's ECDSA P-256 key (PKCS#8 PEM), reused
 *   <domain>.key       the certificate's ECDSA P-256 key
 *   <domain>.crt       the PEM chain as the CA sent it (leaf first) */
#ifndef RELAY_ACME_H
#define RELAY_ACME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/config.h"

struct acme;

/* A new certificate: PEM chain (leaf first) and PEM private key, both
 * valid only during the call (copy what you keep). Called on the loop:
 * possibly from inside acme_new (cached certificate), and after each
 * successful issuance. */
typedef void (*acme_on_cert_fn)(void *ud, const char *chain_pem, size_t chain_len,
                                const char *key_pem, size_t key_len);

/* The boot-time checks of acme_new that need no loop (startup check
 * 14a, docs/operations.md): domain and cache directory (which it creates
 * or tightens per docs/features/acme.md). Returns 0, or -1 with a sentence in err. */
int acme_check_config(const struct config *cfg, char *err, size_t err_cap);

/* acme_check_config without side effects (--check-config): nothing is
 * created or chmod-ed. Returns 0 or -1 with err set. */
int acme_check_config_dry(const struct config *cfg, char *err, size_t err_cap);

/* Checks and prepares everything that can fail at boot: the domain is a
 * plain DNS name, the cache directory obeys docs/features/acme.md (created 0700,
 * tightened or refused), the account key is loaded or created. A cached
 * certificate for the domain that has not expired is handed to on_cert
 * at once (INFO `acme certificate loaded from cache`); an unusable one is
 * ignored with a WARN. Uses cfg's domain, cert_cache, acme_directory,
 * acme_ca_bundle, acme_renew_before_ns and acme_retry_interval_ns (copied).
 * Returns the client, or NULL with a sentence in err (the boot logs
 * `autocert setup failed` and exits 1). Schedules nothing yet. */
struct acme *acme_new(uv_loop_t *loop, const struct config *cfg, acme_on_cert_fn on_cert, void *ud,
                      char *err, size_t err_cap);

/* Starts the schedule: issue at once when there is no usable certificate
 * or it is within --acme-renew-before of expiry, else when it gets there.
 * A failed attempt logs ERROR `acme issuance failed` and is retried after
 * --acme-retry-interval, doubling up to 1h. After a success the next
 * attempt is at notAfter − renew-before, but never sooner than one retry
 * interval. Call once, after the HTTP-01 listener is bound. */
void acme_start(struct acme *a);

/* Thread-safe. When token[0..token_len) is a challenge being validated
 * right now, writes its key authorization ("token.thumbprint", NUL-
 * terminated) to out and returns true; otherwise false. */
bool acme_http01_lookup(struct acme *a, const char *token, size_t token_len, char *out,
                        size_t out_cap);

/* The configured domain (lower-case), for the HTTP-01 host check. */
const char *acme_domain(const struct acme *a);

/* Stops for good (the drain): no new attempt is scheduled, the timer is
 * closed, a queued job is cancelled and a running one gives up at its next
 * check (its transfers abort within about a second; nothing it had not
 * yet written reaches the cache, and on_cert is not called). The loop can
 * then finish. Idempotent. */
void acme_stop(struct acme *a);

/* Frees the client. Call after acme_stop and after the loop has run to
 * completion (so a job's completion callback has been delivered), or
 * straight after acme_new when the boot fails before acme_start. */
void acme_free(struct acme *a);

#endif
