/* fuzz_cluster_record.c — drives the sids record parser (cluster/claim.h)
 * with arbitrary bytes. The parser accepts only the canonical form, so
 * whatever it accepts must format back to exactly the input and parse again
 * to the same record; the formatter must refuse every buffer too small for
 * it without writing past it. It does not test the claim state machine
 * (tests/unit/test_claim.c does). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/claim.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct claim_record r, again;
    char buf[CLAIM_RECORD_MAX];
    if (claim_record_parse(&r, (const char *)data, size) != 0)
        return 0;
    check(size < CLAIM_RECORD_MAX);
    size_t n = claim_record_format(&r, buf, sizeof buf);
    check(n == size && memcmp(buf, data, size) == 0);
    check(claim_record_parse(&again, buf, n) == 0);
    check(memcmp(&r, &again, sizeof r) == 0);
    for (size_t cap = 0; cap <= n; cap++) {
        char *small = malloc(cap ? cap : 1); /* exact size: ASan sees overruns */
        check(claim_record_format(&r, small, cap) == 0);
        free(small);
    }
    return 0;
}
