/* test_outbox.c — the outbox with scripted partial writes: the order rule
 * (data FIFO, control ahead of queued data but behind what is in flight or
 * started and behind earlier control), started frames, writes cut at every
 * point, the gather limit, progress values, failed writes, frame counting,
 * byte accounting, pong replacement, dropping unsent data, the drained
 * notice, and a seeded random run checked against the order rule. No I/O:
 * a "write" copies the first n gathered bytes into a stream buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/outbox.h"

/* ---- helpers ----------------------------------------------------------- */

/* Everything the "socket" took, in order, NUL-terminated for messages. */
static char stream[1 << 16];
static size_t stream_len;

static void stream_reset(void)
{
    stream_len = 0;
    stream[0] = '\0';
}

static void push_full(struct outbox *o, enum outbox_kind kind, const char *s, size_t skip,
                      bool counted)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    outbox_push(o, kind, &b, 1, skip, counted);
}

static void push(struct outbox *o, enum outbox_kind kind, const char *s)
{
    push_full(o, kind, s, 0, false);
}

static void pong(struct outbox *o, const char *s)
{
    outbox_put_pong(o, (const uint8_t *)s, strlen(s));
}

/* Gathers up to max buffers, lets the socket take n of their bytes (n is
 * clipped to what was gathered) and reports it. */
static enum outbox_progress write_n(struct outbox *o, size_t n, unsigned max)
{
    uv_buf_t bufs[64];
    size_t bytes = 0;
    assert_true(max <= 64);
    unsigned k = outbox_gather(o, bufs, max, &bytes);
    assert_true(k <= max);
    size_t sum = 0;
    for (unsigned i = 0; i < k; i++)
        sum += bufs[i].len;
    assert_int_equal(sum, bytes);
    if (n > bytes)
        n = bytes;
    size_t left = n;
    for (unsigned i = 0; i < k && left > 0; i++) {
        size_t l = bufs[i].len < left ? bufs[i].len : left;
        assert_true(stream_len + l < sizeof stream);
        memcpy(stream + stream_len, bufs[i].base, l);
        stream_len += l;
        left -= l;
    }
    stream[stream_len] = '\0';
    return outbox_written(o, n, 0);
}

/* Writes everything, cycling through the write sizes in sizes[0..ns). */
static void drain(struct outbox *o, const size_t *sizes, size_t ns, unsigned max)
{
    for (size_t i = 0; i < 100000; i++) {
        if (write_n(o, sizes[i % ns], max) == OUTBOX_DONE) {
            assert_true(outbox_empty(o));
            assert_int_equal(outbox_bytes(o), 0);
            return;
        }
    }
    fail_msg("outbox never drained");
}

static void drain_all(struct outbox *o)
{
    const size_t all = SIZE_MAX;
    drain(o, &all, 1, 64);
}

/* ---- order ------------------------------------------------------------- */

static void test_empty(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    assert_true(outbox_empty(&o));
    assert_int_equal(outbox_bytes(&o), 0);
    uv_buf_t b[4];
    size_t bytes = 99;
    assert_int_equal(outbox_gather(&o, b, 4, &bytes), 0);
    assert_int_equal(bytes, 0);
    assert_int_equal(outbox_written(&o, 0, 0), OUTBOX_DONE);
    assert_false(outbox_take_drained(&o));
    outbox_free(&o);
}

static void test_data_fifo(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_DATA, "bb");
    push(&o, OUTBOX_DATA, "c");
    drain_all(&o);
    assert_string_equal(stream, "aaabbc");
    outbox_free(&o);
}

static void test_control_ahead_of_queued_data(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_DATA, "bbb");
    push(&o, OUTBOX_CTL, "P");
    push(&o, OUTBOX_CTL, "Q");
    push(&o, OUTBOX_DATA, "ccc");
    push(&o, OUTBOX_CTL, "R");
    drain_all(&o);
    assert_string_equal(stream, "PQRaaabbbccc");
    outbox_free(&o);
}

static void test_control_behind_inflight(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_DATA, "bbb");
    uv_buf_t b[4];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 1, &bytes), 1); /* aaa in flight */
    assert_int_equal(bytes, 3);
    push(&o, OUTBOX_CTL, "P");
    push(&o, OUTBOX_DATA, "ccc");
    push(&o, OUTBOX_CTL, "Q");
    /* the write in flight ends: all of aaa went out */
    memcpy(stream, "aaa", 3);
    stream_len = 3;
    assert_int_equal(outbox_written(&o, 3, 0), OUTBOX_PENDING);
    drain_all(&o);
    assert_string_equal(stream, "aaaPQbbbccc");
    outbox_free(&o);
}

/* A write that ends exactly between two gathered items: the one it did
 * not reach is queued data again, so a control item pushed now goes
 * ahead of it, and behind the control item pushed during the write. */
