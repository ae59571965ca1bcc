/* tests/unit/test_svc.c — the transport-free service layer (app/svc/) on
 * SQLite in a temporary file and the in-process cache: money moves and is
 * conserved (also under concurrent transfers), the order state machine and
 * its events, idempotent replay and key reuse, field violations from the
 * one limits table, streamed user lists and cancellation, item import, and
 * opaque cursors.
 *
 * Each test body runs as the main coroutine of its own rt_run (one loop)
 * over a fresh database.  A failed check inside the runtime does not
 * longjmp out of the coroutine into cmocka: it records the message, jumps
 * back to the start of the same coroutine (which then closes the fixture)
 * and the test fails once rt_run has returned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "app/svc/limits.h"
#include "app/svc/svc.h"

#include "cache/cache-private.h" /* the memory backend's key count */

#include "base/clock.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- failing from inside the runtime ---- */

static char g_fail[2048];
static jmp_buf g_jb;
static rt_coro *g_main; /* the test body's coroutine: the only one that may jump */

static void failf(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void failf(const char *file, int line, const char *fmt, ...)
{
    if (!g_fail[0]) {
        int k = snprintf(g_fail, sizeof g_fail, "%s:%d: ", file, line);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_fail + k, sizeof g_fail - (size_t)k, fmt, ap);
        va_end(ap);
    }
    /* other coroutines (workers) only record: their caller goes on */
    if (rt_self() == g_main)
        longjmp(g_jb, 1);
}

/* A failure a worker coroutine recorded, raised in the body. */
static void raise_recorded(void)
{
    if (g_fail[0])
        longjmp(g_jb, 1);
}

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            failf(__FILE__, __LINE__, "CHECK(%s) failed", #c);                                               \
    } while (0)

#define CHECK_INT(a, b)                                                                                      \
    do {                                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                  \
        if (a_ != b_)                                                                                        \
            failf(__FILE__, __LINE__, "%s is %lld, expected %s = %lld", #a, a_, #b, b_);                     \
    } while (0)

#define CHECK_STR(a, b)                                                                                      \
    do {                                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                                     \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                               \
            failf(__FILE__, __LINE__, "%s is \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)",               \
                  b_ ? b_ : "(null)");                                                                       \
    } while (0)

/* A call that must succeed; shows the svc_err named e of the caller. */
#define OK(call)                                                                                             \
    do {                                                                                                     \
        svc_err_clear(&e);                                                                                   \
        int r_ = (call);                                                                                     \
        if (r_ != 0)                                                                                         \
            failf(__FILE__, __LINE__, "%s -> %d: %s/%s: %s", #call, r_, svc_kind_name(e.kind),               \
                  e.code ? e.code : "", e.msg);                                                              \
    } while (0)

/* A call that must be refused with this kind and code. */
#define REFUSED(call, k, cd)                                                                                 \
    do {                                                                                                     \
        svc_err_clear(&e);                                                                                   \
        int r_ = (call);                                                                                     \
        if (r_ != -1 || e.kind != (k) || !e.code || strcmp(e.code, (cd)) != 0)                               \
            failf(__FILE__, __LINE__, "%s -> %d %s/%s (%s), expected -1 %s/%s", #call, r_,                   \
                  svc_kind_name(e.kind), e.code ? e.code : "", e.msg, svc_kind_name(k), (cd));               \
    } while (0)

/* ---- the fixture: a fresh database, a memory cache, the service ---- */

typedef struct fx {
    bz_config cfg;
    db *d;
    cache *c;
    svc *s;
    rt_ctx ctx; /* every call of a test: generous, but bounded */
    bool ctx_on;
    bz_arena arena; /* results of the body's calls */
    char path[64];
    svc_watch *watch; /* closed by the fixture, even after a failure */
    int keyn;
} fx;

static fx F;

static void fx_open(void)
{
    memset(&F, 0, sizeof F);
    bz_arena_init(&F.arena, 0);
    char a0[] = "bazaar", a1[] = "serve";
    char *argv[] = {a0, a1, NULL};
    char err[256];
    if (bz_config_parse(&F.cfg, 2, argv, err, sizeof err) != 0)
        failf(__FILE__, __LINE__, "bz_config_parse: %s", err);
    F.cfg.request_timeout_ns = 10 * BZ_NS_PER_S;
    F.cfg.write_timeout_ns = 10 * BZ_NS_PER_S;
    F.cfg.cache_ttl_ns = 60 * BZ_NS_PER_S;
    F.cfg.rate_limit.count = 0;
    F.cfg.login_rate_limit.count = 0;
    snprintf(F.path, sizeof F.path, "/tmp/bz-svc-XXXXXX.db");
    int fd = mkstemps(F.path, 3);
    if (fd < 0)
        failf(__FILE__, __LINE__, "mkstemps: %s", strerror(errno));
    close(fd);
    snprintf(F.cfg.db, sizeof F.cfg.db, "sqlite://%s", F.path);
    snprintf(F.cfg.cache, sizeof F.cfg.cache, "memory");
    bz_error be;
    db_opts o = {.max_open = 4, .max_idle = 4};
    F.d = db_open(F.cfg.db, &o, &be);
    if (!F.d)
        failf(__FILE__, __LINE__, "db_open(%s): %s", F.cfg.db, be.msg);
    cache_opts co = {0};
    F.c = cache_open("memory", &co, &be);
    if (!F.c)
        failf(__FILE__, __LINE__, "cache_open: %s", be.msg);
    rt_ctx_init_timeout(&F.ctx, NULL, 60 * BZ_NS_PER_S);
    F.ctx_on = true;
    F.s = svc_open(&F.cfg, F.d, F.c, &F.ctx, &be);
    if (!F.s)
        failf(__FILE__, __LINE__, "svc_open: %s", be.msg);
}

static void fx_close(void)
{
    if (F.watch)
        svc_watch_close(F.watch);
    if (F.s) {
        svc_stop_worker(F.s); /* a no-op unless started */
        svc_close(F.s);
    }
    if (F.c)
        cache_close(F.c);
    if (F.d)
        db_close(F.d);
    if (F.ctx_on)
        rt_ctx_release(&F.ctx);
    bz_arena_free(&F.arena);
    if (F.path[0]) {
        char p[80];
        unlink(F.path);
        snprintf(p, sizeof p, "%s-wal", F.path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", F.path);
        unlink(p);
        snprintf(p, sizeof p, "%s-journal", F.path);
        unlink(p);
    }
    memset(&F, 0, sizeof F);
}

typedef void (*body_fn)(void);

static void in_rt(void *p)
{
    body_fn body = (body_fn)p;
    g_main = rt_self();
    if (setjmp(g_jb) == 0) {
        fx_open();
        body();
    }
    g_main = NULL; /* from here on a failed check only records */
    fx_close();
}

static void run(body_fn body)
{
    g_fail[0] = '\0';
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, in_rt, (void *)body), 0);
    if (g_fail[0])
        fail_msg("%s", g_fail);
}

/* ---- helpers ---- */

#define S(x) SVC_STR_SET((x), strlen(x))
#define I(x) SVC_INT_SET(x)
#define STR_BAD ((svc_str){NULL, 0, SVC_BAD})
#define INT_ABSENT ((svc_int){0, SVC_ABSENT})

static svc_principal who(int64_t uid)
{
    svc_principal p;
    memset(&p, 0, sizeof p);
    p.user_id = uid;
    return p;
}

static svc_call call(const svc_principal *p)
{
    return SVC_CALL(&F.ctx, &F.arena, p);
}

/* A call with a fresh Idempotency-Key (unique within the test). */
static svc_call kcall(const svc_principal *p)
{
    svc_call c = call(p);
    const char *k = bz_arena_printf(&F.arena, "key-%d", ++F.keyn);
    c.idem_key = k;
    c.idem_key_len = strlen(k);
    return c;
}

static svc_call key_call(const svc_principal *p, const char *key)
{
    svc_call c = call(p);
    c.idem_key = key;
    c.idem_key_len = strlen(key);
    return c;
}

static int64_t signup_pw(const char *email, const char *name, const char *pw)
{
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_user_in in = {S(email), S(name), S(pw)};
    svc_user u;
    svc_err e;
    OK(svc_user_create(F.s, &c, &in, &u, &e));
    CHECK(u.id > 0);
    CHECK_STR(u.name, name);
    char low[256];
    size_t n = strlen(email);
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)(email[i] >= 'A' && email[i] <= 'Z' ? email[i] + 32 : email[i]);
    CHECK_STR(u.email, low); /* shown to whoever signed up, normalised */
    return u.id;
}

static int64_t signup(const char *email, const char *name)
{
    return signup_pw(email, name, "password123");
}

static int64_t open_account(const svc_principal *p, const char *cur)
{
    svc_call c = call(p);
    svc_account a;
    svc_err e;
    OK(svc_account_create(F.s, &c, S(cur), &a, &e));
    CHECK(a.id > 0);
    CHECK_INT(a.user_id, p->user_id);
    CHECK_STR(a.currency, cur);
    CHECK_INT(a.balance_cents, 0);
    return a.id;
}

static int64_t balance(const svc_principal *p, int64_t acct)
{
    svc_call c = call(p);
    svc_account a;
    svc_err e;
    OK(svc_account_get(F.s, &c, acct, &a, &e));
    CHECK_INT(a.id, acct);
    return a.balance_cents;
}

/* Deposits with a fresh key; returns the new balance. */
static int64_t deposit(const svc_principal *p, int64_t acct, int64_t cents)
{
    svc_call c = kcall(p);
    svc_deposit_in in = {acct, I(cents)};
    svc_account a;
    svc_err e;
    OK(svc_deposit(F.s, &c, &in, &a, &e));
    CHECK_INT(a.id, acct);
    CHECK(!c.replayed);
    return a.balance_cents;
}

/* A transfer with a fresh key: the operation's result (0 / -1, *e). */
static int xfer(const svc_principal *p, int64_t from, int64_t to, int64_t cents, svc_transfer *t, svc_err *e)
{
    svc_call c = kcall(p);
    svc_transfer_in in = {I(from), I(to), I(cents)};
    memset(t, 0, sizeof *t);
    return svc_transfer_create(F.s, &c, &in, t, e);
}

static int count_viol(const svc_err *e, const char *field)
{
    int k = 0;
    for (int i = 0; i < e->nviol; i++)
        if (!strcmp(e->viol[i].field, field))
            k++;
    return k;
}

#define CHECK_VIOLS(e, ...)                                                                                  \
    do {                                                                                                     \
        const char *want_[] = {__VA_ARGS__};                                                                 \
        int nw_ = (int)(sizeof want_ / sizeof want_[0]);                                                     \
        if ((e).kind != SVC_INVALID || !(e).code || strcmp((e).code, "validation_failed") != 0)              \
            failf(__FILE__, __LINE__, "expected validation_failed, got %s/%s", svc_kind_name((e).kind),      \
                  (e).code ? (e).code : "");                                                                 \
        char got_[512] = "";                                                                                 \
        for (int i_ = 0; i_ < (e).nviol; i_++) {                                                             \
            strncat(got_, (e).viol[i_].field, sizeof got_ - strlen(got_) - 1);                               \
            strncat(got_, " ", sizeof got_ - strlen(got_) - 1);                                              \
        }                                                                                                    \
        if ((e).nviol != nw_)                                                                                \
            failf(__FILE__, __LINE__, "%d violations (%s), expected %d", (e).nviol, got_, nw_);              \
        for (int i_ = 0; i_ < nw_; i_++)                                                                     \
            if (count_viol(&(e), want_[i_]) != 1)                                                            \
                failf(__FILE__, __LINE__, "violation \"%s\" appears %d times (got: %s)", want_[i_],          \
                      count_viol(&(e), want_[i_]), got_);                                                    \
    } while (0)

