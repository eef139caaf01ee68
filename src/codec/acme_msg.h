/* acme_msg.h — reading the JSON an ACME server sends (RFC 8555 §7.1): the
 * directory, orders, authorizations with their http-01 challenge, and
 * problem documents. Pure (bytes in, owned strings out) and fuzzed: every
 * body is untrusted input. Nothing here sends or signs anything.
 * Pure: any thread (the ACME job calls it on libuv's thread pool). */
#ifndef RELAY_ACME_MSG_H
#define RELAY_ACME_MSG_H

#include <stdbool.h>
#include <stddef.h>

#define ACME_MAX_AUTHZ 8 /* we order one identifier; a few spare */

struct acme_dir {
    char *new_nonce, *new_account, *new_order;
};

struct acme_order {
    char *status;      /* pending | ready | processing | valid | invalid */
    char *finalize;    /* URL */
    char *certificate; /* URL once valid, else NULL */
    char *authz[ACME_MAX_AUTHZ];
    size_t nauthz;
    char *error; /* "type: detail" of an embedded problem, else NULL */
};

struct acme_authz {
    char *status;     /* pending | valid | invalid | deactivated | expired | revoked */
    char *identifier; /* the dns identifier's value */
    /* the http-01 challenge (all NULL when the server offers none) */
    char *chall_url, *chall_token, *chall_status;
    char *error; /* the challenge's problem as "type: detail", else NULL */
};

/* Each parser fills *out (zeroed first) and returns 0, or returns -1 with
 * a short reason in err and nothing to free. On success free with the
 * matching _free function. Unknown members are ignored. */
int acme_msg_directory(const char *body, size_t len, struct acme_dir *out, char *err,
                       size_t err_cap);
int acme_msg_order(const char *body, size_t len, struct acme_order *out, char *err, size_t err_cap);
int acme_msg_authz(const char *body, size_t len, struct acme_authz *out, char *err, size_t err_cap);

void acme_dir_free(struct acme_dir *d);
void acme_order_free(struct acme_order *o);
void acme_authz_free(struct acme_authz *a);

/* Reads a problem document (RFC 7807). Writes its type and detail
 * (truncated, never NULL) and returns 0, or -1 when body is not one. */
int acme_msg_problem(const char *body, size_t len, char *type, size_t type_cap, char *detail,
                     size_t detail_cap);

/* True when token[0..len) is a usable challenge token: 1–256 base64url
 * characters (so it can be published and matched in a URL path). */
bool acme_msg_token_ok(const char *token, size_t len);

#endif
