/* boot.c — the startup refusals in the order of docs/operations.md, each an ERROR
 * line with the reference's exact msg/err/fix and exit code 2. The checks
 * themselves are pure (checks.c); this file only sequences and logs them.
 * It binds nothing: --check-config runs exactly this and exits. */
#include "boot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acme/autocert.h"
#include "base/log.h"
#include "base/netaddr.h"
#include "base/version.h"
#include "cluster/node.h"

#define FIX_MUTEX                                                                                  \
    "use --insecure-listen alone (proxy-fronted plaintext mode), OR use --domain with optional "   \
    "--http-listen / --https-listen (autocert mode); the new flags configure the autocert "        \
    "listeners and have no effect in insecure mode"
#define FIX_MAXCONN "pass a positive connection count, or omit the flag for the default"
#define FIX_SINGLE                                                                                 \
    "set PYRYCODE_RELAY_SINGLE_INSTANCE=1 in the deploy manifest (e.g. fly.toml [env]) to "        \
    "assert single-instance intent; see docs/architecture.md § Single-instance constraint"
#define FIX_PROD_INSECURE                                                                          \
    "remove --insecure-listen and set --domain, or unset PYRYCODE_RELAY_PRODUCTION"
#define FIX_PROD_ROOT                                                                              \
    "drop privileges before exec (e.g. Dockerfile USER directive or --user <non-zero>, "           \
    "kubernetes securityContext.runAsUser), or unset PYRYCODE_RELAY_PRODUCTION if the deploy is "  \
    "truly dev"
#define FIX_CAPS                                                                                   \
    "drop extra capabilities (e.g. --cap-drop=ALL --cap-add=NET_BIND_SERVICE on docker, or "       \
    "securityContext.capabilities on kubernetes); as root on a plain host: setpriv "               \
    "--bounding-set=-all,+net_bind_service -- pyrycode-relay ...; under systemd: "                 \
    "AmbientCapabilities=CAP_NET_BIND_SERVICE and CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
#define FIX_METRICS                                                                                \
    "use a loopback IP literal such as 127.0.0.1:9090 or [::1]:9090, or pass --metrics-listen= "   \
    "to disable"
#define MSG_PROD "refusing to start: production-mode misconfiguration"
#define FIX_MODE                                                                                   \
    "pass --insecure-listen 127.0.0.1:8080 behind a TLS-terminating proxy, or --domain "           \
    "relay.example.com to serve TLS itself"
#define FIX_ADDR  "write the address as host:port, :port or [v6]:port with a port from 1 to 65535"
#define FIX_PORTS "report this: the relay is about to bind a port its own flags do not name"
#define FIX_PUSH                                                                                   \
    "set PYRYCODE_RELAY_FCM_CREDENTIALS to the whole service-account JSON key, or unset it to "    \
    "turn push off"
#define FIX_OVERLAP "give each listener its own port (or its own IP address)"
#define FIX_CLUSTER_SINGLE                                                                         \
    "unset PYRYCODE_RELAY_SINGLE_INSTANCE to run as one node of a cluster, or drop "               \
    "--cluster-nats to run a single instance"
#define FIX_CREDS                                                                                  \
    "point PYRYCODE_RELAY_NATS_CREDS at a NATS credentials (.creds) file readable by the "         \
    "relay's user, or unset it"
#define FIX_BUS_TLS "point the flag at a PEM file readable by the relay's user, or drop it"

/* The bus's TLS files (with a bus only, like PYRYCODE_RELAY_NATS_CREDS):
 * each given one must be a readable file; cnats loads them at connect. */
static int check_bus_tls_files(const struct config *cfg)
{
    static const char *const flags[] = {"--cluster-nats-ca", "--cluster-nats-cert",
                                        "--cluster-nats-key"};
    const char *paths[] = {cfg->cluster_nats_ca, cfg->cluster_nats_cert, cfg->cluster_nats_key};
    char err[4608]; /* a whole path */
    for (size_t i = 0; i < 3; i++) {
        if (checks_readable_file(flags[i], paths[i], err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "refusing to start: invalid flag value", LOG_STR("err", err),
                 LOG_STR("flag", flags[i]), LOG_STR("fix", FIX_BUS_TLS));
            return -1;
        }
    }
    return 0;
}

/* Step 7 with a cluster bus (docs/features/cluster.md): several instances
 * are the point, so the refusal is skipped; claiming single-instance intent
 * at the same time is a contradiction. */
