/* json.c — a strict RFC 8259 validator as a resumable state machine. The
 * state is a few counters and a nesting bit-stack, so a document may be fed
 * in any number of pieces and gets the same answer as in one. Plain string
 * bytes are skipped eight at a time; UTF-8 is validated inline. It never
 * builds values or decodes escapes (envelope.c does that for the few keys it
 * needs), and it accepts lone \uD800-style surrogate escapes, as Go does.
 * json_escape is the one encoder: Go's default string escaping. */
#include "codec/json.h"

#include <string.h>

enum {
    S_VALUE,       /* a value must follow */
    S_ARRAY_OPEN,  /* after '[': a value or ']' */
    S_OBJECT_OPEN, /* after '{': a key or '}' */
    S_KEY,         /* after ',' in an object: a key */
    S_COLON,       /* after a key */
    S_AFTER,       /* after a value in a container: ',' or its closer */
    S_DONE,        /* the top-level value is complete: only whitespace */
    S_STRING,
    S_ESCAPE,   /* after '\' */
    S_HEX,      /* inside \uXXXX; sub = digits still due */
    S_UTF8,     /* inside a multi-byte sequence; sub = bytes due */
    S_LITERAL,  /* inside true/false/null; sub indexes literal_tails */
    S_MINUS,    /* '-': a digit must follow */
    S_ZERO,     /* a leading 0: no more integer digits */
    S_INT,      /* integer digits */
    S_POINT,    /* '.': a digit must follow */
    S_FRAC,     /* fraction digits */
    S_EXP_MARK, /* 'e': a sign or a digit */
    S_EXP_SIGN, /* exponent sign: a digit must follow */
    S_EXP,      /* exponent digits */
};

/* The bytes after the first of each literal, NUL-separated. */
static const char literal_tails[] = "rue\0alse\0ull";
enum { LIT_TRUE = 0, LIT_FALSE = 4, LIT_NULL = 9 };

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

