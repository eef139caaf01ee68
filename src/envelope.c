/* envelope.c — the routing envelope. The input is first validated by the
 * JSON scanner; the walk that follows can then trust the syntax and only
 * tracks strings and nesting to find each top-level value's byte span.
 * Field rules follow Go's encoding/json for the reference's struct (keys
 * case-insensitive, last duplicate wins, null leaves a field unchanged).
 * It never copies the frame: spans point into the caller's buffer. */
#include "envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

enum field { F_NONE, F_CONN_ID, F_FRAME, F_CLOSE_CODE, F_PUSH_WAKE };

struct walk {
    const uint8_t *p, *end;
};

static void skip_ws(struct walk *w)
{
    while (w->p < w->end && (*w->p == ' ' || *w->p == '\t' || *w->p == '\n' || *w->p == '\r'))
        w->p++;
}

/* Skips a string starting at its opening quote (input already valid).
 * Sets *escaped when it contains a backslash. */
static void skip_string(struct walk *w, bool *escaped)
{
    w->p++;
    while (*w->p != '"') {
        if (*w->p == '\\') {
            *escaped = true;
            w->p++;
        }
        w->p++;
    }
    w->p++;
}

/* Skips one value (input already valid). */
static void skip_value(struct walk *w)
{
    bool esc = false;
    size_t depth = 0;
    do {
        uint8_t c = *w->p;
        if (c == '"') {
            skip_string(w, &esc);
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']')
            depth--;
        w->p++;
        if (depth == 0 && c != '{' && c != '[' && c != '}' && c != ']') {
            /* a scalar: numbers and literals run to the next delimiter */
            while (w->p < w->end && !strchr(",}] \t\r\n", *w->p))
                w->p++;
            return;
        }
    } while (depth > 0);
}

static int hexval(uint8_t c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static uint32_t read_u4(const uint8_t *p)
{
    return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the body of a valid JSON string (between the quotes) into out,
 * which must hold at least len bytes (decoding never grows). Lone
 * surrogates become U+FFFD, as in Go. Returns the decoded length. */
static size_t unescape(const uint8_t *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] != '\\') {
            out[o++] = (char)s[i++];
            continue;
        }
        uint8_t e = s[i + 1];
        i += 2;
        if (e != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            out[o++] = to[strchr(from, e) - from];
            continue;
        }
        uint32_t cp = read_u4(s + i);
        i += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= len && s[i] == '\\' && s[i + 1] == 'u') {
            uint32_t lo = read_u4(s + i + 2);
            if (lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
        }
        if (cp >= 0xD800 && cp < 0xE000)
            cp = 0xFFFD;
        o += put_utf8(out + o, cp);
    }
    return o;
}

static enum field match_key(const uint8_t *s, size_t len, bool escaped)
{
    static const char *const names[] = {NULL, "conn_id", "frame", "close_code", "push_wake"};
    char buf[16];
    if (len > sizeof buf)
        return F_NONE; /* an escaped key decodes no longer than it is written */
    size_t n = escaped ? unescape(s, len, buf) : len;
    if (!escaped)
        memcpy(buf, s, len);
    for (int f = F_CONN_ID; f <= F_PUSH_WAKE; f++) {
        size_t k = strlen(names[f]);
        bool eq = k == n;
        for (size_t i = 0; eq && i < k; i++)
            eq = (buf[i] | (buf[i] >= 'A' && buf[i] <= 'Z' ? 0x20 : 0)) == names[f][i];
        if (eq)
            return (enum field)f;
    }
    return F_NONE;
}

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

__attribute__((format(printf, 3, 4))) static void set_detail(char *detail, size_t cap,
                                                             const char *fmt, ...)
{
    va_list ap;
    if (!detail || !cap)
        return;
    va_start(ap, fmt);
    vsnprintf(detail, cap, fmt, ap);
    va_end(ap);
}

/* close_code: an integer literal 0..65535 (Go's uint16). */
static bool parse_code(const uint8_t *p, const uint8_t *end, uint16_t *out)
{
    uint32_t v = 0;
    if (p == end)
        return false;
    for (const uint8_t *q = p; q < end; q++) {
        if (*q < '0' || *q > '9')
            return false;
        v = v * 10 + (uint32_t)(*q - '0');
        if (v > 65535)
            return false;
    }
    *out = (uint16_t)v;
    return true;
}

