/* log.c — one event, one line, one write(2): Go log/slog's text format
 * (time=… level=… msg=… key=value) or JSON. Text values are quoted with
 * Go's strconv.Quote rules exactly when slog would quote them, so a hostile
 * value can never start a new line or fake a key. Lines are built in a
 * fixed stack buffer: long values are cut, never allocated for. It knows
 * nothing about which keys are allowed (callers pass only the keys of
 * docs/features/logging.md) and keeps no lock: one write(2) per line is
 * what keeps lines whole. */
#include "base/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define LINE_MAX_BYTES  8192
#define VALUE_MAX_BYTES 1024         /* a longer string value is cut to this (below ERROR) */
#define ERROR_MAX_BYTES (256 * 1024) /* an ERROR line (a boot refusal) is never cut below this */
#define FIELD_MIN_ROOM  8            /* below this much room, later fields are dropped */

static const char hex[] = "0123456789abcdef";

static enum log_format g_format = LOG_FORMAT_TEXT;
static _Atomic int g_min = LOG_INFO; /* changed by a reload while shards log */
static int g_fd = 2;

void log_setup(enum log_format fmt, enum log_level min_level, int fd)
{
    g_format = fmt;
    atomic_store_explicit(&g_min, min_level, memory_order_relaxed);
    g_fd = fd;
}

void log_set_level(enum log_level min_level)
{
    atomic_store_explicit(&g_min, min_level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&g_min, memory_order_relaxed);
}

bool log_enabled(enum log_level level)
{
    return level >= log_get_level();
}

int log_level_parse(const char *s, enum log_level *out)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {
        {"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warn";
    default:
        return "error";
    }
}

bool log_limit_allow(struct log_limit *l, uint64_t now_ms, uint64_t *suppressed)
{
    *suppressed = 0;
    if (l->last_ms != 0 && now_ms - l->last_ms < LOG_LIMIT_PERIOD_MS) {
        l->suppressed++;
        return false;
    }
    *suppressed = l->suppressed;
    l->suppressed = 0;
    l->last_ms = now_ms ? now_ms : 1;
    return true;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

/* An append buffer whose writes are all-or-nothing, so an escape sequence
 * is never cut in half. Once a write fails, `full` stays set. */
struct out {
    char *p;
    size_t len, cap;
    bool full;
};

static size_t room(const struct out *o)
{
    return o->cap > o->len ? o->cap - o->len : 0;
}

static bool put(struct out *o, const char *s, size_t n)
{
    if (o->full || n > room(o)) {
        o->full = true;
        return false;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return true;
}

static bool put_str(struct out *o, const char *s)
{
    return put(o, s, strlen(s));
}

/* Decodes one UTF-8 sequence (Go's utf8.DecodeRune rules: no overlongs,
 * surrogates or code points above U+10FFFF). Returns its length and the
 * code point in *cp, or 0 when s does not start a valid sequence. */
static size_t decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    size_t len;
    uint32_t c, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if ((b & 0xE0) == 0xC0)
        len = 2, c = b & 0x1Fu, min = 0x80;
    else if ((b & 0xF0) == 0xE0)
        len = 3, c = b & 0x0Fu, min = 0x800;
    else if ((b & 0xF8) == 0xF0)
        len = 4, c = b & 0x07u, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3Fu);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* Code point ranges Go's unicode.IsPrint rejects: controls, separators
 * other than U+0020 (Zs, Zl, Zp), format characters (Cf), private use (Co)
 * and noncharacters. Unassigned code points are treated as printable: an
 * approximation that errs on the side of leaving text readable. */
static const uint32_t unprintable[][2] = {
    {0x0000, 0x001F},   {0x007F, 0x00A0},   {0x00AD, 0x00AD},    {0x0600, 0x0605},
    {0x061C, 0x061C},   {0x06DD, 0x06DD},   {0x070F, 0x070F},    {0x0890, 0x0891},
    {0x08E2, 0x08E2},   {0x1680, 0x1680},   {0x180E, 0x180E},    {0x2000, 0x200F},
    {0x2028, 0x202F},   {0x205F, 0x206F},   {0x3000, 0x3000},    {0xE000, 0xF8FF},
    {0xFDD0, 0xFDEF},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},    {0x110BD, 0x110BD},
    {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3},  {0x1D173, 0x1D17A},
    {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xF0000, 0x10FFFF},
};

