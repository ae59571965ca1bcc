/*
 * app/svc/schema.c — the marketplace schema, one migration list, two dialects.
 *
 * Every index is here because a query needs it; the comment above each
 * names the query.  Primary keys serve the by-id reads.  `bazaar explain`
 * checks the hot queries against these on the configured database.
 *
 * Time columns: timestamptz on PostgreSQL, fixed-width RFC 3339 text with
 * microseconds on SQLite (sorts as the time it encodes).
 */
#include "app/svc/svc-private.h"

#include <bazaar/log.h>

#include <sodium.h>
#include <string.h>

#define SQLITE_V1                                                                                                  \
    "CREATE TABLE users (\n"                                                                                       \
    "  id INTEGER PRIMARY KEY,\n"                                                                                  \
    "  email TEXT NOT NULL,\n"                                                                                     \
    "  name TEXT NOT NULL,\n"                                                                                      \
    "  password_hash TEXT NOT NULL,\n"                                                                             \
    "  created_at TEXT NOT NULL\n"                                                                                 \
    ");\n"                                                                                                         \
    /* login, GET /v1/users?email= ; one user per (lower-cased) email */                                           \
    "CREATE UNIQUE INDEX users_email ON users (email);\n"                                                          \
    "CREATE TABLE accounts (\n"                                                                                    \
    "  id INTEGER PRIMARY KEY,\n"                                                                                  \
    "  user_id INTEGER NOT NULL REFERENCES users (id),\n"                                                          \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  balance_cents INTEGER NOT NULL CHECK (balance_cents >= 0),\n"                                               \
    "  created_at TEXT NOT NULL\n"                                                                                 \
    ");\n"                                                                                                         \
    /* one account per user and currency; GET /v1/accounts; seller credit on pay */                                \
    "CREATE UNIQUE INDEX accounts_user_currency ON accounts (user_id, currency);\n"                                \
    "CREATE TABLE transfers (\n"                                                                                   \
    "  id INTEGER PRIMARY KEY,\n"                                                                                  \
    "  from_account_id INTEGER NOT NULL REFERENCES accounts (id),\n"                                               \
    "  to_account_id INTEGER NOT NULL REFERENCES accounts (id),\n"                                                 \
    "  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),\n"                                                  \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  created_at TEXT NOT NULL\n"                                                                                 \
    ");\n"                                                                                                         \
    /* GET /v1/accounts/{id}/transfers: one keyset scan per direction */                                           \
    "CREATE INDEX transfers_from ON transfers (from_account_id, created_at, id);\n"                                \
    "CREATE INDEX transfers_to ON transfers (to_account_id, created_at, id);\n"                                    \
    "CREATE TABLE items (\n"                                                                                       \
    "  id INTEGER PRIMARY KEY,\n"                                                                                  \
    "  seller_id INTEGER NOT NULL REFERENCES users (id),\n"                                                        \
    "  sku TEXT NOT NULL,\n"                                                                                       \
    "  name TEXT NOT NULL,\n"                                                                                      \
    "  price_cents INTEGER NOT NULL CHECK (price_cents >= 0),\n"                                                   \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  stock INTEGER NOT NULL CHECK (stock >= 0),\n"                                                               \
    "  version INTEGER NOT NULL,\n"                                                                                \
    "  created_at TEXT NOT NULL,\n"                                                                                \
    "  updated_at TEXT NOT NULL,\n"                                                                                \
    "  deleted_at TEXT\n"                                                                                          \
    ");\n"                                                                                                         \
    /* sku unique among live items (a deleted item frees its sku) */                                               \
    "CREATE UNIQUE INDEX items_sku ON items (sku) WHERE deleted_at IS NULL;\n"                                     \
    /* GET /v1/items?seller_id= keyset by id */                                                                    \
    "CREATE INDEX items_seller ON items (seller_id, id);\n"                                                        \
    "CREATE TABLE orders (\n"                                                                                      \
    "  id INTEGER PRIMARY KEY,\n"                                                                                  \
    "  customer_id INTEGER NOT NULL REFERENCES users (id),\n"                                                      \
    "  account_id INTEGER NOT NULL REFERENCES accounts (id),\n"                                                    \
    "  status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),\n"                      \
    "  total_cents INTEGER NOT NULL,\n"                                                                            \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  created_at TEXT NOT NULL,\n"                                                                                \
    "  updated_at TEXT NOT NULL\n"                                                                                 \
    ");\n"                                                                                                         \
    /* GET /v1/users/{id}/orders?status= keyset on (created_at, id) */                                             \
    "CREATE INDEX orders_customer_status ON orders (customer_id, status, created_at, id);\n"                       \
    /* the same list unfiltered (left-prefix (customer_id, created_at)) */                                         \
    "CREATE INDEX orders_customer ON orders (customer_id, created_at, id);\n"                                      \
    "CREATE TABLE order_lines (\n"                                                                                 \
    "  order_id INTEGER NOT NULL REFERENCES orders (id),\n"                                                        \
    "  line_no INTEGER NOT NULL,\n"                                                                                \
    "  item_id INTEGER NOT NULL REFERENCES items (id),\n"                                                          \
    "  quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 1000),\n"                                           \
    "  unit_price_cents INTEGER NOT NULL,\n"                                                                       \
    "  PRIMARY KEY (order_id, line_no)\n"                                                                          \
    ") WITHOUT ROWID;\n"                                                                                           \
    "CREATE TABLE fulfilment_jobs (\n"                                                                             \
    "  id INTEGER PRIMARY KEY,\n"                                                                                  \
    "  order_id INTEGER NOT NULL REFERENCES orders (id),\n"                                                        \
    "  run_at TEXT NOT NULL,\n"                                                                                    \
    "  attempts INTEGER NOT NULL DEFAULT 0\n"                                                                      \
    ");\n"                                                                                                         \
    /* the worker's poll: due jobs in order */                                                                     \
    "CREATE INDEX fulfilment_jobs_run_at ON fulfilment_jobs (run_at);\n"                                           \
    "CREATE TABLE idempotency_keys (\n"                                                                            \
    "  user_id INTEGER NOT NULL,\n"                                                                                \
    "  key TEXT NOT NULL,\n"                                                                                       \
    "  fingerprint TEXT NOT NULL,\n"                                                                               \
    "  status INTEGER NOT NULL,\n"                                                                                 \
    "  body TEXT NOT NULL,\n"                                                                                      \
    "  location TEXT,\n"                                                                                           \
    "  created_at TEXT NOT NULL,\n"                                                                                \
    "  PRIMARY KEY (user_id, key)\n"                                                                               \
    ") WITHOUT ROWID;\n"                                                                                           \
    "CREATE TABLE meta (\n"                                                                                        \
    "  key TEXT PRIMARY KEY,\n"                                                                                    \
    "  value TEXT NOT NULL\n"                                                                                      \
    ") WITHOUT ROWID;\n"