static void test_control_fifo_after_write_ends_on_boundary(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_DATA, "bbb");
    uv_buf_t b[4];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 4, &bytes), 2); /* aaa, bbb in flight */
    push(&o, OUTBOX_CTL, "P");
    memcpy(stream, "aaa", 3);
    stream_len = 3;
    assert_int_equal(outbox_written(&o, 3, 0), OUTBOX_PENDING); /* bbb not reached */
    push(&o, OUTBOX_CTL, "Q");
    drain_all(&o);
    assert_string_equal(stream, "aaaPQbbb");
    outbox_free(&o);
}

/* A started item is the frame the socket began: control items queued after
 * it wait for its end. */
static void test_started_frame_first(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_CTL, "P");
    /* the socket took "XX" of "XXsss": the rest goes before anything else */
    push_full(&o, OUTBOX_DATA, "XXsss", 2, false);
    push(&o, OUTBOX_CTL, "Q");
    push(&o, OUTBOX_DATA, "bbb");
    assert_int_equal(outbox_bytes(&o), 3 + 1 + 3 + 1 + 3);
    drain_all(&o);
    assert_string_equal(stream, "sssPQaaabbb");
    outbox_free(&o);
}

/* The socket took exactly the first buffer of a two-buffer frame (the
 * header, say): the remainder is started just the same. */
static void test_started_frame_at_buffer_boundary(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    uv_buf_t frame[2] = {uv_buf_init("HH", 2), uv_buf_init("pppp", 4)};
    outbox_push(&o, OUTBOX_DATA, frame, 2, 2, false);
    assert_int_equal(outbox_bytes(&o), 4);
    push(&o, OUTBOX_CTL, "Q");
    drain_all(&o);
    assert_string_equal(stream, "ppppQ");
    outbox_free(&o);
}

/* Skip across several buffers, landing inside a later one. */
static void test_push_skip_across_buffers(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    uv_buf_t frame[3] = {uv_buf_init("ab", 2), uv_buf_init("cde", 3), uv_buf_init("fgh", 3)};
    outbox_push(&o, OUTBOX_DATA, frame, 3, 6, false);
    assert_int_equal(outbox_bytes(&o), 2);
    push(&o, OUTBOX_CTL, "Q");
    drain_all(&o);
    assert_string_equal(stream, "ghQ");
    outbox_free(&o);

    outbox_init(&o);
    stream_reset();
    outbox_push(&o, OUTBOX_DATA, frame, 3, 0, false);
    assert_int_equal(outbox_bytes(&o), 8);
    drain_all(&o);
    assert_string_equal(stream, "abcdefgh");
    outbox_free(&o);
}

/* ---- partial writes ---------------------------------------------------- */

/* The same queue written with many scripts of write sizes gives the same
 * stream; a control item pushed after a data item was cut waits for its
 * end. */
static void test_partial_writes_any_cut(void **state)
{
    (void)state;
    static const size_t scripts[][6] = {
        {1}, {2}, {3}, {1, 4}, {5, 1, 2}, {7}, {13, 1}, {0, 1}, {2, 0, 9}, {SIZE_MAX},
    };
    static const size_t lens[] = {1, 1, 1, 2, 3, 1, 2, 2, 3, 1};
    for (size_t s = 0; s < sizeof scripts / sizeof scripts[0]; s++) {
        for (unsigned max = 1; max <= 4; max++) {
            struct outbox o;
            outbox_init(&o);
            stream_reset();
            push(&o, OUTBOX_DATA, "aaaaa");
            push(&o, OUTBOX_DATA, "bbbbbbb");
            push(&o, OUTBOX_CTL, "PP");
            /* first write: the control item goes out first, then 3 bytes
             * of data are cut; a control item pushed now must not split */
            write_n(&o, 2 + 3, max);
            push(&o, OUTBOX_CTL, "QQQ");
            push(&o, OUTBOX_DATA, "cc");
            drain(&o, scripts[s], lens[s], max);
            if (max == 1) /* only PP was gathered: nothing started */
                assert_string_equal(stream, "PPQQQaaaaabbbbbbbcc");
            else
                assert_string_equal(stream, "PPaaaaaQQQbbbbbbbcc");
            outbox_free(&o);
        }
    }
}

/* One byte at a time, with control items arriving between every write:
 * every data item stays whole, every control item goes out at the first
 * item boundary after it was pushed. */
static void test_one_byte_at_a_time(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaa");
    push(&o, OUTBOX_DATA, "bbbb");
    for (int i = 0; i < 4; i++)
        assert_int_equal(write_n(&o, 1, 8), OUTBOX_PENDING);
    /* aaaa is out; nothing started */
    push(&o, OUTBOX_CTL, "P");
    assert_int_equal(write_n(&o, 1, 8), OUTBOX_PENDING); /* P */
    assert_int_equal(write_n(&o, 1, 8), OUTBOX_PENDING); /* b: bbbb started */
    push(&o, OUTBOX_CTL, "Q");
    push(&o, OUTBOX_CTL, "R");
    push(&o, OUTBOX_DATA, "cc");
    const size_t one = 1;
    drain(&o, &one, 1, 8);
    assert_string_equal(stream, "aaaaPbbbbQRcc");
    outbox_free(&o);
}

