/* json.c — a strict RFC 8259 validator as a resumable state machine: it
 * keeps only a nesting bit-stack and a few counters, so a document may be
 * fed in any number of pieces. Plain string bytes are skipped in runs and
 * checked as UTF-8 in bulk. It never builds values; envelope.c walks the
 * few keys it needs on input this scanner has accepted. */
#include "json.h"

#include <string.h>

#include "utf8.h"

enum {
    S_VALUE,     /* a value must follow */
    S_VALUE_END, /* after '[': a value or ']' */
    S_KEY,       /* after ',' in an object: a key */
    S_KEY_END,   /* after '{': a key or '}' */
    S_COLON,
    S_AFTER, /* after a value inside a container */
    S_DONE,  /* top-level value complete: only whitespace */
    S_STR,
    S_ESC,
    S_HEX,
    S_NUM_MINUS, /* '-' seen, digit required */
    S_NUM_ZERO,  /* leading 0 */
    S_NUM_INT,
    S_NUM_DOT, /* '.' seen, digit required */
    S_NUM_FRAC,
    S_NUM_E,     /* 'e' seen, sign or digit */
    S_NUM_ESIGN, /* sign seen, digit required */
    S_NUM_EXP,
    S_LIT,
};

#define STR_IS_KEY 0x100u /* kept in sub while inside a key string */

static const char *const literals[3] = {"true", "false", "null"};

