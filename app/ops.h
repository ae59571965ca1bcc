/*
 * app/ops.h — the operation index: one entry per row of app/ops.def, for
 * what looks at operations across transports (the coverage test in
 * tests/unit/test_ops.c, docs).  The adapters build their own tables from
 * the same rows (app/rest/routes.c, app/grpc/methods.c).
 */
#ifndef APP_OPS_H
#define APP_OPS_H

#include <stdbool.h>

typedef enum { APP_IDEM_NO, APP_IDEM_OPT, APP_IDEM_REQ } app_idem;

typedef struct app_op {
    const char *id;          /* "deposit" */
    const char *svc_fn;      /* "svc_deposit": the one service function both transports call */
    void (*svc_addr)(void);  /* the same, so a row naming no function does not build */
    bool auth;
    app_idem idem;
    const char *rest;        /* "POST /v1/accounts/{id}/deposits", or NULL */
    const char *grpc;        /* "/bazaar.v1.AccountService/Deposit", or NULL */
} app_op;

extern const app_op app_ops[];
extern const int app_nops;

#endif
