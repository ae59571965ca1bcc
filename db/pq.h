/*
 * db/pq.h — libpq, loaded when the first PostgreSQL database is opened.
 *
 * libpq drags in TLS, Kerberos and LDAP libraries (libssl, libcrypto,
 * gnutls, krb5, p11-kit...) whose relocation and constructors cost ~5 MB
 * of resident memory at start-up.  A server on SQLite never needs them,
 * so bazaar does not link libpq: db_open of a postgres:// URL calls
 * db__pq_load(), which dlopen()s libpq.so.5 once and fills the table
 * below.  Every PQ name used in db/ is a macro for its table entry, so the
 * driver code reads as plain libpq.
 */
#ifndef DB_PQ_H
#define DB_PQ_H

#include <bazaar/error.h>

#include <libpq-fe.h>

#define DB_PQ_FUNCS(X)                                                                                             \
    X(PQclear) X(PQfinish) X(PQgetvalue) X(PQstatus) X(PQresultStatus) X(PQresultErrorField) X(PQntuples)          \
    X(PQgetlength) X(PQexecPrepared) X(PQerrorMessage) X(PQconsumeInput) X(PQcancel) X(PQsocket)                  \
    X(PQsetnonblocking) X(PQsetNoticeProcessor) X(PQsendQueryPrepared) X(PQsendQuery) X(PQsendPrepare)            \
    X(PQprepare) X(PQnfields) X(PQisBusy) X(PQgetisnull) X(PQgetResult) X(PQgetCancel) X(PQfreemem)               \
    X(PQfreeCancel) X(PQflush) X(PQconninfoParse) X(PQconninfoFree) X(PQconnectdb) X(PQconnectStart)             \
    X(PQconnectPoll) X(PQcmdTuples) X(PQcmdStatus) X(PQsendQueryParams)          \
    X(PQenterPipelineMode) X(PQexitPipelineMode) X(PQpipelineSync) X(PQsslInUse) X(PQgetgssctx)

#define DB_PQ_FIELD(name) __typeof__(name) *name;
typedef struct db_pq_api {
    DB_PQ_FUNCS(DB_PQ_FIELD)
} db_pq_api;
#undef DB_PQ_FIELD

extern db_pq_api db__pq;

/* Loads libpq once (thread-safe).  0, or -1 with err set. */
int db__pq_load(bz_error *err);

#ifndef DB_PQ_IMPL
#define PQclear (db__pq.PQclear)
#define PQfinish (db__pq.PQfinish)
#define PQgetvalue (db__pq.PQgetvalue)
#define PQstatus (db__pq.PQstatus)
#define PQresultStatus (db__pq.PQresultStatus)
#define PQresultErrorField (db__pq.PQresultErrorField)
#define PQntuples (db__pq.PQntuples)
#define PQgetlength (db__pq.PQgetlength)
#define PQexecPrepared (db__pq.PQexecPrepared)
#define PQerrorMessage (db__pq.PQerrorMessage)
#define PQconsumeInput (db__pq.PQconsumeInput)
#define PQcancel (db__pq.PQcancel)
#define PQsocket (db__pq.PQsocket)
#define PQsetnonblocking (db__pq.PQsetnonblocking)
#define PQsetNoticeProcessor (db__pq.PQsetNoticeProcessor)
#define PQsendQueryPrepared (db__pq.PQsendQueryPrepared)
#define PQsendQuery (db__pq.PQsendQuery)
#define PQsendPrepare (db__pq.PQsendPrepare)
#define PQprepare (db__pq.PQprepare)
#define PQnfields (db__pq.PQnfields)
#define PQisBusy (db__pq.PQisBusy)
#define PQsslInUse (db__pq.PQsslInUse)
#define PQgetgssctx (db__pq.PQgetgssctx)
#define PQgetisnull (db__pq.PQgetisnull)
#define PQgetResult (db__pq.PQgetResult)
#define PQgetCancel (db__pq.PQgetCancel)
#define PQfreemem (db__pq.PQfreemem)
#define PQfreeCancel (db__pq.PQfreeCancel)
#define PQflush (db__pq.PQflush)
#define PQconninfoParse (db__pq.PQconninfoParse)
#define PQconninfoFree (db__pq.PQconninfoFree)
#define PQconnectdb (db__pq.PQconnectdb)
#define PQconnectStart (db__pq.PQconnectStart)
#define PQconnectPoll (db__pq.PQconnectPoll)
#define PQcmdTuples (db__pq.PQcmdTuples)
#define PQcmdStatus (db__pq.PQcmdStatus)
#define PQsendQueryParams (db__pq.PQsendQueryParams)
#define PQenterPipelineMode (db__pq.PQenterPipelineMode)
#define PQexitPipelineMode (db__pq.PQexitPipelineMode)
#define PQpipelineSync (db__pq.PQpipelineSync)
#endif

#endif
