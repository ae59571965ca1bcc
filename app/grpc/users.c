/* app/grpc/users.c — bazaar.v1.UserService's ListUsers stream (the
 * unary methods are rows of methods.c). */
#include "app/grpc/rpc-private.h"

/* ListUsers streams as it reads: each row the service hands over is sent
 * at once (grpc_send parks while the client's window is shut). */
typedef struct {
    grpc_call *c;
    bool failed;
} list_state;

static int emit_user(void *arg, const svc_user *u)
{
    list_state *st = arg;
    bz_arena scratch;
    bz_arena_init(&scratch, 512);
    Bazaar__V1__User out;
    rpc_user(&scratch, u, &out);
    int rc = grpc_send(st->c, &out.base);
    bz_arena_free(&scratch);
    if (rc != 0)
        st->failed = true;
    return rc != 0;
}

int rpc_users_list(grpc_call *c, void *data)
{
    rpc *R = data;
    Bazaar__V1__ListUsersRequest *in;
    if (rpc_recv1(c, &bazaar__v1__list_users_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return 0;
    svc_call sc = rpc_call(c);
    svc_err e;
    svc_err_clear(&e);
    list_state st = {c, false};
    if (svc_users_list(R->s, &sc, in->after_id, in->limit, emit_user, &st, &e) != 0)
        return rpc_fail(c, &e);
    if (st.failed) /* the client went away mid-stream */
        return grpc_finish(c, GRPC_CANCELLED, "the client cancelled the stream");
    return grpc_finish(c, GRPC_OK, NULL);
}
