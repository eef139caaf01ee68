/* ws.c — RFC 6455 frame codec. The decoder is a small state machine fed
 * arbitrary slices: it gathers a frame header (at most 14 bytes) and
 * control payloads (at most 125) itself, and streams data payload back as
 * unmasked slices of the caller's buffer, checking the size cap and UTF-8
 * as it goes. It performs no I/O and allocates nothing of its own (SHA-1
 * for the handshake goes through OpenSSL). It deliberately knows no
 * extensions (any RSV bit is an error) and does not reassemble messages. */
#include "codec/ws.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "codec/utf8.h"
#include "base/util.h"

enum { ST_HEADER, ST_PAYLOAD, ST_CONTROL, ST_DEAD };

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void ws_decoder_init(struct ws_decoder *d, uint64_t max_message, bool require_mask)
{
    memset(d, 0, sizeof *d);
    d->max_message = max_message;
    d->require_mask = require_mask;
    d->state = ST_HEADER;
}

bool ws_decoder_in_message(const struct ws_decoder *d)
{
    return d->in_message;
}

bool ws_decoder_busy(const struct ws_decoder *d)
{
    return d->in_message || d->state != ST_HEADER || d->hdr_have > 0;
}

static size_t fail(struct ws_decoder *d, struct ws_event *ev, uint16_t code, size_t consumed)
{
    d->state = ST_DEAD;
    d->err_code = code;
    memset(ev, 0, sizeof *ev);
    ev->type = WS_EV_ERROR;
    ev->close_code = code;
    return consumed;
}

static bool is_control(uint8_t op)
{
    return op >= WS_OP_CLOSE;
}

/* Header length once the first two bytes are known. */
static size_t header_len(const uint8_t *h)
{
    size_t n = 2;
    uint8_t l7 = h[1] & 0x7F;
    if (l7 == 126)
        n += 2;
    else if (l7 == 127)
        n += 8;
    if (h[1] & 0x80)
        n += 4;
    return n;
}

/* Checks what the first two header bytes already decide, so a bad frame is
 * refused without waiting for the rest of its header. Returns 0 or the close
 * code to fail with. */
static uint16_t check_head(const struct ws_decoder *d, const uint8_t *h)
{
    uint8_t op = h[0] & 0x0F;
    if (h[0] & 0x70)
        return WS_CLOSE_PROTOCOL; /* no extension was negotiated */
    if ((op > WS_OP_BINARY && op < WS_OP_CLOSE) || op > WS_OP_PONG)
        return WS_CLOSE_PROTOCOL;
    if (d->require_mask && !(h[1] & 0x80))
        return WS_CLOSE_PROTOCOL;
    if (is_control(op))
        /* 126/127 means an extended length: too long, or not minimally encoded. */
        return (h[0] & 0x80) && (h[1] & 0x7F) <= WS_MAX_CONTROL ? 0 : WS_CLOSE_PROTOCOL;
    if (op == WS_OP_CONT && !d->in_message)
        return WS_CLOSE_PROTOCOL;
    if (op != WS_OP_CONT && d->in_message)
        return WS_CLOSE_PROTOCOL; /* a new message inside a fragmented one */
    return 0;
}

/* Reads the payload length of a complete header; *pos is set to the offset of
 * the masking key. */
static uint64_t payload_len(const uint8_t *h, size_t *pos)
{
    uint8_t l7 = h[1] & 0x7F;
    uint64_t len = l7;
    *pos = 2;
    if (l7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        *pos = 4;
    } else if (l7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        *pos = 10;
    }
    return len;
}

/* Sets up the frame of a complete header that passed check_head. Returns 0
 * or the close code to fail with. */
static uint16_t start_frame(struct ws_decoder *d)
{
    const uint8_t *h = d->hdr;
    size_t pos;
    uint64_t len = payload_len(h, &pos);
    if (len >> 63)
        return WS_CLOSE_PROTOCOL; /* RFC 6455 §5.2: the top bit must be 0 */
    d->frame_op = h[0] & 0x0F;
    d->frame_fin = h[0] & 0x80;
    d->frame_masked = h[1] & 0x80;
    if (d->frame_masked)
        memcpy(d->mask, h + pos, 4);
    d->mask_pos = 0;
    d->frame_left = len;
    if (is_control(d->frame_op)) {
        d->ctl_have = 0;
        d->state = ST_CONTROL;
        return 0;
    }
    if (d->frame_op != WS_OP_CONT) {
        d->in_message = true;
        d->message_started = false;
        d->msg_op = d->frame_op;
        d->msg_len = 0;
        d->utf8_state = UTF8_ACCEPT;
    }
    /* msg_len <= max_message here, so the subtraction cannot wrap. */
    if (d->max_message && len > d->max_message - d->msg_len)
        return WS_CLOSE_TOO_BIG;
    d->msg_len += len;
    d->state = ST_PAYLOAD;
    return 0;
}

