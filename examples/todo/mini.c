/* mini — the smallest todo: one REST route and one unary RPC (todo.proto),
 * a SQLite query behind both, on the bazaar lifecycle's standard flags.
 *   GET /todos/{id}  and  todo.v1.TodoService/GetTodo */
#include <bazaar/bazaar.h>

#include <stdlib.h>

#include "todo.pb-c.h"

static db *D;

/* The one service function: 0 and *t filled, 1 when absent, or an error. */
static int todo_get(rt_ctx *ctx, int64_t id, Todo__V1__Todo *t, db_rows **rows)
{
    bz_error err;
    int rc = db_query_row(DB(D), ctx, "SELECT id, title FROM todos WHERE id = $1", (db_arg[]){DB_INT(id)}, 1,
                          rows, &err);
    if (rc == 0) {
        t->id = db_col_int(*rows, 0);
        t->title = (char *)db_col_text(*rows, 1, NULL);
    }
    return rc;
}

static int rest_get(http_req *r, void *data)
{
    Todo__V1__Todo t = TODO__V1__TODO__INIT;
    db_rows *rows;
    int rc = todo_get(r->ctx, atoll(http_path_value(r, "id")), &t, &rows);
    if (rc != 0)
        return rc == DB_NO_ROWS ? http_send_problem(r, 404, "not_found", "no such todo") : rc;
    bz_buf b = BZ_BUF_INIT;
    bz_buf_printf(&b, "{\"id\":%lld,\"title\":\"", (long long)t.id);
    bz_buf_append_json_escaped(&b, bz_str_c(t.title));
    bz_buf_append_c(&b, "\"}");
    http_send(r, 200, "application/json", b.data, b.len);
    bz_buf_free(&b);
    db_rows_close(rows);
    return 0;
}

static int rpc_get(grpc_call *c, void *data)
{
    Todo__V1__GetTodoRequest *in;
    Todo__V1__Todo t = TODO__V1__TODO__INIT;
    db_rows *rows;
    if (grpc_recv(c, &todo__v1__get_todo_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return 0;
    int rc = todo_get(grpc_ctx(c), in->id, &t, &rows);
    if (rc != 0)
        return rc == DB_NO_ROWS ? grpc_finish(c, GRPC_NOT_FOUND, "no such todo") : rc;
    grpc_send(c, &t.base);
    db_rows_close(rows);
    return grpc_finish(c, GRPC_OK, NULL);
}

static const char schema_sql[] = "CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT);"
                                 "INSERT INTO todos (title) VALUES ('write less C')";
static const db_migration schema[] = {{.version = 1, .name = "todos", .sqlite_sql = schema_sql}};

/* Runs inside the runtime before the listeners open. */
static int open_db(bazaar_service *s, void *arg)
{
    bz_error err;
    if (!(D = db_open("sqlite://mini.db", &(db_opts){.max_open = 4}, &err)) ||
        db_migrate(D, NULL, schema, 1, NULL, &err))
        return bz_log_err("cannot open the database", BZ_F_STR("error", err.msg)), -1;
    return 0;
}

int main(int argc, char **argv)
{
    bazaar_service *s = bazaar_new("mini", argc, argv, NULL, 0);
    http_mux_handle(bazaar_mux(s), "GET /todos/{id}", (http_handler){rest_get, NULL}, NULL, 0);
    grpc_server_add(bazaar_grpc(s), &(grpc_method){.path = "/todo.v1.TodoService/GetTodo", .fn = rpc_get});
    bazaar_on_start(s, open_db, NULL);
    return bazaar_run(s);
}
