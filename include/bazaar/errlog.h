/*
 * base/errlog.h — the last errors answered, for the admin console.
 *
 * A ring of BZ_ERRLOG_MAX entries: every REST problem response (status
 * ≥ 400, http/response.c) and every gRPC call ended with a code other
 * than OK (grpc/call.c).  Written only when an error is answered — a
 * lock and a few copies, nothing on a successful request — and read by
 * the console.  Strings are copied (truncated), so entries outlive the
 * request; they are shown escaped.
 */
#ifndef BZ_ERRLOG_H
#define BZ_ERRLOG_H

#include <stdint.h>

#pragma GCC visibility push(default)

#define BZ_ERRLOG_MAX 50

typedef struct bz_errlog_entry {
    int64_t time_us;     /* wall clock, microseconds since the epoch */
    char where[112];     /* route pattern ("GET /v1/items/{id}") or gRPC method path */
    int status;          /* HTTP status; 0 for gRPC */
    char code[40];       /* problem code or gRPC code name */
    char trace_id[33];
    char message[200];
} bz_errlog_entry;

/* Any argument may be NULL. */
void bz_errlog_add(const char *where, int status, const char *code, const char *trace_id, const char *message);
/* Copies up to max entries, newest first; returns how many.  Also the
 * count of errors ever added, if total is given. */
int bz_errlog_read(bz_errlog_entry *out, int max, int64_t *total);

#pragma GCC visibility pop
#endif
