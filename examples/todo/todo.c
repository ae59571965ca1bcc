/* todo — REST and gRPC over one service function, on the bazaar lifecycle.
 *
 *   GET  /todos/{id}            {"id":1,"title":"milk"}   (404 problem+json when absent)
 *   POST /todos?title=milk      201 and the new todo
 *   todo.v1.TodoService/GetTodo and /AddTodo (todo.proto), the same functions
 *
 * SQLite by default, PostgreSQL with --db postgres://...; the schema is a
 * migration (db_migrate); reads go through the cache (cache-aside with
 * single-flight: in memory, or Redis with --cache redis://host:port/0). */
#include <bazaar/bazaar.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "todo.pb-c.h"

static char db_url[512], cache_url[512];
static int64_t ttl;
static const bz_flag flags[] = {
    {.name = "db",
     .type = BZ_FLAG_STRING,
     .def = "sqlite://todo.db",
     .dst = db_url,
     .cap = sizeof db_url,
     .help = "sqlite://PATH or postgres://user:pass@host/db"},
    {.name = "cache",
     .type = BZ_FLAG_STRING,
     .def = "memory",
     .dst = cache_url,
     .cap = sizeof cache_url,
     .help = "memory, none or redis://host:port/N"},
    {.name = "cache-ttl",
     .type = BZ_FLAG_DURATION,
     .def = "30s",
     .dst = &ttl,
     .min = 1,
     .help = "how long a todo stays cached"},
};

static const db_migration schema[] = {
    {1, "todos", "CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT NOT NULL)",
     "CREATE TABLE todos (id BIGSERIAL PRIMARY KEY, title TEXT NOT NULL)"},
};

static db *D;
static cache *C;

/* ---- the service: transport-free, called by REST and gRPC alike ---- */

/* The loader behind the cache: one row, cached as the Todo's protobuf bytes. */
static int load_todo(void *arg, rt_ctx *ctx, bz_buf *out, bz_error *err)
{
    db_rows *rows;
    int rc = db_query_row(DB(D), ctx, "SELECT id, title FROM todos WHERE id = $1",
                          (db_arg[]){DB_INT(*(int64_t *)arg)}, 1, &rows, err);
    if (rc != 0)
        return rc == DB_NO_ROWS ? 0 : rc; /* absent: cached as an empty value */
    Todo__V1__Todo t = TODO__V1__TODO__INIT;
    t.id = db_col_int(rows, 0);
    t.title = (char *)db_col_text(rows, 1, NULL);
    bz_buf_reserve(out, todo__v1__todo__get_packed_size(&t));
    out->len += todo__v1__todo__pack(&t, (uint8_t *)out->data + out->len);
    db_rows_close(rows);
    return 0;
}

/* 0 with *t (free with todo__v1__todo__free_unpacked), 1 when absent, or an error. */
static int todo_get(rt_ctx *ctx, int64_t id, Todo__V1__Todo **t)
{
    char key[32];
    snprintf(key, sizeof key, "todo:%lld", (long long)id);
    bz_buf b = BZ_BUF_INIT;
    bz_error err;
    int rc = cache_get_or_load(C, ctx, key, ttl, load_todo, &id, &b, NULL, &err);
    if (rc == 0 && b.len == 0)
        rc = 1;
    else if (rc == 0 && !(*t = todo__v1__todo__unpack(NULL, b.len, (uint8_t *)b.data)))
        rc = -EINVAL;
    bz_buf_free(&b);
    return rc;
}

static int todo_add(rt_ctx *ctx, const char *title, int64_t *id)
{
    db_rows *rows;
    bz_error err;
    int rc = db_query_row(DB(D), ctx, "INSERT INTO todos (title) VALUES ($1) RETURNING id",
                          (db_arg[]){DB_TEXT(title)}, 1, &rows, &err);
    if (rc == 0) {
        *id = db_col_int(rows, 0);
        db_rows_close(rows);
    }
    return rc;
}

/* ---- REST ---- */