static void line(svc_order_in *in, int i, int64_t item, int64_t qty)
{
    in->lines[i].item_id = I(item);
    in->lines[i].quantity = I(qty);
}

static svc_order_in order_in(int64_t account, int nlines)
{
    svc_order_in in;
    memset(&in, 0, sizeof in);
    in.account_id = I(account);
    in.lines_st = SVC_SET;
    in.nlines = nlines;
    in.nlines_sent = nlines;
    return in;
}

static svc_item_in item_in(const char *sku, const char *name, int64_t price, const char *cur, int64_t stock)
{
    svc_item_in in = {S(sku), S(name), S(cur), I(price), I(stock)};
    return in;
}

static svc_item get_item(int64_t id, bool *hit)
{
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_item it;
    svc_err e;
    OK(svc_item_get(F.s, &c, id, &it, hit, &e));
    CHECK_INT(it.id, id);
    return it;
}

static svc_order get_order(const svc_principal *p, int64_t id)
{
    svc_call c = call(p);
    svc_order o;
    svc_err e;
    OK(svc_order_get(F.s, &c, id, &o, &e));
    CHECK_INT(o.id, id);
    return o;
}

/* =========================================================================================
 * 1. transfers: refusals, and money is conserved (also under concurrency)
 * ========================================================================================= */

typedef struct {
    int idx;
    int64_t ua, ub, a1, b1;
    int64_t moved_ab, moved_ba; /* successful amounts, each way */
    int ok, refused;
    rt_wg *wg;
} xfer_worker;

#define NWORKERS 6
#define NXFERS 12

static void xfer_worker_fn(void *p)
{
    xfer_worker *w = p;
    bz_arena a;
    bz_arena_init(&a, 0);
    for (int i = 0; i < NXFERS; i++) {
        bool ab = (i + w->idx) % 2 == 0;
        int64_t amount = 100 + (w->idx * 37 + i * 953) % 4000;
        svc_principal pr = who(ab ? w->ua : w->ub);
        char key[48];
        snprintf(key, sizeof key, "conc-%d-%d", w->idx, i);
        svc_call c = SVC_CALL(&F.ctx, &a, &pr);
        c.idem_key = key;
        c.idem_key_len = strlen(key);
        svc_transfer_in in = {I(ab ? w->a1 : w->b1), I(ab ? w->b1 : w->a1), I(amount)};
        svc_transfer t;
        svc_err e;
        svc_err_clear(&e); /* the caller hands e in cleared */
        int rc = svc_transfer_create(F.s, &c, &in, &t, &e);
        if (rc == 0) {
            if (t.amount_cents != amount || t.from_account_id != in.from_account_id.v || t.id <= 0 ||
                c.replayed)
                failf(__FILE__, __LINE__, "worker %d transfer %d: wrong result (amount %lld, id %lld)",
                      w->idx, i, (long long)t.amount_cents, (long long)t.id);
            if (ab)
                w->moved_ab += amount;
            else
                w->moved_ba += amount;
            w->ok++;
        } else if (e.kind == SVC_CONFLICT && !strcmp(e.code, "insufficient_funds")) {
            w->refused++;
        } else {
            failf(__FILE__, __LINE__, "worker %d transfer %d: %s/%s: %s", w->idx, i, svc_kind_name(e.kind),
                  e.code, e.msg);
        }
        bz_arena_reset(&a);
    }
    bz_arena_free(&a);
    rt_wg_done(w->wg);
}

static void transfers_body(void)
{
    svc_err e;
    svc_transfer t;
    int64_t ua = signup("alice@example.com", "Alice"), ub = signup("Bob@Example.COM", "Bob");
    svc_principal pa = who(ua), pb = who(ub);
    int64_t a1 = open_account(&pa, "USD"), a2 = open_account(&pa, "EUR"), b1 = open_account(&pb, "USD");
    CHECK(a1 < b1); /* so both guarded-update orders are exercised below */

    /* one account per currency */
    {
        svc_call c = call(&pa);
        svc_account acct;
        REFUSED(svc_account_create(F.s, &c, S("USD"), &acct, &e), SVC_ALREADY_EXISTS, "account_exists");
        REFUSED(svc_account_create(F.s, &c, S("usd"), &acct, &e), SVC_INVALID, "validation_failed");
        CHECK_VIOLS(e, "currency");
    }

    /* deposits need a key; another user's account is not found */
    {
        svc_call c = call(&pa);
        svc_deposit_in in = {a1, I(1000)};
        svc_account acct;
        REFUSED(svc_deposit(F.s, &c, &in, &acct, &e), SVC_INVALID, "idempotency_key_required");
        c = kcall(&pa);
        svc_deposit_in theirs = {b1, I(1000)};
        REFUSED(svc_deposit(F.s, &c, &theirs, &acct, &e), SVC_NOT_FOUND, "not_found");
        c = kcall(&pa);
        svc_deposit_in zero = {a1, I(0)};
        REFUSED(svc_deposit(F.s, &c, &zero, &acct, &e), SVC_INVALID, "validation_failed");
        CHECK_VIOLS(e, "amount_cents");
    }
    CHECK_INT(balance(&pa, a1), 0);
    CHECK_INT(balance(&pb, b1), 0);
    CHECK_INT(deposit(&pa, a1, 10000), 10000);
    CHECK_INT(deposit(&pb, b1, 5000), 5000);
    CHECK_INT(deposit(&pa, a2, 700), 700);
    const int64_t usd_deposits = 15000;

    /* a transfer (debit first: from < to) */
    OK(xfer(&pa, a1, b1, 2500, &t, &e));
    CHECK(t.id > 0);
    CHECK_INT(t.from_account_id, a1);
    CHECK_INT(t.to_account_id, b1);
    CHECK_INT(t.amount_cents, 2500);
    CHECK_STR(t.currency, "USD");
    int64_t first_id = t.id;
    /* and back (credit first: to < from) */
    OK(xfer(&pb, b1, a1, 1000, &t, &e));
    CHECK(t.id > first_id);
    CHECK_STR(t.currency, "USD");
    CHECK_INT(balance(&pa, a1), 8500);
    CHECK_INT(balance(&pb, b1), 6500);

    /* refusals, each leaving every balance alone */
    REFUSED(xfer(&pa, a1, b1, 1000000, &t, &e), SVC_CONFLICT, "insufficient_funds");
    REFUSED(xfer(&pb, b1, a1, 6501, &t, &e), SVC_CONFLICT, "insufficient_funds");
    REFUSED(xfer(&pa, a1, a2, 100, &t, &e), SVC_UNPROCESSABLE, "currency_mismatch");
    REFUSED(xfer(&pa, a2, a1, 100, &t, &e), SVC_UNPROCESSABLE, "currency_mismatch");
    REFUSED(xfer(&pa, a1, a1, 100, &t, &e), SVC_UNPROCESSABLE, "same_account");
    REFUSED(xfer(&pa, b1, a1, 100, &t, &e), SVC_NOT_FOUND, "not_found"); /* Bob's account, Alice calling */
    REFUSED(xfer(&pa, a1, 999999, 100, &t, &e), SVC_NOT_FOUND, "not_found");
    {
        svc_call c = call(&pa); /* no Idempotency-Key */
        svc_transfer_in in = {I(a1), I(b1), I(100)};
        REFUSED(svc_transfer_create(F.s, &c, &in, &t, &e), SVC_INVALID, "idempotency_key_required");
        svc_transfer_in bad = {INT_ABSENT, I(0), I(-5)};
        c = kcall(&pa);
        REFUSED(svc_transfer_create(F.s, &c, &bad, &t, &e), SVC_INVALID, "validation_failed");
        CHECK_VIOLS(e, "from_account_id", "to_account_id", "amount_cents");
        svc_principal anon = who(0);
        c = kcall(&anon);
        REFUSED(svc_transfer_create(F.s, &c, &in, &t, &e), SVC_UNAUTHENTICATED, "unauthorized");
        /* someone else's account is not found, not forbidden */
        c = call(&pa);
        svc_account acct;
        REFUSED(svc_account_get(F.s, &c, b1, &acct, &e), SVC_NOT_FOUND, "not_found");
        /* a transfer is visible to both parties */
        c = call(&pb);
        OK(svc_transfer_get(F.s, &c, first_id, &t, &e));
        CHECK_INT(t.amount_cents, 2500);
    }
    int64_t ba1 = balance(&pa, a1), bb1 = balance(&pb, b1);
    CHECK_INT(ba1, 8500);
    CHECK_INT(bb1, 6500);
    CHECK_INT(balance(&pa, a2), 700);
    CHECK_INT(ba1 + bb1, usd_deposits);

    /* concurrent transfers both ways between the two accounts */
    rt_wg wg;
    rt_wg_init(&wg);
    xfer_worker w[NWORKERS];
    for (int i = 0; i < NWORKERS; i++) {
        w[i] = (xfer_worker){i, ua, ub, a1, b1, 0, 0, 0, 0, &wg};
        rt_wg_add(&wg, 1);
        rt_go(xfer_worker_fn, &w[i]);
    }
    int wrc = rt_wg_wait(&wg, NULL);
    rt_wg_destroy(&wg);
    CHECK_INT(wrc, 0);
    raise_recorded();
    int64_t ab = 0, ba = 0;
    int ok = 0, refused = 0;
    for (int i = 0; i < NWORKERS; i++) {
        ab += w[i].moved_ab;
        ba += w[i].moved_ba;
        ok += w[i].ok;
        refused += w[i].refused;
    }
    CHECK_INT(ok + refused, NWORKERS * NXFERS);
    CHECK(ok >= NWORKERS * NXFERS / 2); /* most of them went through */
    int64_t na1 = balance(&pa, a1), nb1 = balance(&pb, b1);
    CHECK(na1 >= 0);
    CHECK(nb1 >= 0);
    CHECK_INT(na1 + nb1, usd_deposits);
    CHECK_INT(na1, ba1 - ab + ba);
    CHECK_INT(nb1, bb1 + ab - ba);
    CHECK_INT(balance(&pa, a2), 700);

    /* every committed transfer (and nothing else) is listed on a1 */
    svc_call c = call(&pa);
    svc_page_in pg = {I(100), {NULL, 0, SVC_ABSENT}};
    svc_transfer_page page;
    OK(svc_transfers_list(F.s, &c, a1, &pg, &page, &e));
    CHECK_INT(page.n, 2 + ok);
    CHECK(page.next_cursor == NULL);
    int64_t net = 0;
    for (int i = 0; i < page.n; i++) {
        CHECK(page.data[i].from_account_id == a1 || page.data[i].to_account_id == a1);
        net += page.data[i].to_account_id == a1 ? page.data[i].amount_cents : -page.data[i].amount_cents;
        if (i > 0) /* newest first */
            CHECK(page.data[i - 1].created_us > page.data[i].created_us ||
                  (page.data[i - 1].created_us == page.data[i].created_us &&
                   page.data[i - 1].id > page.data[i].id));
    }
    CHECK_INT(net + 10000, na1); /* the deposit plus the listed transfers is the balance */
}

