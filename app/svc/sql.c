/* app/svc/sql.c — the statements of sql.h.  Each index a statement relies
 * on is named in app/schema.c. */
#include "app/svc/sql.h"

#include "app/svc/svc.h"

/* Rows name only what they use: a cold statement is a name and a text. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define I(x) {.type = DB_T_INT, .v.i = (x)}
#define T(str) {.type = DB_T_TEXT, .v.s = {(str), sizeof(str) - 1}}
#define TM(x) {.type = DB_T_TIME, .v.i = (x)}
#define TOP_US 253402300799000000LL /* far-future keyset start (newest first) */
#define BIG 9223372036854775807LL

#define USER_COLS SVC_USER_FIELDS(X__COL)
/* The models' columns from their field lists (svc.h): "id, seller_id, ..." */
#define X__COL_ID(n) #n
#define X__COL_INT(n) ", " #n
#define X__COL_STR(n) ", " #n
#define X__COL_OPT(n) ", " #n
#define X__COL_CUR(n) ", " #n
#define X__COL_TIME(n) ", " #n "_at"
#define X__COL(kind, n) X__COL_##kind(n)
#define ACCOUNT_COLS SVC_ACCOUNT_FIELDS(X__COL)
#define TRANSFER_COLS SVC_TRANSFER_FIELDS(X__COL)
#define ITEM_COLS SVC_ITEM_FIELDS(X__COL)

/* ---- users ---- */

const svc_sql SQL_USER_INSERT = {"sign-up",
    "INSERT INTO users (email, name, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING " USER_COLS};
/* The two reads below for every user the reads of one turn want, in one
 * statement (PostgreSQL: svc_read_row, db_query_row_keyed). */
const svc_sql SQL_USERS_BY_IDS = {"users by ids (the user-by-id reads of one turn, PostgreSQL)", NULL,
    "SELECT " USER_COLS " FROM users WHERE id = ANY($1::bigint[])", true, 1, {T("{1,2}")}};
const svc_sql SQL_USERS_PUBLIC_BY_IDS = {"users by ids, email hidden (the reads of one turn, PostgreSQL)", NULL,
    "SELECT id, NULL AS email, name, created_at FROM users WHERE id = ANY($1::bigint[])", true, 1, {T("{1,2}")}};
const svc_sql SQL_USER_BY_ID = {"user by id (GET /v1/users/{id}, /v1/me, GetUser: the caller's own)",
    "SELECT " USER_COLS " FROM users WHERE id = $1", NULL, true, 1, {I(1)}, .many = &SQL_USERS_BY_IDS};
/* The same row for a caller who may not see the email (anyone's GetUser,
 * the leaderboard's names): the column stays in its place, NULL, so the
 * one row decoder serves both, and the text is never copied out. */
const svc_sql SQL_USER_PUBLIC_BY_ID = {"user by id, email hidden (GET /v1/users/{id}, GetUser, leaderboard names)",
    "SELECT id, NULL AS email, name, created_at FROM users WHERE id = $1", NULL, true, 1, {I(1)},
    .many = &SQL_USERS_PUBLIC_BY_IDS};
const svc_sql SQL_USER_BY_EMAIL = {"user by email (GET /v1/users?email=)",
    "SELECT " USER_COLS " FROM users WHERE email = $1", NULL, true, 1, {T("user1@example.com")}};
const svc_sql SQL_USER_LOGIN = {"login", "SELECT id, password_hash FROM users WHERE email = $1", NULL, true, 1, {T("user1@example.com")}};
const svc_sql SQL_USER_SET_NAME = {"rename", "UPDATE users SET name = $1 WHERE id = $2", NULL, true, 2, {T("x"), I(1)}};
const svc_sql SQL_USER_SET_PASSWORD = {"password change", "UPDATE users SET password_hash = $1 WHERE id = $2", NULL, true, 2, {T("x"), I(1)}};
const svc_sql SQL_USERS_AFTER = {"users after an id (ListUsers)",
    "SELECT " USER_COLS " FROM users WHERE id > $1 ORDER BY id LIMIT $2", NULL, true, 2, {I(0), I(100)}};

/* ---- accounts and transfers ---- */

