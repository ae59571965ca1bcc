/*
 * app/svc/sql.h — every SQL statement the service runs, defined once.
 *
 * The operations run these definitions, and `bazaar explain` explains the
 * same definitions (those marked `explain`) with their sample arguments,
 * so a hot query cannot regress while the check passes on a copy.
 * Parameters are always bound ($1..$n in both dialects); no SQL is ever
 * built from strings.
 */
#ifndef APP_SVC_SQL_H
#define APP_SVC_SQL_H

#include <bazaar/db.h>

#include <stdbool.h>

typedef struct svc_sql {
    const char *name;       /* what it serves, for explain's report */
    const char *lite;       /* SQLite text (also PostgreSQL's unless pg is set) */
    const char *pg;         /* PostgreSQL text, when it differs */
    bool explain;           /* a hot read or guarded write that must use an index */
    int nsample;
    db_arg sample[10];      /* arguments explain runs it with */
    /* A one-row read by an integer key ($1): the same read of several
     * keys (a bigint[] $1, the key in column 0), PostgreSQL only, which
     * the reads of one turn share (svc_read_row, db_query_row_keyed). */
    const struct svc_sql *many;
} svc_sql;

/* The text for the dialect behind q. */
static inline const char *svc_sql_text(db_q q, const svc_sql *s)
{
    return s->pg && db_q_dialect(q) == DB_POSTGRES ? s->pg : s->lite;
}

/* Runs s on q: db_exec / db_query / db_query_row with its text.  The rows
 * belong to arena ar (db_rows_adopt): a request's are closed when its
 * arena is, never by hand.  Work that has no request (the background
 * workers, the replica's probe), and a scan copied at once that the
 * request should not hold, pass NULL and close the rows themselves. */
static inline int sql_exec(db_q q, rt_ctx *ctx, const svc_sql *s, const db_arg *a, int n, int64_t *aff, bz_error *e)
{
    return db_exec(q, ctx, svc_sql_text(q, s), a, n, aff, e);
}
static inline int svc__sql_owned(bz_arena *ar, int rc, db_rows **r)
{
    if (rc == 0 && ar)
        db_rows_adopt(ar, *r);
    return rc;
}
static inline int sql_query(bz_arena *ar, db_q q, rt_ctx *ctx, const svc_sql *s, const db_arg *a, int n,
                            db_rows **r, bz_error *e)
{
    return svc__sql_owned(ar, db_query(q, ctx, svc_sql_text(q, s), a, n, r, e), r);
}
static inline int sql_row(bz_arena *ar, db_q q, rt_ctx *ctx, const svc_sql *s, const db_arg *a, int n,
                          db_rows **r, bz_error *e)
{
    return svc__sql_owned(ar, db_query_row(q, ctx, svc_sql_text(q, s), a, n, r, e), r);
}

/* sql_row as a shared read: on PostgreSQL the reads of one turn share a
 * statement — a keyed one (s->many, one integer argument) the reads of
 * every key, any other the identical reads (db_query_row_keyed,
 * db_query_row_shared).  For rows any caller may see. */
static inline int sql_row_shared(bz_arena *ar, db *d, rt_ctx *ctx, const svc_sql *s, const db_arg *a, int n,
                                 db_rows **r, bz_error *e)
{
    if (s->many && n == 1 && a[0].type == DB_T_INT)
        return svc__sql_owned(ar, db_query_row_keyed(d, ctx, svc_sql_text(DB(d), s), s->many->pg, 0, a[0].v.i, r, e), r);
    return svc__sql_owned(ar, db_query_row_shared(d, ctx, svc_sql_text(DB(d), s), a, n, r, e), r);
}

/* users */
extern const svc_sql SQL_USER_INSERT, SQL_USER_BY_ID, SQL_USER_PUBLIC_BY_ID, SQL_USERS_BY_IDS, SQL_USERS_PUBLIC_BY_IDS, SQL_USER_BY_EMAIL, SQL_USER_LOGIN, SQL_USER_SET_NAME,
    SQL_USER_SET_PASSWORD, SQL_USERS_AFTER;
/* accounts and transfers */
extern const svc_sql SQL_ACCOUNT_INSERT, SQL_ACCOUNT_BY_ID, SQL_ACCOUNTS_BY_IDS, SQL_ACCOUNTS_OF_USER, SQL_ACCOUNT_DEPOSIT,
    SQL_TRANSFER_DEBIT_FIRST, SQL_TRANSFER_CREDIT_FIRST, SQL_TRANSFER_CREDIT, SQL_TRANSFER_DEBIT, SQL_TRANSFER_MOVE, SQL_TRANSFER_LOCK,
    SQL_TRANSFER_PAIR,
    SQL_TRANSFER_INSERT, SQL_TRANSFER_FOR_USER, SQL_TRANSFERS_OF_ACCOUNT;
/* items */
extern const svc_sql SQL_ITEM_LIVE, SQL_ITEMS_LIVE_BY_IDS, SQL_ITEMS_PAGE, SQL_ITEMS_OF_SELLER, SQL_ITEMS_OFFSET,
    SQL_ITEMS_OF_SELLER_OFFSET, SQL_ITEM_INSERT, SQL_ITEM_IMPORT, SQL_ITEM_UPDATE, SQL_ITEM_DELETE;
/* orders, payment, fulfilment, leaderboard */
extern const svc_sql SQL_ITEM_FOR_ORDER, SQL_ITEM_RESERVE, SQL_ORDER_INSERT, SQL_LINE_INSERT, SQL_ORDER_BY_ID, SQL_ORDERS_BY_IDS,
    SQL_ORDERS_PAGE, SQL_ORDERS_PAGE_STATUS, SQL_ORDER_HEAD, SQL_ACCOUNT_DEBIT, SQL_ORDER_SELLER_CREDITS,
    SQL_ACCOUNT_CREDIT_UPSERT, SQL_ORDER_SET_STATUS, SQL_JOB_INSERT, SQL_ORDER_LINES, SQL_ITEM_RESTOCK, SQL_JOB_DUE,
    SQL_ORDER_SHIP, SQL_JOB_DELETE, SQL_SPENDERS, SQL_LB_EPOCH, SQL_LB_EPOCH_BUMP,
    SQL_ORDER_HEAD_FOR_PAY, SQL_PAY_LOCK_ACCOUNTS, SQL_LB_EPOCH_SHARED, SQL_LB_EPOCH_TRY_EXCLUSIVE;
/* the read replica's lag probe (PostgreSQL only) */
extern const svc_sql SQL_WAL_PRIMARY, SQL_WAL_REPLAY;
/* idempotency */
extern const svc_sql SQL_IDEM_EXPIRED, SQL_IDEM_INSERT, SQL_IDEM_UPSERT, SQL_IDEM_GET, SQL_IDEM_PURGE;

/* Every statement above, for explain. */
extern const svc_sql *const svc_sql_all[];
extern const int svc_sql_count;

#endif
