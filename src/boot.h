/* boot.h — spec §6.3 steps 3–14: run every startup check in the reference
 * order and log each refusal with its exact msg, err and fix strings. */
#ifndef RELAY_BOOT_H
#define RELAY_BOOT_H

#include "checks.h"
#include "config.h"

/* Runs the checks that need no listener. Returns 0 to go on, or the exit
 * code after logging the refusal (2; 1 for step 14a, autocert setup). status_path is
 * /proc/self/status (a parameter so tests can point it elsewhere). */
int boot_checks(const struct config *cfg, checks_getenv_fn get, const char *status_path);

#endif
