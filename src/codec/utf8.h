/* utf8.h — incremental UTF-8 validation (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). Pure; state fits in a uint32_t so a
 * message split over many frames and reads is validated without copying.
 * Pure: any thread. */
#ifndef RELAY_UTF8_H
#define RELAY_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UTF8_ACCEPT 0u /* at a code point boundary, everything so far valid */
#define UTF8_REJECT 1u /* invalid; sticky */

/* Advances the validator over p[0..n). Returns the new state: UTF8_ACCEPT,
 * UTF8_REJECT, or an opaque "inside a sequence" value. A rejected state stays
 * rejected whatever follows. */
uint32_t utf8_step(uint32_t state, const uint8_t *p, size_t n);

/* True when p[0..n) is complete, valid UTF-8. */
bool utf8_valid(const uint8_t *p, size_t n);

#endif
