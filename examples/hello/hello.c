/* hello — one REST route and a JSON answer on the bazaar lifecycle.
 *
 *     cc hello.c $(pkg-config --cflags --libs bazaar) -o hello
 *     ./hello --http-addr :8080 --grpc-addr off
 *     curl localhost:8080/hello/world        {"message":"hello, world"}
 *
 * It also answers /healthz, /readyz and /metrics, logs a JSON line per
 * request, and drains on SIGTERM; ./hello --help lists its flags
 * (each with an environment twin: HELLO_HTTP_ADDR, ...). */
#include <bazaar/bazaar.h>

static int hello(http_req *r, void *data)
{
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"message\":\"hello, ");
    bz_buf_append_json_escaped(&b, bz_str_c(http_path_value(r, "name")));
    bz_buf_append_c(&b, "\"}");
    http_send(r, 200, "application/json", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

int main(int argc, char **argv)
{
    bazaar_service *s = bazaar_new("hello", argc, argv, NULL, 0);
    http_mux_handle(bazaar_mux(s), "GET /hello/{name}", (http_handler){hello, NULL}, NULL, 0);
    return bazaar_run(s);
}
