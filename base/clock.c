/* base/clock.c — see clock.h. */
#include "base/clock.h"

#include <string.h>
#include <time.h>

int64_t bz_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * BZ_NS_PER_S + ts.tv_nsec;
}

int64_t bz_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void civil(int64_t unix_s, struct tm *tm)
{
    time_t t = (time_t)unix_s;
    gmtime_r(&t, tm);
}

/* Writes v as exactly `width` decimal digits (zero-padded, truncated). */
static char *digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

size_t bz_fmt_rfc3339_us(char *out, int64_t unix_us)
{
    int64_t s = unix_us / 1000000, us = unix_us % 1000000;
    if (us < 0) {
        us += 1000000;
        s -= 1;
    }
    struct tm tm;
    civil(s, &tm);
    char *p = out;
    p = digits(p, (unsigned)(tm.tm_year + 1900), 4);
    *p++ = '-';
    p = digits(p, (unsigned)tm.tm_mon + 1, 2);
    *p++ = '-';
    p = digits(p, (unsigned)tm.tm_mday, 2);
    *p++ = 'T';
    p = digits(p, (unsigned)tm.tm_hour, 2);
    *p++ = ':';
    p = digits(p, (unsigned)tm.tm_min, 2);
    *p++ = ':';
    p = digits(p, (unsigned)tm.tm_sec, 2);
    *p++ = '.';
    p = digits(p, (unsigned)us, 6);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

size_t bz_fmt_http_date(char *out, int64_t unix_s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    civil(unix_s, &tm);
    char *p = out;
    memcpy(p, days[tm.tm_wday], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = digits(p, (unsigned)tm.tm_mday, 2);
    *p++ = ' ';
    memcpy(p, mons[tm.tm_mon], 3);
    p += 3;
    *p++ = ' ';
    p = digits(p, (unsigned)(tm.tm_year + 1900), 4);
    *p++ = ' ';
    p = digits(p, (unsigned)tm.tm_hour, 2);
    *p++ = ':';
    p = digits(p, (unsigned)tm.tm_min, 2);
    *p++ = ':';
    p = digits(p, (unsigned)tm.tm_sec, 2);
    memcpy(p, " GMT", 5);
    p += 4;
    return (size_t)(p - out);
}
