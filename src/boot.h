/* boot.h — startup checks 3–14 of docs/operations.md: run every startup check in the reference
 * order and log each refusal with its exact msg, err and fix strings.
 * Main thread only, before any loop runs. */
#ifndef RELAY_BOOT_H
#define RELAY_BOOT_H

#include "ops/checks.h"
#include "base/config.h"
#include "push/fcm.h"

/* Runs the checks that need no listener. Returns 0 to go on, or the exit
 * code after logging the refusal (2; 1 for step 14a, autocert setup).
 * status_path is /proc/self/status (a parameter so tests can point it
 * elsewhere). Step 11 parses the push credentials into *push_creds (zeroed
 * when push is off; the caller frees them with fcm_creds_free or hands them
 * to push_new). */
int boot_checks(const struct config *cfg, checks_getenv_fn get, const char *status_path,
                struct fcm_creds *push_creds);

#endif
