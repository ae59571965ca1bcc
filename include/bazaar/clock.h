/*
 * base/clock.h — monotonic and wall clocks.
 *
 * Deadlines and durations use the monotonic clock (never jumps); timestamps
 * shown to people use the wall clock.  All values are int64 nanoseconds or
 * microseconds so arithmetic never overflows in practice (292 years).
 */
#ifndef BZ_CLOCK_H
#define BZ_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(default)

#define BZ_NS_PER_US 1000LL
#define BZ_NS_PER_MS 1000000LL
#define BZ_NS_PER_S 1000000000LL

/* A deadline that never passes. */
#define BZ_NO_DEADLINE INT64_MAX

/* Monotonic nanoseconds since an arbitrary point (CLOCK_MONOTONIC). */
int64_t bz_now_ns(void);

/* Wall-clock microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t bz_wall_us(void);

/* Formats unix microseconds as RFC 3339 UTC with microseconds,
 * "2026-11-28T02:18:16.123456Z"; out needs 28 bytes.  Returns 27. */
size_t bz_fmt_rfc3339_us(char *out, int64_t unix_us);

/* Formats unix seconds as an HTTP IMF-fixdate, "Sat, 28 Nov 2026 02:18:16 GMT";
 * out needs 30 bytes.  Returns 29. */
size_t bz_fmt_http_date(char *out, int64_t unix_s);

#pragma GCC visibility pop
#endif