#define PG_V1                                                                                                      \
    "CREATE TABLE users (\n"                                                                                       \
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"                                                  \
    "  email TEXT NOT NULL,\n"                                                                                     \
    "  name TEXT NOT NULL,\n"                                                                                      \
    "  password_hash TEXT NOT NULL,\n"                                                                             \
    "  created_at TIMESTAMPTZ NOT NULL\n"                                                                          \
    ");\n"                                                                                                         \
    /* login; GET /v1/users?email= as an index-only scan (INCLUDE) */                                              \
    "CREATE UNIQUE INDEX users_email ON users (email) INCLUDE (id, name, created_at);\n"                           \
    "CREATE TABLE accounts (\n"                                                                                    \
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"                                                  \
    "  user_id BIGINT NOT NULL REFERENCES users (id),\n"                                                           \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  balance_cents BIGINT NOT NULL CHECK (balance_cents >= 0),\n"                                                \
    "  created_at TIMESTAMPTZ NOT NULL\n"                                                                          \
    ");\n"                                                                                                         \
    "CREATE UNIQUE INDEX accounts_user_currency ON accounts (user_id, currency);\n"                                \
    "CREATE TABLE transfers (\n"                                                                                   \
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"                                                  \
    "  from_account_id BIGINT NOT NULL REFERENCES accounts (id),\n"                                                \
    "  to_account_id BIGINT NOT NULL REFERENCES accounts (id),\n"                                                  \
    "  amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),\n"                                                   \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  created_at TIMESTAMPTZ NOT NULL\n"                                                                          \
    ");\n"                                                                                                         \
    "CREATE INDEX transfers_from ON transfers (from_account_id, created_at, id);\n"                                \
    "CREATE INDEX transfers_to ON transfers (to_account_id, created_at, id);\n"                                    \
    "CREATE TABLE items (\n"                                                                                       \
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"                                                  \
    "  seller_id BIGINT NOT NULL REFERENCES users (id),\n"                                                         \
    "  sku TEXT NOT NULL,\n"                                                                                       \
    "  name TEXT NOT NULL,\n"                                                                                      \
    "  price_cents BIGINT NOT NULL CHECK (price_cents >= 0),\n"                                                    \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  stock BIGINT NOT NULL CHECK (stock >= 0),\n"                                                                \
    "  version BIGINT NOT NULL,\n"                                                                                 \
    "  created_at TIMESTAMPTZ NOT NULL,\n"                                                                         \
    "  updated_at TIMESTAMPTZ NOT NULL,\n"                                                                         \
    "  deleted_at TIMESTAMPTZ\n"                                                                                   \
    ");\n"                                                                                                         \
    "CREATE UNIQUE INDEX items_sku ON items (sku) WHERE deleted_at IS NULL;\n"                                     \
    "CREATE INDEX items_seller ON items (seller_id, id);\n"                                                        \
    "CREATE TABLE orders (\n"                                                                                      \
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"                                                  \
    "  customer_id BIGINT NOT NULL REFERENCES users (id),\n"                                                       \
    "  account_id BIGINT NOT NULL REFERENCES accounts (id),\n"                                                     \
    "  status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),\n"                      \
    "  total_cents BIGINT NOT NULL,\n"                                                                             \
    "  currency TEXT NOT NULL,\n"                                                                                  \
    "  created_at TIMESTAMPTZ NOT NULL,\n"                                                                         \
    "  updated_at TIMESTAMPTZ NOT NULL\n"                                                                          \
    ");\n"                                                                                                         \
    "CREATE INDEX orders_customer_status ON orders (customer_id, status, created_at, id);\n"                       \
    "CREATE INDEX orders_customer ON orders (customer_id, created_at, id);\n"                                      \
    "CREATE TABLE order_lines (\n"                                                                                 \
    "  order_id BIGINT NOT NULL REFERENCES orders (id),\n"                                                         \
    "  line_no INT NOT NULL,\n"                                                                                    \
    "  item_id BIGINT NOT NULL REFERENCES items (id),\n"                                                           \
    "  quantity INT NOT NULL CHECK (quantity BETWEEN 1 AND 1000),\n"                                               \
    "  unit_price_cents BIGINT NOT NULL,\n"                                                                        \
    "  PRIMARY KEY (order_id, line_no)\n"                                                                          \
    ");\n"                                                                                                         \
    "CREATE TABLE fulfilment_jobs (\n"                                                                             \
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"                                                  \
    "  order_id BIGINT NOT NULL REFERENCES orders (id),\n"                                                         \
    "  run_at TIMESTAMPTZ NOT NULL,\n"                                                                             \
    "  attempts INT NOT NULL DEFAULT 0\n"                                                                          \
    ");\n"                                                                                                         \
    "CREATE INDEX fulfilment_jobs_run_at ON fulfilment_jobs (run_at);\n"                                           \
    "CREATE TABLE idempotency_keys (\n"                                                                            \
    "  user_id BIGINT NOT NULL,\n"                                                                                 \
    "  key TEXT NOT NULL,\n"                                                                                       \
    "  fingerprint TEXT NOT NULL,\n"                                                                               \
    "  status INT NOT NULL,\n"                                                                                     \
    "  body TEXT NOT NULL,\n"                                                                                      \
    "  location TEXT,\n"                                                                                           \
    "  created_at TIMESTAMPTZ NOT NULL,\n"                                                                         \
    "  PRIMARY KEY (user_id, key)\n"                                                                               \
    ");\n"                                                                                                         \
    "CREATE TABLE meta (\n"                                                                                        \
    "  key TEXT PRIMARY KEY,\n"                                                                                    \
    "  value TEXT NOT NULL\n"                                                                                      \
    ");\n"