const svc_sql SQL_ACCOUNT_INSERT = {"open an account",
    "INSERT INTO accounts (user_id, currency, balance_cents, created_at) VALUES ($1, $2, 0, $3) RETURNING "
    ACCOUNT_COLS};
const svc_sql SQL_ACCOUNTS_BY_IDS = {"accounts by ids (the reads of one turn, PostgreSQL)", NULL,
    "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = ANY($1::bigint[])", true, 1, {T("{1,2}")}};
const svc_sql SQL_ACCOUNT_BY_ID = {"account by id", "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = $1", NULL, true, 1,
    {I(1)}, .many = &SQL_ACCOUNTS_BY_IDS};
const svc_sql SQL_ACCOUNTS_OF_USER = {"accounts of a user",
    "SELECT " ACCOUNT_COLS " FROM accounts WHERE user_id = $1 ORDER BY currency", NULL, true, 1, {I(1)}};
/* The owner check rides in the WHERE clause: no row means "not yours". */
const svc_sql SQL_ACCOUNT_DEPOSIT = {"deposit",
    "UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2 AND user_id = $3 RETURNING " ACCOUNT_COLS,
    NULL, true, 3, {I(1), I(1), I(1)}};
/* A transfer's first guarded UPDATE (in id order, so opposite transfers
 * cannot deadlock) carries every check: the payer owns the account and
 * has the funds, the payee exists in the same currency. */
const svc_sql SQL_TRANSFER_DEBIT_FIRST = {"transfer: guarded debit (from < to)",
    "UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2 AND user_id = $3 "
    "AND balance_cents >= $1 AND currency = (SELECT currency FROM accounts WHERE id = $4) RETURNING currency",
    NULL, true, 4, {I(1), I(1), I(1), I(2)}};
const svc_sql SQL_TRANSFER_CREDIT_FIRST = {"transfer: guarded credit (to < from)",
    "UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2 AND currency = "
    "(SELECT currency FROM accounts WHERE id = $3 AND user_id = $4 AND balance_cents >= $1) RETURNING currency",
    NULL, true, 4, {I(1), I(1), I(2), I(1)}};
const svc_sql SQL_TRANSFER_CREDIT = {"transfer: credit",
    "UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2", NULL, true, 2, {I(1), I(1)}};
const svc_sql SQL_TRANSFER_DEBIT = {"transfer: debit",
    "UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2 AND balance_cents >= $1", NULL, true, 2, {I(1), I(1)}};
/* PostgreSQL: the two rows are locked in id order (ORDER BY under FOR NO
 * KEY UPDATE: the lock follows the sort; SQL_TRANSFER_LOCK first), so
 * opposite transfers cannot deadlock whatever plan reads them.  Both legs
 * are then one UPDATE whose join carries every check — the payer owns the
 * account and has the funds, the payee exists in the same currency — so
 * either both rows change or neither; the ledger row comes from the
 * payer's leg, and only when both legs ran.  No row back: refused
 * (transfer_refusal says why; a single leg cannot happen, and if it did
 * the refusal read would find nothing wrong and roll it back). */
/* PostgreSQL: a whole transfer in one statement, sent with its BEGIN and
 * COMMIT in one round trip.  It locks both rows in id order, moves both
 * legs in one UPDATE whose join carries every check (owner, currency,
 * funds), writes the ledger row, and writes the idempotency record with
 * them.  The record's result is the transfer in the record codec with the
 * two fields only this statement knows spliced in: id $8 currency $9
 * (svc__enc_transfer_parts).  A record already under the key fails the
 * statement (unique violation) and nothing moves; a refusal matches no
 * row, writes nothing, and is worked out and recorded afterwards.
 *
 * It runs READ COMMITTED (the transaction begins so: tx_run's
 * read_committed), after SQL_TRANSFER_LOCK in the same round trip: the row locks are its whole
 * protection, and SERIALIZABLE's read tracking only added work and false
 * conflicts — its predicate locks on the accounts index pages (or the
 * whole table, when a small table is scanned) cancelled transfers between
 * disjoint accounts as pivots (test_svc
 * transfers_on_disjoint_accounts_never_retry, 2 runs in 7).  The locks
 * must be taken by a statement of their own: this statement's snapshot
 * is then taken with both rows locked, so what it reads is what it
 * updates.  With the lock only in the statement's own CTE, READ COMMITTED
 * let its balance check and its UPDATE see different versions of a row
 * another transaction changed meanwhile (a debit past zero, stopped only
 * by the CHECK constraint: transfer_beside_a_swinging_balance_never_
 * answers_empty, 85-90 answers in two hundred; pgbench reproduced it in
 * 10 tries). */