static bool printable(uint32_t c)
{
    if ((c & 0xFFFE) == 0xFFFE) /* U+xFFFE and U+xFFFF in every plane */
        return false;
    for (size_t i = 0; i < sizeof unprintable / sizeof unprintable[0]; i++)
        if (c >= unprintable[i][0] && c <= unprintable[i][1])
            return false;
    return true;
}

/* slog's needsQuoting. Backslash alone stays bare; DEL is quoted (slog
 * would leave it bare; quoting it keeps terminals honest). A valid U+FFFD
 * is quoted too, as slog cannot tell it from a decoding error. */
static bool needs_quoting(const char *s, size_t len)
{
    if (len == 0)
        return true;
    for (size_t i = 0; i < len;) {
        uint8_t b = (uint8_t)s[i];
        uint32_t cp;
        if (b < 0x80) {
            if (b <= ' ' || b == '=' || b == '"' || b == 0x7F)
                return true;
            i++;
            continue;
        }
        size_t n = decode((const uint8_t *)s + i, len - i, &cp);
        if (n == 0 || cp == 0xFFFD || !printable(cp))
            return true;
        i += n;
    }
    return false;
}

/* The escape Go's strconv.Quote uses for an ASCII byte, or NULL when the
 * byte stands for itself. */
static const char *ascii_escape(uint8_t b, char buf[5])
{
    static const char *const named[] = {
        ['\a'] = "\\a", ['\b'] = "\\b", ['\f'] = "\\f", ['\n'] = "\\n",
        ['\r'] = "\\r", ['\t'] = "\\t", ['\v'] = "\\v"};
    if (b == '"')
        return "\\\"";
    if (b == '\\')
        return "\\\\";
    if (b < sizeof named / sizeof named[0] && named[b])
        return named[b];
    if (b >= 0x20 && b < 0x7F)
        return NULL;
    buf[0] = '\\', buf[1] = 'x', buf[2] = hex[b >> 4], buf[3] = hex[b & 15], buf[4] = '\0';
    return buf;
}

/* Appends one quoted unit of s (at most 10 bytes) to unit; returns the
 * input bytes it covers. */
static size_t quote_unit(const char *s, size_t len, char *unit, size_t *ulen)
{
    uint8_t b = (uint8_t)s[0];
    uint32_t cp;
    char buf[5];
    if (b < 0x80) {
        const char *e = ascii_escape(b, buf);
        *ulen = e ? strlen(e) : 1;
        memcpy(unit, e ? e : s, *ulen);
        return 1;
    }
    size_t n = decode((const uint8_t *)s, len, &cp);
    if (n == 0) {
        *ulen = 4;
        memcpy(unit, (char[]){'\\', 'x', hex[b >> 4], hex[b & 15]}, 4);
        return 1;
    }
    if (printable(cp)) {
        *ulen = n;
        memcpy(unit, s, n);
        return n;
    }
    *ulen = (size_t)snprintf(unit, 11, cp < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)cp);
    return n;
}

/* One escaped unit of s into unit (at most 11 bytes); returns the input
 * bytes it covers. */
typedef size_t (*unit_fn)(const char *s, size_t len, char *unit, size_t *ulen);

/* s between double quotes, escaped unit by unit, cut at a unit boundary
 * when out of room but always closed with its quote. */
static void put_quoted(struct out *o, const char *s, size_t len, unit_fn unit_of)
{
    if (room(o) < 2 || !put(o, "\"", 1)) {
        o->full = true;
        return;
    }
    o->cap--; /* the closing quote always fits */
    for (size_t i = 0; i < len;) {
        char unit[12];
        size_t ulen;
        size_t used = unit_of(s + i, len - i, unit, &ulen);
        if (!put(o, unit, ulen))
            break;
        i += used;
    }
    o->cap++;
    o->len += 1;
    o->p[o->len - 1] = '"';
}