enum envelope_kind envelope_parse(const uint8_t *data, size_t len, struct envelope *env,
                                  char *scratch, size_t scratch_cap, char *detail,
                                  size_t detail_cap)
{
    struct walk w = {data, data + len};
    memset(env, 0, sizeof *env);
    env->conn_id = "";
    if (!json_valid(data, len)) {
        set_detail(detail, detail_cap, "invalid JSON");
        return ENVELOPE_MALFORMED;
    }
    skip_ws(&w);
    if (*w.p == 'n')
        return ENVELOPE_MISSING_CONN_ID; /* top-level null: an empty envelope */
    if (*w.p != '{') {
        set_detail(detail, detail_cap, "json: cannot unmarshal %s into Go value of type %s",
                   type_name(*w.p), "relay.Envelope");
        return ENVELOPE_MALFORMED;
    }
    w.p++;
    for (;;) {
        skip_ws(&w);
        if (*w.p == '}')
            break;
        if (*w.p == ',') {
            w.p++;
            skip_ws(&w);
        }
        bool kesc = false;
        const uint8_t *k = w.p + 1;
        skip_string(&w, &kesc);
        enum field f = match_key(k, (size_t)(w.p - 1 - k), kesc);
        skip_ws(&w);
        w.p++; /* ':' */
        skip_ws(&w);
        const uint8_t *v = w.p;
        skip_value(&w);
        size_t vlen = (size_t)(w.p - v);
        bool is_null = *v == 'n';
        switch (f) {
        case F_CONN_ID:
            if (is_null)
                break; /* null leaves a Go string unchanged */
            if (*v != '"') {
                set_detail(detail, detail_cap,
                           "json: cannot unmarshal %s into Go struct field %s of type string",
                           type_name(*v), "Envelope.conn_id");
                return ENVELOPE_MALFORMED;
            }
            if (memchr(v, '\\', vlen)) {
                if (scratch_cap < vlen)
                    return ENVELOPE_MALFORMED;
                env->conn_id_len = unescape(v + 1, vlen - 2, scratch);
                env->conn_id = scratch;
            } else {
                env->conn_id = (const char *)v + 1;
                env->conn_id_len = vlen - 2;
            }
            break;
        case F_FRAME:
            env->frame = is_null ? NULL : v;
            env->frame_len = is_null ? 0 : vlen;
            break;
        case F_CLOSE_CODE:
            if (is_null)
                break;
            if (!parse_code(v, v + vlen, &env->close_code)) {
                set_detail(detail, detail_cap,
                           "json: cannot unmarshal %s into Go struct field %s of type uint16",
                           *v == '"' ? "string" : type_name(*v), "Envelope.close_code");
                return ENVELOPE_MALFORMED;
            }
            break;
        case F_PUSH_WAKE:
            env->push_wake = is_null ? NULL : v;
            env->push_wake_len = is_null ? 0 : vlen;
            break;
        case F_NONE:
            break;
        }
    }
    if (env->conn_id_len == 0)
        return env->push_wake ? ENVELOPE_WAKE : ENVELOPE_MISSING_CONN_ID;
    if (env->close_code == 0 && !env->frame)
        return ENVELOPE_MISSING_FRAME;
    return ENVELOPE_ROUTE;
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

size_t envelope_wrap_prefix(char *out, size_t cap, const char *conn_id, size_t conn_id_len)
{
    static const char head[] = "{\"conn_id\":\"", tail[] = "\",\"frame\":";
    size_t esc = json_escape(NULL, 0, (const uint8_t *)conn_id, conn_id_len);
    size_t n = sizeof head - 1 + esc + sizeof tail - 1;
    if (n > cap)
        return 0;
    memcpy(out, head, sizeof head - 1);
    json_escape(out + sizeof head - 1, esc, (const uint8_t *)conn_id, conn_id_len);
    memcpy(out + sizeof head - 1 + esc, tail, sizeof tail - 1);
    return n;
}

size_t envelope_close_notice(char *out, size_t cap, const char *conn_id, size_t conn_id_len,
                             uint16_t code)
{
    char num[32];
    size_t pre = envelope_wrap_prefix(out, cap, conn_id, conn_id_len);
    if (!pre)
        return 0;
    pre -= strlen("\"frame\":");
    int k = snprintf(num, sizeof num, "\"close_code\":%u}", code);
    if (pre + (size_t)k > cap)
        return 0;
    memcpy(out + pre, num, (size_t)k);
    return pre + (size_t)k;
}
