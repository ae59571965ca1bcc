/* base/clock.c — see clock.h. */
#include <bazaar/clock.h>

#include <bazaar/buf.h>

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

/* UTC calendar fields of a unix time, by arithmetic (H. Hinnant's
 * civil_from_days): gmtime_r costs several times more and this runs for
 * every timestamp of every response and log line. */
static void civil(int64_t unix_s, struct tm *tm)
{
    int64_t days = unix_s / 86400, rem = unix_s % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    tm->tm_hour = (int)(rem / 3600);
    tm->tm_min = (int)(rem % 3600 / 60);
    tm->tm_sec = (int)(rem % 60);
    tm->tm_wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    tm->tm_year = (int)(y + (m <= 2) - 1900);
    tm->tm_mon = (int)(m - 1);
    tm->tm_mday = (int)d;
}

/* Writes v as exactly `width` decimal digits (zero-padded, truncated). */
static char *digits(char *p, unsigned v, int width)
{
    int i = width;
    while (i >= 2) {
        unsigned d = (v % 100) * 2;
        v /= 100;
        i -= 2;
        p[i] = bz__digits2[d];
        p[i + 1] = bz__digits2[d + 1];
    }
    if (i)
        p[0] = (char)('0' + v % 10);
    return p + width;
}

size_t bz_fmt_rfc3339_us(char *out, int64_t unix_us)
{
    int64_t s = unix_us / 1000000, us = unix_us % 1000000;
    if (us < 0) {
        us += 1000000;
        s -= 1;
    }
    /* "YYYY-MM-DDTHH:MM:SS." of the last four seconds formatted on this
     * thread (any four: a log line's ts and a record's created_at and
     * updated_at alternate), so most calls only write the microseconds. */
    static _Thread_local struct {
        int64_t s;
        char head[20];
    } memo[4] = {{INT64_MIN, {0}}, {INT64_MIN, {0}}, {INT64_MIN, {0}}, {INT64_MIN, {0}}};
    static _Thread_local unsigned next;
    unsigned slot = 0;
    while (slot < 4 && memo[slot].s != s)
        slot++;
    if (slot == 4) {
        slot = next++ & 3u;
        struct tm tm;
        civil(s, &tm);
        char *p = memo[slot].head;
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
        memo[slot].s = s;
    }
    memcpy(out, memo[slot].head, 20);
    char *p = digits(out + 20, (unsigned)us, 6);
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
