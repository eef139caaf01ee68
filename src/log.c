/* log.c — one event, one line, one write(2): Go log/slog's text format
 * (time=… level=… msg=… key=value) or JSON. Text values are quoted with
 * Go's strconv.Quote rules exactly when slog would quote them, so a hostile
 * value cannot start a new line or fake a key. It knows nothing about which
 * keys are allowed; callers pass only the spec's keys. */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192

static enum log_format g_format = LOG_FORMAT_TEXT;
static enum log_level g_min = LOG_INFO;
static int g_fd = 2;

void log_setup(enum log_format fmt, enum log_level min_level, int fd)
{
    g_format = fmt;
    g_min = min_level;
    g_fd = fd;
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

/* A small append buffer that silently stops at its end. */
struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    size_t room = o->cap > o->len ? o->cap - o->len : 0;
    if (n > room)
        n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Decodes one UTF-8 sequence at s (n bytes available). Returns its length
 * and the code point in *cp, or 0 for an invalid sequence. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    size_t len;
    uint32_t c, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if ((b & 0xE0) == 0xC0) {
        len = 2, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4, c = b & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* Approximates Go's unicode.IsPrint for non-ASCII code points: controls,
 * separators other than U+0020, format characters and noncharacters are
 * not printable. */
static bool printable_rune(uint32_t c)
{
    if (c < 0x20 || (c >= 0x7F && c < 0xA0))
        return false;
    if (c == 0xAD || c == 0x2028 || c == 0x2029 || c == 0xFEFF || c == 0xFFFD)
        return c == 0xFFFD; /* a real U+FFFD is printable */
    if ((c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) ||
        (c >= 0x2060 && c <= 0x206F) || c == 0x00A0 || c == 0x1680 ||
        (c >= 0x2000 && c <= 0x200A) || c == 0x202F || c == 0x205F || c == 0x3000)
        return false;
    if ((c & 0xFFFE) == 0xFFFE || (c >= 0xFDD0 && c <= 0xFDEF) || (c >= 0xE000 && c <= 0xF8FF) ||
        c >= 0xF0000)
        return false;
    return true;
}

/* slog's needsQuoting: empty, space, '=', '"', non-printable or invalid. */
static bool needs_quoting(const char *s, size_t len)
{
    if (len == 0)
        return true;
    for (size_t i = 0; i < len;) {
        uint8_t b = (uint8_t)s[i];
        if (b < 0x80) {
            if (b != '\\' && (b <= ' ' || b == '=' || b == '"' || b == 0x7F))
                return true;
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = utf8_decode((const uint8_t *)s + i, len - i, &cp);
        if (n == 0 || !printable_rune(cp))
            return true;
        i += n;
    }
    return false;
}

/* Go strconv.Quote. */
static void quote(struct out *o, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    put(o, "\"", 1);
    for (size_t i = 0; i < len;) {
        uint8_t b = (uint8_t)s[i];
        char esc[12];
        if (b < 0x80) {
            const char *e = NULL;
            switch (b) {
            case '\a': e = "\\a"; break;
            case '\b': e = "\\b"; break;
            case '\f': e = "\\f"; break;
            case '\n': e = "\\n"; break;
            case '\r': e = "\\r"; break;
            case '\t': e = "\\t"; break;
            case '\v': e = "\\v"; break;
            case '"': e = "\\\""; break;
            case '\\': e = "\\\\"; break;
            default: break;
            }
            if (e) {
                puts_(o, e);
            } else if (b < 0x20 || b == 0x7F) {
                char x[4] = {'\\', 'x', hex[b >> 4], hex[b & 15]};
                put(o, x, 4);
            } else {
                put(o, (const char *)&b, 1);
            }
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = utf8_decode((const uint8_t *)s + i, len - i, &cp);
        if (n == 0) {
            char x[4] = {'\\', 'x', hex[b >> 4], hex[b & 15]};
            put(o, x, 4);
            i++;
        } else if (printable_rune(cp)) {
            put(o, s + i, n);
            i += n;
        } else {
            if (cp < 0x10000)
                snprintf(esc, sizeof esc, "\\u%04x", cp);
            else
                snprintf(esc, sizeof esc, "\\U%08x", cp);
            puts_(o, esc);
            i += n;
        }
    }
    put(o, "\"", 1);
}

size_t log_text_value(char *out, size_t cap, const char *s, size_t len)
{
    struct out o = {out, 0, cap};
    if (needs_quoting(s, len))
        quote(&o, s, len);
    else
        put(&o, s, len);
    return o.len;
}

/* JSON string body with invalid UTF-8 replaced by U+FFFD. */
static void json_string(struct out *o, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    put(o, "\"", 1);
    for (size_t i = 0; i < len;) {
        uint8_t b = (uint8_t)s[i];
        if (b < 0x80) {
            if (b == '"' || b == '\\') {
                char e[2] = {'\\', (char)b};
                put(o, e, 2);
            } else if (b == '\n') {
                puts_(o, "\\n");
            } else if (b == '\r') {
                puts_(o, "\\r");
            } else if (b == '\t') {
                puts_(o, "\\t");
            } else if (b < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[b >> 4], hex[b & 15]};
                put(o, e, 6);
            } else {
                put(o, (const char *)&b, 1);
            }
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = utf8_decode((const uint8_t *)s + i, len - i, &cp);
        if (n == 0) {
            puts_(o, "\\ufffd");
            i++;
        } else if (cp == 0x2028 || cp == 0x2029) {
            puts_(o, cp == 0x2028 ? "\\u2028" : "\\u2029");
            i += n;
        } else {
            put(o, s + i, n);
            i += n;
        }
    }
    put(o, "\"", 1);
}

static const char *level_name(enum log_level level)
{
    switch (level) {
    case LOG_DEBUG: return "DEBUG";
    case LOG_INFO: return "INFO";
    case LOG_WARN: return "WARN";
    default: return "ERROR";
    }
}

/* 2006-01-02T15:04:05.000Z07:00 in local time. */
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
    puts_(o, buf);
}

static void text_value(struct out *o, const char *s, size_t len)
{
    if (needs_quoting(s, len))
        quote(o, s, len);
    else
        put(o, s, len);
}

size_t log_format_line(char *out, size_t cap, enum log_format fmt, const struct timespec *now,
                       enum log_level level, const char *msg, const struct log_field *f,
                       size_t n)
{
    struct out o = {out, 0, cap > 0 ? cap - 1 : 0}; /* keep room for the newline */
    char num[32];
    if (fmt == LOG_FORMAT_JSON) {
        puts_(&o, "{\"time\":\"");
        put_time(&o, now);
        puts_(&o, "\",\"level\":\"");
        puts_(&o, level_name(level));
        puts_(&o, "\",\"msg\":");
        json_string(&o, msg, strlen(msg));
        for (size_t i = 0; i < n; i++) {
            put(&o, ",", 1);
            json_string(&o, f[i].key, strlen(f[i].key));
            put(&o, ":", 1);
            if (f[i].is_num) {
                snprintf(num, sizeof num, "%lld", f[i].num);
                puts_(&o, num);
            } else {
                json_string(&o, f[i].str, f[i].len);
            }
        }
        put(&o, "}", 1);
    } else {
        puts_(&o, "time=");
        put_time(&o, now);
        puts_(&o, " level=");
        puts_(&o, level_name(level));
        puts_(&o, " msg=");
        text_value(&o, msg, strlen(msg));
        for (size_t i = 0; i < n; i++) {
            put(&o, " ", 1);
            text_value(&o, f[i].key, strlen(f[i].key));
            put(&o, "=", 1);
            if (f[i].is_num) {
                snprintf(num, sizeof num, "%lld", f[i].num);
                puts_(&o, num);
            } else {
                text_value(&o, f[i].str, f[i].len);
            }
        }
    }
    if (cap > 0)
        out[o.len++] = '\n';
    return o.len;
}

void log_event(enum log_level level, const char *msg, const struct log_field *f, size_t n)
{
    char line[LINE_MAX_BYTES];
    struct timespec now;
    if (level < g_min)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t len = log_format_line(line, sizeof line, g_format, &now, level, msg, f, n);
    const char *p = line;
    while (len > 0) {
        ssize_t w = write(g_fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report it */
        }
        p += w;
        len -= (size_t)w;
    }
}
