/* service/watchdog.c — the systemd notifications of a run (sd_notify(3)
 * by hand, base/notify.h): READY=1 once every listener is open, WATCHDOG=1
 * at half WATCHDOG_USEC while every event loop still ticks (sent from one
 * coroutine, and only when all loops ticked recently: a stuck loop stops
 * the pings and systemd restarts us), then STOPPING=1 as soon as shutdown
 * begins. */
#include "service/service-private.h"

#include "base/notify.h"

#include <bazaar/clock.h>

#include <stdio.h>

static void watch(void *unused)
{
    (void)unused;
    int64_t period = bz_notify_watchdog_ns() / 2;
    int64_t stale = period > BZ_NS_PER_S ? period : BZ_NS_PER_S;
    rt_ctx *stop = rt_shutdown_ctx();
    if (period > 0) {
        while (rt_sleep(stop, period) == 0)
            if (rt_loops_alive(stale))
                bz_notify("WATCHDOG=1");
    } else {
        rt_park(stop, BZ_NO_DEADLINE, NULL);
    }
    bz_notify("STOPPING=1");
}

void x__notify_ready(const bazaar_service *s)
{
    if (!bz_notify_enabled())
        return;
    char st[600];
    snprintf(st, sizeof st, "READY=1\nSTATUS=serving: http port %d, grpc port %d, admin port %d",
             bazaar_http_port(s), bazaar_grpc_port(s), bazaar_admin_port(s));
    bz_notify(st);
    rt_go(watch, NULL);
}
