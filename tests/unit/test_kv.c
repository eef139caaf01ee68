/* test_kv.c — the JetStream KV layer against a real nats-server: it starts
 * its own (single server, -js, memory streams, replicas 1) on a free
 * loopback port and always stops it and removes its directory again (group
 * teardown, and atexit should an assertion end the run early). Without a
 * nats-server binary ($NATS_SERVER_BIN, PATH, /usr/sbin) every test that
 * needs one is skipped with a message. Covers: the streams' configuration
 * read back, an idempotent second open, a conflicting existing stream,
 * create/get, create conflict, CAS with the right and a stale revision,
 * absent keys, MaxAge expiry, a deleted stream not read as "absent", the
 * SHA-256 key, and 100 two-thread Create races with exactly one winner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster/kv.h"

#include "nats_testkit.h"

#define RACES 100

static struct {
    struct nats_testsrv ns;
    bool skip;
    natsConnection *nc;
    struct kv *kv; /* cluster "t", replicas 1, L = 20 s */
} srv;

static struct kv_params params(const char *cluster)
{
    return (struct kv_params){.cluster = cluster, .replicas = 1, .lease_ms = 20000};
}

static int group_setup(void **state)
{
    char err[KV_ERR_MAX] = "";
    const char *bin = nats_test_find_server();
    struct kv_params p = params("t");

    (void)state;
    if (bin == NULL) {
        fprintf(stderr, "test_kv: no nats-server ($NATS_SERVER_BIN, PATH, /usr/sbin): "
                        "skipping every test that needs one\n");
        srv.skip = true;
        return 0;
    }
    if (nats_test_start(&srv.ns, bin, "test_kv", true) < 0)
        return -1;
    if (kv_connect(&srv.nc, srv.ns.url, NULL, NULL, "test_kv", 2000, NULL, err, sizeof err) < 0 ||
        kv_open(&srv.kv, srv.nc, &p, err, sizeof err) < 0) {
        fprintf(stderr, "test_kv: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kv_close(srv.kv);
    srv.kv = NULL;
    natsConnection_Destroy(srv.nc);
    srv.nc = NULL;
    nats_test_stop(&srv.ns);
    nats_CloseAndWait(2000);
    return 0;
}

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (srv.skip)                                                                              \
            skip();                                                                                \
    } while (0)

static void test_key_of(void **state)
{
    char out[65];

    (void)state;
    kv_key_of("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kv_key_of("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_string_equal(kv_outcome_name(KV_NOT_FOUND), "not_found");
    assert_string_equal(kv_op_name(KV_OP_CAS), "cas");
}

static void check_stream(jsCtx *js, const char *name, const char *subj, int64_t max_age_ms)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;

    assert_int_equal(js_GetStreamInfo(&si, js, name, NULL, &jerr), NATS_OK);
    const jsStreamConfig *c = si->Config;
    assert_int_equal(c->SubjectsLen, 1);
    assert_string_equal(c->Subjects[0], subj);
    assert_false(c->AllowDirect);
    assert_int_equal(c->Storage, js_MemoryStorage);
    assert_int_equal(c->MaxMsgsPerSubject, 1);
    assert_true(c->DenyDelete);
    assert_true(c->AllowRollup);
    assert_int_equal(c->Discard, js_DiscardNew);
    assert_int_equal(c->Replicas, 1);
    assert_int_equal(c->MaxAge, max_age_ms * 1000000);
    jsStreamInfo_Destroy(si);
}

static void test_streams_config(void **state)
{
    jsCtx *js = NULL;

    (void)state;
    NEED_SERVER();
    assert_int_equal(natsConnection_JetStream(&js, srv.nc, NULL), NATS_OK);
    check_stream(js, "KV_pyry_t_nodes", "$KV.pyry_t_nodes.>", 20000);
    check_stream(js, "KV_pyry_t_sids", "$KV.pyry_t_sids.>", 24LL * 3600 * 1000);
    check_stream(js, "KV_pyry_t_claims", "$KV.pyry_t_claims.>", 10000);
    jsCtx_Destroy(js);
    assert_string_equal(kv_stream_name(srv.kv, KV_SIDS), "KV_pyry_t_sids");
    assert_int_equal(kv_max_payload(srv.kv), 1048576);
}

static void test_open_idempotent_and_conflict(void **state)
{
    char err[KV_ERR_MAX] = "";
    struct kv *kv = NULL;
    struct kv_params p = params("t");

    (void)state;
    NEED_SERVER();
    assert_int_equal(kv_open(&kv, srv.nc, &p, err, sizeof err), 0);
    kv_close(kv);
    p.lease_ms = 30000; /* nodes exists with MaxAge 20 s */
    assert_int_equal(kv_open(&kv, srv.nc, &p, err, sizeof err), -EIO);
    assert_null(kv);
    assert_non_null(strstr(err, "KV_pyry_t_nodes"));
    assert_non_null(strstr(err, "max_age"));
    p = params("t");
    p.min_payload = 2 << 20; /* above the default 1 MiB */
    assert_int_equal(kv_open(&kv, srv.nc, &p, err, sizeof err), -EIO);
    assert_non_null(strstr(err, "max_payload"));
    p = params("bad.name");
    assert_int_equal(kv_open(&kv, srv.nc, &p, err, sizeof err), -EINVAL);
}

static void test_create_get(void **state)
{
    char err[KV_ERR_MAX] = "", buf[64];
    uint64_t rev = 0, rev2 = 0;
    size_t len = 0;
    static const char sid[] = "server-id \x01\xff bytes";
    static const char val[] = "1 n1-0000abcd 7 3";

    (void)state;
    NEED_SERVER();
    assert_int_equal(
        kv_create(srv.kv, KV_SIDS, sid, sizeof sid - 1, val, sizeof val - 1, &rev, err, sizeof err),
        KV_OK);
    assert_true(rev > 0);
    assert_int_equal(
        kv_get(srv.kv, KV_SIDS, sid, sizeof sid - 1, buf, sizeof buf, &len, &rev2, err, sizeof err),
        KV_OK);
    assert_int_equal(rev2, rev);
    assert_int_equal(len, sizeof val - 1);
    assert_memory_equal(buf, val, len);
    /* Too small a buffer: an error that still says the length. */
    assert_int_equal(
        kv_get(srv.kv, KV_SIDS, sid, sizeof sid - 1, buf, 4, &len, &rev2, err, sizeof err),
        KV_ERROR);
    assert_int_equal(len, sizeof val - 1);
    /* Second Create: conflict, value unchanged. */
    assert_int_equal(
        kv_create(srv.kv, KV_SIDS, sid, sizeof sid - 1, "0", 1, &rev2, err, sizeof err),
        KV_CONFLICT);
    assert_int_equal(
        kv_get(srv.kv, KV_SIDS, sid, sizeof sid - 1, buf, sizeof buf, &len, &rev2, err, sizeof err),
        KV_OK);
    assert_int_equal(rev2, rev);
    assert_memory_equal(buf, val, len);
}

static void test_cas(void **state)
{
    char err[KV_ERR_MAX] = "", buf[64];
    uint64_t rev = 0, rev2 = 0, rev3 = 0;
    size_t len = 0;

    (void)state;
    NEED_SERVER();
    assert_int_equal(kv_create(srv.kv, KV_NODES, "n1-0000beef", 11, "1 4 1700000000000", 17, &rev,
                               err, sizeof err),
                     KV_OK);
    assert_int_equal(kv_cas(srv.kv, KV_NODES, "n1-0000beef", 11, "1 4 1700000000001", 17, rev,
                            &rev2, err, sizeof err),
                     KV_OK);
    assert_true(rev2 > rev);
    /* The stale revision loses, and leaves the value alone. */
    assert_int_equal(
        kv_cas(srv.kv, KV_NODES, "n1-0000beef", 11, "x", 1, rev, &rev3, err, sizeof err),
        KV_CONFLICT);
    assert_non_null(strstr(err, "10071"));
    assert_int_equal(
        kv_get(srv.kv, KV_NODES, "n1-0000beef", 11, buf, sizeof buf, &len, &rev3, err, sizeof err),
        KV_OK);
    assert_int_equal(rev3, rev2);
    assert_memory_equal(buf, "1 4 1700000000001", 17);
    /* CAS of an absent key, CAS with 0, a bad node id. */
    assert_int_equal(kv_cas(srv.kv, KV_NODES, "n9-absent", 9, "x", 1, rev, &rev3, err, sizeof err),
                     KV_CONFLICT);
    assert_int_equal(kv_cas(srv.kv, KV_NODES, "n1-0000beef", 11, "x", 1, 0, &rev3, err, sizeof err),
                     KV_ERROR);
    assert_int_equal(kv_create(srv.kv, KV_NODES, "bad.id", 6, "x", 1, &rev3, err, sizeof err),
                     KV_ERROR);
}

static void test_get_absent(void **state)
{
    char err[KV_ERR_MAX] = "", buf[8];
    uint64_t rev = 0;
    size_t len = 0;

    (void)state;
    NEED_SERVER();
    assert_int_equal(
        kv_get(srv.kv, KV_SIDS, "never", 5, buf, sizeof buf, &len, &rev, err, sizeof err),
        KV_NOT_FOUND);
    assert_int_equal(
        kv_get(srv.kv, KV_NODES, "n7-nobody", 9, buf, sizeof buf, &len, &rev, err, sizeof err),
        KV_NOT_FOUND);
}

static void test_expiry(void **state)
{
    char err[KV_ERR_MAX] = "", buf[8];
    struct kv *kv = NULL;
    struct kv_params p = params("exp");
    uint64_t rev = 0;
    size_t len = 0;
    enum kv_outcome o = KV_OK;

    (void)state;
    NEED_SERVER();
    p.claims_max_age = 1000;
    assert_int_equal(kv_open(&kv, srv.nc, &p, err, sizeof err), 0);
    assert_int_equal(kv_create(kv, KV_CLAIMS, "sid-x", 5, "n1-1", 4, &rev, err, sizeof err), KV_OK);
    int64_t t0 = nats_Now();
    assert_int_equal(
        kv_get(kv, KV_CLAIMS, "sid-x", 5, buf, sizeof buf, &len, &rev, err, sizeof err), KV_OK);
    while (nats_Now() - t0 < 5000) {
        o = kv_get(kv, KV_CLAIMS, "sid-x", 5, buf, sizeof buf, &len, &rev, err, sizeof err);
        if (o != KV_OK)
            break;
        nats_Sleep(50);
    }
    assert_int_equal(o, KV_NOT_FOUND);
    assert_true(nats_Now() - t0 >= 800);
    /* The lock can be taken again. */
    assert_int_equal(kv_create(kv, KV_CLAIMS, "sid-x", 5, "n2-2", 4, &rev, err, sizeof err), KV_OK);
    kv_close(kv);
}

/* A stream that vanished is an error, never "absent" (a claim would read a
 * missing lease as a dead owner). */
static void test_deleted_stream(void **state)
{
    char err[KV_ERR_MAX] = "", buf[8];
    struct kv *kv = NULL;
    struct kv_params p = params("gone");
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    uint64_t rev = 0;
    size_t len = 0;

    (void)state;
    NEED_SERVER();
    assert_int_equal(kv_open(&kv, srv.nc, &p, err, sizeof err), 0);
    assert_int_equal(natsConnection_JetStream(&js, srv.nc, NULL), NATS_OK);
    assert_int_equal(js_DeleteStream(js, "KV_pyry_gone_nodes", NULL, &jerr), NATS_OK);
    jsCtx_Destroy(js);
    assert_int_equal(kv_get(kv, KV_NODES, "n1-1", 4, buf, sizeof buf, &len, &rev, err, sizeof err),
                     KV_ERROR);
    assert_int_equal(kv_create(kv, KV_NODES, "n1-1", 4, "1", 1, &rev, err, sizeof err), KV_ERROR);
    kv_close(kv);
}

struct racer {
    natsConnection *nc;
    struct kv *kv;
    pthread_barrier_t *go;
    enum kv_outcome out[RACES];
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char key[32], err[KV_ERR_MAX];
    uint64_t rev;

    for (int i = 0; i < RACES; i++) {
        snprintf(key, sizeof key, "race-%d", i);
        pthread_barrier_wait(r->go);
        r->out[i] = kv_create(r->kv, KV_CLAIMS, key, strlen(key), "n", 1, &rev, err, sizeof err);
    }
    return NULL;
}

static void test_create_race(void **state)
{
    struct racer r[2];
    pthread_barrier_t go;
    pthread_t th[2];
    char err[KV_ERR_MAX] = "";
    struct kv_params p = params("t");

    (void)state;
    NEED_SERVER();
    pthread_barrier_init(&go, NULL, 2);
    for (int i = 0; i < 2; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].go = &go;
        assert_int_equal(
            kv_connect(&r[i].nc, srv.ns.url, NULL, NULL, NULL, 2000, NULL, err, sizeof err), 0);
        assert_int_equal(kv_open(&r[i].kv, r[i].nc, &p, err, sizeof err), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < RACES; i++) {
        int ok = (r[0].out[i] == KV_OK) + (r[1].out[i] == KV_OK);
        int conflict = (r[0].out[i] == KV_CONFLICT) + (r[1].out[i] == KV_CONFLICT);
        assert_int_equal(ok, 1);
        assert_int_equal(conflict, 1);
    }
    for (int i = 0; i < 2; i++) {
        kv_close(r[i].kv);
        natsConnection_Destroy(r[i].nc);
    }
    pthread_barrier_destroy(&go);
}

/* A frozen server: no answer within the 2 s wait is KV_TIMEOUT (a write
 * may still land), distinct from an error. Runs last: it costs 4 s. */
static void test_timeout(void **state)
{
    char err[KV_ERR_MAX] = "", buf[8];
    uint64_t rev = 0;
    size_t len = 0;

    (void)state;
    NEED_SERVER();
    assert_int_equal(kill(srv.ns.pid, SIGSTOP), 0);
    for (int i = 0; i < 100 && !nats_test_stopped(srv.ns.pid); i++)
        nats_Sleep(10);
    int64_t t0 = nats_Now();
    enum kv_outcome g =
        kv_get(srv.kv, KV_SIDS, "t", 1, buf, sizeof buf, &len, &rev, err, sizeof err);
    enum kv_outcome c = kv_create(srv.kv, KV_SIDS, "t", 1, "v", 1, &rev, err, sizeof err);
    int64_t took = nats_Now() - t0;
    kill(srv.ns.pid, SIGCONT);
    assert_int_equal(g, KV_TIMEOUT);
    assert_int_equal(c, KV_TIMEOUT);
    assert_non_null(strstr(err, "Timeout"));
    assert_true(took >= 2 * KV_WAIT_MS - 100 && took < 2 * KV_WAIT_MS + 1500);
}

static void test_connect_fails_in_time(void **state)
{
    char err[KV_ERR_MAX] = "";
    natsConnection *nc = NULL;
    char url[64];

    (void)state;
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", nats_test_free_port());
    int64_t t0 = nats_Now();
    assert_int_equal(kv_connect(&nc, url, NULL, NULL, NULL, 600, NULL, err, sizeof err), -EIO);
    assert_true(nats_Now() - t0 < 3000);
    assert_true(err[0] != '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_of),
        cmocka_unit_test(test_streams_config),
        cmocka_unit_test(test_open_idempotent_and_conflict),
        cmocka_unit_test(test_create_get),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_get_absent),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_deleted_stream),
        cmocka_unit_test(test_create_race),
        cmocka_unit_test(test_connect_fails_in_time),
        cmocka_unit_test(test_timeout),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
