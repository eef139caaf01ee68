/* envelope.h — the routing envelope between binary and relay (docs/features/envelope.md):
 * parse a binary's frame in one pass into byte spans, and build the two
 * frames the relay sends a binary (wrapped phone frame, close notice).
 * Pure: no I/O, no allocation; the inner frame is never looked into.
 * Pure: any thread. */
#ifndef RELAY_ENVELOPE_H
#define RELAY_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum envelope_kind {
    ENVELOPE_ROUTE,     /* conn_id + frame and/or close_code */
    ENVELOPE_WAKE,      /* no conn_id, push_wake present (docs/features/envelope.md) */
    ENVELOPE_MALFORMED, /* not JSON, not an object, or a field of the wrong type */
    ENVELOPE_MISSING_CONN_ID,
    ENVELOPE_MISSING_FRAME,
};

struct envelope {
    const char *conn_id; /* decoded conn_id (points into the input when it had no
                            escapes, else into the caller's scratch buffer) */
    size_t conn_id_len;
    const uint8_t *frame; /* raw bytes of the frame value, verbatim; NULL if absent/null */
    size_t frame_len;
    uint16_t close_code;      /* 0 = none */
    const uint8_t *push_wake; /* raw bytes of the push_wake value; NULL if absent/null */
    size_t push_wake_len;
};

/* Parses data[0..len) as an envelope with Go's encoding/json rules for the
 * reference's struct (docs/features/envelope.md): keys matched case-insensitively, last
 * duplicate wins, unknown keys ignored, top-level null = empty envelope,
 * close_code must be an integer 0..65535. scratch (at least len bytes) holds
 * a conn_id that needed unescaping. On ENVELOPE_MALFORMED a short decoder
 * detail is written to detail (may be NULL). Returns the kind. */
enum envelope_kind envelope_parse(const uint8_t *data, size_t len, struct envelope *env,
                                  char *scratch, size_t scratch_cap, char *detail,
                                  size_t detail_cap);

/* The error text for a failed kind, as logged in err= (docs/features/envelope.md):
 * "relay: malformed routing envelope", "relay: routing envelope missing
 * conn_id", "relay: routing envelope missing frame". NULL for ROUTE/WAKE. */
const char *envelope_error(enum envelope_kind kind);

/* Writes the prefix {"conn_id":"<escaped id>","frame": of a wrapped phone
 * frame into out; the caller sends prefix + frame bytes + "}". Returns the
 * prefix length, or 0 if cap is too small. */
size_t envelope_wrap_prefix(char *out, size_t cap, const char *conn_id, size_t conn_id_len);

/* Writes the close notice {"conn_id":"<escaped id>","close_code":N} into
 * out. Returns its length, or 0 if cap is too small. */
size_t envelope_close_notice(char *out, size_t cap, const char *conn_id, size_t conn_id_len,
                             uint16_t code);

#endif