static int send_todo(http_req *r, int status, const Todo__V1__Todo *t)
{
    bz_buf b = BZ_BUF_INIT;
    bz_buf_printf(&b, "{\"id\":%lld,\"title\":\"", (long long)t->id);
    bz_buf_append_json_escaped(&b, bz_str_c(t->title));
    bz_buf_append_c(&b, "\"}");
    http_send(r, status, "application/json", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

static int rest_get(http_req *r, void *data)
{
    Todo__V1__Todo *t;
    int rc = todo_get(r->ctx, atoll(http_path_value(r, "id")), &t);
    if (rc != 0)
        return rc == 1 ? http_send_problem(r, 404, "not_found", "no such todo") : rc;
    send_todo(r, 200, t);
    todo__v1__todo__free_unpacked(t, NULL);
    return 0;
}

static int rest_add(http_req *r, void *data)
{
    const char *title = http_query_get(r, "title");
    int64_t id;
    if (!title || !*title)
        return http_send_problem(r, 400, "invalid_argument", "title is required");
    int rc = todo_add(r->ctx, title, &id);
    if (rc != 0)
        return rc;
    Todo__V1__Todo t = TODO__V1__TODO__INIT;
    t.id = id;
    t.title = (char *)title;
    return send_todo(r, 201, &t);
}

/* ---- gRPC ---- */

static int rpc_get(grpc_call *c, void *data)
{
    Todo__V1__GetTodoRequest *in;
    Todo__V1__Todo *t;
    if (grpc_recv(c, &todo__v1__get_todo_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return 0;
    int rc = todo_get(grpc_ctx(c), in->id, &t);
    if (rc != 0)
        return rc == 1 ? grpc_finish(c, GRPC_NOT_FOUND, "no todo %lld", (long long)in->id) : rc;
    grpc_send(c, &t->base);
    todo__v1__todo__free_unpacked(t, NULL);
    return grpc_finish(c, GRPC_OK, NULL);
}

static int rpc_add(grpc_call *c, void *data)
{
    Todo__V1__AddTodoRequest *in;
    Todo__V1__Todo t = TODO__V1__TODO__INIT;
    if (grpc_recv(c, &todo__v1__add_todo_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return 0;
    if (!*in->title)
        return grpc_finish(c, GRPC_INVALID_ARGUMENT, "title is required");
    int rc = todo_add(grpc_ctx(c), in->title, &t.id);
    if (rc != 0)
        return rc;
    t.title = in->title;
    grpc_send(c, &t.base);
    return grpc_finish(c, GRPC_OK, NULL);
}

/* ---- the lifecycle ---- */

static int open_backends(bazaar_service *s, void *arg)
{
    bz_error err;
    if (!(D = db_open(db_url, &(db_opts){.max_open = 8, .max_idle = 8}, &err)) ||
        db_migrate(D, NULL, schema, 1, NULL, &err) != 0 ||
        !(C = cache_open(cache_url, &(cache_opts){0}, &err))) {
        bz_log_err("cannot open the backends", BZ_F_STR("error", err.msg));
        return -1;
    }
    return 0;
}

static void close_backends(bazaar_service *s, void *arg)
{
    cache_close(C);
    db_close(D);
}

static bool db_ok(void *arg, rt_ctx *ctx)
{
    return db_ping(D, ctx, NULL) == 0;
}

int main(int argc, char **argv)
{
    bazaar_service *s = bazaar_new("todo", argc, argv, flags, sizeof flags / sizeof flags[0]);
    char err[256];
    http_mux_handle(bazaar_mux(s), "GET /todos/{id}", (http_handler){rest_get, NULL}, err, sizeof err);
    http_mux_handle(bazaar_mux(s), "POST /todos", (http_handler){rest_add, NULL}, err, sizeof err);
    grpc_server_add(bazaar_grpc(s), &(grpc_method){.path = "/todo.v1.TodoService/GetTodo", .fn = rpc_get});
    grpc_server_add(bazaar_grpc(s), &(grpc_method){.path = "/todo.v1.TodoService/AddTodo", .fn = rpc_add});
    bazaar_ready_check(s, "db", db_ok, NULL);
    bazaar_on_start(s, open_backends, NULL);
    bazaar_on_stop(s, close_backends, NULL);
    return bazaar_run(s);
}
