/* log.h — structured logging in Go log/slog's text format (docs/features/logging.md) or
 * JSON, one line per event on stderr. Values are quoted and escaped the way
 * slog does it, so a hostile header value can never forge a second line or
 * a fake key. The logger never sees secrets: callers pass only allowed keys.
 * Threads: LOGF/log_event and the formatters from any thread (one write(2)
 * per line); log_setup on the main thread before other threads start;
 * log_set_level from any thread (atomic). A struct log_limit belongs to one
 * thread. */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

enum log_level { LOG_DEBUG = -4, LOG_INFO = 0, LOG_WARN = 4, LOG_ERROR = 8 };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

struct log_field {
    const char *key;
    const char *str; /* string value (need not be NUL-terminated) */
    size_t len;
    long long num; /* integer value when is_num */
    bool is_num;
};

#define LOG_STR(k, v)     ((struct log_field){.key = (k), .str = (v), .len = strlen(v)})
#define LOG_STRN(k, v, n) ((struct log_field){.key = (k), .str = (v), .len = (n)})
#define LOG_NUM(k, v)     ((struct log_field){.key = (k), .num = (long long)(v), .is_num = true})

/* Emits one event with the given fields (at most 16). */
#define LOGF(level, msg, ...)                                                                      \
    log_event((level), (msg), (const struct log_field[]){__VA_ARGS__},                             \
              sizeof((const struct log_field[]){__VA_ARGS__}) / sizeof(struct log_field))
/* Emits one event without fields. */
#define LOG0(level, msg) log_event((level), (msg), NULL, 0)

/* Chooses the output format and minimum level (default text, INFO). The
 * output file descriptor defaults to 2 (stderr). */
void log_setup(enum log_format fmt, enum log_level min_level, int fd);

/* Changes the minimum level (a reload; safe from any thread). */
void log_set_level(enum log_level min_level);

/* The current minimum level. */
enum log_level log_get_level(void);

/* True when a line at level would be written (skip building costly
 * fields otherwise). */
bool log_enabled(enum log_level level);

/* Parses "debug", "info", "warn" or "error"; returns 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);

/* The flag spelling of a level ("debug" ...). */
const char *log_level_name(enum log_level level);

/* Collapses a repeated line of one kind from one source (a binary that
 * keeps writing to a departed phone): the first line passes, then at most
 * one per LOG_LIMIT_PERIOD_MS, which carries how many were dropped in
 * between. Zero-initialise; one per (source, kind); not thread-safe (it
 * lives with its connection on one loop). */
#define LOG_LIMIT_PERIOD_MS 1000
struct log_limit {
    uint64_t last_ms;    /* when the last line passed (0: never) */
    uint32_t suppressed; /* dropped since */
};

/* Returns true when the line should be written now; *suppressed then holds
 * how many were dropped before it (log it as suppressed=N when non-zero). */
bool log_limit_allow(struct log_limit *l, uint64_t now_ms, uint64_t *suppressed);

/* Parses "text" or "json"; returns 0 or -1. */
int log_format_parse(const char *s, enum log_format *out);

/* Formats and writes one line with a single write(2) call. */
void log_event(enum log_level level, const char *msg, const struct log_field *f, size_t n);

/* Formats one line (with the trailing newline) for the given wall-clock
 * time into out. Returns the line length; a line longer than cap is cut
 * and still ends with a newline. Below ERROR a string value is cut at
 * 1 KiB; ERROR values are kept whole (log_event sizes the buffer for
 * them). Exposed for tests. */
size_t log_format_line(char *out, size_t cap, enum log_format fmt, const struct timespec *now,
                       enum log_level level, const char *msg, const struct log_field *f, size_t n);

/* Appends s[0..len) to out as slog's text handler would print a value:
 * bare when it needs no quoting, else Go-quoted (strconv.Quote rules).
 * Returns bytes written (never more than cap). Exposed for tests. */
size_t log_text_value(char *out, size_t cap, const char *s, size_t len);

/* Writes s[0..len) quoted with Go's strconv.Quote rules (always quoted),
 * NUL-terminated, into out. Returns the length (cut to fit cap). Used for
 * %q-style values such as the env contract's "got \"...\"". */
size_t log_go_quote(char *out, size_t cap, const char *s, size_t len);

#endif
