/*
 * db/stats.h — statement statistics and the slow-query log.
 *
 * Every statement db_exec/db_query/db_query_row runs is counted under its
 * name (the application names its statements once, at start-up, with
 * db_stats_name; an unnamed one is shown by its first words): count,
 * errors, rows, total and maximum time, and a histogram for the median
 * and p99 — pg_stat_statements from bazaar's side, for SQLite too.  Time
 * is as the caller sees it: the pool wait, the round trips and retries.
 *
 * A statement slower than the threshold (--slow-query; 0 = off) is
 * logged once, at warn level, with its name, duration and rows; the log
 * adds the trace id of the request it served.
 *
 * The hot path takes no lock: a statement's slot is found by its text's
 * address (lock-free probe of a fixed table) and counted with relaxed
 * atomics.  The table holds DB_STATS_MAX statements; more share one
 * "(other statements)" slot.
 */
#ifndef DB_STATS_H
#define DB_STATS_H

#include <bazaar/rt.h>

#include <stdint.h>

#pragma GCC visibility push(default)

#define DB_STATS_MAX 256

/* Names the statement whose text is at sql (a string that lives for the
 * process: the statements are static).  Call before serving. */
void db_stats_name(const char *sql, const char *name);
/* Statements that take at least ns are logged; 0 turns the log off. */
void db_stats_set_slow(int64_t ns);
int64_t db_stats_slow(void);

typedef struct db_stmt_stat {
    const char *name;   /* the registered name, or the text's first words */
    int64_t count, errors, rows, slow;
    int64_t total_ns, max_ns, p50_ns, p99_ns;
} db_stmt_stat;
/* Up to max statements that ran, by total time (largest first): how many. */
int db_stats_top(db_stmt_stat *out, int max);

#pragma GCC visibility pop
#endif