/* v2: idempotency records become transport-neutral — the operation's
 * outcome ("ok" or a kind, a code) and its result in the record codec,
 * instead of an HTTP status, body and Location.  No release stored v1
 * records, so the old table is dropped rather than converted. */
#define SQLITE_V2                                                                                                  \
    "DROP TABLE idempotency_keys;\n"                                                                               \
    "CREATE TABLE idempotency_records (\n"                                                                         \
    "  user_id INTEGER NOT NULL,\n"                                                                                \
    "  key TEXT NOT NULL,\n"                                                                                       \
    "  fingerprint TEXT NOT NULL,\n"                                                                               \
    "  outcome TEXT NOT NULL,\n"                                                                                   \
    "  code TEXT NOT NULL,\n"                                                                                      \
    "  result TEXT NOT NULL,\n"                                                                                    \
    "  created_at TEXT NOT NULL,\n"                                                                                \
    "  PRIMARY KEY (user_id, key)\n"                                                                               \
    ");\n"
#define PG_V2                                                                                                      \
    "DROP TABLE idempotency_keys;\n"                                                                               \
    "CREATE TABLE idempotency_records (\n"                                                                         \
    "  user_id BIGINT NOT NULL,\n"                                                                                 \
    "  key TEXT NOT NULL,\n"                                                                                       \
    "  fingerprint TEXT NOT NULL,\n"                                                                               \
    "  outcome TEXT NOT NULL,\n"                                                                                   \
    "  code TEXT NOT NULL,\n"                                                                                      \
    "  result TEXT NOT NULL,\n"                                                                                    \
    "  created_at TIMESTAMPTZ NOT NULL,\n"                                                                         \
    "  PRIMARY KEY (user_id, key)\n"                                                                               \
    ");\n"

