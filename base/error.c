/* base/error.c — see error.h. */
#include <bazaar/error.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

bz_err_kind bz_err_set(bz_error *err, bz_err_kind kind, const char *fmt, ...)
{
    if (!err)
        return kind;
    err->kind = kind;
    err->code = 0;
    err->sqlstate[0] = '\0';
    err->retry_ms = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return kind;
}

const char *bz_err_kind_name(bz_err_kind kind)
{
    static const char *const names[BZ_ERR__COUNT] = {
        [BZ_OK] = "ok",
        [BZ_ERR_INVALID] = "invalid",
        [BZ_ERR_NOT_FOUND] = "not_found",
        [BZ_ERR_CONFLICT] = "conflict",
        [BZ_ERR_UNIQUE] = "unique",
        [BZ_ERR_FOREIGN_KEY] = "foreign_key",
        [BZ_ERR_CHECK] = "check",
        [BZ_ERR_SERIALIZATION] = "serialization",
        [BZ_ERR_DEADLOCK] = "deadlock",
        [BZ_ERR_CONNECTION] = "connection",
        [BZ_ERR_UNAVAILABLE] = "unavailable",
        [BZ_ERR_CANCELLED] = "cancelled",
        [BZ_ERR_TIMEOUT] = "timeout",
        [BZ_ERR_TOO_LARGE] = "too_large",
        [BZ_ERR_NOMEM] = "nomem",
        [BZ_ERR_IO] = "io",
        [BZ_ERR_INTERNAL] = "internal",
    };
    if ((unsigned)kind >= BZ_ERR__COUNT)
        return "unknown";
    return names[kind];
}

bz_err_kind bz_err_from_errno(int e)
{
    switch (abs(e)) {
    case 0: return BZ_OK;
    case ECANCELED: return BZ_ERR_CANCELLED;
    case ETIMEDOUT: return BZ_ERR_TIMEOUT;
    case ENOMEM: return BZ_ERR_NOMEM;
    case EINVAL: return BZ_ERR_INVALID;
    case ENOENT: return BZ_ERR_NOT_FOUND;
    case EEXIST: return BZ_ERR_CONFLICT;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN: return BZ_ERR_CONNECTION;
    case E2BIG:
    case EMSGSIZE: return BZ_ERR_TOO_LARGE;
    default: return BZ_ERR_IO;
    }
}

int bz_fail_msg(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return -1;
}