static void test_gather_respects_max(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    const char *items[] = {"a", "bb", "ccc", "dddd", "eeeee"};
    for (int i = 0; i < 5; i++)
        push(&o, OUTBOX_DATA, items[i]);
    uv_buf_t b[8];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 2, &bytes), 2);
    assert_int_equal(bytes, 3);
    assert_memory_equal(b[0].base, "a", 1);
    assert_memory_equal(b[1].base, "bb", 2);
    assert_int_equal(outbox_written(&o, 2, 0), OUTBOX_PENDING); /* "a" and one "b" */
    assert_int_equal(outbox_bytes(&o), 1 + 3 + 4 + 5);
    assert_int_equal(outbox_gather(&o, b, 2, &bytes), 2);
    assert_int_equal(b[0].len, 1); /* the rest of "bb" */
    assert_memory_equal(b[0].base, "b", 1);
    assert_int_equal(b[1].len, 3);
    assert_int_equal(bytes, 4);
    assert_int_equal(outbox_written(&o, 4, 0), OUTBOX_PENDING);
    assert_int_equal(outbox_gather(&o, b, 8, &bytes), 2);
    assert_int_equal(bytes, 9);
    assert_int_equal(outbox_written(&o, 9, 0), OUTBOX_DONE);
    assert_int_equal(outbox_gather(&o, b, 8, &bytes), 0);
    outbox_free(&o);
}

static void test_progress_values(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaa");
    assert_int_equal(write_n(&o, 3, 4), OUTBOX_PENDING);
    assert_int_equal(write_n(&o, 0, 4), OUTBOX_PENDING);
    assert_int_equal(write_n(&o, 1, 4), OUTBOX_DONE);
    push(&o, OUTBOX_DATA, "bb");
    uv_buf_t b[4];
    size_t bytes;
    outbox_gather(&o, b, 4, &bytes);
    assert_int_equal(outbox_written(&o, 0, UV_EPIPE), OUTBOX_FAILED);
    assert_true(outbox_empty(&o));
    outbox_free(&o);
}

static void test_failed_write_drops_inflight(void **state)
{
    (void)state;
    struct outbox o;
    _Atomic uint64_t frames = 0;
    outbox_init(&o);
    o.frames = &frames;
    stream_reset();
    push_full(&o, OUTBOX_DATA, "aaaa", 0, true);
    push_full(&o, OUTBOX_DATA, "bbbbb", 0, true);
    push_full(&o, OUTBOX_DATA, "cccccc", 0, true);
    push(&o, OUTBOX_CTL, "PP");
    assert_int_equal(write_n(&o, 2 + 1, 8), OUTBOX_PENDING); /* PP, a: aaaa started */
    assert_int_equal(outbox_bytes(&o), 3 + 5 + 6);
    uv_buf_t b[4];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 2, &bytes), 2); /* aaa, bbbbb */
    assert_int_equal(bytes, 8);
    push(&o, OUTBOX_CTL, "Q"); /* pushed while the write is in flight */
    assert_int_equal(outbox_written(&o, 0, UV_ECONNRESET), OUTBOX_FAILED);
    assert_int_equal(atomic_load(&frames), 0);
    assert_int_equal(o.data_items, 1);
    assert_int_equal(o.data_bytes, 6);
    assert_int_equal(o.ctl_bytes, 1);
    assert_int_equal(outbox_bytes(&o), 7);
    assert_false(outbox_empty(&o));
    drain_all(&o);
    assert_string_equal(stream, "PPaQcccccc");
    assert_int_equal(atomic_load(&frames), 1);
    outbox_free(&o);
}

/* ---- counting and accounting ------------------------------------------- */