/* v3: indexes for what background work and rebuilds read.
 * - idempotency_records_created: the retention purge (SQL_IDEM_PURGE)
 *   finds expired records oldest first without reading the table.
 * - orders_currency_spent: the leaderboard rebuild (SQL_SPENDERS) reads
 *   one currency's paid and shipped orders from the index alone
 *   (covering: customer_id and total_cents are in it) instead of
 *   scanning every order. */
#define V3                                                                                                         \
    "CREATE INDEX idempotency_records_created ON idempotency_records (created_at);\n"                               \
    "CREATE INDEX orders_currency_spent ON orders (currency, status, customer_id, total_cents);\n"

static const db_migration migrations[] = {
    {1, "marketplace", SQLITE_V1, PG_V1},
    {2, "transport-neutral idempotency records", SQLITE_V2, PG_V2},
    {3, "indexes for the idempotency purge and the leaderboard rebuild", V3, V3},
};

int svc_schema_version(void) { return migrations[sizeof migrations / sizeof migrations[0] - 1].version; }

int svc_prepare_db(svc *s, rt_ctx *ctx, bz_error *err)
{
    int applied = 0;
    if (db_migrate(s->db, ctx, migrations, (int)(sizeof migrations / sizeof migrations[0]), &applied, err) != 0)
        return -1;
    if (applied)
        bz_log_info("migrated", BZ_F_INT("applied", applied));
    /* The cursor key lives in the database so every instance sharing it
     * accepts the others' cursors; the first instance to start makes it. */
    uint8_t k[32];
    char hex[65];
    randombytes_buf(k, sizeof k);
    sodium_bin2hex(hex, sizeof hex, k, sizeof k);
    db_arg ins[] = {DB_TEXT("cursor_key"), DB_TEXT(hex)};
    if (db_exec(DB(s->db), ctx, "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", ins,
                2, NULL, err) != 0)
        return -1;
    db_rows *rows = NULL;
    db_arg sel[] = {DB_TEXT("cursor_key")};
    if (db_query_row(DB(s->db), ctx, "SELECT value FROM meta WHERE key = $1", sel, 1, &rows, err) != 0)
        return -1;
    size_t n;
    const char *v = db_col_text(rows, 0, &n);
    size_t got = 0;
    uint8_t key[sizeof s->cursor_key];
    int rc = sodium_hex2bin(key, sizeof key, v, n, NULL, &got, NULL);
    db_rows_close(rows);
    if (rc != 0 || got != sizeof key)
        return bz_err_set(err, BZ_ERR_INTERNAL, "meta.cursor_key is corrupt"), -1;
    svc__cursor_key_set(s, key);
    sodium_memzero(key, sizeof key);
    return 0;
}
