/* fuzz_envelope.c — envelope_parse on arbitrary bytes. Invariants: every
 * span lies inside the input (conn_id inside the input or the scratch
 * buffer); frame and push_wake spans are themselves valid JSON, never null
 * and never padded with whitespace; the kind agrees with the fields (ROUTE
 * has a conn_id and a frame or close code, WAKE has push_wake and no
 * conn_id) and with json_valid; a MALFORMED result carries a detail; parsing
 * is deterministic; and a routed frame survives a round trip through
 * envelope_wrap_prefix, as a close code does through envelope_close_notice. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/envelope.h"
#include "codec/json.h"

static char scratch[1 << 16], scratch2[1 << 16];

static bool inside(const void *p, size_t n, const void *base, size_t size)
{
    const uint8_t *q = p, *b = base;
    return q >= b && n <= size && (size_t)(q - b) <= size - n;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void check_raw(const uint8_t *p, size_t n, const uint8_t *data, size_t size)
{
    if (!p)
        return;
    if (!inside(p, n, data, size) || !json_valid(p, n) || is_ws(p[0]) || is_ws(p[n - 1]))
        abort();
    if (n == 4 && memcmp(p, "null", 4) == 0)
        abort();
}

static void check_spans(const struct envelope *e, const uint8_t *data, size_t size)
{
    check_raw(e->frame, e->frame_len, data, size);
    check_raw(e->push_wake, e->push_wake_len, data, size);
    if (!e->conn_id)
        abort();
    if (e->conn_id_len && !inside(e->conn_id, e->conn_id_len, data, size) &&
        !inside(e->conn_id, e->conn_id_len, scratch, sizeof scratch))
        abort();
}

static void check_kind(enum envelope_kind k, const struct envelope *e, const char *detail,
                       bool valid)
{
    switch (k) {
    case ENVELOPE_ROUTE:
        if (!e->conn_id_len || (!e->frame && !e->close_code))
            abort();
        break;
    case ENVELOPE_WAKE:
        if (e->conn_id_len || !e->push_wake)
            abort();
        break;
    case ENVELOPE_MALFORMED:
        if (!detail[0] || e->frame || e->push_wake || e->conn_id_len)
            abort();
        break;
    case ENVELOPE_MISSING_CONN_ID:
        if (e->conn_id_len || e->push_wake)
            abort();
        break;
    case ENVELOPE_MISSING_FRAME:
        if (!e->conn_id_len || e->frame || e->close_code)
            abort();
        break;
    }
    if (!valid && k != ENVELOPE_MALFORMED)
        abort();
    if ((k == ENVELOPE_ROUTE || k == ENVELOPE_WAKE) != (envelope_error(k) == NULL))
        abort();
}

/* Wraps the routed frame for the same conn_id and parses it back. */
static void check_round_trip(const struct envelope *e)
{
    size_t cap = e->conn_id_len * 6 + e->frame_len + 64;
    char *buf = malloc(cap), detail[160];
    struct envelope back;
    size_t n = envelope_wrap_prefix(buf, cap, e->conn_id, e->conn_id_len);
    if (n == 0)
        abort();
    memcpy(buf + n, e->frame, e->frame_len);
    buf[n + e->frame_len] = '}';
    if (envelope_parse((const uint8_t *)buf, n + e->frame_len + 1, &back, scratch2, sizeof scratch2,
                       detail, sizeof detail) != ENVELOPE_ROUTE ||
        back.conn_id_len != e->conn_id_len ||
        memcmp(back.conn_id, e->conn_id, e->conn_id_len) != 0 || back.frame_len != e->frame_len ||
        memcmp(back.frame, e->frame, e->frame_len) != 0)
        abort();
    free(buf);
}

static void check_notice(const struct envelope *e)
{
    size_t cap = e->conn_id_len * 6 + 64;
    char *buf = malloc(cap), detail[160];
    struct envelope back;
    size_t n = envelope_close_notice(buf, cap, e->conn_id, e->conn_id_len, e->close_code);
    enum envelope_kind k = envelope_parse((const uint8_t *)buf, n, &back, scratch2, sizeof scratch2,
                                          detail, sizeof detail);
    if (n == 0 || k != (e->close_code ? ENVELOPE_ROUTE : ENVELOPE_MISSING_FRAME) ||
        back.close_code != e->close_code || back.conn_id_len != e->conn_id_len ||
        memcmp(back.conn_id, e->conn_id, e->conn_id_len) != 0)
        abort();
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e, again;
    char detail[160], detail2[160];
    if (size > sizeof scratch)
        return 0;
    enum envelope_kind k =
        envelope_parse(data, size, &e, scratch, sizeof scratch, detail, sizeof detail);
    check_spans(&e, data, size);
    check_kind(k, &e, detail, json_valid(data, size));
    if (envelope_parse(data, size, &again, scratch, sizeof scratch, detail2, sizeof detail2) != k ||
        strcmp(detail, detail2) != 0 || again.frame != e.frame || again.close_code != e.close_code)
        abort();
    if (k == ENVELOPE_ROUTE && e.frame)
        check_round_trip(&e);
    if (k == ENVELOPE_ROUTE)
        check_notice(&e);
    return 0;
}
