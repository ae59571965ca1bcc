/* app/svc/fulfil.c — the fulfilment worker: ships paid orders whose job is
 * due, one transaction per job, and announces each shipment. */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#define WORKER_POLL_NS (250 * BZ_NS_PER_MS)

typedef struct {
    svc *s;
    int64_t order_id, customer;
    bool shipped;
} ship_args;

static int ship_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    ship_args *x = p;
    x->order_id = 0;
    x->shipped = false;
    db_rows *rows = NULL;
    int64_t now = bz_wall_us();
    db_arg due[] = {DB_TIME(now)};
    int rc = sql_row(NULL, TX(tx), ctx, &SQL_JOB_DUE, due, 1, &rows, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    int64_t job = db_col_int(rows, 0);
    x->order_id = db_col_int(rows, 1);
    db_rows_close(rows);
    db_arg u[] = {DB_TIME(now), DB_INT(x->order_id)};
    rc = sql_row(NULL, TX(tx), ctx, &SQL_ORDER_SHIP, u, 2, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        x->customer = db_col_int(rows, 0);
        x->shipped = true;
        db_rows_close(rows);
    }
    db_arg d[] = {DB_INT(job)};
    return sql_exec(TX(tx), ctx, &SQL_JOB_DELETE, d, 1, NULL, err);
}

static void worker(void *p)
{
    svc *s = p;
    while (!atomic_load(&s->stopping) && !rt_ctx_err(rt_shutdown_ctx())) {
        for (int i = 0; i < 64; i++) {
            ship_args x = {s, 0, 0, false};
            bz_error e;
            rt_ctx c;
            rt_ctx_init_timeout(&c, NULL, 10 * BZ_NS_PER_S);
            db_tx_opts o = {.isolation = s->dialect == DB_POSTGRES ? DB_READ_COMMITTED : DB_SERIALIZABLE};
            int rc = db_run_tx(s->db, &c, &o, ship_tx, &x, &e);
            rt_ctx_release(&c);
            if (rc != 0) {
                bz_log_warn("fulfilment failed; will retry", BZ_F_STR("error", e.msg));
                break;
            }
            if (!x.order_id)
                break;
            if (x.shipped) {
                svc__fx_orders_changed(s, x.customer);
                bz_log_info("order shipped", BZ_F_INT("order_id", x.order_id));
                svc__fx_order_event(s, x.customer, x.order_id, "shipped", bz_wall_us());
            }
        }
        rt_sleep(rt_shutdown_ctx(), WORKER_POLL_NS);
    }
    rt_wg_done(&s->workers);
}

void svc_start_worker(svc *s)
{
    rt_wg_init(&s->workers);
    rt_ctx_init(&s->bg_stop, NULL);
    rt_wg_add(&s->workers, 1);
    s->worker_on = true;
    rt_go(worker, s);
    svc__idem_start_purger(s);
    svc__replica_start(s);
}

void svc_stop_worker(svc *s)
{
    if (!s->worker_on)
        return;
    atomic_store(&s->stopping, true);
    rt_ctx_cancel(&s->bg_stop);
    rt_wg_wait(&s->workers, NULL);
    rt_wg_destroy(&s->workers);
    rt_ctx_release(&s->bg_stop);
    s->worker_on = false;
}