/* Go strconv.Quote. */
static void quote(struct out *o, const char *s, size_t len)
{
    put_quoted(o, s, len, quote_unit);
}

/* A bare value, cut at a character boundary when out of room. */
static void bare(struct out *o, const char *s, size_t len)
{
    if (o->full || put(o, s, len))
        return;
    size_t n = room(o);
    while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80)
        n--;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void text_str(struct out *o, const char *s, size_t len)
{
    if (needs_quoting(s, len))
        quote(o, s, len);
    else
        bare(o, s, len);
}

size_t log_text_value(char *out, size_t cap, const char *s, size_t len)
{
    struct out o = {out, 0, cap, false};
    text_str(&o, s, len);
    return o.len;
}

size_t log_go_quote(char *out, size_t cap, const char *s, size_t len)
{
    if (cap == 0)
        return 0;
    struct out o = {out, 0, cap - 1, false};
    quote(&o, s, len);
    out[o.len] = '\0';
    return o.len;
}

/* One JSON-escaped unit (slog's appendEscapedJSONString rules: invalid
 * UTF-8 becomes \ufffd, U+2028/2029 are escaped). Returns bytes consumed. */
static size_t json_unit(const char *s, size_t len, char *unit, size_t *ulen)
{
    uint8_t b = (uint8_t)s[0];
    uint32_t cp;
    if (b < 0x80) {
        if (b >= 0x20 && b != '"' && b != '\\') {
            unit[0] = (char)b, *ulen = 1;
        } else if (b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t') {
            unit[0] = '\\';
            unit[1] = b == '\n' ? 'n' : b == '\r' ? 'r' : b == '\t' ? 't' : (char)b;
            *ulen = 2;
        } else {
            *ulen = (size_t)snprintf(unit, 7, "\\u00%c%c", hex[b >> 4], hex[b & 15]);
        }
        return 1;
    }
    size_t n = decode((const uint8_t *)s, len, &cp);
    if (n == 0) {
        *ulen = 6;
        memcpy(unit, "\\ufffd", 6);
        return 1;
    }
    if (cp == 0x2028 || cp == 0x2029) {
        *ulen = (size_t)snprintf(unit, 7, "\\u%04x", (unsigned)cp);
        return n;
    }
    memcpy(unit, s, n);
    *ulen = n;
    return n;
}

static void json_str(struct out *o, const char *s, size_t len)
{
    put_quoted(o, s, len, json_unit);
}

static const char *level_name(enum log_level level)
{
    switch (level) {
    case LOG_DEBUG:
        return "DEBUG";
    case LOG_INFO:
        return "INFO";
    case LOG_WARN:
        return "WARN";
    default:
        return "ERROR";
    }
}

/* Go layout 2006-01-02T15:04:05.000Z07:00 in local time, milliseconds
 * truncated like slog's appendRFC3339Millis. */
static void put_time(struct out *o, const struct timespec *now)
{
    struct tm tm;
    char buf[64];
    time_t t = now->tv_sec;
    localtime_r(&t, &tm);
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, sizeof buf - n, ".%03ld", now->tv_nsec / 1000000);
    long off = tm.tm_gmtoff;
    if (off == 0) {
        snprintf(buf + n, sizeof buf - n, "Z");
    } else {
        char sign = off < 0 ? '-' : '+';
        off = off < 0 ? -off : off;
        snprintf(buf + n, sizeof buf - n, "%c%02ld:%02ld", sign, off / 3600, (off / 60) % 60);
    }
    put_str(o, buf);
}