static void test_frame_counting(void **state)
{
    (void)state;
    struct outbox o;
    _Atomic uint64_t frames = 0;
    outbox_init(&o);
    outbox_count_frame(&o); /* no counter: nothing happens */
    o.frames = &frames;
    stream_reset();
    push_full(&o, OUTBOX_DATA, "aaaa", 0, true);
    push_full(&o, OUTBOX_DATA, "bb", 0, false);
    push_full(&o, OUTBOX_DATA, "ccc", 0, true);
    push_full(&o, OUTBOX_CTL, "P", 0, false);
    write_n(&o, 1, 8); /* P */
    assert_int_equal(atomic_load(&frames), 0);
    write_n(&o, 3, 8); /* aaa of aaaa */
    assert_int_equal(atomic_load(&frames), 0);
    write_n(&o, 1, 8); /* aaaa complete */
    assert_int_equal(atomic_load(&frames), 1);
    write_n(&o, 2 + 2, 8); /* bb (not counted), cc */
    assert_int_equal(atomic_load(&frames), 1);
    outbox_count_frame(&o);
    assert_int_equal(atomic_load(&frames), 2);
    assert_int_equal(write_n(&o, 1, 8), OUTBOX_DONE);
    assert_int_equal(atomic_load(&frames), 3);
    assert_string_equal(stream, "Paaaabbccc");
    /* a started counted item lost to a failure is never counted */
    push_full(&o, OUTBOX_DATA, "dddd", 0, true);
    write_n(&o, 2, 8);
    uv_buf_t b[4];
    size_t bytes;
    outbox_gather(&o, b, 4, &bytes);
    assert_int_equal(outbox_written(&o, 0, UV_EPIPE), OUTBOX_FAILED);
    assert_int_equal(atomic_load(&frames), 3);
    outbox_free(&o);
}

static void test_byte_accounting(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaaaaaaaa"); /* 10 */
    push(&o, OUTBOX_DATA, "bbbbb");      /* 5 */
    push(&o, OUTBOX_CTL, "PPP");         /* 3 */
    pong(&o, "oo");                      /* 2 */
    assert_int_equal(o.data_bytes, 15);
    assert_int_equal(o.ctl_bytes, 5);
    assert_int_equal(o.data_items, 2);
    assert_int_equal(outbox_bytes(&o), 20);
    write_n(&o, 4, 8); /* PPP o */
    assert_int_equal(o.ctl_bytes, 1);
    assert_int_equal(o.data_bytes, 15);
    write_n(&o, 1 + 6, 8); /* o, 6 of a */
    assert_int_equal(o.ctl_bytes, 0);
    assert_int_equal(o.data_bytes, 9);
    assert_int_equal(o.data_items, 2);
    write_n(&o, 4, 8); /* rest of a */
    assert_int_equal(o.data_bytes, 5);
    assert_int_equal(o.data_items, 1);
    push(&o, OUTBOX_DATA, "cccc");
    push_full(&o, OUTBOX_CTL, "QQQQ", 1, false);
    assert_int_equal(o.data_bytes, 9);
    assert_int_equal(o.ctl_bytes, 3);
    assert_int_equal(o.data_items, 2);
    write_n(&o, 2, 8); /* QQ of QQQ */
    assert_int_equal(o.ctl_bytes, 1);
    outbox_drop_unsent_data(&o);
    assert_int_equal(o.data_bytes, 0);
    assert_int_equal(o.data_items, 0);
    assert_int_equal(outbox_bytes(&o), 1);
    drain_all(&o);
    assert_string_equal(stream, "PPPooaaaaaaaaaaQQQ");
    assert_int_equal(o.data_items, 0);
    assert_int_equal(o.data_bytes + o.ctl_bytes, 0);
    outbox_free(&o);
}

/* ---- pongs ------------------------------------------------------------- */

static void test_pong_replaced_in_place(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_CTL, "P");
    pong(&o, "o1");
    push(&o, OUTBOX_CTL, "Q");
    assert_int_equal(o.ctl_bytes, 4);
    pong(&o, "o22222");
    assert_int_equal(o.ctl_bytes, 8);
    pong(&o, "o3");
    assert_int_equal(o.ctl_bytes, 4);
    uint8_t big[OUTBOX_PONG_CAP];
    memset(big, 'z', sizeof big);
    outbox_put_pong(&o, big, sizeof big); /* the largest pong fits in place */
    assert_int_equal(o.ctl_bytes, 2 + OUTBOX_PONG_CAP);
    pong(&o, "o4");
    assert_int_equal(o.ctl_bytes, 4);
    assert_int_equal(outbox_bytes(&o), 7);
    assert_int_equal(o.data_items, 1);
    drain_all(&o);
    assert_string_equal(stream, "Po4Qaaa");
    outbox_free(&o);
}

static void test_pong_inflight_not_replaced(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    pong(&o, "o1");
    uv_buf_t b[4];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 1, &bytes), 1); /* o1 in flight */
    pong(&o, "o2");                                       /* queued behind it */
    pong(&o, "o3");                                       /* replaces o2 */
    assert_int_equal(o.ctl_bytes, 4);
    memcpy(stream, b[0].base, 2);
    stream_len = 2;
    assert_int_equal(outbox_written(&o, 2, 0), OUTBOX_PENDING);
    drain_all(&o);
    assert_string_equal(stream, "o1o3aaa");
    outbox_free(&o);
}

static void test_pong_started_not_replaced(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    pong(&o, "o1111");
    write_n(&o, 2, 8); /* o1 of o1111: started */
    pong(&o, "o2");
    assert_int_equal(o.ctl_bytes, 3 + 2);
    drain_all(&o);
    assert_string_equal(stream, "o1111o2aaa");
    outbox_free(&o);
}

