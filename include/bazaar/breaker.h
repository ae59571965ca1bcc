/*
 * base/breaker.h — a circuit breaker for one dependency (the database, a
 * read replica, Redis), so that a dependency that hangs costs each request
 * microseconds instead of its whole deadline.
 *
 *     bz_breaker_verdict v = bz_breaker_allow(&b, bz_now_ns(), &retry_ns);
 *     if (v == BZ_BREAKER_REJECT) fail at once: unavailable, retry in retry_ns
 *     ... the call ...
 *     bz_breaker_report(&b, v == BZ_BREAKER_PROBE, outcome, started, bz_now_ns());
 *
 * States:
 *   closed     every call goes through.  `failures` calls in a row that got
 *              no answer in time (a deadline missed, a connect that did not
 *              finish) open it; any answer resets the count.  So does a
 *              single such call if no call at all got an answer during the
 *              second half of its wait or longer: the dependency has gone
 *              silent (a frozen server), so the calls sent after it hang
 *              too, and waiting for `failures` of them to time out would
 *              hold every request that arrives meanwhile for a whole
 *              deadline.  (A slow call on a server that keeps answering
 *              others is not silence: only `failures` in a row count.)
 *   open       every call is refused at once (BZ_BREAKER_REJECT) until
 *              `open_ns` has passed since it opened.
 *   half-open  then exactly one caller — the probe — is let through (the
 *              compare-and-swap from open makes it one across every
 *              thread); the others are still refused.  The probe's
 *              success closes the breaker, its failure opens it for
 *              another `open_ns`, and a probe whose outcome says nothing
 *              (it was cancelled, the connection was refused) hands the
 *              probe to the next caller.
 * Any success, probe or not (a call that was in flight when it opened),
 * closes it: the dependency answered.
 *
 * What a failure is, is the caller's to say: only a dependency that gives
 * no answer in time.  An error that proves the server alive — a constraint
 * violation, a serialization failure, an error reply — is a success here;
 * a refused connection is neutral (it is fast already).
 *
 * Lock-free (C11 atomics): shared by every event loop; the closed path of
 * bz_breaker_allow is one relaxed load.
 */
#ifndef BZ_BREAKER_H
#define BZ_BREAKER_H

#include <bazaar/buf.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

typedef enum bz_breaker_state { BZ_BREAKER_CLOSED = 0, BZ_BREAKER_OPEN = 1, BZ_BREAKER_HALF_OPEN = 2 } bz_breaker_state;

typedef enum bz_breaker_verdict {
    BZ_BREAKER_PASS = 0, /* go ahead */
    BZ_BREAKER_PROBE,    /* go ahead: you are the one probe; report the outcome */
    BZ_BREAKER_REJECT,   /* fail at once */
} bz_breaker_verdict;

typedef enum bz_breaker_outcome {
    BZ_BREAKER_SUCCESS = 0, /* the dependency answered (whatever it said) */
    BZ_BREAKER_FAILURE,     /* no answer in time */
    BZ_BREAKER_NEUTRAL,     /* says nothing either way (cancelled, refused) */
} bz_breaker_outcome;

typedef struct bz_breaker {
    char name[24];      /* "db", "db_read", "cache": the metrics label */
    int failures;       /* in a row to open it; 0: never opens */
    int64_t open_ns;    /* open this long before a probe */
    _Atomic int state;  /* bz_breaker_state */
    _Atomic int fails;  /* failures in a row (closed) */
    _Atomic int64_t last_ok;  /* when a call last got an answer (to within 1 ms) */
    _Atomic int64_t probe_at; /* open: when the probe may go (bz_now_ns clock) */
    /* counters, for /metrics */
    _Atomic int64_t to_open, to_half_open, to_closed; /* state changes */
    _Atomic int64_t rejected;                         /* calls failed fast */
} bz_breaker;

/* failures 0 disables it (bz_breaker_allow always passes). */
void bz_breaker_init(bz_breaker *b, const char *name, int failures, int64_t open_ns);
/* The deadline a probe gets: the probe interval, but at least 1 s (a
 * connect to a live server that is far away must fit in it). */
static inline int64_t bz_breaker_probe_timeout(const bz_breaker *b)
{
    return b->open_ns > 1000000000LL ? b->open_ns : 1000000000LL;
}
/* Whether a call may go now.  On REJECT, *retry_ns (if not NULL) gets how
 * long until a probe may go (at least 1 ms). */
bz_breaker_verdict bz_breaker_allow(bz_breaker *b, int64_t now, int64_t *retry_ns);
/* The outcome of a call bz_breaker_allow let through (probe: its verdict
 * was PROBE; exactly one report per probe), which began at `started` (0:
 * unknown: no silence rule) and ended `now`.  Returns true when this report opened the
 * breaker (the caller may wake its waiters, who then fail fast).  While
 * closed, a success costs a few relaxed loads. */
bool bz_breaker_report(bz_breaker *b, bool probe, bz_breaker_outcome o, int64_t started, int64_t now);
bz_breaker_state bz_breaker_get_state(const bz_breaker *b);
/* "closed", "open", "half_open". */
const char *bz_breaker_state_name(bz_breaker_state s);

/* The breakers' metric families (base/metrics writer), one sample per
 * breaker labelled dependency="<name>":
 *   bazaar_breaker_state                      gauge: 0 closed, 1 open, 2 half-open
 *   bazaar_breaker_transitions_total{to=...}  counter: state changes
 *   bazaar_breaker_rejected_total             counter: calls failed fast
 * NULL entries are skipped. */
void bz_breaker_metrics(bz_buf *o, const bz_breaker *const *bs, int n);

#pragma GCC visibility pop
#endif
