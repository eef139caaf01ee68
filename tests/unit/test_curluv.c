/* test_curluv.c — libcurl driven by the libuv loop against a scripted local
 * server: transfers complete with their replies while the loop keeps
 * serving, several run at once on one loop, a cancelled transfer reports
 * CURLUV_CANCELLED exactly once, a timeout ends as CURLE_OPERATION_TIMEDOUT,
 * and closing the driver with transfers running cancels each and leaves no
 * handle or allocation behind (ASan/LSan would say). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/curluv.h"
#include "http_stub.h"

struct result {
    int calls;
    int code;
    long status;
    char body[256];
    size_t len;
};

static size_t on_data(char *d, size_t size, size_t n, void *arg)
{
    struct result *r = arg;
    size_t len = size * n;
    if (r->len + len < sizeof r->body) {
        memcpy(r->body + r->len, d, len);
        r->len += len;
    }
    return len;
}

static void on_done(void *arg, CURL *easy, int result)
{
    struct result *r = arg;
    r->calls++;
    r->code = result;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(easy);
}

static void handler(struct stub *st, struct stub_conn *c, const struct stub_req *req)
{
    (void)st;
    if (strcmp(req->path, "/hang") == 0)
        return;
    char body[300];
    snprintf(body, sizeof body, "{\"path\":\"%s\",\"len\":%zu}", req->path, req->body_len);
    stub_reply(c, strcmp(req->path, "/missing") == 0 ? 404 : 200, body);
}

static CURL *get(const struct stub *st, const char *path, struct result *r, long timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", st->port, path);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    if (timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    return e;
}

struct many {
    struct result *r;
    int n;
};

static bool all_done(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < m->n; i++)
        if (m->r[i].calls == 0)
            return false;
    return true;
}

static bool stub_closed(void *arg)
{
    return ((struct stub *)arg)->open_handles == 0;
}

static void finish(uv_loop_t *loop, struct stub *st, struct curluv *cu)
{
    if (cu)
        curluv_close(cu);
    stub_stop(st);
    assert_true(stub_run_until(loop, stub_closed, st, 2000));
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0); /* no handle left behind */
}

static void test_concurrent_transfers(void **state)
{
    uv_loop_t loop;
    struct stub st;
    struct result r[8];
    (void)state;
    memset(r, 0, sizeof r);
    uv_loop_init(&loop);
    stub_start(&st, &loop, handler, NULL);
    struct curluv *cu = curluv_new(&loop);
    for (int i = 0; i < 8; i++) {
        char path[32];
        snprintf(path, sizeof path, i == 7 ? "/missing" : "/r%d", i);
        assert_int_equal(curluv_add(cu, get(&st, path, &r[i], 0), on_done, &r[i]), 0);
    }
    assert_int_equal(curluv_running(cu), 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(r[i].calls, 0); /* never from inside curluv_add */
    struct many m = {r, 8};
    assert_true(stub_run_until(&loop, all_done, &m, 5000));
    for (int i = 0; i < 8; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].code, CURLE_OK);
        assert_int_equal(r[i].status, i == 7 ? 404 : 200);
    }
    assert_non_null(strstr(r[3].body, "\"/r3\""));
    assert_int_equal(curluv_running(cu), 0);
    finish(&loop, &st, cu);
}

static void test_cancel_one(void **state)
{
    uv_loop_t loop;
    struct stub st;
    struct result a = {0}, b = {0};
    (void)state;
    uv_loop_init(&loop);
    stub_start(&st, &loop, handler, NULL);
    struct curluv *cu = curluv_new(&loop);
    CURL *hang = get(&st, "/hang", &a, 0);
    curluv_add(cu, hang, on_done, &a);
    curluv_add(cu, get(&st, "/ok", &b, 0), on_done, &b);
    struct many m = {&b, 1};
    assert_true(stub_run_until(&loop, all_done, &m, 5000));
    assert_int_equal(stub_count(&st, "/hang"), 1);
    assert_int_equal(a.calls, 0);
    curluv_cancel(cu, hang);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.code, CURLUV_CANCELLED);
    curluv_cancel(cu, hang); /* no longer ours: nothing happens */
    assert_int_equal(a.calls, 1);
    assert_int_equal(curluv_running(cu), 0);
    finish(&loop, &st, cu);
}

static void test_timeout(void **state)
{
    uv_loop_t loop;
    struct stub st;
    struct result a = {0};
    (void)state;
    uv_loop_init(&loop);
    stub_start(&st, &loop, handler, NULL);
    struct curluv *cu = curluv_new(&loop);
    uint64_t t0 = uv_hrtime();
    curluv_add(cu, get(&st, "/hang", &a, 200), on_done, &a);
    struct many m = {&a, 1};
    assert_true(stub_run_until(&loop, all_done, &m, 5000));
    assert_int_equal(a.code, CURLE_OPERATION_TIMEDOUT);
    assert_true(uv_hrtime() - t0 >= 190 * 1000000ULL);
    finish(&loop, &st, cu);
}

static void test_close_cancels_everything(void **state)
{
    uv_loop_t loop;
    struct stub st;
    struct result r[4];
    (void)state;
    memset(r, 0, sizeof r);
    uv_loop_init(&loop);
    stub_start(&st, &loop, handler, NULL);
    struct curluv *cu = curluv_new(&loop);
    for (int i = 0; i < 4; i++)
        curluv_add(cu, get(&st, "/hang", &r[i], 0), on_done, &r[i]);
    struct stub *stp = &st;
    while (stp->nreqs < 4)
        uv_run(&loop, UV_RUN_ONCE);
    curluv_close(cu);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].code, CURLUV_CANCELLED);
    }
    finish(&loop, &st, NULL);
}

/* A transfer that fails at the transport (nothing listens) reports curl's
 * error code, and the driver stays usable. */
static void test_connect_refused(void **state)
{
    uv_loop_t loop;
    struct stub st;
    struct result a = {0}, b = {0};
    (void)state;
    uv_loop_init(&loop);
    stub_start(&st, &loop, handler, NULL);
    struct curluv *cu = curluv_new(&loop);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, "http://127.0.0.1:1/");
    curluv_add(cu, e, on_done, &a);
    struct many m = {&a, 1};
    assert_true(stub_run_until(&loop, all_done, &m, 5000));
    assert_int_equal(a.code, CURLE_COULDNT_CONNECT);
    curluv_add(cu, get(&st, "/again", &b, 0), on_done, &b);
    m.r = &b;
    assert_true(stub_run_until(&loop, all_done, &m, 5000));
    assert_int_equal(b.status, 200);
    finish(&loop, &st, cu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_transfers),
        cmocka_unit_test(test_cancel_one),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_close_cancels_everything),
        cmocka_unit_test(test_connect_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