static void transfers_refuse_and_conserve_money(void **state)
{
    (void)state;
    run(transfers_body);
}

/* =========================================================================================
 * 2. the order state machine, fulfilment and events
 * ========================================================================================= */

static void orders_body(void)
{
    svc_err e;
    int64_t us = signup("seller@example.com", "Seller"), ub = signup("buyer@example.com", "Buyer"),
            uo = signup("other@example.com", "Other");
    svc_principal ps = who(us), pb = who(ub), po = who(uo);
    int64_t bacct = open_account(&pb, "USD");
    CHECK_INT(deposit(&pb, bacct, 10000), 10000);

    /* the seller lists an item */
    svc_item item;
    {
        svc_call c = call(&ps);
        svc_item_in in = item_in("widget-1", "Widget", 1500, "USD", 5);
        OK(svc_item_create(F.s, &c, &in, &item, &e));
        CHECK(item.id > 0);
        CHECK_INT(item.seller_id, us);
        CHECK_STR(item.sku, "widget-1");
        CHECK_INT(item.price_cents, 1500);
        CHECK_INT(item.stock, 5);
        CHECK_STR(item.currency, "USD");
        REFUSED(svc_item_create(F.s, &c, &in, &item, &e), SVC_ALREADY_EXISTS, "sku_taken");
        OK(svc_item_get(F.s, &c, item.id, &item, &(bool){false}, &e));
    }

    /* subscribe before anything happens to the buyer's orders */
    {
        svc_call c = call(&po);
        svc_watch *w = NULL;
        REFUSED(svc_orders_watch(F.s, &c, ub, &w, &e), SVC_NOT_FOUND, "not_found");
        CHECK(w == NULL);
        c = call(&pb);
        OK(svc_orders_watch(F.s, &c, ub, &F.watch, &e));
        CHECK(F.watch != NULL);
    }

    /* order 1: two widgets; stock is reserved */
    svc_order o1;
    svc_order_in in1 = order_in(bacct, 1);
    line(&in1, 0, item.id, 2);
    {
        svc_call c = key_call(&pb, "order-1");
        OK(svc_order_create(F.s, &c, &in1, &o1, &e));
        CHECK(!c.replayed);
        CHECK(o1.id > 0);
        CHECK_STR(o1.status, "pending");
        CHECK_INT(o1.customer_id, ub);
        CHECK_INT(o1.account_id, bacct);
        CHECK_INT(o1.total_cents, 3000);
        CHECK_STR(o1.currency, "USD");
        CHECK_INT(o1.nlines, 1);
        CHECK_INT(o1.lines[0].item_id, item.id);
        CHECK_INT(o1.lines[0].quantity, 2);
        CHECK_INT(o1.lines[0].unit_price_cents, 1500);
        /* the same request again: the same order, reserved once */
        svc_order again;
        c = key_call(&pb, "order-1");
        OK(svc_order_create(F.s, &c, &in1, &again, &e));
        CHECK(c.replayed);
        CHECK_INT(again.id, o1.id);
        CHECK_STR(again.status, "pending");
        CHECK_INT(again.total_cents, 3000);
        CHECK_INT(again.nlines, 1);
    }
    bool hit;
    CHECK_INT(get_item(item.id, &hit).stock, 3);
    CHECK_INT(balance(&pb, bacct), 10000); /* ordering does not pay */

    /* pay: buyer debited, seller credited in the order's currency */
    {
        svc_call c = call(&pb);
        svc_order o;
        OK(svc_order_pay(F.s, &c, o1.id, &o, &e));
        CHECK_INT(o.id, o1.id);
        CHECK_STR(o.status, "paid");
        CHECK_INT(o.total_cents, 3000);
        CHECK_INT(o.nlines, 1);
    }
    CHECK_INT(balance(&pb, bacct), 7000);
    {
        svc_call c = call(&ps);
        svc_account *accts;
        int n;
        OK(svc_accounts_list(F.s, &c, &accts, &n, &e));
        CHECK_INT(n, 1);
        CHECK_INT(accts[0].user_id, us);
        CHECK_STR(accts[0].currency, "USD");
        CHECK_INT(accts[0].balance_cents, 3000);
    }
    /* paying again answers "paid" and moves nothing */
    {
        svc_call c = call(&pb);
        svc_order o;
        OK(svc_order_pay(F.s, &c, o1.id, &o, &e));
        CHECK_STR(o.status, "paid");
        CHECK_INT(balance(&pb, bacct), 7000);
        svc_call cs = call(&ps);
        svc_account *accts;
        int n;
        OK(svc_accounts_list(F.s, &cs, &accts, &n, &e));
        CHECK_INT(n, 1);
        CHECK_INT(accts[0].balance_cents, 3000);
        /* a paid order cannot be cancelled */
        REFUSED(svc_order_cancel(F.s, &c, o1.id, &o, &e), SVC_CONFLICT, "order_not_cancellable");
        CHECK_STR(get_order(&pb, o1.id).status, "paid");
        CHECK_INT(get_item(item.id, &hit).stock, 3);
    }

    /* order 2: cancelled, stock returned; then it cannot be paid */
    svc_order o2;
    {
        svc_order_in in2 = order_in(bacct, 1);
        line(&in2, 0, item.id, 1);
        svc_call c = kcall(&pb);
        OK(svc_order_create(F.s, &c, &in2, &o2, &e));
        CHECK(o2.id != o1.id);
        CHECK_INT(o2.total_cents, 1500);
        CHECK_INT(get_item(item.id, &hit).stock, 2);
        c = call(&pb);
        svc_order o;
        OK(svc_order_cancel(F.s, &c, o2.id, &o, &e));
        CHECK_INT(o.id, o2.id);
        CHECK_STR(o.status, "cancelled");
        CHECK_INT(get_item(item.id, &hit).stock, 3);
        REFUSED(svc_order_pay(F.s, &c, o2.id, &o, &e), SVC_CONFLICT, "order_not_payable");
        CHECK_INT(balance(&pb, bacct), 7000);
        /* cancelling again changes nothing (no second restock) */
        OK(svc_order_cancel(F.s, &c, o2.id, &o, &e));
        CHECK_STR(o.status, "cancelled");
        CHECK_INT(get_item(item.id, &hit).stock, 3);
        /* more than the stock: refused, nothing reserved */
        svc_order_in big = order_in(bacct, 2);
        line(&big, 0, item.id, 2);
        line(&big, 1, item.id, 2); /* lines naming one item add up: 4 > 3 */
        c = kcall(&pb);
        REFUSED(svc_order_create(F.s, &c, &big, &o, &e), SVC_CONFLICT, "out_of_stock");
        CHECK_INT(get_item(item.id, &hit).stock, 3);
    }

    /* an order the account cannot pay: refused, nothing moves, it stays pending */
    int64_t o3id = 0;
    {
        svc_call c = call(&ps);
        svc_item gold;
        svc_item_in gin = item_in("gold-1", "Gold", 8000, "USD", 1);
        OK(svc_item_create(F.s, &c, &gin, &gold, &e));
        svc_order_in in3 = order_in(bacct, 1);
        line(&in3, 0, gold.id, 1);
        svc_order o3, o;
        c = kcall(&pb);
        OK(svc_order_create(F.s, &c, &in3, &o3, &e));
        CHECK_INT(o3.total_cents, 8000);
        o3id = o3.id;
        c = call(&pb);
        REFUSED(svc_order_pay(F.s, &c, o3.id, &o, &e), SVC_CONFLICT, "insufficient_funds");
        CHECK_STR(get_order(&pb, o3.id).status, "pending");
        CHECK_INT(balance(&pb, bacct), 7000);
        svc_call cs = call(&ps);
        svc_account *accts;
        int n;
        OK(svc_accounts_list(F.s, &cs, &accts, &n, &e));
        CHECK_INT(n, 1);
        CHECK_INT(accts[0].balance_cents, 3000);
        OK(svc_order_cancel(F.s, &c, o3.id, &o, &e));
        CHECK_STR(o.status, "cancelled");
        CHECK_INT(get_item(gold.id, &hit).stock, 1);
    }

    /* the spenders leaderboard counts the one payment */
    {
        svc_call c = call(&po);
        svc_spender *top;
        int n;
        OK(svc_leaderboard(F.s, &c, (svc_str){NULL, 0, SVC_ABSENT}, INT_ABSENT, &top, &n, &e));
        CHECK_INT(n, 1);
        CHECK_INT(top[0].rank, 1);
        CHECK_INT(top[0].user_id, ub);
        CHECK_INT(top[0].spent_cents, 3000);
        CHECK_STR(top[0].name, "Buyer");
        OK(svc_leaderboard(F.s, &c, S("EUR"), INT_ABSENT, &top, &n, &e));
        CHECK_INT(n, 0);
    }

    /* another user's order does not exist for them */
    {
        svc_call c = call(&po);
        svc_order o;
        REFUSED(svc_order_get(F.s, &c, o1.id, &o, &e), SVC_NOT_FOUND, "not_found");
        REFUSED(svc_order_pay(F.s, &c, o1.id, &o, &e), SVC_NOT_FOUND, "not_found");
        REFUSED(svc_order_cancel(F.s, &c, o1.id, &o, &e), SVC_NOT_FOUND, "not_found");
        REFUSED(svc_order_cancel(F.s, &c, o2.id, &o, &e), SVC_NOT_FOUND, "not_found");
        REFUSED(svc_order_get(F.s, &c, 999999, &o, &e), SVC_NOT_FOUND, "not_found");
        svc_order_page page;
        svc_page_in pg = {INT_ABSENT, {NULL, 0, SVC_ABSENT}};
        REFUSED(svc_orders_list(F.s, &c, ub, (svc_str){NULL, 0, SVC_ABSENT}, &pg, &page, &hit, &e),
                SVC_NOT_FOUND, "not_found");
        /* and paying with another's account is not possible either */
        int64_t oacct = open_account(&po, "USD");
        svc_order_in theirs = order_in(bacct, 1);
        line(&theirs, 0, item.id, 1);
        c = kcall(&po);
        REFUSED(svc_order_create(F.s, &c, &theirs, &o, &e), SVC_NOT_FOUND, "not_found");
        CHECK_INT(balance(&po, oacct), 0);
        CHECK_STR(get_order(&pb, o1.id).status, "paid");
        CHECK_INT(get_item(item.id, &hit).stock, 3);
    }

    /* the fulfilment worker ships the paid order (its job is due after ~1 s) */
    svc_start_worker(F.s);
    const char *st = "";
    for (int i = 0; i < 60; i++) { /* ≤ 6 s */
        st = get_order(&pb, o1.id).status;
        if (!strcmp(st, "shipped"))
            break;
        CHECK_INT(rt_sleep(&F.ctx, 100 * BZ_NS_PER_MS), 0);
    }
    CHECK_STR(st, "shipped");
    CHECK_STR(get_order(&pb, o2.id).status, "cancelled"); /* never shipped */
    CHECK_INT(balance(&pb, bacct), 7000);

    /* the list by status sees it (cached pages are versioned) */
    {
        svc_call c = call(&pb);
        svc_order_page page;
        svc_page_in pg = {INT_ABSENT, {NULL, 0, SVC_ABSENT}};
        OK(svc_orders_list(F.s, &c, ub, S("shipped"), &pg, &page, &hit, &e));
        CHECK_INT(page.n, 1);
        CHECK_INT(page.data[0].id, o1.id);
        CHECK_STR(page.data[0].status, "shipped");
        CHECK(!hit);
        OK(svc_orders_list(F.s, &c, ub, S("shipped"), &pg, &page, &hit, &e));
        CHECK_INT(page.n, 1);
        CHECK(hit);
        OK(svc_orders_list(F.s, &c, ub, (svc_str){NULL, 0, SVC_ABSENT}, &pg, &page, &hit, &e));
        CHECK_INT(page.n, 3);
        CHECK_INT(page.data[0].id, o3id); /* newest first */
        CHECK_INT(page.data[1].id, o2.id);
        CHECK_INT(page.data[2].id, o1.id);
        /* pages of 2: the cursor continues where the first page ended */
        svc_page_in two = {I(2), {NULL, 0, SVC_ABSENT}};
        OK(svc_orders_list(F.s, &c, ub, (svc_str){NULL, 0, SVC_ABSENT}, &two, &page, &hit, &e));
        CHECK_INT(page.n, 2);
        CHECK(page.next_cursor != NULL);
        two.cursor = S(page.next_cursor);
        OK(svc_orders_list(F.s, &c, ub, (svc_str){NULL, 0, SVC_ABSENT}, &two, &page, &hit, &e));
        CHECK_INT(page.n, 1);
        CHECK_INT(page.data[0].id, o1.id);
        CHECK(page.next_cursor == NULL);
        /* a cursor of the unfiltered list is not one of the "shipped" list */
        REFUSED(svc_orders_list(F.s, &c, ub, S("shipped"), &two, &page, &hit, &e), SVC_INVALID,
                "invalid_cursor");
    }

    /* the events, in order: o1 paid (once) then shipped; o2 and o3 cancelled (once each) */
    int paid = 0, shipped = 0, cancelled = 0, other = 0;
    bool paid_before_shipped = false;
    rt_ctx wc;
    rt_ctx_init_timeout(&wc, NULL, 3 * BZ_NS_PER_S);
    for (int i = 0; i < 16 && !(shipped && cancelled == 2); i++) {
        svc_order_event ev;
        int rc = svc_watch_next(F.watch, &wc, &ev);
        if (rc != 0)
            break;
        if (ev.order_id == o1.id && !strcmp(ev.status, "paid")) {
            paid++;
        } else if (ev.order_id == o1.id && !strcmp(ev.status, "shipped")) {
            shipped++;
            paid_before_shipped = paid == 1;
        } else if ((ev.order_id == o2.id || ev.order_id == o3id) && !strcmp(ev.status, "cancelled")) {
            cancelled++;
        } else {
            other++;
        }
        CHECK(ev.at_us > 0);
    }
    /* anything more within a moment would be a duplicate */
    rt_ctx_release(&wc);
    rt_ctx_init_timeout(&wc, NULL, 300 * BZ_NS_PER_MS);
    svc_order_event extra;
    int more = svc_watch_next(F.watch, &wc, &extra);
    rt_ctx_release(&wc);
    CHECK_INT(paid, 1);
    CHECK_INT(shipped, 1);
    CHECK(paid_before_shipped);
    CHECK_INT(cancelled, 2);
    CHECK_INT(other, 0);
    CHECK_INT(more, -ETIMEDOUT);
    svc_stop_worker(F.s);
}

