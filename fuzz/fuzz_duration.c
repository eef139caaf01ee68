/* fuzz_duration.c — libFuzzer target for duration_parse: any byte string
 * either fails cleanly or yields a value that duration_format prints as
 * text duration_parse reads back to the same value. It checks round-trips
 * only; agreement with Go's exact results lives in tests/unit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char text[64];
    int64_t ns, back;
    memcpy(s, data, size);
    s[size] = '\0';
    if (duration_parse(s, &ns) == 0) {
        int n = duration_format(text, sizeof text, ns);
        if (n <= 0 || (size_t)n >= sizeof text || duration_parse(text, &back) != 0 || back != ns)
            abort();
    }
    free(s);
    return 0;
}
