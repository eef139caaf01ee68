/* utf8.c — incremental UTF-8 validation. The state is either ACCEPT,
 * REJECT, or "n continuation bytes still due, the next one within
 * [lo, hi]"; the narrowed first-continuation ranges are what rule out
 * overlongs, surrogates and code points above U+10FFFF. ASCII runs are
 * skipped eight bytes at a time. It never decodes code points. */
#include "codec/utf8.h"

#include <string.h>

static uint32_t pending(uint32_t remaining, uint32_t lo, uint32_t hi)
{
    return (remaining << 16) | (lo << 8) | hi;
}

/* The state after a lead byte (spec: RFC 3629 §4 table). */
static uint32_t lead(uint8_t b)
{
    if (b >= 0xC2 && b <= 0xDF)
        return pending(1, 0x80, 0xBF);
    if (b == 0xE0)
        return pending(2, 0xA0, 0xBF); /* no overlongs */
    if (b == 0xED)
        return pending(2, 0x80, 0x9F); /* no surrogates */
    if (b >= 0xE1 && b <= 0xEF)
        return pending(2, 0x80, 0xBF);
    if (b == 0xF0)
        return pending(3, 0x90, 0xBF); /* no overlongs */
    if (b >= 0xF1 && b <= 0xF3)
        return pending(3, 0x80, 0xBF);
    if (b == 0xF4)
        return pending(3, 0x80, 0x8F); /* nothing above U+10FFFF */
    return UTF8_REJECT;
}

static bool ascii8(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return (w & 0x8080808080808080ULL) == 0;
}

uint32_t utf8_step(uint32_t state, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (state == UTF8_ACCEPT) {
            while (i + 8 <= n && ascii8(p + i))
                i += 8;
            if (i == n)
                break;
            uint8_t b = p[i++];
            if (b >= 0x80)
                state = lead(b);
            continue;
        }
        if (state == UTF8_REJECT)
            return UTF8_REJECT;
        uint8_t b = p[i++];
        uint32_t remaining = state >> 16, lo = (state >> 8) & 0xFF, hi = state & 0xFF;
        if (b < lo || b > hi)
            return UTF8_REJECT;
        state = remaining == 1 ? UTF8_ACCEPT : pending(remaining - 1, 0x80, 0xBF);
    }
    return state;
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    return utf8_step(UTF8_ACCEPT, p, n) == UTF8_ACCEPT;
}