/* A pong in flight that the write does not reach waits again; the pong
 * queued behind it meanwhile must not make two waiting pongs. */
static void test_pong_unreached_inflight_then_new(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaa");
    write_n(&o, 2, 8); /* aaaa started */
    pong(&o, "o1");    /* behind the started frame */
    uv_buf_t b[4];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 4, &bytes), 2); /* aa, o1 in flight */
    pong(&o, "o2");                                       /* o1 in flight: queued */
    memcpy(stream + stream_len, "a", 1);
    stream_len++;
    stream[stream_len] = '\0';
    assert_int_equal(outbox_written(&o, 1, 0), OUTBOX_PENDING); /* o1 not reached */
    pong(&o, "o3");
    assert_int_equal(o.ctl_bytes, 2); /* one pong waits */
    drain_all(&o);
    assert_string_equal(stream, "aaaao3");
    outbox_free(&o);
}

/* ---- dropping unsent data ---------------------------------------------- */

static void test_drop_keeps_inflight_and_control(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_DATA, "bbb");
    push(&o, OUTBOX_DATA, "ccc");
    push(&o, OUTBOX_CTL, "P");
    uv_buf_t b[4];
    size_t bytes;
    assert_int_equal(outbox_gather(&o, b, 2, &bytes), 2); /* P, aaa in flight */
    push(&o, OUTBOX_CTL, "Q");
    outbox_drop_unsent_data(&o);
    assert_int_equal(o.data_items, 1);
    assert_int_equal(o.data_bytes, 3);
    assert_int_equal(o.ctl_bytes, 2);
    memcpy(stream, "Paaa", 4);
    stream_len = 4;
    assert_int_equal(outbox_written(&o, 4, 0), OUTBOX_PENDING);
    push(&o, OUTBOX_DATA, "ddd"); /* the tail is right after the drop */
    drain_all(&o);
    assert_string_equal(stream, "PaaaQddd");
    outbox_free(&o);
}

static void test_drop_keeps_started(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaa");
    push(&o, OUTBOX_DATA, "bbb");
    write_n(&o, 2, 8); /* aa: aaaa started */
    push(&o, OUTBOX_CTL, "P");
    push(&o, OUTBOX_DATA, "ccc");
    outbox_drop_unsent_data(&o);
    assert_int_equal(o.data_items, 1);
    assert_int_equal(o.data_bytes, 2);
    assert_int_equal(outbox_bytes(&o), 3);
    push(&o, OUTBOX_DATA, "dd");
    push(&o, OUTBOX_CTL, "Q");
    assert_int_equal(o.data_items, 2);
    drain_all(&o);
    assert_string_equal(stream, "aaaaPQdd");
    outbox_free(&o);
}

static void test_drop_everything_then_push(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaa");
    push(&o, OUTBOX_DATA, "bbb");
    outbox_drop_unsent_data(&o);
    assert_true(outbox_empty(&o));
    assert_int_equal(outbox_bytes(&o), 0);
    assert_int_equal(o.data_items, 0);
    push(&o, OUTBOX_DATA, "ccc");
    push(&o, OUTBOX_DATA, "ddd");
    push(&o, OUTBOX_CTL, "P");
    /* data last in the list: dropping it must leave the tail on P */
    outbox_drop_unsent_data(&o);
    push(&o, OUTBOX_DATA, "eee");
    push(&o, OUTBOX_DATA, "fff");
    drain_all(&o);
    assert_string_equal(stream, "Peeefff");
    outbox_free(&o);
}

/* ---- drained notice ---------------------------------------------------- */

static void test_drained_notice_once(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaaaaaaaa");
    push(&o, OUTBOX_DATA, "bbbbbbbbbb");
    push(&o, OUTBOX_CTL, "PPPPPPPPPPPPPPPPPPPP"); /* control bytes do not count */
    outbox_notify_below(&o, 8);
    assert_false(outbox_take_drained(&o));
    write_n(&o, 20 + 5, 8); /* data_bytes 15 */
    assert_false(outbox_take_drained(&o));
    write_n(&o, 6, 8); /* data_bytes 9 */
    assert_false(outbox_take_drained(&o));
    write_n(&o, 1, 8); /* data_bytes 8: the mark */
    assert_true(outbox_take_drained(&o));
    assert_false(outbox_take_drained(&o));
    write_n(&o, 1, 8);
    assert_false(outbox_take_drained(&o)); /* one notice per request */
    drain_all(&o);
    assert_false(outbox_take_drained(&o));
    /* asked again: a write that empties the outbox gives it */
    push(&o, OUTBOX_DATA, "cccc");
    outbox_notify_below(&o, 0);
    write_n(&o, 3, 8);
    assert_false(outbox_take_drained(&o));
    write_n(&o, 1, 8);
    assert_true(outbox_take_drained(&o));
    assert_false(outbox_take_drained(&o));
    outbox_free(&o);
}

