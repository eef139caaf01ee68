/* envelope.c — the routing envelope. The whole input is validated by the
 * JSON scanner first; the walk that follows trusts the syntax and only
 * finds each top-level value's byte span (strings by memchr). Field rules
 * are Go encoding/json's for the reference's struct: keys matched with Go's
 * case folding, last duplicate wins, null leaves conn_id/close_code as they
 * were, close_code is a uint16. It never copies or looks inside frame or
 * push_wake: their spans point into the caller's buffer. */
#include "codec/envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codec/json.h"

enum field { F_NONE, F_CONN_ID, F_FRAME, F_CLOSE_CODE, F_PUSH_WAKE };

static const char *const field_names[] = {NULL, "conn_id", "frame", "close_code", "push_wake"};

#define MAX_NAME 10 /* strlen("close_code") */

struct out_buf {
    char *detail;
    size_t detail_cap;
    char *scratch;
    size_t scratch_cap;
};

__attribute__((format(printf, 2, 3))) static void set_detail(const struct out_buf *o,
                                                             const char *fmt, ...)
{
    va_list ap;
    if (!o->detail || !o->detail_cap)
        return;
    va_start(ap, fmt);
    vsnprintf(o->detail, o->detail_cap, fmt, ap);
    va_end(ap);
}

/* ---- walking input the scanner has accepted ------------------------------ */

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p is at an opening quote; returns the byte after the closing one. A quote
 * is escaped exactly when an odd run of backslashes precedes it. */
static const uint8_t *skip_string(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *open = p;
    for (;;) {
        p = memchr(p + 1, '"', (size_t)(end - p - 1));
        size_t slashes = 0;
        while (p - slashes - 1 > open && p[-(ptrdiff_t)slashes - 1] == '\\')
            slashes++;
        if (slashes % 2 == 0)
            return p + 1;
    }
}

static const uint8_t *skip_container(const uint8_t *p, const uint8_t *end)
{
    size_t depth = 0;
    do {
        switch (*p) {
        case '"':
            p = skip_string(p, end);
            continue;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            depth--;
            break;
        }
        p++;
    } while (depth > 0);
    return p;
}

/* p is at the first byte of a value; returns the byte after its last. */
static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end)
{
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[')
        return skip_container(p, end);
    /* a number or literal runs to the next delimiter */
    while (p < end && !memchr(",}] \t\r\n", *p, 7))
        p++;
    return p;
}

/* ---- strings: decoding and key folding ----------------------------------- */

/* Decodes a \uXXXX escape at s[i] (and a following low surrogate, when it
 * pairs) into out. Unpaired surrogates become U+FFFD, as in Go. Returns the
 * escape bytes consumed; *o advances by the bytes written. */
static size_t unescape_u(const uint8_t *s, size_t i, size_t len, char *out, size_t *o)
{
    uint32_t cp = json_hex4(s + i + 2);
    size_t used = 6;
    if (cp >= 0xD800 && cp < 0xDC00 && i + 12 <= len && s[i + 6] == '\\' && s[i + 7] == 'u') {
        uint32_t lo = json_hex4(s + i + 8);
        if (lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            used = 12;
        }
    }
    if (cp >= 0xD800 && cp < 0xE000)
        cp = 0xFFFD;
    *o += json_put_utf8(out + *o, cp);
    return used;
}

/* Decodes the body of a valid JSON string into out (room for len bytes:
 * decoding never grows). Returns the decoded length. */
static size_t unescape(const uint8_t *s, size_t len, char *out)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] != '\\') {
            out[o++] = (char)s[i++];
        } else if (s[i + 1] == 'u') {
            i += unescape_u(s, i, len, out, &o);
        } else {
            out[o++] = to[strchr(from, s[i + 1]) - from];
            i += 2;
        }
    }
    return o;
}

/* Folds a decoded key the way Go matches field names (each rune to the
 * smallest of its simple case-folding orbit): ASCII letters, and the two
 * non-ASCII runes whose orbit holds a letter of our names, U+212A KELVIN
 * SIGN (k) and U+017F LONG S (s). Anything else cannot match. Writes at
 * most MAX_NAME bytes to f; returns the folded length or MAX_NAME + 1. */
static size_t fold_key(const uint8_t *k, size_t n, char *f)
{
    size_t len = 0;
    for (size_t i = 0; i < n && len <= MAX_NAME; len++) {
        char c;
        if (k[i] < 0x80) {
            c = (char)(k[i] >= 'A' && k[i] <= 'Z' ? k[i] | 0x20 : k[i]);
            i++;
        } else if (n - i >= 2 && k[i] == 0xC5 && k[i + 1] == 0xBF) {
            c = 's';
            i += 2;
        } else if (n - i >= 3 && k[i] == 0xE2 && k[i + 1] == 0x84 && k[i + 2] == 0xAA) {
            c = 'k';
            i += 3;
        } else {
            return MAX_NAME + 1;
        }
        if (len < MAX_NAME)
            f[len] = c;
    }
    return len;
}