const svc_sql SQL_TRANSFER_MOVE = {"transfer: both legs, the ledger row and the record (PostgreSQL)", NULL,
    "WITH locked AS (SELECT id, user_id, currency, balance_cents FROM accounts WHERE id IN ($2, $3) "
    "ORDER BY id FOR NO KEY UPDATE), "
    "legs AS (UPDATE accounts a SET balance_cents = a.balance_cents + "
    "CASE WHEN a.id = $2 THEN -$1::bigint ELSE $1::bigint END "
    "FROM locked f JOIN locked t ON t.id = $3 AND t.currency = f.currency "
    "WHERE f.id = $2 AND f.user_id = $4 AND f.balance_cents >= $1 AND a.id IN ($2, $3) RETURNING a.id, a.currency), "
    "moved AS (INSERT INTO transfers (from_account_id, to_account_id, amount_cents, currency, created_at) "
    "SELECT $2, $3, $1, currency, $5::timestamptz FROM legs WHERE id = $2 AND (SELECT count(*) FROM legs) = 2 "
    "RETURNING id, currency), "
    "rec AS (INSERT INTO idempotency_records (user_id, key, fingerprint, outcome, code, result, created_at) "
    "SELECT $4, $6, $7, 'ok', '', id || $8::text || currency || $9::text, $5::timestamptz FROM moved) "
    "SELECT id, currency FROM moved",
    true, 9, {I(1), I(1), I(2), I(1), TM(0), T("k"), T("f"), T("|"), T("|")}};
/* PostgreSQL: a transfer's two accounts locked in id order, before its
 * SQL_TRANSFER_MOVE (which says why).  NO KEY UPDATE, as a payment's:
 * foreign key checks (KEY SHARE) of new rows that point at the accounts
 * pass. */
const svc_sql SQL_TRANSFER_LOCK = {"transfer: lock both accounts in id order (PostgreSQL)", NULL,
    "SELECT id FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR NO KEY UPDATE", true, 2, {I(1), I(2)}};
const svc_sql SQL_TRANSFER_PAIR = {"transfer refusal: both accounts",
    "SELECT id, user_id, currency, balance_cents FROM accounts WHERE id IN ($1, $2)", NULL, true, 2, {I(1), I(2)}};
const svc_sql SQL_TRANSFER_INSERT = {"record a transfer",
    "INSERT INTO transfers (from_account_id, to_account_id, amount_cents, currency, created_at) "
    "VALUES ($1, $2, $3, $4, $5) RETURNING id"};
const svc_sql SQL_TRANSFER_FOR_USER = {"transfer by id for its owner",
    "SELECT t.id, t.from_account_id, t.to_account_id, t.amount_cents, t.currency, t.created_at "
    "FROM transfers t JOIN accounts f ON f.id = t.from_account_id JOIN accounts o ON o.id = t.to_account_id "
    "WHERE t.id = $1 AND (f.user_id = $2 OR o.user_id = $2)",
    NULL, true, 2, {I(1), I(1)}};
/* Newest first across both directions: one keyset scan per direction
 * (each on its own index), merged. */
#define TRANSFER_SCAN(dir)                                                                                       \
    "SELECT * FROM (SELECT " TRANSFER_COLS " FROM transfers WHERE " dir " = $1 "                                 \
    "AND (created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4)"
const svc_sql SQL_TRANSFERS_OF_ACCOUNT = {"transfers of an account (both directions, keyset)",
    "SELECT * FROM (" TRANSFER_SCAN("from_account_id") " f UNION ALL " TRANSFER_SCAN("to_account_id")
    " t) u ORDER BY created_at DESC, id DESC LIMIT $4",
    NULL, true, 4, {I(1), TM(TOP_US), I(BIG), I(21)}};

/* ---- items ---- */

/* Every item the cache misses of one turn want, in one statement
 * (PostgreSQL: item_load, db_query_row_keyed). */
