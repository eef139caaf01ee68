/* siphash.h — SipHash-2-4 of a byte string under a 128-bit key. Pure: any
 * thread may call it. */
#ifndef RELAY_SIPHASH_H
#define RELAY_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of data[0..len) under key (little-endian 64-bit halves). */
uint64_t siphash24(const uint8_t key[16], const void *data, size_t len);

#endif
