/*
 * base/notify.h — the systemd notification protocol (sd_notify(3)), by hand:
 * one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
 * abstract name when it starts with '@').  No libsystemd.
 *
 * Outside systemd (no NOTIFY_SOCKET) every call is a no-op that returns 1,
 * so callers need no "are we under systemd" branch.
 *
 *   bz_notify("READY=1\nSTATUS=listening on :8080");
 */
#ifndef BZ_NOTIFY_H
#define BZ_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Sends state (newline-separated KEY=VALUE assignments).  0 when sent,
 * 1 when there is no NOTIFY_SOCKET, -errno on failure (a bad socket name
 * is -EINVAL).  Never blocks: the datagram is sent non-blocking (a full
 * socket buffer is -EAGAIN; the manager reads promptly).  Thread-safe. */
int bz_notify(const char *state);
/* True when NOTIFY_SOCKET is set. */
bool bz_notify_enabled(void);
/* The watchdog period the manager asked for (WATCHDOG_USEC, in ns), if it
 * is meant for this process (WATCHDOG_PID unset or ours); else 0.  Ping
 * with "WATCHDOG=1" at half of it. */
int64_t bz_notify_watchdog_ns(void);

#endif