static int check_cluster_env(const struct config *cfg, checks_getenv_fn get)
{
    char bus[NODE_URLS_LOGMAX];
    node_urls_for_log(cfg->cluster_nats, bus, sizeof bus);
    if (checks_env_is_one(get, "PYRYCODE_RELAY_SINGLE_INSTANCE")) {
        LOGF(LOG_ERROR, "refusing to start: conflicting cluster config",
             LOG_STR("err", "relay: PYRYCODE_RELAY_SINGLE_INSTANCE=1 asserts a single instance, "
                            "and --cluster-nats joins a cluster"),
             LOG_STR("bus", bus), LOG_STR("env_var", "PYRYCODE_RELAY_SINGLE_INSTANCE"),
             LOG_STR("fix", FIX_CLUSTER_SINGLE));
        return -1;
    }
    const char *creds = get("PYRYCODE_RELAY_NATS_CREDS");
    if (creds && access(creds, R_OK) != 0) {
        LOGF(LOG_ERROR, "refusing to start: invalid env-var config",
             LOG_STR("err", "relay: PYRYCODE_RELAY_NATS_CREDS names a file the relay cannot read"),
             LOG_STR("env_var", "PYRYCODE_RELAY_NATS_CREDS"), LOG_STR("reason", "unreadable-file"),
             LOG_STR("fix", FIX_CREDS));
        return -1;
    }
    if (check_bus_tls_files(cfg) != 0)
        return -1;
    LOGF(LOG_INFO, "multi-instance deploy allowed: cluster bus configured", LOG_STR("bus", bus));
    return 0;
}