static void orders_pay_cancel_ship_and_events(void **state)
{
    (void)state;
    run(orders_body);
}

/* =========================================================================================
 * 3. idempotency: replay, reuse, stored refusals, per-user keys, concurrent repeats
 * ========================================================================================= */

typedef struct {
    const svc_principal *p;
    int64_t from, to, amount;
    int rc;
    svc_err e;
    char code[64];
    svc_transfer t;
    bool replayed;
    rt_wg *wg;
} same_key_arg;

static void same_key_fn(void *p)
{
    same_key_arg *x = p;
    bz_arena a;
    bz_arena_init(&a, 0);
    svc_call c = SVC_CALL(&F.ctx, &a, x->p);
    c.idem_key = "same-key";
    c.idem_key_len = 8;
    svc_transfer_in in = {I(x->from), I(x->to), I(x->amount)};
    svc_err_clear(&x->e);
    x->rc = svc_transfer_create(F.s, &c, &in, &x->t, &x->e);
    x->replayed = c.replayed;
    /* e.code may point into the arena (a replayed refusal): copy it first */
    snprintf(x->code, sizeof x->code, "%s", x->rc == 0 ? "" : x->e.code ? x->e.code : "");
    x->e.code = x->code;
    bz_arena_free(&a);
    rt_wg_done(x->wg);
}

static void idempotency_body(void)
{
    svc_err e;
    int64_t ua = signup("ann@example.com", "Ann"), ub = signup("ben@example.com", "Ben");
    svc_principal pa = who(ua), pb = who(ub);
    int64_t a1 = open_account(&pa, "USD"), b1 = open_account(&pb, "USD");

    /* a deposit repeated: one effect, the stored result */
    svc_account acct;
    svc_deposit_in d1 = {a1, I(1000)};
    svc_call c = key_call(&pa, "dep-1");
    OK(svc_deposit(F.s, &c, &d1, &acct, &e));
    CHECK(!c.replayed);
    CHECK_INT(acct.balance_cents, 1000);
    c = key_call(&pa, "dep-1");
    OK(svc_deposit(F.s, &c, &d1, &acct, &e));
    CHECK(c.replayed);
    CHECK_INT(acct.id, a1);
    CHECK_INT(acct.balance_cents, 1000);
    CHECK_INT(balance(&pa, a1), 1000);

    /* a transfer repeated: the same transfer, money moved once */
    svc_transfer t1, t;
    svc_transfer_in tin = {I(a1), I(b1), I(300)};
    c = key_call(&pa, "t-1");
    OK(svc_transfer_create(F.s, &c, &tin, &t1, &e));
    CHECK(!c.replayed);
    c = key_call(&pa, "t-1");
    OK(svc_transfer_create(F.s, &c, &tin, &t, &e));
    CHECK(c.replayed);
    CHECK_INT(t.id, t1.id);
    CHECK_INT(t.from_account_id, a1);
    CHECK_INT(t.to_account_id, b1);
    CHECK_INT(t.amount_cents, 300);
    CHECK_STR(t.currency, "USD");
    CHECK_INT(t.created_us, t1.created_us);
    CHECK_INT(balance(&pa, a1), 700);
    CHECK_INT(balance(&pb, b1), 300);

    /* the same key with another request: refused, nothing moves */
    svc_transfer_in tin2 = {I(a1), I(b1), I(301)};
    c = key_call(&pa, "t-1");
    REFUSED(svc_transfer_create(F.s, &c, &tin2, &t, &e), SVC_UNPROCESSABLE, "idempotency_key_reused");
    c = key_call(&pa, "t-1");
    svc_deposit_in d2 = {a1, I(300)};
    REFUSED(svc_deposit(F.s, &c, &d2, &acct, &e), SVC_UNPROCESSABLE, "idempotency_key_reused");
    c = key_call(&pa, "dep-1");
    svc_deposit_in d3 = {a1, I(1001)};
    REFUSED(svc_deposit(F.s, &c, &d3, &acct, &e), SVC_UNPROCESSABLE, "idempotency_key_reused");
    CHECK_INT(balance(&pa, a1), 700);
    CHECK_INT(balance(&pb, b1), 300);

    /* a refusal is stored and replayed as such, even once it would succeed */
    svc_transfer_in big = {I(a1), I(b1), I(5000)};
    c = key_call(&pa, "t-2");
    REFUSED(svc_transfer_create(F.s, &c, &big, &t, &e), SVC_CONFLICT, "insufficient_funds");
    CHECK(!c.replayed);
    char first_msg[256];
    snprintf(first_msg, sizeof first_msg, "%s", e.msg);
    CHECK_INT(deposit(&pa, a1, 10000), 10700);
    c = key_call(&pa, "t-2");
    REFUSED(svc_transfer_create(F.s, &c, &big, &t, &e), SVC_CONFLICT, "insufficient_funds");
    CHECK(c.replayed);
    CHECK_STR(e.msg, first_msg);
    CHECK_INT(balance(&pa, a1), 10700);
    CHECK_INT(balance(&pb, b1), 300);
    /* so is a refusal decided before any money moved */
    svc_transfer_in same = {I(a1), I(a1), I(10)};
    c = key_call(&pa, "t-3");
    REFUSED(svc_transfer_create(F.s, &c, &same, &t, &e), SVC_UNPROCESSABLE, "same_account");
    CHECK(!c.replayed);
    c = key_call(&pa, "t-3");
    REFUSED(svc_transfer_create(F.s, &c, &same, &t, &e), SVC_UNPROCESSABLE, "same_account");
    CHECK(c.replayed);

    /* keys are per user: Ben may use "t-1" for his own transfer */
    svc_transfer_in back = {I(b1), I(a1), I(100)};
    c = key_call(&pb, "t-1");
    OK(svc_transfer_create(F.s, &c, &back, &t, &e));
    CHECK(!c.replayed);
    CHECK(t.id != t1.id);
    CHECK_INT(t.from_account_id, b1);
    CHECK_INT(balance(&pa, a1), 10800);
    CHECK_INT(balance(&pb, b1), 200);
    /* and Ann's record of "t-1" is still hers */
    c = key_call(&pa, "t-1");
    OK(svc_transfer_create(F.s, &c, &tin, &t, &e));
    CHECK(c.replayed);
    CHECK_INT(t.id, t1.id);

    /* a malformed key */
    c = key_call(&pa, "has space");
    REFUSED(svc_transfer_create(F.s, &c, &tin, &t, &e), SVC_INVALID, "invalid_idempotency_key");
    CHECK_INT(balance(&pa, a1), 10800);

    /* two concurrent requests with one key: one effect; the other replays it
     * or is told the key is in use */
    rt_wg wg;
    rt_wg_init(&wg);
    same_key_arg x[3];
    for (int i = 0; i < 3; i++) {
        x[i] = (same_key_arg){.p = &pa, .from = a1, .to = b1, .amount = 50, .wg = &wg};
        rt_wg_add(&wg, 1);
        rt_go(same_key_fn, &x[i]);
    }
    CHECK_INT(rt_wg_wait(&wg, NULL), 0);
    rt_wg_destroy(&wg);
    int fresh = 0;
    int64_t id = 0;
    for (int i = 0; i < 3; i++) {
        if (x[i].rc == 0 && !x[i].replayed) {
            fresh++;
            id = x[i].t.id;
        }
    }
    CHECK_INT(fresh, 1);
    for (int i = 0; i < 3; i++) {
        if (x[i].rc == 0) {
            CHECK_INT(x[i].t.id, id);
        } else {
            CHECK_STR(svc_kind_name(x[i].e.kind), "conflict");
            CHECK_STR(x[i].e.code, "idempotency_key_in_use");
        }
    }
    CHECK_INT(balance(&pa, a1), 10750);
    CHECK_INT(balance(&pb, b1), 250);
    c = key_call(&pa, "same-key");
    svc_transfer_in sk = {I(a1), I(b1), I(50)};
    OK(svc_transfer_create(F.s, &c, &sk, &t, &e));
    CHECK(c.replayed);
    CHECK_INT(t.id, id);
    CHECK_INT(balance(&pa, a1), 10750);
}