void json_scanner_init(struct json_scanner *s)
{
    /* The depth stack needs no clearing: each level's bit is written when
     * the level is entered. */
    s->state = S_VALUE;
    s->depth = 0;
    s->sub = 0;
    s->utf8 = 0;
    s->key = false;
    s->failed = false;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(uint8_t c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* ---- nesting ----------------------------------------------------------- */

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
    s->state = object ? S_OBJECT_OPEN : S_ARRAY_OPEN;
    return true;
}

static void value_done(struct json_scanner *s)
{
    s->state = s->depth ? S_AFTER : S_DONE;
}

static bool pop(struct json_scanner *s, bool object)
{
    if (top_is_object(s) != object)
        return false;
    s->depth--;
    value_done(s);
    return true;
}

/* ---- structure ---------------------------------------------------------- */

static bool start_value(struct json_scanner *s, uint8_t c)
{
    switch (c) {
    case '{':
    case '[':
        return push(s, c == '{');
    case '"':
        s->state = S_STRING;
        s->key = false;
        return true;
    case 't':
    case 'f':
    case 'n':
        s->state = S_LITERAL;
        s->sub = c == 't' ? LIT_TRUE : c == 'f' ? LIT_FALSE : LIT_NULL;
        return true;
    case '-':
        s->state = S_MINUS;
        return true;
    case '0':
        s->state = S_ZERO;
        return true;
    default:
        s->state = S_INT;
        return c >= '1' && c <= '9';
    }
}

static bool start_key(struct json_scanner *s, uint8_t c)
{
    s->state = S_STRING;
    s->key = true;
    return c == '"';
}

/* Handles one structural byte (after any whitespace). */
static bool structure(struct json_scanner *s, uint8_t c)
{
    switch (s->state) {
    case S_VALUE:
        return start_value(s, c);
    case S_ARRAY_OPEN:
        return c == ']' ? pop(s, false) : start_value(s, c);
    case S_OBJECT_OPEN:
        return c == '}' ? pop(s, true) : start_key(s, c);
    case S_KEY:
        return start_key(s, c);
    case S_COLON:
        s->state = S_VALUE;
        return c == ':';
    case S_AFTER:
        if (c == ',') {
            s->state = top_is_object(s) ? S_KEY : S_VALUE;
            return true;
        }
        return (c == ']' || c == '}') && pop(s, c == '}');
    default: /* S_DONE */
        return false;
    }
}

static const uint8_t *scan_structure(struct json_scanner *s, const uint8_t *p, const uint8_t *end)
{
    while (p < end && is_ws(*p))
        p++;
    if (p == end)
        return p;
    return structure(s, *p) ? p + 1 : NULL;
}

/* ---- strings ------------------------------------------------------------ */

/* True when none of the 8 bytes at p ends a plain run: no '"', '\', control
 * byte or non-ASCII byte. Each zero/less-than test below is exact about
 * whether any byte matches, which is all that is needed here. */
static bool plain8(const uint8_t *p)
{
    uint64_t w, q, b;
    memcpy(&w, p, sizeof w);
    q = w ^ (ONES * '"');
    b = w ^ (ONES * '\\');
    uint64_t hit = ((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w) | w;
    return (hit & HIGHS) == 0;
}

static bool plain(uint8_t c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* For lead byte c: how many continuation bytes follow (0 when c cannot lead
 * a sequence) and, in *range, the allowed range of the first one, lo << 8 |
 * hi (RFC 3629 §4). */
static uint32_t utf8_lead(uint8_t c, uint32_t *range)
{
    uint32_t lo = 0x80, hi = 0xBF, due;
    if (c >= 0xC2 && c <= 0xDF)
        due = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        due = 2;
    else if (c >= 0xF0 && c <= 0xF4)
        due = 3;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* UTF-16 surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* past U+10FFFF */
    *range = lo << 8 | hi;
    return due;
}

static bool in_range(uint8_t c, uint32_t range)
{
    return c >= (range >> 8) && c <= (range & 0xFF);
}

#define UTF8_CONT (0x80u << 8 | 0xBFu) /* any continuation byte */

/* Consumes continuation bytes still due; back to S_STRING once the
 * sequence is complete. */
static const uint8_t *scan_utf8(struct json_scanner *s, const uint8_t *p, const uint8_t *end)
{
    while (s->sub && p < end) {
        if (!in_range(*p, s->utf8))
            return NULL;
        p++;
        s->sub--;
        s->utf8 = UTF8_CONT;
    }
    s->state = s->sub ? S_UTF8 : S_STRING;
    return p;
}

static void string_done(struct json_scanner *s)
{
    if (s->key)
        s->state = S_COLON;
    else
        value_done(s);
}

static const uint8_t *scan_string(struct json_scanner *s, const uint8_t *p, const uint8_t *end)
{
    for (;;) {
        while (end - p >= 8 && plain8(p))
            p += 8;
        while (p < end && plain(*p))
            p++;
        if (p == end)
            return p;
        uint8_t c = *p++;
        if (c == '"') {
            string_done(s);
            return p;
        }
        if (c == '\\') {
            s->state = S_ESCAPE;
            return p;
        }
        s->sub = utf8_lead(c, &s->utf8);
        if (s->sub == 0)
            return NULL; /* a raw control byte, or not a UTF-8 lead byte */
        p = scan_utf8(s, p, end);
        if (!p || s->state != S_STRING)
            return p;
    }
}

static const uint8_t *scan_escape(struct json_scanner *s, const uint8_t *p)
{
    uint8_t c = *p;
    if (s->state == S_HEX) {
        if (!is_hex(c))
            return NULL;
        if (--s->sub == 0)
            s->state = S_STRING;
        return p + 1;
    }
    switch (c) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        s->state = S_STRING;
        return p + 1;
    case 'u':
        s->state = S_HEX;
        s->sub = 4;
        return p + 1;
    default:
        return NULL;
    }
}

/* ---- literals and numbers ----------------------------------------------- */

static const uint8_t *scan_literal(struct json_scanner *s, const uint8_t *p)
{
    if (*p != (uint8_t)literal_tails[s->sub])
        return NULL;
    if (literal_tails[++s->sub] == '\0')
        value_done(s);
    return p + 1;
}

static const uint8_t *skip_digits(const uint8_t *p, const uint8_t *end)
{
    while (p < end && is_digit(*p))
        p++;
    return p;
}

/* Moves to state next when the byte at p is a digit. */
static const uint8_t *need_digit(struct json_scanner *s, const uint8_t *p, uint32_t next)
{
    if (!is_digit(*p))
        return NULL;
    s->state = next;
    return p + 1;
}

/* A number has no terminator of its own: it ends at the first byte that
 * cannot continue it, which is then left for scan_structure. */
static const uint8_t *scan_number(struct json_scanner *s, const uint8_t *p, const uint8_t *end)
{
    switch (s->state) {
    case S_MINUS:
        return need_digit(s, p, *p == '0' ? S_ZERO : S_INT);
    case S_INT:
    case S_FRAC:
    case S_EXP:
        p = skip_digits(p, end);
        if (p == end)
            return p;
        break;
    case S_POINT:
        return need_digit(s, p, S_FRAC);
    case S_EXP_MARK:
        if (*p == '+' || *p == '-') {
            s->state = S_EXP_SIGN;
            return p + 1;
        }
        return need_digit(s, p, S_EXP);
    case S_EXP_SIGN:
        return need_digit(s, p, S_EXP);
    }
    if (*p == '.' && (s->state == S_ZERO || s->state == S_INT)) {
        s->state = S_POINT;
        return p + 1;
    }
    if ((*p | 0x20) == 'e' && s->state != S_EXP) {
        s->state = S_EXP_MARK;
        return p + 1;
    }
    value_done(s);
    return p;
}

static bool number_may_end(uint32_t state)
{
    return state == S_ZERO || state == S_INT || state == S_FRAC || state == S_EXP;
}

/* ---- driver ------------------------------------------------------------- */

bool json_scanner_feed(struct json_scanner *s, const uint8_t *data, size_t len)
{
    if (s->failed)
        return false;
    if (len == 0)
        return true; /* data may be NULL */
    const uint8_t *p = data, *end = data + len;
    while (p && p < end) {
        switch (s->state) {
        case S_STRING:
            p = scan_string(s, p, end);
            break;
        case S_ESCAPE:
        case S_HEX:
            p = scan_escape(s, p);
            break;
        case S_UTF8:
            p = scan_utf8(s, p, end);
            break;
        case S_LITERAL:
            p = scan_literal(s, p);
            break;
        default:
            p = s->state >= S_MINUS ? scan_number(s, p, end) : scan_structure(s, p, end);
            break;
        }
    }
    s->failed = p == NULL;
    return !s->failed;
}

bool json_scanner_finish(struct json_scanner *s)
{
    if (s->failed)
        return false;
    if (s->depth == 0 && number_may_end(s->state))
        s->state = S_DONE; /* a top-level number ends with the input */
    return s->state == S_DONE;
}

bool json_valid(const uint8_t *data, size_t len)
{
    struct json_scanner s;
    json_scanner_init(&s);
    return json_scanner_feed(&s, data, len) && json_scanner_finish(&s);
}

/* ---- escaping (Go encoding/json, HTML-safe) ------------------------------ */

/* Length of the valid UTF-8 sequence at p[0..n) (n > 0, p[0] >= 0x80), or 0
 * when it is invalid or cut short: Go then writes one U+FFFD per byte. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint32_t range, due = utf8_lead(p[0], &range);
    if (due == 0 || n <= due)
        return 0;
    for (uint32_t k = 1; k <= due; k++, range = UTF8_CONT)
        if (!in_range(p[k], range))
            return 0;
    return due + 1;
}

struct out {
    char *buf;
    size_t cap, len; /* len counts every byte, written or not */
};

static void put(struct out *o, const void *src, size_t n)
{
    if (n && o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, src, n < room ? n : room);
    }
    o->len += n;
}