/* String values longer than limit are cut at a character start. */
static size_t cut_len(const char *s, size_t len, size_t limit)
{
    if (len <= limit)
        return len;
    size_t n = limit;
    while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* Writes one field's value in the chosen format. */
static void put_value(struct out *o, enum log_format fmt, const struct log_field *f, size_t limit)
{
    char num[24];
    if (f->is_num) {
        snprintf(num, sizeof num, "%lld", f->num);
        put_str(o, num);
    } else if (fmt == LOG_FORMAT_JSON) {
        json_str(o, f->str, cut_len(f->str, f->len, limit));
    } else {
        text_str(o, f->str, cut_len(f->str, f->len, limit));
    }
}

/* Appends the fields that fit; a field is started only with room for its
 * key and a few bytes of value, so a cut line never ends in a bare key. */
static void put_fields(struct out *o, enum log_format fmt, const struct log_field *f, size_t n,
                       size_t limit)
{
    bool json = fmt == LOG_FORMAT_JSON;
    for (size_t i = 0; i < n && !o->full; i++) {
        size_t klen = strlen(f[i].key);
        if (room(o) < klen + 4 + FIELD_MIN_ROOM)
            return;
        put(o, json ? "," : " ", 1);
        if (json)
            json_str(o, f[i].key, klen);
        else
            text_str(o, f[i].key, klen);
        put(o, json ? ":" : "=", 1);
        put_value(o, fmt, &f[i], limit);
    }
}

/* Writes time, level and msg. Returns false, leaving nothing, when even
 * the fixed prefix does not fit (msg itself may be cut). */
static bool put_head(struct out *o, enum log_format fmt, const struct timespec *now,
                     enum log_level level, const char *msg)
{
    bool json = fmt == LOG_FORMAT_JSON;
    put_str(o, json ? "{\"time\":\"" : "time=");
    put_time(o, now);
    put_str(o, json ? "\",\"level\":\"" : " level=");
    put_str(o, level_name(level));
    put_str(o, json ? "\",\"msg\":" : " msg=");
    if (o->full) {
        o->len = 0;
        return false;
    }
    if (json)
        json_str(o, msg, strlen(msg));
    else
        text_str(o, msg, strlen(msg));
    return true;
}

size_t log_format_line(char *out, size_t cap, enum log_format fmt, const struct timespec *now,
                       enum log_level level, const char *msg, const struct log_field *f, size_t n)
{
    if (cap == 0)
        return 0;
    size_t tail = fmt == LOG_FORMAT_JSON && cap >= 2 ? 2 : 1; /* "}\n" or "\n" */
    struct out o = {out, 0, cap - tail, false};
    if (!put_head(&o, fmt, now, level, msg))
        tail = 1;
    /* ERROR lines are refusals and failures an operator must read whole
     * (a capability list, a hint): their values are not cut. */
    put_fields(&o, fmt, f, n, level >= LOG_ERROR ? ERROR_MAX_BYTES : VALUE_MAX_BYTES);
    if (tail == 2)
        out[o.len++] = '}';
    out[o.len++] = '\n';
    return o.len;
}

/* Room an ERROR line needs so that nothing in it is cut: every value
 * escaped at worst (\\U0010ffff is 10 bytes for a 4-byte rune, \\xff 4 for
 * one byte: at most 6 per input byte in text and JSON alike). */
static size_t error_line_cap(const char *msg, const struct log_field *f, size_t n)
{
    size_t need = 256 + 6 * strlen(msg);
    for (size_t i = 0; i < n; i++)
        need += 8 + 6 * (strlen(f[i].key) + (f[i].is_num ? 24 : f[i].len));
    return need;
}

void log_event(enum log_level level, const char *msg, const struct log_field *f, size_t n)
{
    char stack[LINE_MAX_BYTES];
    char *line = stack;
    size_t cap = sizeof stack;
    struct timespec now;
    if (!log_enabled(level) || g_fd < 0)
        return;
    if (level >= LOG_ERROR && (cap = error_line_cap(msg, f, n)) > sizeof stack)
        line = malloc(cap);
    if (!line) { /* no memory: the cut line is better than none */
        line = stack;
        cap = sizeof stack;
    }
    if (line == stack)
        cap = sizeof stack;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t len = log_format_line(line, cap, g_format, &now, level, msg, f, n);
    const char *p = line;
    while (len > 0) {
        ssize_t w = write(g_fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere left to report it */
        p += w;
        len -= (size_t)w;
    }
    if (line != stack)
        free(line);
}
