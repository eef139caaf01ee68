/* certdir.h — the certificate cache directory rules (docs/features/acme.md): create it
 * 0700 when missing, refuse a path that is not a directory, tighten a
 * directory we own that others can read, refuse one someone else owns.
 * Also the small file helpers the ACME client uses inside that directory
 * (read a whole file, write one atomically with mode 0600). No network.
 * Any thread, no shared state; blocking file I/O, so it runs at boot or in
 * the ACME job on libuv's thread pool, never on a loop. */
#ifndef RELAY_CERTDIR_H
#define RELAY_CERTDIR_H

#include <stdbool.h>
#include <stddef.h>

/* Applies those rules to dir for domain (both must be non-empty).
 * Returns 0 when dir exists as a directory with no group/other bits (an
 * owned insecure directory is chmod-ed to 0700 and one INFO line
 * `tightened cert cache dir perms` path/from/to is logged), or -1 with the
 * reference's error sentence in err (nothing logged; the mode of a foreign
 * directory is left unchanged). */
int certdir_prepare(const char *domain, const char *dir, char *err, size_t err_cap);

/* The same rules without touching anything (--check-config): a missing
 * directory passes when its nearest existing parent is writable, an owned
 * insecure one passes (it would be tightened). Returns 0 or -1 with the
 * sentence certdir_prepare would give. */
int certdir_check(const char *domain, const char *dir, char *err, size_t err_cap);

/* Reads dir/name whole into a malloc'd NUL-terminated buffer (*len bytes
 * without the NUL). Returns NULL (errno set) when it cannot be read or is
 * larger than max bytes. The caller frees it. */
char *certdir_read(const char *dir, const char *name, size_t max, size_t *len);

/* Writes data to dir/name with mode 0600 through a temporary file in dir,
 * fsync and rename, so readers see the old or the new contents, never a
 * mix. Returns 0, or -1 with a sentence in err. */
int certdir_write(const char *dir, const char *name, const void *data, size_t len, char *err,
                  size_t err_cap);

/* Go's text for an errno value ("permission denied"): strerror with a
 * lower-case first letter. Returns a pointer to static or buf storage. */
const char *certdir_errno_text(int e, char *buf, size_t cap);

#endif