/* The escape for an ASCII byte, or NULL when it is written as itself. */
static const char *ascii_escape(uint8_t c, char u[7])
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    }
    if (c >= 0x20 && c != '<' && c != '>' && c != '&')
        return NULL;
    memcpy(u, "\\u00", 4);
    u[4] = hex[c >> 4];
    u[5] = hex[c & 15];
    u[6] = '\0';
    return u;
}

size_t json_escape(char *out, size_t cap, const uint8_t *s, size_t len)
{
    struct out o = {out, cap, 0};
    size_t run = 0; /* start of the pending run of bytes written as they are */
    if (len == 0)
        return 0; /* s may be NULL */
    for (size_t i = 0; i < len;) {
        char u[7];
        const char *esc = NULL;
        size_t n = 1;
        if (s[i] < 0x80) {
            esc = ascii_escape(s[i], u);
        } else if ((n = utf8_seq(s + i, len - i)) == 0) {
            esc = "\\ufffd";
            n = 1;
        } else if (n == 3 && s[i] == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] & 0xFE) == 0xA8) {
            esc = s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029"; /* JavaScript line ends */
        }
        if (esc) {
            put(&o, s + run, i - run);
            put(&o, esc, strlen(esc));
            run = i + n;
        }
        i += n;
    }
    put(&o, s + run, len - run);
    return o.len;
}

uint32_t json_hex4(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 4 | (uint32_t)(p[i] <= '9' ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
    return v;
}

size_t json_put_utf8(char out[4], uint32_t cp)
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
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
