/* kv.c — JetStream KV on streams we create ourselves (kv.h): the three
 * KV-shaped streams, Create and CAS as js_Publish with expectations, and
 * leader reads with js_GetLastMsg. Every call blocks (ctl thread only).
 * It deliberately does not use cnats' kvStore API (it forces AllowDirect
 * and hides the JetStream error code), and it does not retry, count or log:
 * outcomes go back to the lease and claim machines, which decide. */
#include "cluster/kv.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "base/util.h"
#include "cluster/natsopt.h"

#define KV_BUCKET_MAX 48  /* "pyry_<c>_claims" + NUL */
#define KV_NAME_MAX   64  /* "KV_pyry_<c>_claims" + NUL */
#define KV_SUBJ_MAX   160 /* "$KV.pyry_<c>_claims.<64 hex>" + NUL */
#define KV_RETRY_MS   250 /* kv_connect's wait between connect attempts */
#define MS_TO_NS      1000000LL

struct kv {
    natsConnection *nc; /* borrowed */
    jsCtx *js;
    int64_t max_payload;
    char stream[KV_BUCKETS][KV_NAME_MAX];   /* KV_pyry_<c>_<b> */
    char bucket[KV_BUCKETS][KV_BUCKET_MAX]; /* pyry_<c>_<b> */
};

static const char *const suffix[KV_BUCKETS] = {"nodes", "sids", "claims"};

__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* A bus failure: the operation, cnats' status text, the JetStream error
 * code when there is one, and cnats' last error text (server descriptions
 * such as "wrong last sequence: 5"; never a value). */
static void bus_err(char *err, size_t cap, const char *what, natsStatus s, jsErrCode jerr)
{
    const char *last = natsopt_last_error(s);
    if (jerr != 0)
        errf(err, cap, "%s: %s (jetstream error %d%s%s)", what, natsStatus_GetText(s), (int)jerr,
             last[0] ? ": " : "", last);
    else
        errf(err, cap, "%s: %s%s%s", what, natsStatus_GetText(s), last[0] ? ": " : "", last);
}

static bool name_valid(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

void kv_hash_of(const void *sid, size_t len, uint8_t out[32])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(sid, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        abort(); /* SHA-256 is always there; failing it means a broken libcrypto */
    memcpy(out, md, 32);
}

void kv_key_of(const void *sid, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t md[32];

    kv_hash_of(sid, len, md);
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    const struct kv_conn_events *ev = closure;
    (void)nc;
    ev->on_event(ev->ud, KV_CONN_DISCONNECTED);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    const struct kv_conn_events *ev = closure;
    (void)nc;
    ev->on_event(ev->ud, KV_CONN_RECONNECTED);
}

static void on_closed(natsConnection *nc, void *closure)
{
    const struct kv_conn_events *ev = closure;
    (void)nc;
    ev->on_event(ev->ud, KV_CONN_CLOSED);
}

int kv_connect(natsConnection **nc, const char *urls, const char *creds_file,
               const struct natsopt_tls *tls, const char *name, uint64_t timeout_ms,
               const struct kv_conn_events *ev, char *err, size_t errcap)
{
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);

    if (s == NATS_OK)
        s = natsopt_common(o, urls, name, creds_file, tls);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, KV_WAIT_MS);
    if (s == NATS_OK && ev != NULL)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, (void *)ev);
    if (s == NATS_OK && ev != NULL)
        s = natsOptions_SetReconnectedCB(o, on_reconnected, (void *)ev);
    if (s == NATS_OK && ev != NULL)
        s = natsOptions_SetClosedCB(o, on_closed, (void *)ev);
    if (s != NATS_OK) {
        bus_err(err, errcap, "cluster bus options", s, 0);
        natsOptions_Destroy(o);
        return -EIO;
    }
    /* Our own retry loop rather than SetRetryOnFailedConnect: that one
     * spends the same MaxReconnect budget (-1: forever) the connection
     * needs later, so it could not both bound boot and never give up. */
    int64_t deadline = nats_Now() + (int64_t)timeout_ms;
    for (;;) {
        s = natsConnection_Connect(nc, o);
        if (s == NATS_OK || nats_Now() + KV_RETRY_MS > deadline)
            break;
        nats_Sleep(KV_RETRY_MS);
    }
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        bus_err(err, errcap, "cluster bus connect", s, 0);
        return -EIO;
    }
    return 0;
}