/* Copies header bytes from buf[*used..len) into d->hdr. Returns 0 when the
 * header is complete, -1 when more bytes are needed, or a close code. */
static int gather_header(struct ws_decoder *d, const uint8_t *buf, size_t len, size_t *used)
{
    size_t need = d->hdr_have < 2 ? 2 : header_len(d->hdr);
    while (d->hdr_have < need && *used < len) {
        d->hdr[d->hdr_have++] = buf[(*used)++];
        if (d->hdr_have == 2) {
            uint16_t err = check_head(d, d->hdr);
            if (err)
                return err;
            need = header_len(d->hdr);
        }
    }
    return d->hdr_have < need ? -1 : 0;
}

static void unmask(struct ws_decoder *d, uint8_t *p, size_t n)
{
    if (!d->frame_masked)
        return;
    ws_mask(p, n, d->mask, d->mask_pos);
    d->mask_pos = (uint8_t)((d->mask_pos + n) & 3);
}

/* Emits the next slice of a data frame (possibly empty). */
static size_t data_slice(struct ws_decoder *d, uint8_t *p, size_t avail, size_t consumed,
                         struct ws_event *ev)
{
    size_t n = d->frame_left < avail ? (size_t)d->frame_left : avail;
    unmask(d, p, n);
    if (d->msg_op == WS_OP_TEXT) {
        d->utf8_state = utf8_step(d->utf8_state, p, n);
        if (d->utf8_state == UTF8_REJECT)
            return fail(d, ev, WS_CLOSE_INVALID_DATA, consumed);
    }
    d->frame_left -= n;
    bool last = d->frame_left == 0 && d->frame_fin;
    if (last && d->msg_op == WS_OP_TEXT && d->utf8_state != UTF8_ACCEPT)
        return fail(d, ev, WS_CLOSE_INVALID_DATA, consumed);
    memset(ev, 0, sizeof *ev);
    ev->type = WS_EV_DATA;
    ev->opcode = d->msg_op;
    ev->first = !d->message_started;
    ev->last = last;
    ev->data = p;
    ev->len = n;
    d->message_started = true;
    if (d->frame_left == 0) {
        d->state = ST_HEADER;
        if (d->frame_fin)
            d->in_message = false;
    }
    return consumed + n;
}

/* A control frame's payload p[0..n) is complete (unmasked). */
static size_t control_done(struct ws_decoder *d, uint8_t *p, size_t n, size_t consumed,
                           struct ws_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->type = WS_EV_CONTROL;
    ev->opcode = d->frame_op;
    ev->data = p;
    ev->len = n;
    d->state = ST_HEADER;
    if (d->frame_op != WS_OP_CLOSE)
        return consumed;
    if (n == 1)
        return fail(d, ev, WS_CLOSE_PROTOCOL, consumed);
    ev->close_code = WS_CLOSE_NO_STATUS;
    if (n >= 2) {
        ev->close_code = (uint16_t)(p[0] << 8 | p[1]);
        if (!ws_close_code_valid(ev->close_code))
            return fail(d, ev, WS_CLOSE_PROTOCOL, consumed);
        if (!utf8_valid(p + 2, n - 2u))
            return fail(d, ev, WS_CLOSE_INVALID_DATA, consumed);
        ev->reason = p + 2;
        ev->reason_len = n - 2u;
    }
    return consumed;
}

void ws_decoder_free(struct ws_decoder *d)
{
    free(d->ctl);
    d->ctl = NULL;
}

