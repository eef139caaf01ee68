/* curluv.c — the glue between curl's multi "socket" API and libuv: one
 * uv_poll_t per socket curl asks us to watch, one uv_timer_t for curl's
 * single timeout, and curl_multi_socket_action whenever either fires.
 * Finished transfers are collected with curl_multi_info_read and handed to
 * their owners. It never calls curl from inside a curl callback and never
 * frees a uv handle before its close callback; it does not configure the
 * easy handles (URLs, TLS, timeouts are the caller's business). */
#include "net/curluv.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct curluv *cu;
    struct list link;
};

struct xfer {
    struct list link;
    CURL *easy;
    curluv_done_fn done;
    void *arg;
};

struct curluv {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct list socks; /* watched sockets */
    struct list xfers; /* running transfers, in the order added */
    size_t running;
    size_t closing_handles; /* uv handles whose close callback is due */
    bool closing;
};

static void maybe_free(struct curluv *cu)
{
    if (cu->closing && cu->closing_handles == 0)
        free(cu);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct sock_ctx *ctx = h->data;
    struct curluv *cu = ctx->cu;
    free(ctx);
    cu->closing_handles--;
    maybe_free(cu);
}

static void drop_sock(struct curluv *cu, struct sock_ctx *ctx)
{
    list_remove(&ctx->link);
    uv_poll_stop(&ctx->poll);
    cu->closing_handles++;
    uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
}

/* Detaches x from the multi handle and reports result to its owner. */
static void finish(struct curluv *cu, struct xfer *x, int result)
{
    curl_multi_remove_handle(cu->multi, x->easy);
    list_remove(&x->link);
    cu->running--;
    curluv_done_fn done = x->done;
    void *arg = x->arg;
    CURL *easy = x->easy;
    free(x);
    done(arg, easy, result);
}

/* Hands every finished transfer to its owner. An owner may close cu from
 * its callback: then the multi handle is gone and we stop at once. */
static void collect(struct curluv *cu)
{
    CURLMsg *msg;
    int left;
    while (!cu->closing && (msg = curl_multi_info_read(cu->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            finish(cu, x, (int)rc);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *ctx = h->data;
    struct curluv *cu = ctx->cu;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else
        flags = ((events & UV_READABLE) ? CURL_CSELECT_IN : 0) |
                ((events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(cu->multi, ctx->fd, flags, &running);
    collect(cu);
}

static void on_timeout(uv_timer_t *t)
{
    struct curluv *cu = t->data;
    int running;
    curl_multi_socket_action(cu->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect(cu);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching one socket. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct curluv *cu = userp;
    struct sock_ctx *ctx = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (ctx)
            drop_sock(cu, ctx); /* curl forgets the socket's pointer itself */
        return 0;
    }
    if (!ctx) {
        ctx = xcalloc(1, sizeof *ctx);
        if (uv_poll_init_socket(cu->loop, &ctx->poll, fd) != 0) {
            free(ctx);
            return -1; /* curl fails the transfer */
        }
        ctx->fd = fd;
        ctx->cu = cu;
        ctx->poll.data = ctx;
        list_push_back(&cu->socks, &ctx->link);
        curl_multi_assign(cu->multi, fd, ctx);
    }
    int events =
        ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    uv_poll_start(&ctx->poll, events, on_poll);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be woken after timeout_ms (-1:
 * never). Acting on a zero timeout from here would re-enter curl, so even
 * that goes through the timer. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct curluv *cu = userp;
    (void)multi;
    if (cu->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&cu->timer);
    else
        uv_timer_start(&cu->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct curluv *curluv_new(uv_loop_t *loop)
{
    static uv_once_t once = UV_ONCE_INIT;
    struct curluv *cu = xcalloc(1, sizeof *cu);
    uv_once(&once, global_init);
    cu->loop = loop;
    cu->multi = curl_multi_init();
    if (!cu->multi) {
        fprintf(stderr, "pyrycode-relay: libcurl cannot create a multi handle\n");
        abort(); /* only fails when out of memory */
    }
    list_init(&cu->socks);
    list_init(&cu->xfers);
    uv_timer_init(loop, &cu->timer);
    cu->timer.data = cu;
    curl_multi_setopt(cu->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(cu->multi, CURLMOPT_SOCKETDATA, cu);
    curl_multi_setopt(cu->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(cu->multi, CURLMOPT_TIMERDATA, cu);
    return cu;
}

int curluv_add(struct curluv *cu, CURL *easy, curluv_done_fn done, void *arg)
{
    if (cu->closing)
        return -1;
    struct xfer *x = xcalloc(1, sizeof *x);
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(cu->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(x);
        return -1;
    }
    list_push_back(&cu->xfers, &x->link);
    cu->running++;
    return 0;
}

void curluv_cancel(struct curluv *cu, CURL *easy)
{
    for (struct list *it = cu->xfers.next; it != &cu->xfers; it = it->next) {
        struct xfer *x = CONTAINER_OF(it, struct xfer, link);
        if (x->easy == easy) {
            finish(cu, x, CURLUV_CANCELLED);
            return;
        }
    }
}

size_t curluv_running(const struct curluv *cu)
{
    return cu->running;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct curluv *cu = h->data;
    cu->closing_handles--;
    maybe_free(cu);
}

void curluv_close(struct curluv *cu)
{
    if (cu->closing)
        return;
    /* Owners hear about their transfers before anything is torn down; they
     * may not start new ones (curluv_add refuses from here on). */
    cu->closing = true;
    while (!list_empty(&cu->xfers))
        finish(cu, CONTAINER_OF(cu->xfers.next, struct xfer, link), CURLUV_CANCELLED);
    curl_multi_cleanup(cu->multi); /* closes cached connections */
    cu->multi = NULL;
    while (!list_empty(&cu->socks))
        drop_sock(cu, CONTAINER_OF(cu->socks.next, struct sock_ctx, link));
    uv_timer_stop(&cu->timer);
    cu->closing_handles++;
    uv_close((uv_handle_t *)&cu->timer, on_timer_closed);
}
