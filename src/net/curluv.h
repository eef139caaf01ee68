/* curluv.h — libcurl's multi interface driven by a libuv loop: curl tells
 * us which sockets to watch and when to wake it (socket and timer
 * callbacks), libuv watches them, nothing ever blocks the loop. Callers set
 * up easy handles as they like, hand them over with curluv_add and hear back
 * exactly once per handle through its completion callback: on completion,
 * on curluv_cancel, or when curluv_close cancels everything at shutdown.
 * Generic: it knows nothing about what the requests are for.
 *
 * Threads: one curluv belongs to one loop (shard 0's, for push and ACME);
 * every function and callback runs on that loop's thread. */
#ifndef RELAY_CURLUV_H
#define RELAY_CURLUV_H

#include <curl/curl.h>
#include <uv.h>

/* Passed as result when a transfer was cancelled rather than finished. */
#define CURLUV_CANCELLED (-1)

/* Completion of one transfer: result is the CURLcode (CURLE_OK = a reply
 * was received; inspect it with curl_easy_getinfo) or CURLUV_CANCELLED.
 * The easy handle is no longer attached to the multi handle; the callback
 * owns it again (typically curl_easy_cleanup). It may add and cancel other
 * transfers. */
typedef void (*curluv_done_fn)(void *arg, CURL *easy, int result);

struct curluv;

/* Creates a driver on loop. Aborts if libcurl cannot create a multi handle
 * (out of memory). */
struct curluv *curluv_new(uv_loop_t *loop);

/* Starts the transfer easy (fully configured by the caller, except
 * CURLOPT_PRIVATE, which curluv uses). done(arg, easy, …) runs exactly once,
 * never from inside this call. Returns 0, or -1 when the driver is closed
 * or curl refuses the handle (done is then not called; the caller still
 * owns easy). */
int curluv_add(struct curluv *cu, CURL *easy, curluv_done_fn done, void *arg);

/* Stops the transfer easy at once and reports it: done runs synchronously,
 * from this call, with CURLUV_CANCELLED. Does nothing if easy is not a
 * running transfer of cu. */
void curluv_cancel(struct curluv *cu, CURL *easy);

/* Number of transfers running. */
size_t curluv_running(const struct curluv *cu);

/* Shutdown: cancels every running transfer (each done runs synchronously
 * with CURLUV_CANCELLED, in the order they were added), closes the curl
 * connections and every uv handle. cu is freed once the loop has run the
 * close callbacks; do not use it after this call. */
void curluv_close(struct curluv *cu);

#endif