size_t ws_decoder_feed(struct ws_decoder *d, uint8_t *buf, size_t len, struct ws_event *ev)
{
    size_t used = 0;
    if (d->ctl && d->state != ST_CONTROL)
        ws_decoder_free(d); /* the event that pointed into it has been handled */
    for (;;) {
        if (d->state == ST_DEAD)
            return fail(d, ev, d->err_code, used);
        if (d->state == ST_PAYLOAD) {
            /* An empty frame still reports its boundary; otherwise wait for bytes. */
            if (used == len && d->frame_left > 0)
                break;
            return data_slice(d, buf + used, len - used, used, ev);
        }
        if (d->state == ST_CONTROL) {
            if (d->ctl_have == 0 && d->frame_left <= len - used) {
                /* The whole payload is here: unmask it in place, no copy. */
                size_t n = (size_t)d->frame_left;
                uint8_t *p = n ? buf + used : NULL; /* buf may be NULL when len is 0 */
                if (n)
                    unmask(d, p, n);
                d->frame_left = 0;
                return control_done(d, p, n, used + n, ev);
            }
            if (!d->ctl)
                d->ctl = xmalloc(WS_MAX_CONTROL);
            size_t n = d->frame_left < len - used ? (size_t)d->frame_left : len - used;
            if (n > 0) {
                memcpy(d->ctl + d->ctl_have, buf + used, n);
                unmask(d, d->ctl + d->ctl_have, n);
            }
            d->ctl_have = (uint8_t)(d->ctl_have + n);
            d->frame_left -= n;
            used += n;
            if (d->frame_left > 0)
                break;
            return control_done(d, d->ctl, d->ctl_have, used, ev);
        }
        /* ST_HEADER */
        if (used == len)
            break;
        int r = gather_header(d, buf, len, &used);
        if (r < 0)
            break;
        if (r == 0)
            r = start_frame(d);
        d->hdr_have = 0;
        if (r > 0)
            return fail(d, ev, (uint16_t)r, used);
    }
    memset(ev, 0, sizeof *ev);
    ev->type = WS_EV_NONE;
    return used;
}

size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], bool fin, uint8_t opcode, uint64_t payload_len,
                       const uint8_t *mask)
{
    size_t n = 2;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    uint8_t mbit = mask ? 0x80 : 0;
    if (payload_len < 126) {
        out[1] = (uint8_t)(mbit | payload_len);
    } else if (payload_len <= 0xFFFF) {
        out[1] = mbit | 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        n = 4;
    } else {
        out[1] = mbit | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void ws_mask(uint8_t *buf, size_t len, const uint8_t mask[4], size_t pos)
{
    size_t i = 0;
    /* Byte-wise until the mask lines up, then eight bytes at a time. */
    for (; i < len && ((pos + i) & 3) != 0; i++)
        buf[i] ^= mask[(pos + i) & 3];
    if (len - i >= 8) {
        uint8_t m8[8];
        uint64_t m, w;
        for (int k = 0; k < 8; k++)
            m8[k] = mask[k & 3];
        memcpy(&m, m8, 8);
        for (; len - i >= 8; i += 8) {
            memcpy(&w, buf + i, 8);
            w ^= m;
            memcpy(buf + i, &w, 8);
        }
    }
    for (; i < len; i++)
        buf[i] ^= mask[(pos + i) & 3];
}

size_t ws_close_payload(uint8_t out[WS_MAX_CONTROL], uint16_t code, const char *reason)
{
    if (code == 0)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    size_t n = reason ? strlen(reason) : 0;
    if (n > WS_MAX_CLOSE_REASON) {
        n = WS_MAX_CLOSE_REASON;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--; /* never cut a UTF-8 sequence in half */
    }
    if (n)
        memcpy(out + 2, reason, n);
    return n + 2;
}

bool ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

bool ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes encode as 22 significant characters and "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (b64_digit(key[i], false) < 0)
            return false;
    return (b64_digit(key[21], false) & 0x0F) == 0; /* the unused low bits must be zero */
}

void ws_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* Only allocation failure can make these fail; like xmalloc, give up. */
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) || !EVP_DigestUpdate(ctx, key, len) ||
        !EVP_DigestUpdate(ctx, WS_GUID, sizeof WS_GUID - 1) ||
        !EVP_DigestFinal_ex(ctx, digest, &dlen))
        abort();
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, digest, (int)dlen); /* 20 bytes -> 28 chars + NUL */
    out[WS_ACCEPT_LEN] = '\0';
}
