/* app/svc/error.c — the service error model (svc.h). */
#include "app/svc/svc.h"

#include <bazaar/log.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const kind_names[SVC_KIND__COUNT] = {
    [SVC_OK] = "ok",
    [SVC_INVALID] = "invalid",
    [SVC_UNAUTHENTICATED] = "unauthenticated",
    [SVC_NOT_FOUND] = "not_found",
    [SVC_ALREADY_EXISTS] = "already_exists",
    [SVC_CONFLICT] = "conflict",
    [SVC_UNPROCESSABLE] = "unprocessable",
    [SVC_RATE_LIMITED] = "rate_limited",
    [SVC_UNAVAILABLE] = "unavailable",
    [SVC_TIMEOUT] = "timeout",
    [SVC_CANCELLED] = "cancelled",
    [SVC_INTERNAL] = "internal",
    [SVC_TOO_LARGE] = "too_large",
    [SVC_UNSUPPORTED] = "unsupported",
    [SVC_UNREADABLE] = "unreadable",
};

const char *svc_kind_name(svc_kind k) { return k >= 0 && k < SVC_KIND__COUNT ? kind_names[k] : "internal"; }

void svc_err_clear(svc_err *e)
{
    e->kind = SVC_OK;
    e->code = "";
    e->msg[0] = '\0';
    e->retry_after_s = 0;
    e->nviol = 0;
}

int svc_vfail(svc_err *e, svc_kind kind, const char *code, const char *fmt, va_list ap)
{
    e->kind = kind;
    e->code = code;
    e->retry_after_s = 0;
    e->nviol = 0;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return -1;
}

int svc_fail(svc_err *e, svc_kind kind, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    svc_vfail(e, kind, code, fmt, ap);
    va_end(ap);
    return -1;
}

void svc_violate(svc_err *e, const char *field, const char *msg)
{
    if (e->kind != SVC_INVALID) {
        e->kind = SVC_INVALID;
        e->code = "validation_failed";
        snprintf(e->msg, sizeof e->msg, "the request has invalid fields");
        e->retry_after_s = 0;
        e->nviol = 0;
    }
    if (e->nviol >= SVC_MAX_VIOL)
        return;
    svc_viol *v = &e->viol[e->nviol++];
    snprintf(v->field, sizeof v->field, "%s", field);
    snprintf(v->msg, sizeof v->msg, "%s", msg);
}

int svc_fail_from(svc_err *e, const bz_error *be)
{
    switch (be->kind) {
    case BZ_ERR_SERIALIZATION:
    case BZ_ERR_DEADLOCK:
        return svc_fail(e, SVC_UNAVAILABLE, "contention", "the request conflicted with others too many times; retry it");
    case BZ_ERR_TIMEOUT: return svc_fail(e, SVC_TIMEOUT, "timeout", "the request ran out of time");
    case BZ_ERR_CANCELLED: return svc_fail(e, SVC_CANCELLED, "cancelled", "the request was cancelled");
    case BZ_ERR_CONNECTION:
    case BZ_ERR_UNAVAILABLE:
        svc_fail(e, SVC_UNAVAILABLE, "unavailable", "a backing service is unavailable; retry later");
        /* a circuit breaker's fast failure says when its next probe goes */
        if (be->retry_ms > 0)
            e->retry_after_s = (be->retry_ms + 999) / 1000;
        return -1;
    default:
        bz_log_err("request failed", BZ_F_STR("kind", bz_err_kind_name(be->kind)), BZ_F_STR("error", be->msg));
        return svc_fail(e, SVC_INTERNAL, "internal", "internal error");
    }
}