static void test_free_with_items_left(void **state)
{
    (void)state;
    struct outbox o;
    outbox_init(&o);
    stream_reset();
    push(&o, OUTBOX_DATA, "aaaa");
    push(&o, OUTBOX_DATA, "bbbb");
    pong(&o, "oo");
    push(&o, OUTBOX_CTL, "P");
    push_full(&o, OUTBOX_DATA, "XXss", 2, true);
    write_n(&o, 1, 8);
    uv_buf_t b[4];
    size_t bytes;
    outbox_gather(&o, b, 2, &bytes); /* freed with a write "in flight" */
    outbox_free(&o);
    assert_true(outbox_empty(&o));
    assert_int_equal(outbox_bytes(&o), 0);
}

/* ---- random run against the order rule --------------------------------- */

/* Every byte of item k is k (1..MAX_ITEMS), so the stream parses back into
 * items. For each item the test records what the rule demands of it: the
 * items it must go before (set at push time) and its FIFO rank. */
#define MAX_ITEMS 250

enum rstate { R_LIVE, R_DONE, R_LOST, R_DROPPED, R_REPLACED };

struct rec {
    enum outbox_kind kind;
    enum rstate st;
    bool pong, counted, started, skipped, inflight;
    bool merged; /* a pong that absorbed an older one left waiting by a write */
    size_t len, written;
    unsigned seq;       /* FIFO rank among its kind */
    uint8_t before[32]; /* bitset: ids it must precede */
    int alias;          /* R_REPLACED: the pong that took its place */
};

struct model {
    struct outbox o;
    _Atomic uint64_t frames;
    uint64_t counted_done;
    struct rec r[MAX_ITEMS + 1];
    int n; /* ids used: 1..n */
    unsigned seq;
    uv_buf_t bufs[16];
    unsigned nbufs;
    int flight[16]; /* ids gathered into the write in flight */
    bool flying;
    uint32_t rng;
};

static uint32_t rnd(struct model *m, uint32_t below)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 17;
    m->rng ^= m->rng << 5;
    return m->rng % below;
}

static void set_bit(uint8_t *s, int id)
{
    s[id / 8] |= (uint8_t)(1u << (id % 8));
}

static bool has_bit(const uint8_t *s, int id)
{
    return s[id / 8] & (1u << (id % 8));
}

static int resolve(const struct model *m, int id)
{
    while (m->r[id].st == R_REPLACED)
        id = m->r[id].alias;
    return id;
}

/* Waiting: live, neither in flight nor started. */
static bool waiting(const struct rec *r)
{
    return r->st == R_LIVE && !r->inflight && !r->started;
}

/* Where the random run is, for failure messages. */
static uint32_t cur_seed;
static int cur_step;

static void model_check_accounting(struct model *m)
{
    size_t data = 0, ctl = 0;
    uint32_t items = 0;
    for (int id = 1; id <= m->n; id++) {
        const struct rec *r = &m->r[id];
        if (r->st != R_LIVE)
            continue;
        if (r->kind == OUTBOX_DATA) {
            data += r->len - r->written;
            items++;
        } else {
            ctl += r->len - r->written;
        }
    }
    if (m->o.data_bytes != data || m->o.ctl_bytes != ctl || m->o.data_items != items)
        fail_msg("seed %u step %d: data_bytes %zu ctl_bytes %zu data_items %u, expected "
                 "%zu %zu %u",
                 cur_seed, cur_step, m->o.data_bytes, m->o.ctl_bytes, m->o.data_items, data, ctl,
                 items);
    assert_int_equal(outbox_bytes(&m->o), data + ctl);
    assert_int_equal(outbox_empty(&m->o), data + ctl == 0);
    assert_int_equal(atomic_load(&m->frames), m->counted_done);
}

