/* checks.h — the startup refusals (docs/features/operator-contract.md) as pure functions:
 * the environment contract, the single-instance self-check, production
 * mode, the Linux capability allowlist, listener and metrics addresses.
 * Each returns 0 or -1 with the reference's exact error text; main.c logs them
 * with the exact msg/fix strings and exits 2. Nothing here binds or logs.
 * Pure: any thread (main calls them at boot). */
#ifndef RELAY_CHECKS_H
#define RELAY_CHECKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads an environment variable: returns its value, or NULL when unset. */
typedef const char *(*checks_getenv_fn)(const char *name);

struct env_failure {
    const char *key;  /* the variable */
    char reason[160]; /* "missing" or "malformed-value: …" */
    char err[256];    /* "relay: invalid env-var config: KEY: REASON" */
};

/* Validates the env contract table in order (PRODUCTION, SINGLE_INSTANCE,
 * FCM_CREDENTIALS); the first failure is reported. The FCM value is never
 * echoed. Returns 0 or -1. */
int checks_env(checks_getenv_fn get, struct env_failure *out);

/* True when the variable is exactly "1". */
bool checks_env_is_one(checks_getenv_fn get, const char *name);

/* Startup check 7 (docs/operations.md): refuse when FLY_APP_NAME is non-empty and the bypass is
 * not exactly "1". Returns 0 or -1 with err set. */
int checks_single_instance(checks_getenv_fn get, char *err, size_t cap);

/* True when value is a usable Google service-account JSON key (type
 * service_account, client_email, an RSA private key): fcm_creds_parse, the
 * one parser, accepts it. */
bool checks_fcm_credentials_valid(const char *value);

/* Parses the CapEff line of a /proc/self/status text. Returns 0 or -1
 * (missing line, not hex, more than 16 digits, trailing junk). */
int checks_parse_capeff(const char *status, uint64_t *mask);

/* Capability allowlist (docs/features/operator-contract.md): only bit 10 (CAP_NET_BIND_SERVICE) may
 * be set. Returns 0 or -1 with the refusal text naming every offending bit. */
int checks_capeff_allowed(uint64_t mask, char *err, size_t cap);

/* The capability name for a bit ("CAP_NET_ADMIN"), or NULL if unknown. */
const char *checks_cap_name(unsigned bit);

/* Startup check 12 (docs/operations.md): addr must be a loopback IP literal with a valid port.
 * Returns 0 or -1 with err set. An empty addr is "disabled" and passes. */
int checks_metrics_addr(const char *addr, char *err, size_t cap);

/* Startup check 7 with a bus (docs/operations.md): path, the value of flag
 * (e.g. "--cluster-nats-ca"; "" = not given, passes), must name a regular
 * file the relay can open for reading. Returns 0 or -1 with err naming the
 * flag, the path and why; the file's contents are never read. */
int checks_readable_file(const char *flag, const char *path, char *err, size_t cap);

/* Port allowlist (docs/features/operator-contract.md): every port the process is about to bind must
 * be expected. Ports are listed in any order; the error lists both sets ascending. */
int checks_ports(const int *actual, size_t nactual, const int *expected, size_t nexpected,
                 char *err, size_t cap);

#endif
