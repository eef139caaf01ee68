/* fuzz_acme.c — every reader of untrusted ACME-side input: the CA's JSON
 * replies (directory, order, authorization, problem), base64url decoding,
 * and the port-80 router with its host policy. The input is tried as a
 * reply of each kind; for the router it is split into path and Host at
 * the first newline. Results must be self-consistent: a parsed token is a
 * valid token, a routed token lies inside the path, base64url decoding
 * round-trips. It does not judge which replies are sensible. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme/acme_http.h"
#include "codec/acme_msg.h"
#include "tls/pki.h"

static void require(bool ok)
{
    if (!ok)
        abort();
}

static void replies(const char *s, size_t n)
{
    char err[128], type[64], detail[64];
    struct acme_dir d;
    struct acme_order o;
    struct acme_authz a;
    if (acme_msg_directory(s, n, &d, err, sizeof err) == 0) {
        require(d.new_nonce && d.new_account && d.new_order);
        acme_dir_free(&d);
    }
    if (acme_msg_order(s, n, &o, err, sizeof err) == 0) {
        require(o.status && o.finalize && o.nauthz <= ACME_MAX_AUTHZ);
        for (size_t i = 0; i < o.nauthz; i++)
            require(o.authz[i] && o.authz[i][0]);
        acme_order_free(&o);
    }
    if (acme_msg_authz(s, n, &a, err, sizeof err) == 0) {
        require(a.status && a.identifier);
        if (a.chall_token)
            require(acme_msg_token_ok(a.chall_token, strlen(a.chall_token)));
        acme_authz_free(&a);
    }
    if (acme_msg_problem(s, n, type, sizeof type, detail, sizeof detail) == 0)
        require(strlen(type) < sizeof type && strlen(detail) < sizeof detail);
}

static void b64(const char *s, size_t n)
{
    unsigned char bin[512];
    char text[1024];
    long got = pki_b64url_decode(bin, sizeof bin, s, n > 600 ? 600 : n);
    if (got < 0)
        return;
    long len = pki_b64url(text, sizeof text, bin, (size_t)got);
    require(len >= 0 && (size_t)len == (n > 600 ? 600 : n) && memcmp(text, s, (size_t)len) == 0);
}

static void route(const char *s, size_t n)
{
    const char *nl = memchr(s, '\n', n);
    size_t plen = nl ? (size_t)(nl - s) : n;
    const char *host = nl ? nl + 1 : "";
    size_t hlen = nl ? n - plen - 1 : 0;
    const char *tok = NULL;
    size_t tlen = 0;
    enum acme_http_route r = acme_http_route(s, plen, host, hlen, "relay.test", &tok, &tlen);
    if (r == ACME_ROUTE_TOKEN) {
        require(tok >= s && tok + tlen == s + plen);
        require(acme_http_host_matches(host, hlen, "relay.test"));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy: the parsers must not read past size */
    char *s = malloc(size ? size : 1);
    memcpy(s, data, size);
    replies(s, size);
    b64(s, size);
    route(s, size);
    free(s);
    return 0;
}