const svc_sql SQL_ITEMS_LIVE_BY_IDS = {"items by ids (the cache misses of one turn, PostgreSQL)", NULL,
    "SELECT " ITEM_COLS " FROM items WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL", true, 1, {T("{1,2}")}};
const svc_sql SQL_ITEM_LIVE = {"item by id (cache miss)",
    "SELECT " ITEM_COLS " FROM items WHERE id = $1 AND deleted_at IS NULL", NULL, true, 1, {I(1)},
    .many = &SQL_ITEMS_LIVE_BY_IDS};
const svc_sql SQL_ITEMS_PAGE = {"items page (keyset)",
    "SELECT " ITEM_COLS " FROM items WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2", NULL, true, 2, {I(0), I(21)}};
const svc_sql SQL_ITEMS_OF_SELLER = {"items of a seller (keyset)",
    "SELECT " ITEM_COLS " FROM items WHERE seller_id = $1 AND id > $2 AND deleted_at IS NULL ORDER BY id LIMIT $3",
    NULL, true, 3, {I(1), I(0), I(21)}};
/* Offset mode walks and drops rows by design (documented as slower,
 * capped at 10,000): not on explain's list. */
const svc_sql SQL_ITEMS_OFFSET = {"items page (offset mode)",
    "SELECT " ITEM_COLS " FROM items WHERE deleted_at IS NULL ORDER BY id LIMIT $1 OFFSET $2"};
const svc_sql SQL_ITEMS_OF_SELLER_OFFSET = {"items of a seller (offset mode)",
    "SELECT " ITEM_COLS " FROM items WHERE seller_id = $1 AND deleted_at IS NULL ORDER BY id LIMIT $2 OFFSET $3",
    NULL, true, 3, {I(1), I(21), I(100)}};
const svc_sql SQL_ITEM_INSERT = {"list an item",
    "INSERT INTO items (seller_id, sku, name, price_cents, currency, stock, version, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING " ITEM_COLS};
/* Import: a taken sku is one rejected item, not a failed transaction. */
const svc_sql SQL_ITEM_IMPORT = {"import an item",
    "INSERT INTO items (seller_id, sku, name, price_cents, currency, stock, version, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) ON CONFLICT (sku) WHERE deleted_at IS NULL DO NOTHING RETURNING id"};
/* PUT and PATCH: COALESCE keeps what was not sent; a change that changes
 * nothing leaves version alone (so PUT is idempotent). */
const svc_sql SQL_ITEM_UPDATE = {"update an item",
    "UPDATE items SET sku = COALESCE($1, sku), name = COALESCE($2, name), price_cents = COALESCE($3, price_cents), "
    "currency = COALESCE($4, currency), stock = COALESCE($5, stock), version = version + 1, updated_at = $6 "
    "WHERE id = $7 AND seller_id = $8 AND deleted_at IS NULL AND NOT (sku = COALESCE($1, sku) AND "
    "name = COALESCE($2, name) AND price_cents = COALESCE($3, price_cents) AND currency = COALESCE($4, currency) "
    "AND stock = COALESCE($5, stock))",
    NULL, true, 8, {T("s"), T("n"), I(1), T("USD"), I(1), TM(0), I(1), I(1)}};
const svc_sql SQL_ITEM_DELETE = {"delete an item",
    "UPDATE items SET deleted_at = $1, updated_at = $1, version = version + 1 "
    "WHERE id = $2 AND seller_id = $3 AND deleted_at IS NULL",
    NULL, true, 3, {TM(0), I(1), I(1)}};

/* ---- orders ---- */

/* PostgreSQL: an order is made READ COMMITTED (SERIALIZABLE cancelled
 * orders on disjoint items as pivots: test_svc
 * orders_on_disjoint_items_never_retry), so each item is locked as it is
 * read, in id order (orders.c), and nothing it read can change before the
 * order commits.  NO KEY UPDATE, as the reserve's own UPDATE takes: new
 * order lines' foreign key checks (KEY SHARE) pass. */
const svc_sql SQL_ITEM_FOR_ORDER = {"item price and stock for an order",
    "SELECT price_cents, currency, stock FROM items WHERE id = $1 AND deleted_at IS NULL",
    "SELECT price_cents, currency, stock FROM items WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE", true, 1,
    {I(1)}};
