/* acme_internal.h — what acme.c (loop side) and acme_job.c (thread-pool
 * side) share. Not for other modules: use acme.h. Fields marked "job"
 * are written only by the running job and read by the loop in job_done
 * (uv_queue_work orders the two); a->stop and the token table are the
 * only state both sides touch concurrently. */
#ifndef RELAY_ACME_INTERNAL_H
#define RELAY_ACME_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "acme/acme.h"
#include "tls/pki.h"

#define ACME_ACCOUNT_KEY "acme_account.key"
#define ACME_MAX_TOKENS  4

struct acme_job {
    uv_work_t work;
    struct acme *a;
    int rc;        /* job: 0 = certificate obtained */
    char err[512]; /* job: why it failed */
    char *chain;   /* job: PEM chain */
    size_t chain_len;
    char *key; /* job: PEM key of the certificate */
    size_t key_len;
    int64_t not_after; /* job: the leaf's notAfter, unix seconds */
};

struct acme {
    uv_loop_t *loop;
    /* read-only after acme_new (the job reads them) */
    char *domain, *cache_dir, *directory, *ca_bundle;
    char crt_name[270], key_name[270];
    EVP_PKEY *account_key; /* used by one job at a time */
    char thumbprint[64];
    /* loop only */
    int64_t renew_before_s;
    uint64_t retry_ms, backoff_ms;
    int64_t not_after; /* current certificate's, 0 = none */
    acme_on_cert_fn on_cert;
    void *ud;
    uv_timer_t timer;
    bool timer_live;
    bool stopped;
    struct acme_job *job; /* the attempt in flight, if any */
    /* shared */
    atomic_bool stop;
    uv_mutex_t lock; /* guards tokens */
    struct {
        char token[257];
        char keyauth[257 + 1 + 64];
    } tokens[ACME_MAX_TOKENS];
};

/* Thread-pool entry point: one complete issuance for a->domain. */
void acme_job_run(uv_work_t *w);

/* Token table, called by the job (thread-safe). */
void acme_tokens_publish(struct acme *a, const char *token);
void acme_tokens_withdraw(struct acme *a, const char *token);

#endif