/* The first field of our configuration `want` that `have` does not carry,
 * written as "field is X, want Y" into buf; false when they agree. */
static bool config_diff(const jsStreamConfig *have, const jsStreamConfig *want, char *buf,
                        size_t cap)
{
    const struct {
        const char *field;
        int64_t have, want;
    } f[] = {
        {"max_age (ns)", have->MaxAge, want->MaxAge},
        {"max_msgs_per_subject", have->MaxMsgsPerSubject, want->MaxMsgsPerSubject},
        {"storage (0 file, 1 memory)", have->Storage, want->Storage},
        {"num_replicas", have->Replicas, want->Replicas},
        {"allow_direct", have->AllowDirect, want->AllowDirect},
        {"allow_rollup_hdrs", have->AllowRollup, want->AllowRollup},
        {"deny_delete", have->DenyDelete, want->DenyDelete},
        {"discard (0 old, 1 new)", have->Discard, want->Discard},
        {"subjects (count)", have->SubjectsLen, want->SubjectsLen},
    };

    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].have != f[i].want) {
            snprintf(buf, cap, "%s is %lld, want %lld", f[i].field, (long long)f[i].have,
                     (long long)f[i].want);
            return true;
        }
    }
    if (have->SubjectsLen == 1 && strcmp(have->Subjects[0], want->Subjects[0]) != 0) {
        snprintf(buf, cap, "subjects differ");
        return true;
    }
    return false;
}

/* The stream exists with another configuration (or AddStream said so):
 * read it back and name the difference. Always an error. */
static int report_existing(struct kv *kv, enum kv_bucket b, const jsStreamConfig *want, char *err,
                           size_t errcap)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    char diff[128] = "a field this relay does not set";
    natsStatus s = js_GetStreamInfo(&si, kv->js, kv->stream[b], NULL, &jerr);

    if (s != NATS_OK) {
        bus_err(err, errcap, "stream info", s, jerr);
        return -EIO;
    }
    config_diff(si->Config, want, diff, sizeof diff);
    jsStreamInfo_Destroy(si);
    errf(err, errcap,
         "stream %s already exists with another configuration: %s "
         "(delete the stream, or start with the settings it was made with)",
         kv->stream[b], diff);
    return -EIO;
}

/* Creates bucket b's stream, or finds it with exactly our configuration. */
static int ensure_stream(struct kv *kv, enum kv_bucket b, int replicas, uint64_t max_age_ms,
                         char *err, size_t errcap)
{
    char subj[KV_SUBJ_MAX];
    const char *subjects[1] = {subj};
    jsStreamConfig sc;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    char diff[128];

    snprintf(subj, sizeof subj, "$KV.%s.>", kv->bucket[b]);
    jsStreamConfig_Init(&sc);
    sc.Name = kv->stream[b];
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.MaxAge = (int64_t)max_age_ms * MS_TO_NS;
    sc.MaxMsgsPerSubject = 1;
    sc.AllowRollup = true;
    sc.DenyDelete = true;
    sc.Discard = js_DiscardNew;
    sc.Storage = js_MemoryStorage;
    sc.Replicas = replicas;
    sc.AllowDirect = false; /* direct gets can be stale on 2.9.10 (#4162) */

    natsStatus s = js_AddStream(&si, kv->js, &sc, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr)
        return report_existing(kv, b, &sc, err, errcap);
    if (s != NATS_OK) {
        char what[KV_NAME_MAX + 32];
        snprintf(what, sizeof what, "create stream %s", kv->stream[b]);
        bus_err(err, errcap, what, s, jerr);
        return -EIO;
    }
    /* An identical request returns the existing stream: check anyway. */
    bool differs = si->Config == NULL || config_diff(si->Config, &sc, diff, sizeof diff);
    jsStreamInfo_Destroy(si);
    if (differs)
        return report_existing(kv, b, &sc, err, errcap);
    return 0;
}

