/* ws.h — RFC 6455 frame codec. Pure: bytes in, events out, no I/O, no
 * allocation. The decoder unmasks payload in the caller's buffer and hands
 * back slices of it, so a message that arrives in one read is never copied.
 * It holds at most a partial frame header and one control payload itself.
 * Pure: any thread; a decoder belongs to its connection's thread. */
#ifndef RELAY_WS_H
#define RELAY_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WS_OP_CONT   0x0
#define WS_OP_TEXT   0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE  0x8
#define WS_OP_PING   0x9
#define WS_OP_PONG   0xA

#define WS_CLOSE_NORMAL       1000
#define WS_CLOSE_GOING_AWAY   1001
#define WS_CLOSE_PROTOCOL     1002
#define WS_CLOSE_NO_STATUS    1005 /* never on the wire: "close frame had no code" */
#define WS_CLOSE_ABNORMAL     1006 /* never on the wire: "TCP went away" */
#define WS_CLOSE_INVALID_DATA 1007
#define WS_CLOSE_POLICY       1008
#define WS_CLOSE_TOO_BIG      1009
#define WS_CLOSE_INTERNAL     1011

#define WS_MAX_HEADER       14  /* 2 + 8 extended length + 4 mask */
#define WS_MAX_CONTROL      125 /* control frame payload limit */
#define WS_ACCEPT_LEN       28  /* base64 of a SHA-1 digest */
#define WS_MAX_CLOSE_REASON 123

enum ws_event_type {
    WS_EV_NONE,    /* everything given was consumed; feed more */
    WS_EV_DATA,    /* a slice of a data message's payload (possibly empty) */
    WS_EV_CONTROL, /* a complete ping, pong or close frame */
    WS_EV_ERROR,   /* protocol violation: close with ev.close_code; decoder is dead */
};

struct ws_event {
    enum ws_event_type type;
    uint8_t opcode;        /* DATA: WS_OP_TEXT/BINARY of the message; CONTROL: CLOSE/PING/PONG */
    bool first;            /* DATA: this slice starts the message */
    bool last;             /* DATA: this slice ends the message (it is complete and valid) */
    uint8_t *data;         /* DATA: unmasked slice of the fed buffer; CONTROL: the payload,
                              in the decoder's own storage (valid until the next feed) */
    size_t len;            /* length of data */
    uint16_t close_code;   /* ERROR: code to close with (1002, 1007, 1009);
                              CONTROL/CLOSE: the peer's code, WS_CLOSE_NO_STATUS if none */
    const uint8_t *reason; /* CONTROL/CLOSE: the peer's reason bytes (valid UTF-8) */
    size_t reason_len;
};

struct ws_decoder {
    /* configuration */
    uint64_t max_message; /* cap on a whole message's payload; 0 = no cap */
    bool require_mask;    /* server side: client frames must be masked */
    /* private state */
    uint8_t state;
    uint8_t hdr[WS_MAX_HEADER];
    uint8_t hdr_have;
    uint8_t frame_op;
    bool frame_fin;
    bool frame_masked;
    uint8_t mask[4];
    uint8_t mask_pos;
    uint64_t frame_left;
    bool in_message;
    bool message_started;
    uint8_t msg_op;
    uint64_t msg_len;
    uint32_t utf8_state;
    uint8_t *ctl; /* a control payload split across feeds; NULL otherwise (idle
                     connections keep no buffer) */
    uint8_t ctl_have;
    uint16_t err_code;
};

/* Prepares a decoder. max_message 0 disables the size cap. */
void ws_decoder_init(struct ws_decoder *d, uint64_t max_message, bool require_mask);

/* Consumes a prefix of buf[0..len) and reports at most one event in *ev.
 * Returns the number of bytes consumed. Payload bytes are unmasked in place.
 * Call repeatedly until it returns WS_EV_NONE (all of buf consumed) or
 * WS_EV_ERROR (after which every call returns the same error). DATA slices
 * point into buf; CONTROL payloads point into buf, or into a buffer the
 * decoder owns when the payload was split across calls; either stays valid
 * until the next call. Empty data frames still produce a DATA event so
 * message boundaries are always reported. */
size_t ws_decoder_feed(struct ws_decoder *d, uint8_t *buf, size_t len, struct ws_event *ev);

/* Releases what the decoder may hold (safe to call twice; the decoder must
 * be initialised again before reuse). */
void ws_decoder_free(struct ws_decoder *d);

/* True while a data message has begun but its final fragment has not been
 * fully received (used for the message completion deadline). */
bool ws_decoder_in_message(const struct ws_decoder *d);

/* True while the decoder holds a partial frame (header or control payload)
 * or is inside a message: the connection is not idle. */
bool ws_decoder_busy(const struct ws_decoder *d);

/* Writes a frame header to out. mask NULL = unmasked (server frames).
 * Returns the header length (2..14). */
size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], bool fin, uint8_t opcode, uint64_t payload_len,
                       const uint8_t *mask);

/* XORs buf[0..len) with mask, starting at mask offset pos (0..3). */
void ws_mask(uint8_t *buf, size_t len, const uint8_t mask[4], size_t pos);

/* Builds a close payload (big-endian code then reason, reason truncated to
 * WS_MAX_CLOSE_REASON bytes). code 0 yields an empty payload. Returns its
 * length. */
size_t ws_close_payload(uint8_t out[WS_MAX_CONTROL], uint16_t code, const char *reason);

/* True when code may be carried in a close frame (RFC 6455 §7.4): 1000-1003,
 * 1007-1014, 3000-4999. */
bool ws_close_code_valid(uint16_t code);

/* True when key (len bytes) is base64 that decodes to exactly 16 bytes. */
bool ws_key_valid(const char *key, size_t len);

/* Writes base64(SHA-1(key + GUID)) and a NUL to out. */
void ws_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1]);

#endif
