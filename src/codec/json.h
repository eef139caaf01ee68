/* json.h — a strict RFC 8259 scanner for the data path. It validates a
 * document (incrementally, so split input gives the same answer) and never
 * builds a tree. Used to check phone frames and, by envelope.c, to walk the
 * top-level keys of a routing envelope.
 * Pure: any thread; a scanner belongs to one thread at a time. */
#ifndef RELAY_JSON_H
#define RELAY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 10000 /* nesting limit, as Go's encoding/json */

struct json_scanner {
    /* private */
    uint32_t state;
    uint32_t depth;
    uint32_t sub;  /* next byte of a literal, or bytes still due in a \uXXXX
                      escape or a UTF-8 sequence */
    uint32_t utf8; /* inside a UTF-8 sequence: allowed range of the next byte,
                      lo << 8 | hi (narrowed after the lead byte to rule out
                      overlongs, surrogates and code points past U+10FFFF) */
    bool key;      /* the string being scanned is an object key */
    bool failed;   /* sticky: nothing fed later can make the document valid */
    uint8_t stack[(JSON_MAX_DEPTH + 7) / 8]; /* 1 = object, 0 = array */
};

/* Prepares s for a new document. */
void json_scanner_init(struct json_scanner *s);

/* Feeds data[0..len). Returns false as soon as the input cannot be the
 * prefix of a valid document (the scanner then stays failed). */
bool json_scanner_feed(struct json_scanner *s, const uint8_t *data, size_t len);

/* True when everything fed is exactly one valid document (surrounding
 * whitespace allowed). */
bool json_scanner_finish(struct json_scanner *s);

/* One-shot: true when data[0..len) is exactly one valid JSON document. An
 * empty or whitespace-only input is invalid. */
bool json_valid(const uint8_t *data, size_t len);

/* Appends s[0..len) to out as a JSON string body (no surrounding quotes),
 * escaped as Go's encoding/json (Go >= 1.22) does by default: \" \\ \b \f
 * \n \r \t, other controls as \u00XX, < > & as \u003c \u003e \u0026,
 * U+2028/U+2029 as \u2028/\u2029, each byte of invalid UTF-8 as \ufffd.
 * Returns the number of bytes needed, like snprintf; writes nothing past
 * cap (a short buffer receives a truncated prefix). */
size_t json_escape(char *out, size_t cap, const uint8_t *s, size_t len);

/* The value of four hex digits at p (already validated). */
uint32_t json_hex4(const uint8_t *p);

/* Writes code point cp as UTF-8 into out; returns the bytes written (1..4). */
size_t json_put_utf8(char out[4], uint32_t cp);

#endif
