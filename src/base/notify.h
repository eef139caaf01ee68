/* notify.h — the systemd readiness protocol (sd_notify) for Type=notify
 * units: READY=1 once every listener is bound, RELOADING=1 … READY=1
 * around a SIGHUP reload, STOPPING=1 when the drain starts, with a STATUS=
 * line systemctl shows. Without $NOTIFY_SOCKET (not under systemd) every
 * call does nothing. Main thread only. */
#ifndef RELAY_NOTIFY_H
#define RELAY_NOTIFY_H

/* The listeners are bound: READY=1 with status. */
void notify_ready(const char *status);

/* A reload starts (RELOADING=1 with the monotonic time systemd asks for);
 * notify_ready ends it. */
void notify_reloading(void);

/* The drain started: STOPPING=1. */
void notify_stopping(void);

#endif