static void model_push(struct model *m)
{
    if (m->n == MAX_ITEMS)
        return;
    int id = ++m->n;
    struct rec *r = &m->r[id];
    memset(r, 0, sizeof *r);
    uint8_t frame[300];
    uint32_t what = rnd(m, 10);
    bool is_pong = what == 0;
    r->kind = what < 3 ? OUTBOX_CTL : OUTBOX_DATA;
    size_t total = 1 + rnd(m, is_pong ? OUTBOX_PONG_CAP : (r->kind == OUTBOX_CTL ? 20 : 200));
    memset(frame, id, total);
    size_t skip = 0;
    if (!is_pong && outbox_empty(&m->o) && rnd(m, 2) == 0)
        skip =
            rnd(m, (uint32_t)total); /* the socket took the beginning (only of an empty outbox) */
    r->len = total - skip;
    r->skipped = r->started = skip > 0;
    r->counted = r->kind == OUTBOX_DATA && rnd(m, 2);
    r->pong = is_pong;
    r->st = R_LIVE;
    r->seq = m->seq++;
    /* what the rule demands of it, given what waits right now */
    for (int j = 1; j < id; j++) {
        const struct rec *q = &m->r[j];
        if (!waiting(q))
            continue;
        if (r->skipped || (r->kind == OUTBOX_CTL && q->kind == OUTBOX_DATA))
            set_bit(r->before, j);
    }
    if (is_pong) {
        for (int j = 1; j < id; j++) {
            struct rec *q = &m->r[j];
            if (q->pong && waiting(q)) { /* at most one: it takes the new frame */
                r->seq = q->seq;
                r->merged = q->merged; /* it takes q's place, wherever that is */
                memcpy(r->before, q->before, sizeof r->before);
                q->st = R_REPLACED;
                q->alias = id;
                break;
            }
        }
        outbox_put_pong(&m->o, frame, total);
        return;
    }
    /* split the frame into up to three buffers */
    uv_buf_t iov[3];
    unsigned n = 1 + rnd(m, 3);
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = i + 1 == n ? total - at : rnd(m, (uint32_t)(total - at + 1));
        iov[i] = uv_buf_init((char *)frame + at, (unsigned)l);
        at += l;
    }
    outbox_push(&m->o, r->kind, iov, n, skip, r->counted);
}

static void model_gather(struct model *m)
{
    size_t bytes;
    unsigned max = 1 + rnd(m, 6);
    m->nbufs = outbox_gather(&m->o, m->bufs, max, &bytes);
    assert_true(m->nbufs <= max);
    size_t sum = 0;
    for (unsigned i = 0; i < m->nbufs; i++) {
        sum += m->bufs[i].len;
        int id = (uint8_t)m->bufs[i].base[0];
        assert_true(id >= 1 && id <= m->n);
        assert_int_equal(m->r[id].st, R_LIVE);
        assert_int_equal(m->bufs[i].len, m->r[id].len - m->r[id].written);
        for (size_t k = 0; k < m->bufs[i].len; k++)
            assert_int_equal((uint8_t)m->bufs[i].base[k], id);
        m->r[id].inflight = true;
        m->flight[i] = id;
    }
    assert_int_equal(sum, bytes);
    m->flying = true;
}

static void model_written(struct model *m, bool may_fail)
{
    size_t bytes = 0;
    for (unsigned i = 0; i < m->nbufs; i++)
        bytes += m->bufs[i].len;
    bool fail = may_fail && rnd(m, 40) == 0;
    size_t n;
    switch (rnd(m, 4)) {
    case 0:
        n = bytes;
        break;
    case 1: /* a few bytes, often cutting at an item boundary or nowhere */
        n = rnd(m, 4);
        n = n < bytes ? n : bytes;
        break;
    default:
        n = rnd(m, (uint32_t)bytes + 1);
    }
    size_t left = n;
    for (unsigned i = 0; i < m->nbufs; i++) {
        struct rec *r = &m->r[m->flight[i]];
        r->inflight = false;
        if (fail) {
            r->st = R_LOST;
            continue;
        }
        size_t l = m->bufs[i].len < left ? m->bufs[i].len : left;
        assert_true(stream_len + l < sizeof stream);
        memcpy(stream + stream_len, m->bufs[i].base, l);
        stream_len += l;
        left -= l;
        r->written += l;
        if (r->written == r->len) {
            r->st = R_DONE;
            m->counted_done += r->counted;
        } else if (r->written > 0) {
            r->started = true;
        }
    }
    /* A pong in flight that the write did not reach waits again, next to
     * the one queued meanwhile: at most one pong ever waits, the newest. */
    int newest = 0;
    for (int id = m->n; id >= 1 && !fail; id--) {
        struct rec *r = &m->r[id];
        if (!r->pong || !waiting(r))
            continue;
        if (!newest) {
            newest = id;
            continue;
        }
        r->st = R_REPLACED;
        r->alias = newest;
        m->r[newest].merged = true;
    }
    enum outbox_progress p = outbox_written(&m->o, n, fail ? UV_EPIPE : 0);
    bool left_any = false;
    for (int id = 1; id <= m->n; id++)
        left_any = left_any || m->r[id].st == R_LIVE;
    assert_int_equal(p, fail ? OUTBOX_FAILED : left_any ? OUTBOX_PENDING : OUTBOX_DONE);
    m->flying = false;
}

/* The stream parses into one run per item that reached it, in an order
 * the rule allows. Reports the first violation with the seed. */
