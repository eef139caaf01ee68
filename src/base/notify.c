/* notify.c — sd_notify(3) messages for systemd's Type=notify (and
 * notify-reload) units; libsystemd finds $NOTIFY_SOCKET and does nothing
 * without it. The relay never depends on an answer. */
#include "base/notify.h"

#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

void notify_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
               (unsigned long long)ts.tv_sec * 1000000ULL +
                   (unsigned long long)ts.tv_nsec / 1000ULL);
}

void notify_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
}