const svc_sql SQL_ITEM_RESERVE = {"reserve stock",
    "UPDATE items SET stock = stock - $1, version = version + 1, updated_at = $2 WHERE id = $3 AND stock >= $1",
    NULL, true, 3, {I(1), TM(0), I(1)}};
const svc_sql SQL_ORDER_INSERT = {"create an order",
    "INSERT INTO orders (customer_id, account_id, status, total_cents, currency, created_at, updated_at) "
    "VALUES ($1, $2, 'pending', $3, $4, $5, $5) RETURNING id"};
const svc_sql SQL_LINE_INSERT = {"order line",
    "INSERT INTO order_lines (order_id, line_no, item_id, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5)"};

/* An order's lines as one column, "item:qty:price,..." in line order, so a
 * page of orders is one query (one round trip) with its lines. */
#define LINES_LITE                                                                                               \
    "(SELECT group_concat(x, ',') FROM (SELECT item_id || ':' || quantity || ':' || unit_price_cents AS x "    \
    "FROM order_lines WHERE order_id = o.id ORDER BY line_no))"
#define LINES_PG                                                                                                 \
    "(SELECT string_agg(item_id || ':' || quantity || ':' || unit_price_cents, ',' ORDER BY line_no) "         \
    "FROM order_lines WHERE order_id = o.id)"
/* the order's own columns (its lines come packed after them) */
#define X__OCOL_ID(n) "o." #n
#define X__OCOL_INT(n) ", o." #n
#define X__OCOL_STATUS(n) ", o." #n
#define X__OCOL_CUR(n) ", o." #n
#define X__OCOL_LINES(n)
#define X__OCOL_TIME(n) ", o." #n "_at"
#define X__OCOL(kind, n) X__OCOL_##kind(n)
#define O_COLS SVC_ORDER_FIELDS(X__OCOL) ", "
#define BY_ID " FROM orders o WHERE o.id = $1"
#define ALL_ORDERS                                                                                               \
    " FROM orders o WHERE o.customer_id = $1 "                                                                   \
    "AND (o.created_at < $2 OR (o.created_at = $2 AND o.id < $3)) ORDER BY o.created_at DESC, o.id DESC LIMIT $4"
#define BY_STATUS                                                                                                \
    " FROM orders o WHERE o.customer_id = $1 AND o.status = $2 "                                                 \
    "AND (o.created_at < $3 OR (o.created_at = $3 AND o.id < $4)) ORDER BY o.created_at DESC, o.id DESC LIMIT $5"

const svc_sql SQL_ORDERS_BY_IDS = {"orders by ids with their lines (the reads of one turn, PostgreSQL)", NULL,
    "SELECT " O_COLS LINES_PG " FROM orders o WHERE o.id = ANY($1::bigint[])", true, 1, {T("{1,2}")}};
const svc_sql SQL_ORDER_BY_ID = {"order by id with its lines", "SELECT " O_COLS LINES_LITE BY_ID,
    "SELECT " O_COLS LINES_PG BY_ID, true, 1, {I(1)}, .many = &SQL_ORDERS_BY_IDS};
const svc_sql SQL_ORDERS_PAGE = {"orders of a user with their lines (keyset)",
    "SELECT " O_COLS LINES_LITE ALL_ORDERS, "SELECT " O_COLS LINES_PG ALL_ORDERS, true, 4,
    {I(1), TM(TOP_US), I(BIG), I(21)}};
const svc_sql SQL_ORDERS_PAGE_STATUS = {"orders of a user by status with their lines (keyset)",
    "SELECT " O_COLS LINES_LITE BY_STATUS, "SELECT " O_COLS LINES_PG BY_STATUS, true, 5,
    {I(1), T("paid"), TM(TOP_US), I(BIG), I(21)}};
const svc_sql SQL_ORDER_HEAD = {"order head (pay, cancel)",
    "SELECT customer_id, account_id, status, total_cents, currency FROM orders WHERE id = $1", NULL, true, 1, {I(1)}};