void json_scanner_init(struct json_scanner *s)
{
    memset(s, 0, sizeof *s);
    s->state = S_VALUE;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool top_is_object(const struct json_scanner *s)
{
    uint32_t d = s->depth - 1;
    return (s->stack[d >> 3] >> (d & 7)) & 1;
}

static bool push(struct json_scanner *s, bool object)
{
    if (s->depth >= JSON_MAX_DEPTH)
        return false;
    uint32_t d = s->depth++;
    if (object)
        s->stack[d >> 3] |= (uint8_t)(1u << (d & 7));
    else
        s->stack[d >> 3] &= (uint8_t) ~(1u << (d & 7));
    return true;
}

static void value_done(struct json_scanner *s)
{
    s->state = s->depth == 0 ? S_DONE : S_AFTER;
    if (s->depth == 0)
        s->done = true;
}

/* Starts a value at byte c. Returns false if c cannot start one. */
static bool start_value(struct json_scanner *s, uint8_t c)
{
    switch (c) {
    case '{':
        s->state = S_KEY_END;
        return push(s, true);
    case '[':
        s->state = S_VALUE_END;
        return push(s, false);
    case '"':
        s->state = S_STR;
        s->sub = 0;
        s->utf8 = UTF8_ACCEPT;
        return true;
    case '-':
        s->state = S_NUM_MINUS;
        return true;
    case '0':
        s->state = S_NUM_ZERO;
        return true;
    case 't':
    case 'f':
    case 'n':
        s->state = S_LIT;
        s->sub = (uint32_t)((c == 't' ? 0 : c == 'f' ? 1 : 2) << 8 | 1);
        return true;
    default:
        if (c >= '1' && c <= '9') {
            s->state = S_NUM_INT;
            return true;
        }
        return false;
    }
}

static bool close_container(struct json_scanner *s, bool object)
{
    if (s->depth == 0 || top_is_object(s) != object)
        return false;
    s->depth--;
    value_done(s);
    return true;
}

/* A number ends at a byte that cannot continue it; that byte is then
 * handled by the structural state. */
static bool number_may_end(uint32_t st)
{
    return st == S_NUM_ZERO || st == S_NUM_INT || st == S_NUM_FRAC || st == S_NUM_EXP;
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* Number states: returns 1 consumed, 0 number ended (reprocess c), -1 error. */
static int number_byte(struct json_scanner *s, uint8_t c)
{
    switch (s->state) {
    case S_NUM_MINUS:
        if (c == '0')
            s->state = S_NUM_ZERO;
        else if (c >= '1' && c <= '9')
            s->state = S_NUM_INT;
        else
            return -1;
        return 1;
    case S_NUM_ZERO:
    case S_NUM_INT:
        if (is_digit(c) && s->state == S_NUM_INT)
            return 1;
        if (c == '.') {
            s->state = S_NUM_DOT;
            return 1;
        }
        if (c == 'e' || c == 'E') {
            s->state = S_NUM_E;
            return 1;
        }
        break;
    case S_NUM_DOT:
        if (!is_digit(c))
            return -1;
        s->state = S_NUM_FRAC;
        return 1;
    case S_NUM_FRAC:
        if (is_digit(c))
            return 1;
        if (c == 'e' || c == 'E') {
            s->state = S_NUM_E;
            return 1;
        }
        break;
    case S_NUM_E:
        if (c == '+' || c == '-') {
            s->state = S_NUM_ESIGN;
            return 1;
        }
        if (!is_digit(c))
            return -1;
        s->state = S_NUM_EXP;
        return 1;
    case S_NUM_ESIGN:
        if (!is_digit(c))
            return -1;
        s->state = S_NUM_EXP;
        return 1;
    case S_NUM_EXP:
        if (is_digit(c))
            return 1;
        break;
    }
    if (!number_may_end(s->state))
        return -1;
    value_done(s);
    return 0;
}

static bool structural_byte(struct json_scanner *s, uint8_t c)
{
    if (is_ws(c))
        return true;
    switch (s->state) {
    case S_VALUE:
        return start_value(s, c);
    case S_VALUE_END:
        return c == ']' ? close_container(s, false) : start_value(s, c);
    case S_KEY_END:
        if (c == '}')
            return close_container(s, true);
        /* fall through */
    case S_KEY:
        if (c != '"')
            return false;
        s->state = S_STR;
        s->sub = STR_IS_KEY;
        s->utf8 = UTF8_ACCEPT;
        return true;
    case S_COLON:
        if (c != ':')
            return false;
        s->state = S_VALUE;
        return true;
    case S_AFTER:
        if (c == ',') {
            s->state = top_is_object(s) ? S_KEY : S_VALUE;
            return true;
        }
        return c == '}' ? close_container(s, true) : c == ']' ? close_container(s, false) : false;
    default: /* S_DONE: only whitespace may follow */
        return false;
    }
}

static int hexdigit(uint8_t c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Inside a string: consumes as much as possible from p[0..n). Returns bytes
 * used, or -1 on error. */
static long string_bytes(struct json_scanner *s, const uint8_t *p, size_t n)
{
    size_t i = 0;
    if (s->state == S_ESC) {
        uint8_t c = p[i++];
        if (c == 'u') {
            s->state = S_HEX;
            s->hex = 0;
            return 1;
        }
        if (!strchr("\"\\/bfnrt", c) || c == 0)
            return -1;
        s->state = S_STR;
        return 1;
    }
    if (s->state == S_HEX) {
        if (!hexdigit(p[0]))
            return -1;
        if (++s->hex == 4)
            s->state = S_STR;
        return 1;
    }
    while (i < n && p[i] != '"' && p[i] != '\\' && p[i] >= 0x20)
        i++;
    s->utf8 = utf8_step(s->utf8, p, i);
    if (s->utf8 == UTF8_REJECT)
        return -1;
    if (i == n)
        return (long)i;
    if (p[i] < 0x20 || s->utf8 != UTF8_ACCEPT)
        return -1; /* raw control character, or a sequence cut by '"' / '\' */
    if (p[i] == '\\') {
        s->state = S_ESC;
        return (long)i + 1;
    }
    if (s->sub & STR_IS_KEY)
        s->state = S_COLON;
    else
        value_done(s);
    return (long)i + 1;
}

bool json_scanner_feed(struct json_scanner *s, const uint8_t *data, size_t len)
{
    size_t i = 0;
    if (s->failed)
        return false;
    while (i < len) {
        uint8_t c = data[i];
        if (s->state == S_STR || s->state == S_ESC || s->state == S_HEX) {
            long used = string_bytes(s, data + i, len - i);
            if (used < 0)
                goto fail;
            i += (size_t)used;
            continue;
        }
        if (s->state >= S_NUM_MINUS && s->state <= S_NUM_EXP) {
            int r = number_byte(s, c);
            if (r < 0)
                goto fail;
            if (r > 0)
                i++;
            continue;
        }
        if (s->state == S_LIT) {
            const char *lit = literals[s->sub >> 8];
            uint32_t pos = s->sub & 0xFF;
            if (c != (uint8_t)lit[pos])
                goto fail;
            i++;
            if (lit[pos + 1] == '\0')
                value_done(s);
            else
                s->sub++;
            continue;
        }
        if (!structural_byte(s, c))
            goto fail;
        i++;
    }
    return true;
fail:
    s->failed = true;
    return false;
}

bool json_scanner_finish(struct json_scanner *s)
{
    if (s->failed)
        return false;
    if (number_may_end(s->state) && s->depth == 0)
        value_done(s);
    return s->state == S_DONE;
}

bool json_valid(const uint8_t *data, size_t len)
{
    struct json_scanner s;
    json_scanner_init(&s);
    return json_scanner_feed(&s, data, len) && json_scanner_finish(&s);
}

/* ---- escaping (Go encoding/json, HTML-safe) ---------------------------- */

static size_t emit(char *out, size_t cap, size_t at, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (at + i < cap)
            out[at + i] = s[i];
    return at + n;
}

size_t json_escape(char *out, size_t cap, const uint8_t *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t at = 0;
    for (size_t i = 0; i < len;) {
        uint8_t b = s[i];
        if (b < 0x80) {
            char e[6] = {'\\', 'u', '0', '0', hex[b >> 4], hex[b & 15]};
            if (b == '"' || b == '\\') {
                char q[2] = {'\\', (char)b};
                at = emit(out, cap, at, q, 2);
            } else if (b == '\n') {
                at = emit(out, cap, at, "\\n", 2);
            } else if (b == '\r') {
                at = emit(out, cap, at, "\\r", 2);
            } else if (b == '\t') {
                at = emit(out, cap, at, "\\t", 2);
            } else if (b < 0x20 || b == '<' || b == '>' || b == '&') {
                at = emit(out, cap, at, e, 6);
            } else {
                at = emit(out, cap, at, (const char *)&b, 1);
            }
            i++;
            continue;
        }
        /* Find the length of a valid sequence, if any. */
        size_t n = 0;
        for (size_t k = 2; k <= 4 && i + k <= len && !n; k++)
            if (utf8_valid(s + i, k))
                n = k;
        if (!n) {
            at = emit(out, cap, at, "\\ufffd", 6);
            i++;
        } else if (n == 3 && s[i] == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] & 0xFE) == 0xA8) {
            at = emit(out, cap, at, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
            i += 3;
        } else {
            at = emit(out, cap, at, (const char *)s + i, n);
            i += n;
        }
    }
    return at;
}