static void idempotency_replays_and_refuses_reuse(void **state)
{
    (void)state;
    run(idempotency_body);
}

/* =========================================================================================
 * 4. validation: every field, limits from the one table
 * ========================================================================================= */

static int count_one(void *arg, const svc_user *u)
{
    (void)u;
    ++*(int64_t *)arg;
    return 0;
}

static int64_t count_users(void)
{
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_err e;
    int64_t n = 0;
    OK(svc_users_list(F.s, &c, 0, 0, count_one, &n, &e));
    return n;
}

static void validation_body(void)
{
    svc_err e;
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_user u;

    /* the table */
    CHECK_INT(svc_limits[L_USER_NAME].min, 1);
    CHECK_INT(svc_limits[L_USER_NAME].max, 100);
    CHECK(svc_limits[L_USER_NAME].chars);
    CHECK(svc_limits[L_USER_NAME].required);
    CHECK_STR(svc_limits[L_USER_NAME].field, "name");
    CHECK_INT(svc_limits[L_USER_PASSWORD].min, 8);
    CHECK_INT(svc_limits[L_LINE_QUANTITY].min, 1);
    CHECK_INT(svc_limits[L_ORDER_LINES].max, SVC_MAX_LINES);

    /* every bad field at once */
    svc_user_in bad = {S("not-an-email"), S(""), S("short")};
    REFUSED(svc_user_create(F.s, &c, &bad, &u, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "email", "name", "password");
    svc_user_in absent = {{NULL, 0, SVC_ABSENT}, {NULL, 0, SVC_ABSENT}, {NULL, 0, SVC_ABSENT}};
    REFUSED(svc_user_create(F.s, &c, &absent, &u, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "email", "name", "password");
    CHECK_STR(e.viol[0].msg, "is required");

    /* names: 1..100 characters (not bytes) */
    char n101[102], n100[101], e101[2 * 101 + 1], e100[2 * 100 + 1];
    memset(n101, 'x', 101);
    n101[101] = '\0';
    memset(n100, 'y', 100);
    n100[100] = '\0';
    for (int i = 0; i < 101; i++)
        memcpy(e101 + 2 * i, "\xc3\xa9", 2); /* é */
    e101[202] = '\0';
    memcpy(e100, e101, 200);
    e100[200] = '\0';
    svc_user_in long_name = {S("long@example.com"), S(n101), S("password8")};
    REFUSED(svc_user_create(F.s, &c, &long_name, &u, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "name");
    long_name.name = S(e101);
    REFUSED(svc_user_create(F.s, &c, &long_name, &u, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "name");
    svc_user_in seven = {S("seven@example.com"), S("Seven"), S("1234567")};
    REFUSED(svc_user_create(F.s, &c, &seven, &u, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "password");
    CHECK_INT(count_users(), 0);
    int64_t uid = signup_pw("Max@Example.com", n100, "12345678");      /* both at their limits */
    int64_t uid2 = signup_pw("accents@example.com", e100, "12345678"); /* 100 characters, 200 bytes */
    CHECK(uid2 > uid);
    CHECK_INT(count_users(), 2);
    svc_user_in dup = {S("MAX@example.COM"), S("Max again"), S("password123")};
    REFUSED(svc_user_create(F.s, &c, &dup, &u, &e), SVC_ALREADY_EXISTS, "email_taken");
    CHECK_INT(count_users(), 2);

    /* orders: the lines array and each line */
    svc_principal p = who(uid);
    svc_order o;
    svc_order_in none = order_in(1, 0);
    c = kcall(&p);
    REFUSED(svc_order_create(F.s, &c, &none, &o, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "lines");
    none.lines_st = SVC_ABSENT;
    REFUSED(svc_order_create(F.s, &c, &none, &o, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "lines");
    svc_order_in zero = order_in(1, 1);
    line(&zero, 0, 1, 0);
    REFUSED(svc_order_create(F.s, &c, &zero, &o, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "lines[0].quantity");
    svc_order_in two = order_in(1, 2);
    two.account_id = INT_ABSENT;
    line(&two, 0, 1, 1);
    line(&two, 1, 0, svc_limits[L_LINE_QUANTITY].max + 1);
    REFUSED(svc_order_create(F.s, &c, &two, &o, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "account_id", "lines[1].item_id", "lines[1].quantity");
    svc_order_in many = order_in(1, SVC_MAX_LINES);
    many.nlines_sent = SVC_MAX_LINES + 1;
    for (int i = 0; i < SVC_MAX_LINES; i++)
        line(&many, i, 1, 1);
    REFUSED(svc_order_create(F.s, &c, &many, &o, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "lines");
    /* at the limit the input is valid: the refusal is about the data */
    svc_order_in max = order_in(999, 1);
    line(&max, 0, 1, svc_limits[L_LINE_QUANTITY].max);
    REFUSED(svc_order_create(F.s, &c, &max, &o, &e), SVC_NOT_FOUND, "not_found");

    /* items */
    svc_item it;
    svc_item_in ib = {S(""), {NULL, 0, SVC_ABSENT}, S("usd"), I(-1), I(-1)};
    c = call(&p);
    REFUSED(svc_item_create(F.s, &c, &ib, &it, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "sku", "name", "currency", "price_cents", "stock");
}

static void validation_names_every_bad_field(void **state)
{
    (void)state;
    run(validation_body);
}

/* A field the adapter could not decode (SVC_BAD) arrives with its violation
 * already in *e (svc.h: "has already reported why in the violations it
 * passes in"): the operation keeps it, does not report it again, and
 * refuses even when every other field is fine. */
static void bad_fields_body(void)
{
    svc_err e;
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_user u;

    /* a bad field the decoder did not explain is still refused (once) */
    svc_err_clear(&e);
    svc_str bs = STR_BAD;
    svc_int bi = {0, SVC_BAD};
    CHECK(!svc_check_str(&e, L_USER_EMAIL, &bs, NULL));
    CHECK_INT(e.nviol, 1);
    CHECK_INT(e.kind, SVC_INVALID);
    CHECK_STR(e.viol[0].field, "email");
    /* once the decoder has reported something, bad fields are its to name */
    CHECK(!svc_check_int(&e, L_DEPOSIT_AMOUNT, &bi, NULL));
    CHECK_INT(e.nviol, 1);

    /* a decoder's violation plus the operation's own */
    svc_err_clear(&e);
    svc_violate(&e, "email", "must be a string");
    svc_user_in in = {STR_BAD, S(""), S("short")};
    int rc = svc_user_create(F.s, &c, &in, &u, &e);
    CHECK_INT(rc, -1);
    CHECK_VIOLS(e, "email", "name", "password");
    CHECK_STR(e.viol[0].msg, "must be a string");

    /* the decoder's violation alone: still refused, once */
    svc_err_clear(&e);
    svc_violate(&e, "email", "must be a string");
    svc_user_in only = {STR_BAD, S("Fine"), S("password123")};
    rc = svc_user_create(F.s, &c, &only, &u, &e);
    CHECK_INT(rc, -1);
    CHECK_VIOLS(e, "email");
    CHECK_INT(count_users(), 0);

    /* the same for an integer of an order */
    int64_t uid = signup("bad@example.com", "Bad");
    svc_principal p = who(uid);
    c = kcall(&p);
    svc_err_clear(&e);
    svc_violate(&e, "lines[0].quantity", "must be an integer");
    svc_order_in oin = order_in(1, 1);
    oin.account_id = INT_ABSENT;
    oin.lines[0].item_id = I(1);
    oin.lines[0].quantity = (svc_int){0, SVC_BAD};
    svc_order o;
    rc = svc_order_create(F.s, &c, &oin, &o, &e);
    CHECK_INT(rc, -1);
    CHECK_VIOLS(e, "lines[0].quantity", "account_id");

    /* a single-field operation */
    c = call(&p);
    svc_err_clear(&e);
    svc_violate(&e, "currency", "must be a string");
    svc_account acct;
    rc = svc_account_create(F.s, &c, STR_BAD, &acct, &e);
    CHECK_INT(rc, -1);
    CHECK_VIOLS(e, "currency");
    svc_account *accts;
    int n;
    OK(svc_accounts_list(F.s, &c, &accts, &n, &e));
    CHECK_INT(n, 0);

    /* an anonymous caller is refused as such, without the decoder's
     * violations hanging on to the error */
    svc_principal anon2 = who(0);
    c = kcall(&anon2);
    svc_err_clear(&e);
    svc_violate(&e, "amount_cents", "must be an integer");
    svc_transfer_in tin = {I(1), I(2), {0, SVC_BAD}};
    svc_transfer t;
    rc = svc_transfer_create(F.s, &c, &tin, &t, &e);
    CHECK_INT(rc, -1);
    CHECK_STR(svc_kind_name(e.kind), "unauthenticated");
    CHECK_INT(e.nviol, 0);
}

static void bad_fields_are_reported_once(void **state)
{
    (void)state;
    run(bad_fields_body);
}

/* =========================================================================================
 * 5. streaming the users list
 * ========================================================================================= */

typedef struct {
    int n;
    int64_t ids[16];
    char names[16][16];
    bool email_shown;
    int stop_after;      /* emit returns 1 after this many (0: never) */
    rt_ctx *cancel_at_1; /* cancelled by the first emit */
} users_seen;

static int collect_user(void *arg, const svc_user *u)
{
    users_seen *s = arg;
    if (s->n < 16) {
        s->ids[s->n] = u->id;
        snprintf(s->names[s->n], sizeof s->names[s->n], "%s", u->name ? u->name : "(null)");
    }
    if (u->email)
        s->email_shown = true;
    s->n++;
    if (s->cancel_at_1 && s->n == 1)
        rt_ctx_cancel(s->cancel_at_1);
    return s->stop_after && s->n >= s->stop_after;
}

static void users_body(void)
{
    svc_err e;
    int64_t id[4];
    const char *names[4] = {"Uma", "Vic", "Wes", "Xia"};
    for (int i = 0; i < 4; i++) {
        char email[64];
        snprintf(email, sizeof email, "%s@example.com", names[i]);
        id[i] = signup(email, names[i]);
        if (i)
            CHECK(id[i] > id[i - 1]);
    }
    svc_principal anon = who(0);
    svc_call c = call(&anon);

    users_seen s = {0};
    OK(svc_users_list(F.s, &c, 0, 0, collect_user, &s, &e));
    CHECK_INT(s.n, 4);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(s.ids[i], id[i]);
        CHECK_STR(s.names[i], names[i]);
    }
    CHECK(!s.email_shown); /* public fields only */

    s = (users_seen){0};
    OK(svc_users_list(F.s, &c, id[1], 0, collect_user, &s, &e));
    CHECK_INT(s.n, 2);
    CHECK_INT(s.ids[0], id[2]);
    CHECK_INT(s.ids[1], id[3]);

    s = (users_seen){0};
    OK(svc_users_list(F.s, &c, 0, 2, collect_user, &s, &e));
    CHECK_INT(s.n, 2);
    CHECK_INT(s.ids[0], id[0]);
    CHECK_INT(s.ids[1], id[1]);

    s = (users_seen){0};
    OK(svc_users_list(F.s, &c, id[0], 10, collect_user, &s, &e));
    CHECK_INT(s.n, 3);

    s = (users_seen){0};
    OK(svc_users_list(F.s, &c, id[3], 0, collect_user, &s, &e));
    CHECK_INT(s.n, 0);

    /* emit returning non-zero stops the walk; that is not an error */
    s = (users_seen){.stop_after = 3};
    OK(svc_users_list(F.s, &c, 0, 0, collect_user, &s, &e));
    CHECK_INT(s.n, 3);
    CHECK_INT(s.ids[2], id[2]);

    /* a caller already gone */
    rt_ctx cc;
    rt_ctx_init(&cc, NULL);
    rt_ctx_cancel(&cc);
    svc_call gone = SVC_CALL(&cc, &F.arena, &anon);
    s = (users_seen){0};
    REFUSED(svc_users_list(F.s, &gone, 0, 0, collect_user, &s, &e), SVC_CANCELLED, "cancelled");
    CHECK_INT(s.n, 0);
    rt_ctx_release(&cc);

    /* a caller going away mid-stream stops it before the next row */
    rt_ctx mid;
    rt_ctx_init(&mid, NULL);
    svc_call going = SVC_CALL(&mid, &F.arena, &anon);
    s = (users_seen){.cancel_at_1 = &mid};
    REFUSED(svc_users_list(F.s, &going, 0, 0, collect_user, &s, &e), SVC_CANCELLED, "cancelled");
    CHECK_INT(s.n, 1);
    rt_ctx_release(&mid);

    /* a deadline already passed */
    rt_ctx late;
    rt_ctx_init_deadline(&late, NULL, bz_now_ns() - 1);
    svc_call timed = SVC_CALL(&late, &F.arena, &anon);
    s = (users_seen){0};
    REFUSED(svc_users_list(F.s, &timed, 0, 0, collect_user, &s, &e), SVC_TIMEOUT, "timeout");
    CHECK_INT(s.n, 0);
    rt_ctx_release(&late);

    /* the stored password works (case-insensitive email), a wrong one does not */
    svc_session sess;
    svc_login_in bad = {S("uma@example.com"), S("password124")};
    REFUSED(svc_session_create(F.s, &c, &bad, &sess, &e), SVC_UNAUTHENTICATED, "invalid_credentials");
    svc_login_in good = {S("UMA@example.com"), S("password123")};
    OK(svc_session_create(F.s, &c, &good, &sess, &e));
    CHECK(sess.token != NULL && strlen(sess.token) >= 32);
    svc_principal me;
    OK(svc_authenticate(F.s, &F.ctx, sess.token, strlen(sess.token), "127.0.0.1", &me, &e));
    CHECK_INT(me.user_id, id[0]);
    svc_call mc = call(&me);
    svc_user u;
    OK(svc_user_me(F.s, &mc, &u, &e));
    CHECK_INT(u.id, id[0]);
    CHECK_STR(u.email, "uma@example.com");
    OK(svc_session_delete(F.s, &mc, &e));
    OK(svc_authenticate(F.s, &F.ctx, sess.token, strlen(sess.token), "127.0.0.1", &me, &e));
    CHECK_INT(me.user_id, 0);
}

static void users_list_streams_and_stops(void **state)
{
    (void)state;
    run(users_body);
}

/* =========================================================================================
 * 6. items import
 * ========================================================================================= */

static const char *find_line(const svc_import_result *r, const char *a, const char *b)
{
    for (int i = 0; i < r->nerrors; i++)
        if (strstr(r->errors[i], a) && strstr(r->errors[i], b))
            return r->errors[i];
    return NULL;
}

static void import_body(void)
{
    svc_err e;
    int64_t us = signup("importer@example.com", "Importer");
    svc_principal ps = who(us);
    svc_call c = call(&ps);
    svc_item existing;
    svc_item_in ex = item_in("dup-1", "Existing", 100, "USD", 1);
    OK(svc_item_create(F.s, &c, &ex, &existing, &e));

    svc_item_in batch[5] = {
        item_in("imp-a", "Apple", 250, "USD", 10),
        item_in("imp-b", "Broken", -5, "USD", 1), /* negative price */
        item_in("dup-1", "Taken", 100, "USD", 1), /* sku of a live item */
        item_in("imp-c", "Cherry", 0, "EUR", 0),
        item_in("imp-a", "Apple again", 1, "USD", 1), /* sku earlier in this batch */
    };
    svc_import_result res;
    memset(&res, 0, sizeof res);
    OK(svc_items_import(F.s, &c, batch, 5, &res, &e));
    CHECK_INT(res.created, 2);
    CHECK_INT(res.rejected, 3);
    CHECK_INT(res.nerrors, 3);
    CHECK(find_line(&res, "item 1 (sku \"imp-b\")", "price_cents") != NULL);
    CHECK(find_line(&res, "item 1 (sku \"imp-b\")", "validation_failed") != NULL);
    CHECK(find_line(&res, "item 2 (sku \"dup-1\")", "sku_taken") != NULL);
    CHECK(find_line(&res, "item 4 (sku \"imp-a\")", "sku_taken") != NULL);

    /* results accumulate across batches, numbering goes on */
    svc_item_in batch2[2] = {
        item_in("imp-d", "Date", 75, "USD", 3), item_in("imp-e", "Elder", 75, "usd", 3), /* bad currency */
    };
    OK(svc_items_import(F.s, &c, batch2, 2, &res, &e));
    CHECK_INT(res.created, 3);
    CHECK_INT(res.rejected, 4);
    CHECK_INT(res.nerrors, 4);
    CHECK(find_line(&res, "item 6 (sku \"imp-e\")", "currency") != NULL);

    /* what was created, once each */
    svc_items_query q;
    memset(&q, 0, sizeof q);
    q.seller_id = I(us);
    svc_item_page page;
    OK(svc_items_list(F.s, &c, &q, &page, &e));
    CHECK_INT(page.n, 4);
    CHECK(page.next_cursor == NULL);
    const char *skus[4] = {"dup-1", "imp-a", "imp-c", "imp-d"};
    for (int i = 0; i < 4; i++) {
        CHECK_STR(page.data[i].sku, skus[i]);
        CHECK_INT(page.data[i].seller_id, us);
    }
    CHECK_STR(page.data[0].name, "Existing");
    CHECK_STR(page.data[1].name, "Apple");
    int64_t apple = page.data[1].id, cherry = page.data[2].id;

    /* reads through the cache: a miss, then a hit */
    bool hit = true;
    svc_item it = get_item(apple, &hit);
    CHECK(!hit);
    CHECK_STR(it.sku, "imp-a");
    CHECK_STR(it.name, "Apple");
    CHECK_INT(it.price_cents, 250);
    CHECK_STR(it.currency, "USD");
    CHECK_INT(it.stock, 10);
    CHECK_INT(it.seller_id, us);
    it = get_item(apple, &hit);
    CHECK(hit);
    CHECK_STR(it.sku, "imp-a");
    CHECK_INT(it.stock, 10);
    it = get_item(cherry, &hit);
    CHECK(!hit);
    CHECK_STR(it.currency, "EUR");
    CHECK_INT(it.price_cents, 0);

    /* a change invalidates the entry: the writer reads its own write */
    svc_item_in patch;
    memset(&patch, 0, sizeof patch);
    patch.stock = I(7);
    svc_item upd;
    OK(svc_item_update(F.s, &c, apple, &patch, false, &upd, &e));
    CHECK_INT(upd.stock, 7);
    it = get_item(apple, &hit);
    CHECK(!hit);
    CHECK_INT(it.stock, 7);
    /* gone after delete, and its sku is free again */
    OK(svc_item_delete(F.s, &c, apple, &e));
    svc_principal anon = who(0);
    svc_call ca = call(&anon);
    REFUSED(svc_item_get(F.s, &ca, apple, &it, &hit, &e), SVC_NOT_FOUND, "not_found");
    REFUSED(svc_item_get(F.s, &ca, 999999, &it, &hit, &e), SVC_NOT_FOUND, "not_found");
    svc_item_in again[1] = {item_in("imp-a", "Apple 2", 300, "USD", 1)};
    OK(svc_items_import(F.s, &c, again, 1, &res, &e));
    CHECK_INT(res.created, 4);
    CHECK_INT(res.rejected, 4);
}

static void items_import_counts_and_explains_rejections(void **state)
{
    (void)state;
    run(import_body);
}

/* =========================================================================================
 * 7. cursors are opaque
 * ========================================================================================= */

static void cursors_body(void)
{
    svc_err e;
    int64_t us = signup("shop@example.com", "Shop");
    svc_principal ps = who(us);
    svc_call c = call(&ps);
    int64_t ids[5];
    for (int i = 0; i < 5; i++) {
        char sku[16];
        snprintf(sku, sizeof sku, "cur-%d", i);
        svc_item it;
        svc_item_in in = item_in(sku, "Thing", 100 + i, "USD", 1);
        OK(svc_item_create(F.s, &c, &in, &it, &e));
        ids[i] = it.id;
    }
    svc_items_query q;
    memset(&q, 0, sizeof q);
    q.page.limit = I(2);
    svc_item_page p1, p2, p3;
    OK(svc_items_list(F.s, &c, &q, &p1, &e));
    CHECK_INT(p1.n, 2);
    CHECK_INT(p1.data[0].id, ids[0]);
    CHECK_INT(p1.data[1].id, ids[1]);
    CHECK(p1.next_cursor != NULL);
    char cur1[128];
    snprintf(cur1, sizeof cur1, "%s", p1.next_cursor);
    CHECK(strstr(cur1, "cur-") == NULL); /* nothing readable */

    q.page.cursor = S(cur1);
    OK(svc_items_list(F.s, &c, &q, &p2, &e));
    CHECK_INT(p2.n, 2);
    CHECK_INT(p2.data[0].id, ids[2]);
    CHECK_INT(p2.data[1].id, ids[3]);
    CHECK(p2.next_cursor != NULL);
    q.page.cursor = S(p2.next_cursor);
    OK(svc_items_list(F.s, &c, &q, &p3, &e));
    CHECK_INT(p3.n, 1);
    CHECK_INT(p3.data[0].id, ids[4]);
    CHECK(p3.next_cursor == NULL);

    /* changing any character is detected */
    size_t n = strlen(cur1);
    CHECK(n > 8);
    for (size_t i = 0; i < n; i++) {
        char t[128];
        memcpy(t, cur1, n + 1);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        q.page.cursor = S(t);
        svc_item_page pt;
        REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "invalid_cursor");
    }
    char shortened[128];
    snprintf(shortened, sizeof shortened, "%.*s", (int)(n - 1), cur1);
    svc_item_page pt;
    q.page.cursor = S(shortened);
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "invalid_cursor");
    q.page.cursor = S("");
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "invalid_cursor");
    q.page.cursor = S("not a cursor!");
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "invalid_cursor");

    /* a cursor of one list is not accepted by another */
    q.seller_id = I(us);
    q.page.cursor = S(cur1);
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "invalid_cursor");
    q.page.cursor = (svc_str){NULL, 0, SVC_ABSENT};
    OK(svc_items_list(F.s, &c, &q, &pt, &e));
    CHECK_INT(pt.n, 2);
    CHECK(pt.next_cursor != NULL);
    q.seller_id = INT_ABSENT;
    q.page.cursor = S(pt.next_cursor);
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "invalid_cursor");
    int64_t acct = open_account(&ps, "USD");
    svc_page_in tp = {I(2), S(cur1)};
    svc_transfer_page tpage;
    REFUSED(svc_transfers_list(F.s, &c, acct, &tp, &tpage, &e), SVC_INVALID, "invalid_cursor");

    /* the page size comes from the table */
    q.page.cursor = (svc_str){NULL, 0, SVC_ABSENT};
    q.page.limit = I(svc_limits[L_PAGE_LIMIT].max + 1);
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "limit");
    q.page.limit = I(0);
    REFUSED(svc_items_list(F.s, &c, &q, &pt, &e), SVC_INVALID, "validation_failed");
    CHECK_VIOLS(e, "limit");
    q.page.limit = INT_ABSENT; /* default 20: everything on one page */
    OK(svc_items_list(F.s, &c, &q, &pt, &e));
    CHECK_INT(pt.n, 5);
    CHECK(pt.next_cursor == NULL);
}

static void cursors_are_opaque_and_scoped(void **state)
{
    (void)state;
    run(cursors_body);
}

/* =========================================================================================
 * 9. abuse caps (issue 13): the password-hashing pool
 * ========================================================================================= */

/* Reopens the service with F.cfg as the body changed it. */
static void fx_reopen(void)
{
    bz_error be;
    svc_close(F.s);
    F.s = svc_open(&F.cfg, F.d, F.c, &F.ctx, &be);
    if (!F.s)
        failf(__FILE__, __LINE__, "svc_open: %s", be.msg);
}

typedef struct {
    int i;
    int ok, overloaded;
    int *done;
    rt_wg *wg;
} flood_arg;

static void signup_flood_fn(void *p)
{
    flood_arg *x = p;
    bz_arena a;
    bz_arena_init(&a, 0);
    svc_principal anon = who(0);
    svc_call c = SVC_CALL(&F.ctx, &a, &anon);
    char email[64];
    snprintf(email, sizeof email, "flood%d@example.com", x->i);
    svc_user_in in = {S(email), S("Flood"), S("password123")};
    svc_user u;
    svc_err e;
    svc_err_clear(&e);
    if (svc_user_create(F.s, &c, &in, &u, &e) == 0)
        x->ok = 1;
    else if (e.kind == SVC_UNAVAILABLE && !strcmp(e.code, "overloaded") && e.retry_after_s > 0)
        x->overloaded = 1;
    else
        failf(__FILE__, __LINE__, "sign-up %d: %s/%s: %s", x->i, svc_kind_name(e.kind), e.code, e.msg);
    (*x->done)++;
    bz_arena_free(&a);
    rt_wg_done(x->wg);
}

#define NFLOOD (1 + PW_QUEUE + 6)
#define PW_QUEUE 8 /* PW_QUEUE_PER_THREAD with one thread */

static void auth_pool_body(void)
{
    F.cfg.auth_concurrency = 1;
    fx_reopen();
    svc_principal u = who(signup("payer@example.com", "Payer"));
    int64_t acct = open_account(&u, "USD");
    flood_arg args[NFLOOD];
    int done = 0;
    rt_wg wg;
    rt_wg_init(&wg);
    for (int i = 0; i < NFLOOD; i++) {
        args[i] = (flood_arg){i, 0, 0, &done, &wg};
        rt_wg_add(&wg, 1);
        rt_go(signup_flood_fn, &args[i]);
    }
    /* let every sign-up reach the pool: one hashes, 8 wait, the rest are
     * refused at once */
    rt_sleep(&F.ctx, 5 * BZ_NS_PER_MS);
    int refused = 0;
    for (int i = 0; i < NFLOOD; i++)
        refused += args[i].overloaded;
    CHECK(refused >= NFLOOD - 1 - PW_QUEUE - 1);
    CHECK(refused <= NFLOOD - PW_QUEUE);
    /* a deposit (its commit runs on the offload pool) does not wait for
     * the hashes: it is done while most accepted sign-ups still wait */
    int64_t t0 = bz_now_ns();
    CHECK_INT(deposit(&u, acct, 500), 500);
    int64_t took_ms = (bz_now_ns() - t0) / BZ_NS_PER_MS;
    int pending = NFLOOD - refused - (done - refused);
    CHECK(pending >= PW_QUEUE / 2);
    rt_wg_wait(&wg, NULL);
    rt_wg_destroy(&wg);
    raise_recorded();
    int ok = 0;
    for (int i = 0; i < NFLOOD; i++)
        ok += args[i].ok;
    CHECK_INT(ok + refused, NFLOOD);
    CHECK(ok >= PW_QUEUE);
    /* after the flood, sign-up and login work again */
    signup("after@example.com", "After");
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_login_in li = {S("after@example.com"), S("password123")};
    svc_session ses;
    svc_err e;
    OK(svc_session_create(F.s, &c, &li, &ses, &e));
    fprintf(stderr, "auth pool: %d of %d sign-ups refused overloaded; a deposit took %lld ms meanwhile\n", refused,
            NFLOOD, (long long)took_ms);
}

static void auth_pool_is_bounded_and_apart(void **state)
{
    (void)state;
    run(auth_pool_body);
}

/* ---- event streams per user ---- */

static void streams_body(void)
{
    F.cfg.sse_max_per_user = 3;
    fx_reopen();
    svc_principal a = who(signup("a@example.com", "A")), b = who(signup("b@example.com", "B"));
    svc_watch *w[4] = {0};
    svc_err e;
    svc_call c = call(&a);
    for (int i = 0; i < 3; i++)
        OK(svc_orders_watch(F.s, &c, a.user_id, &w[i], &e));
    CHECK_INT(svc_streams_open(F.s, a.user_id), 3);
    REFUSED(svc_orders_watch(F.s, &c, a.user_id, &w[3], &e), SVC_RATE_LIMITED, "too_many_streams");
    CHECK(w[3] == NULL);
    CHECK(e.retry_after_s > 0);
    CHECK_INT(svc_streams_open(F.s, a.user_id), 3);
    /* another user is not affected */
    svc_call cb = call(&b);
    OK(svc_orders_watch(F.s, &cb, b.user_id, &F.watch, &e));
    CHECK_INT(svc_streams_open(F.s, b.user_id), 1);
    /* a closed stream frees its slot */
    svc_watch_close(w[0]);
    w[0] = NULL;
    CHECK_INT(svc_streams_open(F.s, a.user_id), 2);
    OK(svc_orders_watch(F.s, &c, a.user_id, &w[0], &e));
    for (int i = 0; i < 3; i++)
        svc_watch_close(w[i]);
    CHECK_INT(svc_streams_open(F.s, a.user_id), 0);
}

static void event_streams_are_capped_per_user(void **state)
{
    (void)state;
    run(streams_body);
}

/* ---- the one watch loop (svc_orders_stream) ---- */

typedef struct {
    int ready, idle, stop_after_idle;
    int nev;
    const char *status[4];
    svc_call *act_c; /* what ready does: cancel this order (an event to follow) */
    int64_t act_order;
} sink_log;

static int sink_ready(void *arg)
{
    sink_log *l = arg;
    l->ready++;
    if (l->act_order) {
        svc_order o;
        svc_err e;
        OK(svc_order_cancel(F.s, l->act_c, l->act_order, &o, &e));
    }
    return 0;
}

static int sink_event(void *arg, const svc_order_event *ev)
{
    sink_log *l = arg;
    if (l->nev < 4)
        l->status[l->nev] = ev->status;
    l->nev++;
    return 0;
}

static int sink_idle(void *arg)
{
    sink_log *l = arg;
    return ++l->idle >= l->stop_after_idle && l->stop_after_idle > 0;
}

static void stream_body(void)
{
    svc_err e;
    int64_t us = signup("s@example.com", "S"), ub = signup("b@example.com", "B");
    svc_principal ps = who(us), pb = who(ub);
    int64_t acct = open_account(&pb, "USD");
    deposit(&pb, acct, 10000);
    svc_item item;
    svc_call cs = call(&ps);
    svc_item_in ii = item_in("lamp-1", "Lamp", 100, "USD", 5);
    OK(svc_item_create(F.s, &cs, &ii, &item, &e));
    svc_order o;
    svc_order_in oi = order_in(acct, 1);
    line(&oi, 0, item.id, 1);
    svc_call ck = key_call(&pb, "stream-order");
    OK(svc_order_create(F.s, &ck, &oi, &o, &e));

    /* subscribed, then the event, then quiet ticks until the sink stops it */
    svc_call cb = call(&pb);
    sink_log l = {.stop_after_idle = 2, .act_c = &cb, .act_order = o.id};
    svc_watch_sink sink = {sink_ready, sink_event, sink_idle, &l};
    OK(svc_orders_stream(F.s, &cb, ub, &sink, &e));
    CHECK_INT(l.ready, 1);
    CHECK_INT(l.nev, 1);
    CHECK_STR(l.status[0], "cancelled");
    CHECK_INT(l.idle, 2);
    CHECK_INT(svc_streams_open(F.s, ub), 0); /* the lease went back */

    /* refused before anything is sent: another user's events */
    sink_log l2 = {.stop_after_idle = 1};
    svc_watch_sink sink2 = {sink_ready, sink_event, sink_idle, &l2};
    svc_call cs2 = call(&ps);
    REFUSED(svc_orders_stream(F.s, &cs2, ub, &sink2, &e), SVC_NOT_FOUND, "not_found");
    CHECK_INT(l2.ready, 0);

    /* the caller's deadline ends it: timeout, after at least one quiet tick */
    rt_ctx dl;
    rt_ctx_init_timeout(&dl, &F.ctx, 1500 * BZ_NS_PER_MS);
    svc_call cd = SVC_CALL(&dl, &F.arena, &pb);
    sink_log l3 = {0};
    svc_watch_sink sink3 = {sink_ready, sink_event, sink_idle, &l3};
    REFUSED(svc_orders_stream(F.s, &cd, ub, &sink3, &e), SVC_TIMEOUT, "timeout");
    rt_ctx_release(&dl);
    CHECK_INT(l3.ready, 1);
    CHECK(l3.idle >= 1);
    CHECK_INT(svc_streams_open(F.s, ub), 0);
}

static void order_streams_are_one_loop(void **state)
{
    (void)state;
    run(stream_body);
}

/* ---- idempotency retention ---- */

static int dep_key(const svc_principal *p, int64_t acct, int64_t cents, const char *key, bool *replayed,
                   int64_t *bal)
{
    svc_call c = key_call(p, key);
    svc_deposit_in in = {acct, I(cents)};
    svc_account a;
    svc_err e;
    OK(svc_deposit(F.s, &c, &in, &a, &e));
    *replayed = c.replayed;
    *bal = a.balance_cents;
    return 0;
}

static void retention_body(void)
{
    F.cfg.idempotency_retention_ns = 300 * BZ_NS_PER_MS;
    fx_reopen();
    svc_principal u = who(signup("keeper@example.com", "Keeper"));
    int64_t acct = open_account(&u, "USD");
    bool rep;
    int64_t bal;
    dep_key(&u, acct, 100, "k-old", &rep, &bal);
    CHECK(!rep);
    CHECK_INT(bal, 100);
    dep_key(&u, acct, 100, "k-old", &rep, &bal); /* within the retention: replayed */
    CHECK(rep);
    CHECK_INT(bal, 100);
    for (int i = 0; i < 5; i++)
        deposit(&u, acct, 1); /* 5 more records with fresh keys */
    rt_sleep(&F.ctx, 400 * BZ_NS_PER_MS);
    dep_key(&u, acct, 10, "k-fresh", &rep, &bal);
    CHECK(!rep);
    CHECK_INT(bal, 115);
    /* older than the retention: the key is new again (a second effect),
     * even before the purge ran, and with another request too */
    dep_key(&u, acct, 100, "k-old", &rep, &bal);
    CHECK(!rep);
    CHECK_INT(bal, 215);
    dep_key(&u, acct, 100, "k-old", &rep, &bal); /* and now replays the new result */
    CHECK(rep);
    CHECK_INT(bal, 215);
    /* the purge deletes the 5 expired records (batches of 1000) and keeps
     * the live ones */
    int64_t n = -1;
    bz_error be;
    if (svc_idem_purge(F.s, &F.ctx, 10, &n, &be) != 0)
        failf(__FILE__, __LINE__, "purge: %s", be.msg);
    CHECK_INT(n, 5);
    if (svc_idem_purge(F.s, &F.ctx, 10, &n, &be) != 0)
        failf(__FILE__, __LINE__, "purge: %s", be.msg);
    CHECK_INT(n, 0);
    dep_key(&u, acct, 10, "k-fresh", &rep, &bal);
    CHECK(rep);
    CHECK_INT(bal, 115);
}

static void idempotency_keys_expire_and_are_purged(void **state)
{
    (void)state;
    run(retention_body);
}

/* ---- sessions: a password change ends the others ---- */

int64_t cache__memory_keys(cache_be *b);
int64_t cache__memory_used(cache_be *b);

static const char *login(const char *email, const char *pw)
{
    svc_principal anon = who(0);
    svc_call c = call(&anon);
    svc_login_in li = {S(email), S(pw)};
    svc_session ses;
    svc_err e;
    OK(svc_session_create(F.s, &c, &li, &ses, &e));
    return ses.token;
}

/* The principal a token stands for (user_id 0: not a session). */
static svc_principal authn(const char *token)
{
    svc_principal p;
    svc_err e;
    OK(svc_authenticate(F.s, &F.ctx, token, strlen(token), "127.0.0.1", &p, &e));
    return p;
}

static int session_set_size(int64_t uid)
{
    char k[48];
    snprintf(k, sizeof k, "sessions:%lld", (long long)uid);
    bz_buf b = BZ_BUF_INIT;
    bz_error be;
    int n = -1;
    if (cache_smembers(F.c, &F.ctx, k, 1000, &b, &n, &be) != 0)
        failf(__FILE__, __LINE__, "smembers: %s", be.msg);
    bz_buf_free(&b);
    return n;
}

static void sessions_body(void)
{
    int64_t uid = signup("multi@example.com", "Multi");
    int64_t other = signup("other@example.com", "Other");
    const char *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = login("multi@example.com", "password123");
    const char *to = login("other@example.com", "password123");
    CHECK_INT(session_set_size(uid), 3);
    svc_principal p0 = authn(t[0]);
    CHECK_INT(p0.user_id, uid);
    svc_call c = call(&p0);
    svc_user_patch pin = {{NULL, 0, SVC_ABSENT}, S("new-password-1")};
    svc_user out;
    svc_err e;
    OK(svc_user_patch_op(F.s, &c, uid, &pin, &out, &e));
    /* the caller's session survives; the others are gone everywhere */
    CHECK_INT(authn(t[0]).user_id, uid);
    CHECK_INT(authn(t[1]).user_id, 0);
    CHECK_INT(authn(t[2]).user_id, 0);
    CHECK_INT(session_set_size(uid), 1);
    /* another user's session is untouched */
    CHECK_INT(authn(to).user_id, other);
    /* a rename ends nothing */
    const char *t3 = login("multi@example.com", "new-password-1");
    svc_user_patch rn = {S("Renamed"), {NULL, 0, SVC_ABSENT}};
    OK(svc_user_patch_op(F.s, &c, uid, &rn, &out, &e));
    CHECK_INT(authn(t3).user_id, uid);
    /* logout ends the session and removes it from the set */
    OK(svc_session_delete(F.s, &c, &e));
    CHECK_INT(authn(t[0]).user_id, 0);
    CHECK_INT(session_set_size(uid), 1);
    CHECK_INT(authn(t3).user_id, uid);
}

static void password_change_ends_other_sessions(void **state)
{
    (void)state;
    run(sessions_body);
}

/* ---- cache entries a client can multiply never evict state ---- */

static int flood_load(void *arg, rt_ctx *ctx, bz_buf *out, bz_error *err)
{
    char page[1024];
    memset(page, 'p', sizeof page);
    bz_buf_append(out, page, sizeof page);
    return 0;
}

static void eviction_body(void)
{
    /* a small cache */
    bz_error be;
    svc_close(F.s);
    F.s = NULL;
    cache_close(F.c);
    cache_opts co = {.max_memory = 256 << 10, .eviction = BZ_EVICT_ALLKEYS_LRU};
    F.c = cache_open("memory", &co, &be);
    if (!F.c)
        failf(__FILE__, __LINE__, "cache_open: %s", be.msg);
    F.s = svc_open(&F.cfg, F.d, F.c, &F.ctx, &be);
    if (!F.s)
        failf(__FILE__, __LINE__, "svc_open: %s", be.msg);
    int64_t uid = signup("keep@example.com", "Keep");
    const char *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = login("keep@example.com", "password123");
    char tok[33];
    CHECK_INT(cache_lock(F.c, &F.ctx, "held", 60 * BZ_NS_PER_S, false, tok, &be), 0);
    /* 3000 distinct 1 KiB pages: 12 times the cache */
    bz_buf b = BZ_BUF_INIT;
    for (int i = 0; i < 3000; i++) {
        char key[64];
        snprintf(key, sizeof key, "olist:%lld:v:flood:%d", (long long)uid, i);
        cache_status st;
        CHECK_INT(cache_get_or_load(F.c, &F.ctx, key, 60 * BZ_NS_PER_S, flood_load, NULL, &b, &st, &be), 0);
    }
    bz_buf_free(&b);
    cache_stats cs = cache_get_stats(F.c);
    CHECK(cs.evictions >= 2000);
    CHECK(cache__memory_used(F.c->be) <= (256 << 10) + 4096);
    for (int i = 0; i < 4; i++)
        CHECK_INT(authn(t[i]).user_id, uid);
    char tok2[33];
    CHECK_INT(cache_lock(F.c, &F.ctx, "held", 60 * BZ_NS_PER_S, false, tok2, &be), CACHE_MISS);
    fprintf(stderr, "eviction: %lld entries evicted, %lld bytes used, every session and the lock kept\n",
            (long long)cs.evictions, (long long)cache__memory_used(F.c->be));
}

static void multiplied_entries_never_evict_sessions(void **state)
{
    (void)state;
    run(eviction_body);
}

/* ---- superseded order pages are dropped ---- */

static void list_page(const svc_principal *p, int limit)
{
    svc_call c = call(p);
    svc_page_in pg = {I(limit), {NULL, 0, SVC_ABSENT}};
    svc_order_page out;
    bool hit;
    svc_err e;
    OK(svc_orders_list(F.s, &c, p->user_id, (svc_str){NULL, 0, SVC_ABSENT}, &pg, &out, &hit, &e));
}

static void pages_body(void)
{
    svc_principal u = who(signup("churn@example.com", "Churn"));
    int64_t acct = open_account(&u, "USD");
    deposit(&u, acct, 1000000);
    svc_call c = call(&u);
    svc_item_in iin = item_in("churn-1", "Thing", 100, "USD", 100000);
    svc_item item;
    svc_err e;
    OK(svc_item_create(F.s, &c, &iin, &item, &e));
    list_page(&u, 1);
    int64_t base = cache__memory_keys(F.c->be);
    for (int i = 0; i < 30; i++) {
        svc_order_in oin = order_in(acct, 1);
        line(&oin, 0, item.id, 1);
        svc_call kc = kcall(&u);
        svc_order o;
        OK(svc_order_create(F.s, &kc, &oin, &o, &e));
        for (int l = 1; l <= 3; l++)
            list_page(&u, l);
    }
    int64_t grown = cache__memory_keys(F.c->be) - base;
    /* the 3 current pages and the page set; 90 pages without the drop */
    CHECK(grown <= 6);
    /* many distinct pages of one version: at most SVC_OLIST_MAX_PAGES */
    for (int l = 1; l <= 100; l++)
        list_page(&u, l);
    grown = cache__memory_keys(F.c->be) - base;
    CHECK(grown <= 64 + 4);
    fprintf(stderr, "pages: %lld keys more after 30 changes and 100 distinct pages\n", (long long)grown);
}

static void superseded_order_pages_are_dropped(void **state)
{
    (void)state;
    run(pages_body);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(transfers_refuse_and_conserve_money),
        cmocka_unit_test(orders_pay_cancel_ship_and_events),
        cmocka_unit_test(idempotency_replays_and_refuses_reuse),
        cmocka_unit_test(validation_names_every_bad_field),
        cmocka_unit_test(bad_fields_are_reported_once),
        cmocka_unit_test(users_list_streams_and_stops),
        cmocka_unit_test(items_import_counts_and_explains_rejections),
        cmocka_unit_test(cursors_are_opaque_and_scoped),
        cmocka_unit_test(auth_pool_is_bounded_and_apart),
        cmocka_unit_test(event_streams_are_capped_per_user),
        cmocka_unit_test(order_streams_are_one_loop),
        cmocka_unit_test(idempotency_keys_expire_and_are_purged),
        cmocka_unit_test(password_change_ends_other_sessions),
        cmocka_unit_test(multiplied_entries_never_evict_sessions),
        cmocka_unit_test(superseded_order_pages_are_dropped),
    };
    return cmocka_run_group_tests_name("svc", tests, NULL, NULL);
}
