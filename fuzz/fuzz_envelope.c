/* fuzz_envelope.c — envelope_parse on arbitrary bytes: every reported span
 * lies inside the input, a routed frame is itself valid JSON, a ROUTE has
 * a non-empty conn_id, and parsing is deterministic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "json.h"

static char scratch[1 << 16];

static bool inside(const uint8_t *p, size_t n, const uint8_t *data, size_t size)
{
    return p >= data && p + n <= data + size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e, again;
    char detail[160];
    if (size > sizeof scratch)
        return 0;
    enum envelope_kind k =
        envelope_parse(data, size, &e, scratch, sizeof scratch, detail, sizeof detail);
    if (e.frame && (!inside(e.frame, e.frame_len, data, size) || !json_valid(e.frame, e.frame_len)))
        abort();
    if (e.push_wake && !inside(e.push_wake, e.push_wake_len, data, size))
        abort();
    if (k == ENVELOPE_ROUTE && (e.conn_id_len == 0 || (!e.frame && !e.close_code)))
        abort();
    if (k != ENVELOPE_MALFORMED && !json_valid(data, size))
        abort();
    if (envelope_parse(data, size, &again, scratch, sizeof scratch, detail, sizeof detail) != k)
        abort();
    return 0;
}