/* k[0..n) is a key as written, between its quotes. */
static enum field match_key(const uint8_t *k, size_t n)
{
    char decoded[6 * MAX_NAME], folded[MAX_NAME];
    if (memchr(k, '\\', n)) {
        if (n > sizeof decoded)
            return F_NONE; /* even fully \u-escaped, no name is this long */
        n = unescape(k, n, decoded);
        k = (const uint8_t *)decoded;
    }
    size_t len = fold_key(k, n, folded);
    for (int f = F_CONN_ID; f <= F_PUSH_WAKE; f++)
        if (strlen(field_names[f]) == len && memcmp(field_names[f], folded, len) == 0)
            return (enum field)f;
    return F_NONE;
}

/* ---- fields -------------------------------------------------------------- */

/* Go's name for the JSON type of a value starting with c. */
static const char *type_name(uint8_t c)
{
    switch (c) {
    case '"':
        return "string";
    case '{':
        return "object";
    case '[':
        return "array";
    case 't':
    case 'f':
        return "bool";
    default:
        return "number";
    }
}

static bool set_conn_id(struct envelope *env, const uint8_t *v, size_t n, const struct out_buf *o)
{
    if (*v == 'n')
        return true; /* null leaves a Go string as it was */
    if (*v != '"') {
        set_detail(o,
                   "json: cannot unmarshal %s into Go struct field Envelope.conn_id of type string",
                   type_name(*v));
        return false;
    }
    if (!memchr(v, '\\', n)) {
        env->conn_id = (const char *)v + 1;
        env->conn_id_len = n - 2;
        return true;
    }
    if (o->scratch_cap < n - 2) {
        set_detail(o, "conn_id does not fit the scratch buffer");
        return false;
    }
    env->conn_id = o->scratch;
    env->conn_id_len = unescape(v + 1, n - 2, o->scratch);
    return true;
}

/* Go's uint16 decode: strconv.ParseUint on the literal, so no sign,
 * fraction or exponent, and at most 65535. */
static bool set_close_code(struct envelope *env, const uint8_t *v, size_t n,
                           const struct out_buf *o)
{
    uint32_t code = 0;
    size_t i = 0;
    if (*v == 'n')
        return true; /* null leaves it as it was */
    while (i < n && v[i] >= '0' && v[i] <= '9' && code <= 65535)
        code = code * 10 + (uint32_t)(v[i++] - '0');
    if (i == n && code <= 65535) {
        env->close_code = (uint16_t)code;
        return true;
    }
    if (type_name(*v)[0] == 'n')
        set_detail(o,
                   "json: cannot unmarshal number %.*s into Go struct field "
                   "Envelope.close_code of type uint16",
                   (int)(n < 40 ? n : 40), (const char *)v);
    else
        set_detail(o,
                   "json: cannot unmarshal %s into Go struct field Envelope.close_code of "
                   "type uint16",
                   type_name(*v));
    return false;
}

/* A json.RawMessage field: any value; a later duplicate replaces it. */
static void set_raw(const uint8_t **field, size_t *field_len, const uint8_t *v, size_t n)
{
    bool null = *v == 'n';
    *field = null ? NULL : v;
    *field_len = null ? 0 : n;
}

static bool set_field(struct envelope *env, enum field f, const uint8_t *v, size_t n,
                      const struct out_buf *o)
{
    switch (f) {
    case F_CONN_ID:
        return set_conn_id(env, v, n, o);
    case F_FRAME:
        set_raw(&env->frame, &env->frame_len, v, n);
        return true;
    case F_CLOSE_CODE:
        return set_close_code(env, v, n, o);
    case F_PUSH_WAKE:
        set_raw(&env->push_wake, &env->push_wake_len, v, n);
        return true;
    default:
        return true; /* unknown keys are ignored */
    }
}

/* Walks the members of the top-level object at p (input already valid).
 * Like Go, a field of the wrong type fails the whole envelope. */
static bool walk_object(struct envelope *env, const uint8_t *p, const uint8_t *end,
                        const struct out_buf *o)
{
    p = skip_ws(p + 1, end);
    while (*p != '}') {
        if (*p == ',')
            p = skip_ws(p + 1, end);
        const uint8_t *key = p;
        p = skip_string(p, end);
        enum field f = match_key(key + 1, (size_t)(p - key - 2));
        p = skip_ws(skip_ws(p, end) + 1, end); /* past ':' */
        const uint8_t *v = p;
        p = skip_value(p, end);
        if (!set_field(env, f, v, (size_t)(p - v), o))
            return false;
        p = skip_ws(p, end);
    }
    return true;
}

