/* test_shard.c — the cross-thread seams of a shard: control bits posted
 * from another thread arrive (coalesced, none lost), and connections handed
 * over from another thread are adopted in the order they were posted, with
 * their parsed request answered on the adopting loop and the bytes that
 * followed the head delivered; the live count returns to zero. Sockets are
 * socketpairs, so nothing here touches the network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "net/conn.h"
#include "net/conn_internal.h" /* struct handoff: the test posts its own */
#include "net/shard.h"
#include "base/util.h"

static struct config cfg;
static unsigned got_bits;
static int order[8], norder;
static uv_thread_t self_thread;
static bool wrong_thread;

static void on_control(struct shard *s, unsigned bits)
{
    got_bits |= bits;
    if (bits & SHARD_CTL_STOP)
        uv_close((uv_handle_t *)&s->async, NULL);
}

static void post_bits(void *arg)
{
    struct shard *s = arg;
    shard_post_control(s, SHARD_CTL_DRAIN);
    shard_post_control(s, SHARD_CTL_CHECK);
    shard_post_control(s, SHARD_CTL_STOP);
}

static void test_control_bits_from_another_thread(void **state)
{
    uv_loop_t loop;
    struct shard s;
    uv_thread_t t;
    (void)state;
    uv_loop_init(&loop);
    shard_init(&s, &loop, &cfg, &conn_shard_ops, NULL, NULL);
    s.on_control = on_control;
    shard_start_inbox(&s);
    got_bits = 0;
    uv_thread_create(&t, post_bits, &s);
    while (!(got_bits & SHARD_CTL_STOP))
        uv_run(&loop, UV_RUN_ONCE);
    uv_thread_join(&t);
    assert_int_equal(got_bits, SHARD_CTL_DRAIN | SHARD_CTL_CHECK | SHARD_CTL_STOP);
    shard_close(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The request is answered with its number and the count of bytes that
 * followed the head, so the test can see both arrived. */
static void on_request(struct conn *c, const struct http_req *r)
{
    size_t plen;
    const char *path = http_req_path(r, &plen);
    char body[32];
    uv_thread_t me = uv_thread_self();
    wrong_thread |= !uv_thread_equal(&me, &self_thread);
    order[norder++] = path[1] - '0';
    int n = snprintf(body, sizeof body, "%c", path[1]);
    conn_http_respond(c, 200, "text/plain", NULL, body, (size_t)n, false);
}

static const struct conn_hooks hooks = {.on_request = on_request};
static const struct conn_opts opts = {.hooks = &hooks};

struct post_arg {
    struct shard *s;
    int fds[3];
};

static struct handoff *make_handoff(int fd, int num)
{
    char head[64];
    int n = snprintf(head, sizeof head, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", num);
    struct handoff *h = calloc(1, sizeof *h);
    h->fd = fd;
    h->opts = &opts;
    h->req = malloc(sizeof *h->req);
    http_req_init(h->req, 4096);
    assert_int_equal(http_req_feed(h->req, head, (size_t)n), n);
    assert_true(h->req->head_done);
    h->peer.sa.sa_family = AF_UNSPEC;
    return h;
}

static void post_handoffs(void *arg)
{
    struct post_arg *a = arg;
    for (int i = 0; i < 3; i++)
        shard_post_handoff(a->s, &make_handoff(a->fds[i], i + 1)->node);
}

static void test_handoffs_adopted_in_order(void **state)
{
    uv_loop_t loop;
    struct shard s;
    uv_thread_t t;
    int pairs[3][2];
    _Atomic size_t live = 3; /* one per handoff in transit, as conn.c counts them */
    struct post_arg a;
    (void)state;
    uv_loop_init(&loop);
    shard_init(&s, &loop, &cfg, &conn_shard_ops, &hooks, NULL);
    s.live = &live;
    shard_start_inbox(&s);
    self_thread = uv_thread_self();
    wrong_thread = false;
    norder = 0;
    a.s = &s;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]), 0);
        a.fds[i] = pairs[i][0];
    }
    uv_thread_create(&t, post_handoffs, &a);
    uv_thread_join(&t); /* all three are queued before the loop looks */
    while (norder < 3)
        uv_run(&loop, UV_RUN_ONCE);
    assert_false(wrong_thread);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 3);
    for (int i = 0; i < 3; i++) {
        char buf[512];
        ssize_t n = read(pairs[i][1], buf, sizeof buf - 1);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
        assert_int_equal(buf[n - 1], '1' + i);
        close(pairs[i][1]); /* the lingering connections see EOF and go */
    }
    while (atomic_load(&live) > 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&s.async, NULL);
    shard_close(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_discard_closes_queued_sockets(void **state)
{
    uv_loop_t loop;
    struct shard s;
    int pair[2];
    _Atomic size_t live = 1;
    (void)state;
    uv_loop_init(&loop);
    shard_init(&s, &loop, &cfg, &conn_shard_ops, &hooks, NULL);
    s.live = &live;
    shard_start_inbox(&s);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    shard_post_handoff(&s, &make_handoff(pair[0], 1)->node);
    shard_discard_inbox(&s); /* the loop never ran: nothing adopted it */
    char c;
    assert_int_equal(read(pair[1], &c, 1), 0); /* EOF: our end was closed */
    assert_int_equal(atomic_load(&live), 0);
    close(pair[1]);
    uv_close((uv_handle_t *)&s.async, NULL);
    shard_close(&s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The lock-free queue under concurrent pushes: nothing lost, each
 * producer's nodes come out in the order it pushed them. */
struct item {
    struct mpsc_node node;
    int producer, seq;
};

#define PRODUCERS    4
#define PER_PRODUCER 5000

static struct mpsc queue;
static struct item items[PRODUCERS][PER_PRODUCER];

static void produce(void *arg)
{
    int p = (int)(intptr_t)arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        items[p][i].producer = p;
        items[p][i].seq = i;
        mpsc_push(&queue, &items[p][i].node);
    }
}

static void test_mpsc_keeps_each_producers_order(void **state)
{
    uv_thread_t t[PRODUCERS];
    int next[PRODUCERS] = {0}, total = 0;
    (void)state;
    mpsc_init(&queue);
    assert_null(mpsc_take_all(&queue));
    for (int p = 0; p < PRODUCERS; p++)
        uv_thread_create(&t[p], produce, (void *)(intptr_t)p);
    /* consume while they produce */
    while (total < PRODUCERS * PER_PRODUCER) {
        for (struct mpsc_node *n = mpsc_take_all(&queue); n; n = n->next) {
            struct item *it = CONTAINER_OF(n, struct item, node);
            assert_int_equal(it->seq, next[it->producer]);
            next[it->producer]++;
            total++;
        }
    }
    for (int p = 0; p < PRODUCERS; p++)
        uv_thread_join(&t[p]);
    assert_null(mpsc_take_all(&queue));
}

int main(void)
{
    config_defaults(&cfg, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_bits_from_another_thread),
        cmocka_unit_test(test_handoffs_adopted_in_order),
        cmocka_unit_test(test_discard_closes_queued_sockets),
        cmocka_unit_test(test_mpsc_keeps_each_producers_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
