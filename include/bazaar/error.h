/*
 * base/error.h — error values that carry a kind and a message.
 *
 * Low-level functions return 0 or a negative errno (libuv style).  Where a
 * caller needs to know *what* went wrong in words — a driver error, a
 * validation failure — it passes a bz_error that the callee fills.  The
 * kind is what code branches on; the message is for people and logs.  The
 * request path maps kinds to HTTP/gRPC status in one place (app/).
 */
#ifndef BZ_ERROR_H
#define BZ_ERROR_H

#include <stdbool.h>
#include <stddef.h>

#pragma GCC visibility push(default)

typedef enum bz_err_kind {
    BZ_OK = 0,
    BZ_ERR_INVALID,      /* bad input from the caller */
    BZ_ERR_NOT_FOUND,    /* the thing does not exist */
    BZ_ERR_CONFLICT,     /* state forbids it (unique key, wrong status) */
    BZ_ERR_UNIQUE,       /* unique constraint violated */
    BZ_ERR_FOREIGN_KEY,  /* foreign key violated */
    BZ_ERR_CHECK,        /* check constraint violated */
    BZ_ERR_SERIALIZATION,/* serialization failure: retry the transaction */
    BZ_ERR_DEADLOCK,     /* deadlock detected: retry the transaction */
    BZ_ERR_CONNECTION,   /* connection to a service broken or refused */
    BZ_ERR_UNAVAILABLE,  /* a dependency is down; fail fast */
    BZ_ERR_CANCELLED,    /* the context was cancelled */
    BZ_ERR_TIMEOUT,      /* the deadline passed */
    BZ_ERR_TOO_LARGE,    /* over a configured limit */
    BZ_ERR_NOMEM,        /* a bounded resource is full (e.g. noeviction cache) */
    BZ_ERR_IO,           /* a system call failed */
    BZ_ERR_INTERNAL,     /* a bug or an unexpected condition */
    BZ_ERR__COUNT
} bz_err_kind;

typedef struct bz_error {
    bz_err_kind kind;
    int code;       /* errno, SQLite result code, ... (0 if none) */
    char sqlstate[6]; /* PostgreSQL SQLSTATE, "" if none */
    char msg[256];  /* one line, NUL-terminated, truncated if longer */
    int retry_ms;   /* the callee's advice: retry after this long (0: none);
                       a circuit breaker's fast failure sets it */
} bz_error;

/* Fills err (if not NULL) and returns kind, so "return bz_err_set(...)"
 * works in functions returning a kind. */
bz_err_kind bz_err_set(bz_error *err, bz_err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void bz_err_clear(bz_error *err)
{
    if (err) {
        err->kind = BZ_OK;
        err->code = 0;
        err->sqlstate[0] = '\0';
        err->msg[0] = '\0';
        err->retry_ms = 0;
    }
}

/* Writes a one-line message (printf-style) into buf and returns -1, so a
 * parser can say "return bz_fail_msg(why, n, ...)" where it gives up. */
int bz_fail_msg(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A stable lower-case name for a kind ("not_found", "timeout", ...). */
const char *bz_err_kind_name(bz_err_kind kind);

/* Maps ECANCELED/ETIMEDOUT/ENOMEM/... (positive or negative) to a kind. */
bz_err_kind bz_err_from_errno(int e);

#pragma GCC visibility pop
#endif
