/* acme_msg.c — jansson-based readers for ACME server replies. Each reply
 * is parsed in full, the few members the client needs are copied out as
 * owned strings, and anything of the wrong type is an error rather than a
 * guess. Bodies are bounded by the caller (the HTTP layer caps them). */
#include "codec/acme_msg.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static json_t *parse_object(const char *body, size_t len, char *err, size_t cap)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, cap, "malformed JSON reply");
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(err, cap, "JSON reply is not an object");
        return NULL;
    }
    return root;
}

/* A copy of obj[key] when it is a non-empty string; NULL otherwise. */
static char *str_member(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return NULL;
    return xstrndup(json_string_value(v), json_string_length(v));
}

/* "type: detail" of a problem object, or NULL when v is not one. */
static char *problem_text(json_t *v)
{
    if (!json_is_object(v))
        return NULL;
    json_t *t = json_object_get(v, "type"), *d = json_object_get(v, "detail");
    const char *type = json_is_string(t) ? json_string_value(t) : "";
    const char *detail = json_is_string(d) ? json_string_value(d) : "";
    char buf[512];
    snprintf(buf, sizeof buf, "%.200s: %.300s", type, detail);
    return xstrndup(buf, strlen(buf));
}

int acme_msg_directory(const char *body, size_t len, struct acme_dir *out, char *err,
                       size_t err_cap)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_object(body, len, err, err_cap);
    if (!root)
        return -1;
    out->new_nonce = str_member(root, "newNonce");
    out->new_account = str_member(root, "newAccount");
    out->new_order = str_member(root, "newOrder");
    json_decref(root);
    if (!out->new_nonce || !out->new_account || !out->new_order) {
        acme_dir_free(out);
        snprintf(err, err_cap, "directory lacks newNonce, newAccount or newOrder");
        return -1;
    }
    return 0;
}

void acme_dir_free(struct acme_dir *d)
{
    free(d->new_nonce);
    free(d->new_account);
    free(d->new_order);
    memset(d, 0, sizeof *d);
}

int acme_msg_order(const char *body, size_t len, struct acme_order *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_object(body, len, err, err_cap);
    if (!root)
        return -1;
    out->status = str_member(root, "status");
    out->finalize = str_member(root, "finalize");
    out->certificate = str_member(root, "certificate");
    out->error = problem_text(json_object_get(root, "error"));
    json_t *list = json_object_get(root, "authorizations");
    int rc = 0;
    if (!out->status || !out->finalize || !json_is_array(list)) {
        snprintf(err, err_cap, "order lacks status, finalize or authorizations");
        rc = -1;
    } else if (json_array_size(list) > ACME_MAX_AUTHZ) {
        snprintf(err, err_cap, "order has more than %d authorizations", ACME_MAX_AUTHZ);
        rc = -1;
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                snprintf(err, err_cap, "order has a malformed authorization URL");
                rc = -1;
                break;
            }
            out->authz[out->nauthz++] = xstrndup(json_string_value(v), json_string_length(v));
        }
    }
    json_decref(root);
    if (rc != 0)
        acme_order_free(out);
    return rc;
}

void acme_order_free(struct acme_order *o)
{
    free(o->status);
    free(o->finalize);
    free(o->certificate);
    free(o->error);
    for (size_t i = 0; i < o->nauthz; i++)
        free(o->authz[i]);
    memset(o, 0, sizeof *o);
}

int acme_msg_authz(const char *body, size_t len, struct acme_authz *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_object(body, len, err, err_cap);
    if (!root)
        return -1;
    json_t *ident = json_object_get(root, "identifier");
    json_t *challs = json_object_get(root, "challenges");
    out->status = str_member(root, "status");
    if (json_is_object(ident) && json_is_string(json_object_get(ident, "type")) &&
        strcmp(json_string_value(json_object_get(ident, "type")), "dns") == 0)
        out->identifier = str_member(ident, "value");
    int rc = 0;
    if (!out->status || !out->identifier || !json_is_array(challs)) {
        snprintf(err, err_cap, "authorization lacks status, dns identifier or challenges");
        rc = -1;
    } else {
        size_t i;
        json_t *c;
        json_array_foreach(challs, i, c)
        {
            json_t *type = json_object_get(c, "type");
            if (!json_is_string(type) || strcmp(json_string_value(type), "http-01") != 0)
                continue;
            out->chall_url = str_member(c, "url");
            out->chall_token = str_member(c, "token");
            out->chall_status = str_member(c, "status");
            out->error = problem_text(json_object_get(c, "error"));
            if (!out->chall_url || !out->chall_token || !out->chall_status ||
                !acme_msg_token_ok(out->chall_token, strlen(out->chall_token))) {
                snprintf(err, err_cap, "malformed http-01 challenge");
                rc = -1;
            }
            break;
        }
    }
    json_decref(root);
    if (rc != 0)
        acme_authz_free(out);
    return rc;
}

void acme_authz_free(struct acme_authz *a)
{
    free(a->status);
    free(a->identifier);
    free(a->chall_url);
    free(a->chall_token);
    free(a->chall_status);
    free(a->error);
    memset(a, 0, sizeof *a);
}

int acme_msg_problem(const char *body, size_t len, char *type, size_t type_cap, char *detail,
                     size_t detail_cap)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    json_t *t = json_object_get(root, "type");
    int rc = -1;
    if (json_is_string(t)) {
        json_t *d = json_object_get(root, "detail");
        snprintf(type, type_cap, "%s", json_string_value(t));
        snprintf(detail, detail_cap, "%s", json_is_string(d) ? json_string_value(d) : "");
        rc = 0;
    }
    json_decref(root);
    return rc;
}

bool acme_msg_token_ok(const char *token, size_t len)
{
    if (len == 0 || len > 256)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = token[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}