/* A payment on PostgreSQL runs READ COMMITTED, with row locks instead of
 * SERIALIZABLE's read tracking: every payment rewrites its order row (a
 * new entry in each of the orders indexes) and inserts a job and a
 * record, so two overlapping SERIALIZABLE payments had read index pages
 * the other wrote, and most of them were cancelled as pivots (bench pay:
 * 2.8 rollbacks per commit).  What SERIALIZABLE gave, the locks give:
 * the order row is locked before its status is read (one payer, and a
 * cancel waits), the accounts are locked in id order before any is
 * written (no deadlock between payments), the debit and credits are
 * guarded single statements, and the leaderboard epoch is read under a
 * shared advisory lock that a rebuild takes exclusively (leaderboard.c).
 * The transaction begins READ COMMITTED (tx_run's read_committed: the
 * level goes with the BEGIN, no statement of its own).  A transfer runs
 * so too (SQL_TRANSFER_MOVE), and so does a new order (SQL_ITEM_FOR_ORDER);
 * a cancel stays SERIALIZABLE. */
const svc_sql SQL_ORDER_HEAD_FOR_PAY = {"order head, locked (pay)",
    "SELECT customer_id, account_id, status, total_cents, currency FROM orders WHERE id = $1",
    "SELECT customer_id, account_id, status, total_cents, currency FROM orders WHERE id = $1 FOR UPDATE", true, 1,
    {I(1)}};
/* The buyer's account and the sellers' in the currency ($3: a BIGINT[]
 * literal of seller ids), locked in id order (PostgreSQL only).  NO KEY
 * UPDATE: it lets foreign key checks (KEY SHARE) of new orders through. */
const svc_sql SQL_PAY_LOCK_ACCOUNTS = {"pay: lock the accounts in id order (PostgreSQL)",
    "SELECT id FROM accounts WHERE id = $1 OR (currency = $2 AND user_id = ANY (CAST($3 AS BIGINT[]))) "
    "ORDER BY id FOR NO KEY UPDATE"};
const svc_sql SQL_ACCOUNT_DEBIT = {"pay: debit the buyer",
    "UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2 AND balance_cents >= $1", NULL, true, 2, {I(1), I(1)}};
/* Each line's seller by primary key (a subquery, not a join): with the
 * statistics of a young order_lines (85 lines an order, estimated) the
 * join was planned as a hash join over a sequential scan of items, on
 * every payment — most of PostgreSQL's time in bench pay. */
const svc_sql SQL_ORDER_SELLER_CREDITS = {"pay: sellers to credit",
    "SELECT (SELECT i.seller_id FROM items i WHERE i.id = l.item_id) AS seller_id, l.quantity * l.unit_price_cents "
    "FROM order_lines l WHERE l.order_id = $1 ORDER BY 1",
    NULL, true, 1, {I(1)}};
/* The seller's account in this currency, made if missing; repeated
 * sellers add up. */
const svc_sql SQL_ACCOUNT_CREDIT_UPSERT = {"pay: credit a seller",
    "INSERT INTO accounts (user_id, currency, balance_cents, created_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (user_id, currency) DO UPDATE SET balance_cents = accounts.balance_cents + excluded.balance_cents"};
const svc_sql SQL_ORDER_SET_STATUS = {"order status change",
    "UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3", NULL, true, 3, {T("paid"), TM(0), I(1)}};
const svc_sql SQL_JOB_INSERT = {"enqueue fulfilment", "INSERT INTO fulfilment_jobs (order_id, run_at) VALUES ($1, $2)"};
/* In item id order: a cancel restocks (locks) its items in the order an
 * order's creation locks them (SQL_ITEM_FOR_ORDER), so the two never wait
 * on each other in a cycle. */
const svc_sql SQL_ORDER_LINES = {"lines of an order (cancel)",
    "SELECT item_id, quantity FROM order_lines WHERE order_id = $1 ORDER BY item_id, line_no", NULL, true, 1, {I(1)}};
const svc_sql SQL_ITEM_RESTOCK = {"cancel: return stock",
    "UPDATE items SET stock = stock + $1, version = version + 1, updated_at = $2 WHERE id = $3", NULL, true, 3, {I(1), TM(0), I(1)}};
/* PostgreSQL: SKIP LOCKED lets every instance's worker take a different
 * job.  SQLite has one writer anyway. */