/* ---- parse ---------------------------------------------------------------- */

/* Where the scanner first refuses data: re-fed in blocks, then the failing
 * block byte by byte, so this error path stays linear. len when the input
 * merely ended too early. */
static size_t error_offset(const uint8_t *data, size_t len)
{
    struct json_scanner s, before;
    size_t at = 0;
    json_scanner_init(&s);
    while (at < len) {
        size_t n = len - at < 4096 ? len - at : 4096;
        before = s;
        if (!json_scanner_feed(&s, data + at, n)) {
            s = before;
            break;
        }
        at += n;
    }
    while (at < len && json_scanner_feed(&s, data + at, 1))
        at++;
    return at;
}

static void syntax_detail(const uint8_t *data, size_t len, const struct out_buf *o)
{
    size_t at = error_offset(data, len);
    if (at == len)
        set_detail(o, "unexpected end of JSON input");
    else if (data[at] >= 0x20 && data[at] < 0x7F)
        set_detail(o, "invalid character '%c' at offset %zu", data[at], at);
    else
        set_detail(o, "invalid byte 0x%02x at offset %zu", data[at], at);
}

static enum envelope_kind classify(const struct envelope *env)
{
    if (env->conn_id_len == 0)
        return env->push_wake ? ENVELOPE_WAKE : ENVELOPE_MISSING_CONN_ID;
    if (env->close_code == 0 && !env->frame)
        return ENVELOPE_MISSING_FRAME;
    return ENVELOPE_ROUTE;
}

static void clear(struct envelope *env)
{
    memset(env, 0, sizeof *env);
    env->conn_id = "";
}

enum envelope_kind envelope_parse(const uint8_t *data, size_t len, struct envelope *env,
                                  char *scratch, size_t scratch_cap, char *detail,
                                  size_t detail_cap)
{
    const struct out_buf o = {detail, detail_cap, scratch, scratch_cap};
    clear(env);
    if (detail && detail_cap)
        detail[0] = '\0';
    if (!json_valid(data, len)) {
        syntax_detail(data, len, &o);
        return ENVELOPE_MALFORMED;
    }
    const uint8_t *end = data + len, *p = skip_ws(data, end);
    if (*p == 'n')
        return ENVELOPE_MISSING_CONN_ID; /* top-level null: an empty envelope */
    if (*p != '{') {
        set_detail(&o, "json: cannot unmarshal %s into Go value of type relay.Envelope",
                   type_name(*p));
        return ENVELOPE_MALFORMED;
    }
    if (!walk_object(env, p, end, &o)) {
        clear(env);
        return ENVELOPE_MALFORMED;
    }
    return classify(env);
}

const char *envelope_error(enum envelope_kind kind)
{
    switch (kind) {
    case ENVELOPE_MALFORMED:
        return "relay: malformed routing envelope";
    case ENVELOPE_MISSING_CONN_ID:
        return "relay: routing envelope missing conn_id";
    case ENVELOPE_MISSING_FRAME:
        return "relay: routing envelope missing frame";
    default:
        return NULL;
    }
}

/* ---- building -------------------------------------------------------------- */

/* Writes head, the escaped conn_id and tail into out; 0 when cap is short. */
static size_t build(char *out, size_t cap, const char *head, const char *conn_id,
                    size_t conn_id_len, const char *tail)
{
    size_t h = strlen(head), t = strlen(tail);
    size_t esc = json_escape(NULL, 0, (const uint8_t *)conn_id, conn_id_len);
    if (h + esc + t > cap)
        return 0;
    memcpy(out, head, h);
    json_escape(out + h, esc, (const uint8_t *)conn_id, conn_id_len);
    memcpy(out + h + esc, tail, t);
    return h + esc + t;
}

size_t envelope_wrap_prefix(char *out, size_t cap, const char *conn_id, size_t conn_id_len)
{
    return build(out, cap, "{\"conn_id\":\"", conn_id, conn_id_len, "\",\"frame\":");
}

size_t envelope_close_notice(char *out, size_t cap, const char *conn_id, size_t conn_id_len,
                             uint16_t code)
{
    char tail[32];
    snprintf(tail, sizeof tail, "\",\"close_code\":%u}", (unsigned)code);
    return build(out, cap, "{\"conn_id\":\"", conn_id, conn_id_len, tail);
}