/* Steps 3-5: flags alone. */
static int check_flags(const struct config *cfg)
{
    bool insecure = cfg->insecure_listen[0] != '\0';
    if (!insecure && cfg->domain[0] == '\0') {
        LOGF(LOG_ERROR,
             "either --domain (for autocert) or --insecure-listen (for behind-proxy mode) must be "
             "set",
             LOG_STR("fix", FIX_MODE));
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
    return 0;
}

/* Steps 6-9: the environment. */
static int check_env(const struct config *cfg, checks_getenv_fn get)
{
    struct env_failure f;
    char err[256];
    if (checks_env(get, &f) != 0) {
        char fix[160];
        if (strcmp(f.key, "PYRYCODE_RELAY_FCM_CREDENTIALS") == 0)
            snprintf(fix, sizeof fix, "%s", FIX_PUSH);
        else
            snprintf(fix, sizeof fix, "set %s to exactly 1, or unset it", f.key);
        LOGF(LOG_ERROR, "refusing to start: invalid env-var config", LOG_STR("err", f.err),
             LOG_STR("env_var", f.key), LOG_STR("reason", f.reason), LOG_STR("fix", fix));
        return -1;
    }
    if (cfg->cluster_nats[0]) {
        if (check_cluster_env(cfg, get) != 0)
            return -1;
    } else if (checks_single_instance(get, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: multi-instance deploy detected", LOG_STR("err", err),
             LOG_STR("bypass_env_var", "PYRYCODE_RELAY_SINGLE_INSTANCE"),
             LOG_STR("fix", FIX_SINGLE));
        return -1;
    }
    if (!checks_env_is_one(get, "PYRYCODE_RELAY_PRODUCTION"))
        return 0;
    if (cfg->insecure_listen[0]) {
        LOGF(LOG_ERROR, MSG_PROD,
             LOG_STR("err", "relay: --insecure-listen is set with PYRYCODE_RELAY_PRODUCTION=1; "
                            "refusing to start"),
             LOG_STR("env_var", "PYRYCODE_RELAY_PRODUCTION"), LOG_STR("fix", FIX_PROD_INSECURE));
        return -1;
    }
    if (geteuid() == 0) {
        LOGF(LOG_ERROR, MSG_PROD,
             LOG_STR("err", "relay: effective uid is 0 with PYRYCODE_RELAY_PRODUCTION=1; refusing "
                            "to start"),
             LOG_STR("env_var", "PYRYCODE_RELAY_PRODUCTION"), LOG_NUM("effective_uid", 0),
             LOG_STR("fix", FIX_PROD_ROOT));
        return -1;
    }
    return 0;
}

/* Step 10: Linux capability allowlist. */
static int check_caps(const char *status_path)
{
    char text[8192], err[4096]; /* every bit named: never cut */
    uint64_t mask;
    FILE *f = fopen(status_path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    if (!f || checks_parse_capeff(text, &mask) != 0) {
        snprintf(err, sizeof err, "relay: reading CapEff from %s: %s", status_path,
                 f ? "no parsable CapEff line" : "cannot open file");
        LOGF(LOG_ERROR, "refusing to start: unexpected Linux capabilities", LOG_STR("err", err),
             LOG_STR("fix", FIX_CAPS));
        return -1;
    }
    if (checks_capeff_allowed(mask, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: unexpected Linux capabilities", LOG_STR("err", err),
             LOG_STR("fix", FIX_CAPS));
        return -1;
    }
    return 0;
}

/* Step 11: build the push sender's credentials (only fails when step 6 was
 * somehow bypassed). The value is never logged. */
static int check_push(checks_getenv_fn get, struct fcm_creds *creds)
{
    const char *value = get("PYRYCODE_RELAY_FCM_CREDENTIALS");
    memset(creds, 0, sizeof *creds);
    if (!value) {
        LOG0(LOG_INFO, "push off: PYRYCODE_RELAY_FCM_CREDENTIALS unset");
        return 0;
    }
    if (fcm_creds_parse(value, strlen(value), creds) != 0) {
        LOGF(LOG_ERROR, "refusing to start: cannot build the FCM push sender",
             LOG_STR("err", FCM_ERR_CREDENTIALS), LOG_STR("fix", FIX_PUSH));
        return -1;
    }
    return 0;
}

/* Wildcard hosts overlap every address on their port. */
static bool wildcard(const char *host)
{
    return !host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Two listeners that would bind one address: the second bind would fail
 * at run time (exit 1) or, worse, steal the other's traffic. names[i] is
 * the flag of addrs[i]. Returns 0 or the exit code 2 after logging. */
static int check_overlap(const char *const *names, const char *const *addrs, size_t n)
{
    char hi[256], hj[256], err[512];
    int pi, pj;
    for (size_t i = 0; i < n; i++) {
        if (!addrs[i][0] || netaddr_split(addrs[i], hi, sizeof hi, &pi, err, sizeof err) != 0)
            continue;
        for (size_t j = i + 1; j < n; j++) {
            if (!addrs[j][0] || netaddr_split(addrs[j], hj, sizeof hj, &pj, err, sizeof err) != 0)
                continue;
            if (pi != pj || !(strcmp(hi, hj) == 0 || wildcard(hi) || wildcard(hj)))
                continue;
            snprintf(err, sizeof err, "relay: --%s %s and --%s %s would bind the same address",
                     names[i], addrs[i], names[j], addrs[j]);
            LOGF(LOG_ERROR, "refusing to start: two listeners on one address", LOG_STR("err", err),
                 LOG_STR("fix", FIX_OVERLAP));
            return 2;
        }
    }
    return 0;
}

/* Step 13 (insecure mode): Info starting, listener address, port allowlist. */
static int check_insecure(const struct config *cfg, int mport, int hport)
{
    char err[512], host[256];
    int port;
    if (!cfg->check_config)
        LOGF(LOG_INFO, "starting", LOG_STR("version", RELAY_VERSION), LOG_STR("mode", "insecure"),
             LOG_STR("listen", cfg->insecure_listen));
    if (netaddr_split(cfg->insecure_listen, host, sizeof host, &port, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: invalid listener address", LOG_STR("err", err),
             LOG_STR("addr", cfg->insecure_listen), LOG_STR("fix", FIX_ADDR));
        return 2;
    }
    int actual[3] = {port, 0, 0};
    size_t n = 1;
    if (mport)
        actual[n++] = mport;
    if (hport)
        actual[n++] = hport;
    if (checks_ports(actual, n, actual, n, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: unexpected listener", LOG_STR("err", err),
             LOG_STR("fix", FIX_PORTS));
        return 2;
    }
    static const char *const names[] = {"insecure-listen", "metrics-listen", "health-listen"};
    const char *addrs[] = {cfg->insecure_listen, cfg->metrics_listen, cfg->health_listen};
    return check_overlap(names, addrs, 3);
}

/* Step 14 (autocert mode): 14a cache directory (exit 1), 14b listener
 * addresses and port allowlist, 14c Info starting. */
static int check_autocert(const struct config *cfg, int mport, int hport)
{
    char err[512], host[256];
    int ports[4] = {0, 0, 0, 0};
    const char *addrs[2] = {cfg->https_listen, cfg->http_listen};
    /* Static certificates turn ACME off, and with it the HTTP-01 listener. */
    bool acme = !cfg->tls_cert[0];
    if (!acme && config_flag_given(cfg, "http-listen")) {
        LOGF(LOG_ERROR, "refusing to start: --http-listen needs ACME",
             LOG_STR("err", "relay: --http-listen only serves ACME HTTP-01 challenges, and "
                            "--tls-cert turns ACME off"),
             LOG_STR("fix", "drop --http-listen, or drop --tls-cert/--tls-key to use ACME"));
        return 2;
    }
    if (acme && autocert_check(cfg) != 0)
        return 1;
    size_t naddrs = acme ? 2 : 1, n = naddrs;
    for (size_t i = 0; i < naddrs; i++) {
        if (netaddr_split(addrs[i], host, sizeof host, &ports[i], err, sizeof err) != 0) {
            LOGF(LOG_ERROR, "refusing to start: invalid listener address", LOG_STR("err", err),
                 LOG_STR("addr", addrs[i]), LOG_STR("fix", FIX_ADDR));
            return 2;
        }
    }
    if (mport)
        ports[n++] = mport;
    if (hport)
        ports[n++] = hport;
    if (checks_ports(ports, n, ports, n, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: unexpected listener", LOG_STR("err", err),
             LOG_STR("fix", FIX_PORTS));
        return 2;
    }
    static const char *const names[] = {"https-listen", "metrics-listen", "health-listen",
                                        "http-listen"};
    const char *all[] = {cfg->https_listen, cfg->metrics_listen, cfg->health_listen,
                         cfg->http_listen};
    if (check_overlap(names, all, acme ? 4 : 3) != 0)
        return 2;
    if (cfg->check_config)
        return 0;
    if (acme)
        LOGF(LOG_INFO, "starting", LOG_STR("version", RELAY_VERSION), LOG_STR("mode", "autocert"),
             LOG_STR("domain", cfg->domain), LOG_STR("cert_cache", cfg->cert_cache),
             LOG_STR("https_proxy_protocol", cfg->https_proxy_protocol ? "true" : "false"));
    else /* static certificate: no ACME, no cache directory */
        LOGF(LOG_INFO, "starting", LOG_STR("version", RELAY_VERSION),
             LOG_STR("mode", "static-cert"), LOG_STR("domain", cfg->domain),
             LOG_STR("tls_cert", cfg->tls_cert),
             LOG_STR("https_proxy_protocol", cfg->https_proxy_protocol ? "true" : "false"));
    return 0;
}

/* Steps 12-14: metrics address, then the mode's listeners. Returns the
 * exit code (0 to go on). */
static int check_listeners(const struct config *cfg)
{
    char err[512], host[256];
    int mport = 0;
    if (checks_metrics_addr(cfg->metrics_listen, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: invalid --metrics-listen address", LOG_STR("err", err),
             LOG_STR("value", cfg->metrics_listen), LOG_STR("fix", FIX_METRICS));
        return 2;
    }
    if (cfg->metrics_listen[0])
        netaddr_split(cfg->metrics_listen, host, sizeof host, &mport, err, sizeof err);
    int hport = 0;
    if (cfg->health_listen[0] &&
        netaddr_split(cfg->health_listen, host, sizeof host, &hport, err, sizeof err) != 0) {
        LOGF(LOG_ERROR, "refusing to start: invalid listener address", LOG_STR("err", err),
             LOG_STR("addr", cfg->health_listen), LOG_STR("fix", FIX_ADDR));
        return 2;
    }
    return cfg->insecure_listen[0] ? check_insecure(cfg, mport, hport)
                                   : check_autocert(cfg, mport, hport);
}

int boot_checks(const struct config *cfg, checks_getenv_fn get, const char *status_path,
                struct fcm_creds *push_creds)
{
    memset(push_creds, 0, sizeof *push_creds);
    if (check_flags(cfg) || check_env(cfg, get) || check_caps(status_path) ||
        check_push(get, push_creds))
        return 2;
    int code = check_listeners(cfg);
    if (code != 0)
        fcm_creds_free(push_creds);
    return code;
}