const svc_sql SQL_JOB_DUE = {"due fulfilment jobs",
    "SELECT id, order_id FROM fulfilment_jobs WHERE run_at <= $1 ORDER BY run_at LIMIT 1",
    "SELECT id, order_id FROM fulfilment_jobs WHERE run_at <= $1 ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    true, 1, {TM(0)}};
const svc_sql SQL_ORDER_SHIP = {"ship an order",
    "UPDATE orders SET status = 'shipped', updated_at = $1 WHERE id = $2 AND status = 'paid' RETURNING customer_id",
    NULL, true, 2, {TM(0), I(1)}};
const svc_sql SQL_JOB_DELETE = {"fulfilment done", "DELETE FROM fulfilment_jobs WHERE id = $1", NULL, true, 1, {I(1)}};
/* Rare (the cache lost the leaderboard): reads every paid order of the
 * currency.  Not on explain's list. */
/* Served by orders_currency_spent (covering). */
const svc_sql SQL_SPENDERS = {"leaderboard rebuild",
    "SELECT customer_id, SUM(total_cents) FROM orders WHERE currency = $1 AND status IN ('paid', 'shipped') "
    "GROUP BY customer_id",
    NULL, true, 1, {T("USD")}};
/* The leaderboard epoch of a currency (meta "lb_epoch:<currency>"; none
 * is epoch 0): a payment reads it, a rebuild bumps it, under the epoch's
 * lock on PostgreSQL and SERIALIZABLE on SQLite, so a payment is in a
 * rebuild's snapshot exactly when it read an older epoch (leaderboard.c). */
const svc_sql SQL_LB_EPOCH = {"pay: the leaderboard epoch", "SELECT value FROM meta WHERE key = $1", NULL, true, 1,
                              {T("lb_epoch:USD")}};
/* PostgreSQL: the epoch's advisory lock ($1 the meta key), shared by
 * payments (held to their COMMIT), exclusive for a rebuild, so a rebuild's
 * snapshot, taken after its bump, holds exactly the payments that read an
 * older epoch; a rebuild only tries for it, never queues (leaderboard.c). */
const svc_sql SQL_LB_EPOCH_SHARED = {"pay: the leaderboard epoch's lock, shared (PostgreSQL)",
    "SELECT pg_advisory_xact_lock_shared(hashtext($1))"};
const svc_sql SQL_LB_EPOCH_TRY_EXCLUSIVE = {"leaderboard rebuild: the epoch's lock, if free (PostgreSQL)",
    "SELECT pg_try_advisory_xact_lock(hashtext($1))"};
const svc_sql SQL_LB_EPOCH_BUMP = {"leaderboard rebuild: next epoch",
    "INSERT INTO meta (key, value) VALUES ($1, '1') "
    "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT) RETURNING value"};

/* ---- idempotency ---- */

/* On PostgreSQL the record is a plain INSERT sent with the COMMIT
 * (svc__tx_record): any record under the key fails it with a unique
 * violation.  That failure is the server's own, so it stops the COMMIT
 * behind it (no result has to be looked at before committing), and
 * svc__tx_run_op answers from the stored record; when that record has
 * expired (older than the retention, $3 = now - retention) and the purge
 * has not reached it yet, it deletes it with SQL_IDEM_EXPIRED and runs the
 * operation again.  (Deleting first on every write cost a statement each
 * time, and its plan, made while the table was small, scanned the table.) */
const svc_sql SQL_IDEM_EXPIRED = {"idempotency record expired under its key",
    "DELETE FROM idempotency_records WHERE user_id = $1 AND key = $2 AND created_at < $3", NULL, true, 3,
    {I(1), T("k"), TM(0)}};
const svc_sql SQL_IDEM_INSERT = {"idempotency record",
    "INSERT INTO idempotency_records (user_id, key, fingerprint, outcome, code, result, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"};
/* SQLite has no round trip to save: there the record stays one statement,
 * an upsert that replaces an expired record ($8 = now - retention) and
 * leaves a live one alone (no row affected: idem.c makes that the unique
 * violation). */
const svc_sql SQL_IDEM_UPSERT = {"idempotency record (SQLite)",
    "INSERT INTO idempotency_records (user_id, key, fingerprint, outcome, code, result, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, key) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, outcome = excluded.outcome, code = excluded.code, "
    "result = excluded.result, created_at = excluded.created_at WHERE idempotency_records.created_at < $8"};
/* Expired records are ignored ($3 = now - retention). */
const svc_sql SQL_IDEM_GET = {"idempotency record by key",
    "SELECT fingerprint, outcome, code, result FROM idempotency_records WHERE user_id = $1 AND key = $2 "
    "AND created_at >= $3",
    NULL, true, 3, {I(1), T("k"), TM(0)}};
/* One batch of the retention purge: the oldest expired records, found by
 * idempotency_records_created, deleted by primary key. */
const svc_sql SQL_IDEM_PURGE = {"idempotency retention purge (one batch)",
    "DELETE FROM idempotency_records WHERE (user_id, key) IN (SELECT user_id, key FROM idempotency_records "
    "WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
    NULL, true, 2, {TM(0), I(1000)}};

/* The read replica's lag probe (replica.c; PostgreSQL only, never run on
 * SQLite): WAL positions as byte offsets.  A replica that is not in
 * recovery (promoted, or a primary given as --db-read-url) has replayed
 * everything it has. */
const svc_sql SQL_WAL_PRIMARY = {"WAL position (primary)", "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"};
const svc_sql SQL_WAL_REPLAY = {"WAL replayed (replica)",
    "SELECT (COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) - '0/0'::pg_lsn)::bigint"};

const svc_sql *const svc_sql_all[] = {
    &SQL_USER_INSERT, &SQL_USER_BY_ID, &SQL_USER_PUBLIC_BY_ID, &SQL_USERS_BY_IDS, &SQL_USERS_PUBLIC_BY_IDS, &SQL_USER_BY_EMAIL, &SQL_USER_LOGIN, &SQL_USER_SET_NAME,
    &SQL_USER_SET_PASSWORD, &SQL_USERS_AFTER, &SQL_ACCOUNT_INSERT, &SQL_ACCOUNT_BY_ID, &SQL_ACCOUNTS_BY_IDS, &SQL_ACCOUNTS_OF_USER,
    &SQL_ACCOUNT_DEPOSIT, &SQL_TRANSFER_DEBIT_FIRST, &SQL_TRANSFER_CREDIT_FIRST, &SQL_TRANSFER_CREDIT,
    &SQL_TRANSFER_DEBIT, &SQL_TRANSFER_MOVE, &SQL_TRANSFER_LOCK, &SQL_TRANSFER_PAIR, &SQL_TRANSFER_INSERT, &SQL_TRANSFER_FOR_USER,
    &SQL_TRANSFERS_OF_ACCOUNT, &SQL_ITEM_LIVE, &SQL_ITEMS_LIVE_BY_IDS, &SQL_ITEMS_PAGE, &SQL_ITEMS_OF_SELLER,
    &SQL_ITEMS_OFFSET, &SQL_ITEMS_OF_SELLER_OFFSET, &SQL_ITEM_INSERT, &SQL_ITEM_IMPORT, &SQL_ITEM_UPDATE,
    &SQL_ITEM_DELETE, &SQL_ITEM_FOR_ORDER, &SQL_ITEM_RESERVE, &SQL_ORDER_INSERT, &SQL_LINE_INSERT,
    &SQL_ORDER_BY_ID, &SQL_ORDERS_BY_IDS, &SQL_ORDERS_PAGE, &SQL_ORDERS_PAGE_STATUS, &SQL_ORDER_HEAD, &SQL_ACCOUNT_DEBIT,
    &SQL_ORDER_SELLER_CREDITS, &SQL_ACCOUNT_CREDIT_UPSERT, &SQL_ORDER_SET_STATUS, &SQL_JOB_INSERT,
    &SQL_ORDER_LINES, &SQL_ITEM_RESTOCK, &SQL_JOB_DUE, &SQL_ORDER_SHIP, &SQL_JOB_DELETE, &SQL_SPENDERS,
    &SQL_LB_EPOCH, &SQL_LB_EPOCH_BUMP, &SQL_ORDER_HEAD_FOR_PAY, &SQL_PAY_LOCK_ACCOUNTS,
    &SQL_LB_EPOCH_SHARED, &SQL_LB_EPOCH_TRY_EXCLUSIVE,
    &SQL_IDEM_EXPIRED, &SQL_IDEM_INSERT, &SQL_IDEM_UPSERT, &SQL_IDEM_GET, &SQL_IDEM_PURGE, &SQL_WAL_PRIMARY, &SQL_WAL_REPLAY,
};
const int svc_sql_count = sizeof svc_sql_all / sizeof svc_sql_all[0];