static int check_params(const struct kv_params *p, char *err, size_t errcap)
{
    if (p->cluster == NULL || !name_valid(p->cluster, strlen(p->cluster), KV_CLUSTER_NAME_MAX)) {
        errf(err, errcap, "cluster name must be 1..%d of [A-Za-z0-9_-]", KV_CLUSTER_NAME_MAX);
        return -EINVAL;
    }
    if (p->replicas < 1 || p->replicas > 5) {
        errf(err, errcap, "cluster replicas must be 1..5, not %d", p->replicas);
        return -EINVAL;
    }
    if (p->lease_ms == 0 || p->lease_ms > INT64_MAX / MS_TO_NS ||
        p->sids_max_age > INT64_MAX / MS_TO_NS || p->claims_max_age > INT64_MAX / MS_TO_NS) {
        errf(err, errcap, "cluster lease and bucket ages must be 1 ms..%lld ms",
             (long long)(INT64_MAX / MS_TO_NS));
        return -EINVAL;
    }
    return 0;
}

static int open_streams(struct kv *kv, const struct kv_params *p, char *err, size_t errcap)
{
    const uint64_t age[KV_BUCKETS] = {
        p->lease_ms,
        p->sids_max_age ? p->sids_max_age : KV_SIDS_MAX_AGE_MS,
        p->claims_max_age ? p->claims_max_age : KV_CLAIMS_MAX_AGE_MS,
    };

    for (int b = 0; b < KV_BUCKETS; b++) {
        int rc = ensure_stream(kv, (enum kv_bucket)b, p->replicas, age[b], err, errcap);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int kv_open(struct kv **out, natsConnection *nc, const struct kv_params *p, char *err,
            size_t errcap)
{
    jsOptions jo;
    int rc = check_params(p, err, errcap);

    *out = NULL;
    if (rc < 0)
        return rc;
    struct kv *kv = xcalloc(1, sizeof *kv);
    kv->nc = nc;
    for (int b = 0; b < KV_BUCKETS; b++) {
        snprintf(kv->bucket[b], KV_BUCKET_MAX, "pyry_%s_%s", p->cluster, suffix[b]);
        snprintf(kv->stream[b], KV_NAME_MAX, "KV_%s", kv->bucket[b]);
    }
    kv->max_payload = natsConnection_GetMaxPayload(nc);
    if (p->min_payload > 0 && kv->max_payload < p->min_payload) {
        errf(err, errcap, "the NATS server's max_payload is %lld bytes, below the %lld needed",
             (long long)kv->max_payload, (long long)p->min_payload);
        kv_close(kv);
        return -EIO;
    }
    jsOptions_Init(&jo);
    jo.Wait = KV_WAIT_MS;
    natsStatus s = natsConnection_JetStream(&kv->js, nc, &jo);
    if (s != NATS_OK) {
        bus_err(err, errcap, "jetstream context", s, 0);
        kv_close(kv);
        return -EIO;
    }
    rc = open_streams(kv, p, err, errcap);
    if (rc < 0) {
        kv_close(kv);
        return rc;
    }
    *out = kv;
    return 0;
}

void kv_close(struct kv *kv)
{
    if (kv == NULL)
        return;
    if (kv->js != NULL)
        jsCtx_Destroy(kv->js);
    free(kv);
}

int64_t kv_max_payload(const struct kv *kv)
{
    return kv->max_payload;
}

const char *kv_stream_name(const struct kv *kv, enum kv_bucket b)
{
    return kv->stream[b];
}

/* "$KV.<bucket>.<key>": a node id verbatim, a server-id hashed. */
static int subject(const struct kv *kv, enum kv_bucket b, const void *key, size_t keylen,
                   char out[KV_SUBJ_MAX], char *err, size_t errcap)
{
    char hashed[65];

    if ((unsigned)b >= KV_BUCKETS) {
        errf(err, errcap, "unknown bucket %d", (int)b);
        return -EINVAL;
    }
    if (b == KV_NODES) {
        if (!name_valid(key, keylen, KV_NODE_KEY_MAX)) {
            errf(err, errcap, "%s: node id must be 1..%d of [A-Za-z0-9_-]", kv->bucket[b],
                 KV_NODE_KEY_MAX);
            return -EINVAL;
        }
        snprintf(out, KV_SUBJ_MAX, "$KV.%s.%.*s", kv->bucket[b], (int)keylen, (const char *)key);
        return 0;
    }
    kv_key_of(key, keylen, hashed);
    snprintf(out, KV_SUBJ_MAX, "$KV.%s.%s", kv->bucket[b], hashed);
    return 0;
}

static enum kv_outcome failed(char *err, size_t errcap, const char *what, natsStatus s,
                              jsErrCode jerr)
{
    bus_err(err, errcap, what, s, jerr);
    return s == NATS_TIMEOUT ? KV_TIMEOUT : KV_ERROR;
}

/* Create (expect_none) or CAS (last_rev > 0) as one js_Publish. */
static enum kv_outcome publish(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen,
                               const void *val, size_t len, uint64_t last_rev, uint64_t *rev,
                               char *err, size_t errcap)
{
    char subj[KV_SUBJ_MAX], what[KV_NAME_MAX + 16];
    jsPubOptions po;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;

    if (subject(kv, b, key, keylen, subj, err, errcap) < 0)
        return KV_ERROR;
    snprintf(what, sizeof what, "%s %s", last_rev ? "cas" : "create", kv->bucket[b]);
    if (len > INT_MAX) {
        errf(err, errcap, "%s: value of %zu bytes is too large", what, len);
        return KV_ERROR;
    }
    jsPubOptions_Init(&po);
    po.ExpectNoMessage = last_rev == 0;
    po.ExpectLastSubjectSeq = last_rev;
    natsStatus s = js_Publish(&pa, kv->js, subj, val, (int)len, &po, &jerr);
    if (s == NATS_OK) {
        *rev = pa->Sequence;
        jsPubAck_Destroy(pa);
        return KV_OK;
    }
    if (jerr == JSStreamWrongLastSequenceErr) {
        bus_err(err, errcap, what, s, jerr);
        return KV_CONFLICT;
    }
    return failed(err, errcap, what, s, jerr);
}

enum kv_outcome kv_create(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen,
                          const void *val, size_t len, uint64_t *rev, char *err, size_t errcap)
{
    return publish(kv, b, key, keylen, val, len, 0, rev, err, errcap);
}

enum kv_outcome kv_cas(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen,
                       const void *val, size_t len, uint64_t last_rev, uint64_t *rev, char *err,
                       size_t errcap)
{
    if (last_rev == 0) {
        errf(err, errcap, "cas needs a last revision > 0 (use create)");
        return KV_ERROR;
    }
    return publish(kv, b, key, keylen, val, len, last_rev, rev, err, errcap);
}

enum kv_outcome kv_get(struct kv *kv, enum kv_bucket b, const void *key, size_t keylen, void *buf,
                       size_t cap, size_t *len, uint64_t *rev, char *err, size_t errcap)
{
    char subj[KV_SUBJ_MAX], what[KV_NAME_MAX + 16];
    natsMsg *m = NULL;
    jsErrCode jerr = 0;

    if (subject(kv, b, key, keylen, subj, err, errcap) < 0)
        return KV_ERROR;
    snprintf(what, sizeof what, "get %s", kv->bucket[b]);
    /* Through the leader ($JS.API.STREAM.MSG.GET), never a direct get. */
    natsStatus s = js_GetLastMsg(&m, kv->js, kv->stream[b], subj, NULL, &jerr);
    if (jerr == JSNoMessageFoundErr || (s == NATS_NOT_FOUND && jerr != JSStreamNotFoundErr))
        return KV_NOT_FOUND;
    if (s != NATS_OK)
        return failed(err, errcap, what, s, jerr);
    int n = natsMsg_GetDataLength(m);
    *len = n > 0 ? (size_t)n : 0;
    *rev = natsMsg_GetSequence(m);
    enum kv_outcome o = KV_OK;
    if (*len > cap) {
        errf(err, errcap, "%s: value of %zu bytes exceeds the %zu-byte buffer", what, *len, cap);
        o = KV_ERROR;
    } else if (*len > 0) {
        memcpy(buf, natsMsg_GetData(m), *len);
    }
    natsMsg_Destroy(m);
    return o;
}

const char *kv_outcome_name(enum kv_outcome o)
{
    switch (o) {
    case KV_OK:
        return "ok";
    case KV_CONFLICT:
        return "conflict";
    case KV_NOT_FOUND:
        return "not_found";
    case KV_ERROR:
        return "error";
    case KV_TIMEOUT:
        return "timeout";
    }
    return "error";
}

const char *kv_op_name(enum kv_op op)
{
    switch (op) {
    case KV_OP_CREATE:
        return "create";
    case KV_OP_CAS:
        return "cas";
    case KV_OP_GET:
        return "get";
    }
    return "?";
}
