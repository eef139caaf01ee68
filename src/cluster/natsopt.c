/* natsopt.c — the options and error text every bus connection shares
 * (natsopt.h). */
#include "cluster/natsopt.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define NATSOPT_URLS_MAX 64

/* cnats' SetURL takes one URL only: the list goes in as its server array. */
static natsStatus set_servers(natsOptions *o, const char *urls)
{
    char *copy = xmalloc(strlen(urls) + 1), *save = NULL;
    const char *list[NATSOPT_URLS_MAX];
    int n = 0;

    strcpy(copy, urls);
    for (char *t = strtok_r(copy, ",", &save); t != NULL && n < NATSOPT_URLS_MAX;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        char *e = t + strlen(t);
        while (e > t && e[-1] == ' ')
            *--e = '\0';
        if (*t != '\0')
            list[n++] = t;
    }
    natsStatus s = n > 0 ? natsOptions_SetServers(o, list, n) : NATS_INVALID_ARG;
    free(copy);
    return s;
}

static bool given(const char *path)
{
    return path != NULL && path[0] != '\0';
}

bool natsopt_tls_on(const struct natsopt_tls *t)
{
    return t != NULL && (given(t->ca) || given(t->cert) || given(t->key));
}

/* SetSecure first: the CA and the certificate go into its SSL context. */
static natsStatus set_tls(natsOptions *o, const struct natsopt_tls *t)
{
    natsStatus s = natsOptions_SetSecure(o, true);

    if (s == NATS_OK && given(t->ca))
        s = natsOptions_LoadCATrustedCertificates(o, t->ca);
    if (s == NATS_OK && (given(t->cert) || given(t->key)))
        s = natsOptions_LoadCertificatesChain(o, t->cert, t->key);
    return s;
}

natsStatus natsopt_common(natsOptions *o, const char *urls, const char *name,
                          const char *creds_file, const struct natsopt_tls *tls)
{
    natsStatus s = set_servers(o, urls);

    if (s == NATS_OK) /* "own server first": cnats would shuffle the list */
        s = natsOptions_SetNoRandomize(o, true);
    if (s == NATS_OK && name != NULL)
        s = natsOptions_SetName(o, name);
    if (s == NATS_OK && creds_file != NULL)
        s = natsOptions_SetUserCredentialsFromFiles(o, creds_file, NULL);
    if (s == NATS_OK && natsopt_tls_on(tls))
        s = set_tls(o, tls);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(o, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(o, 2);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, NATSOPT_RECONNECT_WAIT_MS);
    return s;
}

const char *natsopt_last_error(natsStatus s)
{
    natsStatus ls = NATS_OK;
    const char *t = nats_GetLastError(&ls);

    if (t == NULL || ls != s)
        return "";
    if (t[0] == '(') {
        const char *e = strstr(t, "): ");
        if (e != NULL)
            t = e + 3;
    }
    return strcmp(t, natsStatus_GetText(s)) == 0 ? "" : t; /* cnats repeats the status text */
}