static void model_verify(struct model *m, uint32_t seed)
{
    int pos[MAX_ITEMS + 1];
    size_t runlen[MAX_ITEMS + 1];
    for (int id = 0; id <= MAX_ITEMS; id++) {
        pos[id] = -1;
        runlen[id] = 0;
    }
    int runs = 0;
    for (size_t i = 0; i < stream_len;) {
        int id = (uint8_t)stream[i];
        size_t j = i;
        while (j < stream_len && (uint8_t)stream[j] == id)
            j++;
        if (pos[id] >= 0)
            fail_msg("seed %u: item %d split (second run at stream offset %zu)", seed, id, i);
        pos[id] = runs++;
        runlen[id] = j - i;
        i = j;
    }
    for (int id = 1; id <= m->n; id++) {
        const struct rec *r = &m->r[id];
        if (r->st == R_LIVE)
            fail_msg("seed %u: item %d never written", seed, id);
        if (runlen[id] != r->written)
            fail_msg("seed %u: item %d has %zu bytes in the stream, %zu expected", seed, id,
                     runlen[id], r->written);
    }
    for (int a = 1; a <= m->n; a++) {
        const struct rec *ra = &m->r[a];
        if (pos[a] < 0)
            continue;
        for (int b = 1; b <= m->n; b++) {
            if (!has_bit(ra->before, b))
                continue;
            int rb = resolve(m, b);
            if (pos[rb] >= 0 && pos[rb] < pos[a])
                fail_msg("seed %u: item %d (%s%s) pushed while item %d (%s) waited, but "
                         "written after it",
                         seed, a, ra->kind == OUTBOX_CTL ? "control" : "data",
                         ra->skipped ? ", started" : "", rb,
                         m->r[rb].kind == OUTBOX_CTL ? "control" : "data");
        }
        for (int b = 1; b <= m->n; b++) {
            const struct rec *rb = &m->r[b];
            if (pos[b] < 0 || rb->kind != ra->kind || ra->skipped || rb->skipped || ra->merged ||
                rb->merged)
                continue;
            if (ra->seq < rb->seq && pos[a] > pos[b])
                fail_msg("seed %u: %s item %d pushed before %s item %d but written after it", seed,
                         ra->kind == OUTBOX_CTL ? "control" : "data", a,
                         rb->kind == OUTBOX_CTL ? "control" : "data", b);
        }
    }
}

static void test_random_against_order_rule(void **state)
{
    (void)state;
    for (uint32_t seed = 1; seed <= 300; seed++) {
        static struct model mm;
        struct model *m = &mm;
        memset(m, 0, sizeof *m);
        m->rng = seed * 2654435761u;
        outbox_init(&m->o);
        m->o.frames = &m->frames;
        stream_reset();
        cur_seed = seed;
        for (int step = 0; step < 400; step++) {
            cur_step = step;
            uint32_t op = rnd(m, 10);
            if (op < 4) {
                model_push(m);
            } else if (op == 4) {
                if (rnd(m, 6) == 0) {
                    outbox_drop_unsent_data(&m->o);
                    for (int id = 1; id <= m->n; id++)
                        if (waiting(&m->r[id]) && m->r[id].kind == OUTBOX_DATA)
                            m->r[id].st = R_DROPPED;
                }
            } else if (!m->flying) {
                model_gather(m);
            } else {
                model_written(m, true);
            }
            model_check_accounting(m);
        }
        for (int i = 0; i < 100000 && (m->flying || !outbox_empty(&m->o)); i++) {
            if (!m->flying)
                model_gather(m);
            else
                model_written(m, false);
            model_check_accounting(m);
        }
        if (m->flying)
            model_written(m, false);
        assert_true(outbox_empty(&m->o));
        model_verify(m, seed);
        outbox_free(&m->o);
    }
}

/* ---- main -------------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_data_fifo),
        cmocka_unit_test(test_control_ahead_of_queued_data),
        cmocka_unit_test(test_control_behind_inflight),
        cmocka_unit_test(test_control_fifo_after_write_ends_on_boundary),
        cmocka_unit_test(test_started_frame_first),
        cmocka_unit_test(test_started_frame_at_buffer_boundary),
        cmocka_unit_test(test_push_skip_across_buffers),
        cmocka_unit_test(test_partial_writes_any_cut),
        cmocka_unit_test(test_one_byte_at_a_time),
        cmocka_unit_test(test_gather_respects_max),
        cmocka_unit_test(test_progress_values),
        cmocka_unit_test(test_failed_write_drops_inflight),
        cmocka_unit_test(test_frame_counting),
        cmocka_unit_test(test_byte_accounting),
        cmocka_unit_test(test_pong_replaced_in_place),
        cmocka_unit_test(test_pong_inflight_not_replaced),
        cmocka_unit_test(test_pong_started_not_replaced),
        cmocka_unit_test(test_pong_unreached_inflight_then_new),
        cmocka_unit_test(test_drop_keeps_inflight_and_control),
        cmocka_unit_test(test_drop_keeps_started),
        cmocka_unit_test(test_drop_everything_then_push),
        cmocka_unit_test(test_drained_notice_once),
        cmocka_unit_test(test_free_with_items_left),
        cmocka_unit_test(test_random_against_order_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
