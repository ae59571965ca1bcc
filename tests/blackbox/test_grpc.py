"""gRPC black-box suite: bazaar.v1's services driven by python3-grpcio (a
real gRPC client) over h2c on --grpc-addr and on --http-addr: the four
call types, auth metadata, the error mapping with BadRequest details,
deadlines, cancellation, compression, message limits, unknown methods,
health, metrics — all calling the same operations as REST."""
import os
import signal
import threading
import time

import grpc
import pytest
import requests

from grpc_stubs import bidi, client_stream, health_pb2, pb, server_stream, status_pb2, unary
from harness import Backend, Server

U = "/bazaar.v1.UserService/"
I = "/bazaar.v1.ItemService/"
O = "/bazaar.v1.OrderService/"


def GrpcServer(tmp, *flags):
    """bazaar serve on SQLite with gRPC on its own address too."""
    return Server(Backend("sqlite", tmp), *flags, grpc=True)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = GrpcServer(str(tmp_path_factory.mktemp("grpc")), "--grpc-max-recv-bytes", "64KiB")
    yield s
    s.close(check=True)


def rest_user(srv, email, name="Gina"):
    r = requests.post(srv.url + "/v1/users", json={"email": email, "name": name, "password": "password1"})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    r = requests.post(srv.url + "/v1/sessions", json={"email": email, "password": "password1"})
    return uid, r.json()["token"]


def bearer(tok):
    return (("authorization", "Bearer " + tok),)


def details(err):
    """google.rpc.Status from grpc-status-details-bin, with its BadRequest."""
    raw = dict(err.trailing_metadata()).get("grpc-status-details-bin")
    assert raw, "no grpc-status-details-bin"
    st = status_pb2.Status.FromString(raw)
    assert st.details[0].type_url == "type.googleapis.com/google.rpc.BadRequest"
    br = status_pb2.BadRequest.FromString(st.details[0].value)
    return st, {v.field for v in br.field_violations}


def test_create_and_get_user_with_and_without_auth(srv):
    u = unary(srv.channel, U + "CreateUser", None, pb.User)(
        pb.CreateUserRequest(email="Grpc.Ann@Example.com", name="Ann", password="password1"), timeout=10)
    assert u.id > 0 and u.email == "grpc.ann@example.com" and u.name == "Ann" and u.created_at.seconds > 0
    get = unary(srv.channel, U + "GetUser", None, pb.User)
    pub = get(pb.GetUserRequest(id=u.id), timeout=5)
    assert pub.name == "Ann" and pub.email == ""  # public fields only
    # the same user as REST sees it
    assert requests.get(srv.url + "/v1/users/%d" % u.id).json()["name"] == "Ann"
    r = requests.post(srv.url + "/v1/sessions", json={"email": "grpc.ann@example.com", "password": "password1"})
    tok = r.json()["token"]
    own = get(pb.GetUserRequest(id=u.id), metadata=bearer(tok), timeout=5)
    assert own.email == "grpc.ann@example.com"
    with pytest.raises(grpc.RpcError) as e:
        get(pb.GetUserRequest(id=987654), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "not_found" in e.value.details()
    # a sign-up with a taken email
    with pytest.raises(grpc.RpcError) as e:
        unary(srv.channel, U + "CreateUser", None, pb.User)(
            pb.CreateUserRequest(email="grpc.ann@example.com", name="Ann", password="password1"), timeout=10)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and "email_taken" in e.value.details()


def test_validation_errors_carry_bad_request_details(srv):
    with pytest.raises(grpc.RpcError) as e:
        unary(srv.channel, U + "CreateUser", None, pb.User)(
            pb.CreateUserRequest(email="nope", name="", password="short"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    st, fields = details(e.value)
    assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert fields == {"email", "name", "password"}


def test_bad_token_is_unauthenticated_and_auth_rpcs_need_one(srv):
    get_order = unary(srv.channel, O + "GetOrder", None, pb.Order)
    with pytest.raises(grpc.RpcError) as e:
        get_order(pb.GetOrderRequest(id=1), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        get_order(pb.GetOrderRequest(id=1), metadata=bearer("not-a-token"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_list_users_streams_in_order_with_limit(srv):
    ids = [rest_user(srv, "list%d@example.com" % i)[0] for i in range(5)]
    ls = server_stream(srv.channel, U + "ListUsers", pb.User)
    got = [u.id for u in ls(pb.ListUsersRequest(after_id=ids[0], limit=3), timeout=5)]
    assert got == ids[1:4]
    everyone = [u.id for u in ls(pb.ListUsersRequest(after_id=0, limit=0), timeout=5)]
    assert everyone == sorted(everyone) and set(ids) <= set(everyone)
    assert all(u.email == "" for u in ls(pb.ListUsersRequest(after_id=0), timeout=5))


def test_get_item_shares_the_rest_cache_entry(srv):
    uid, tok = rest_user(srv, "seller-grpc@example.com")
    r = requests.post(srv.url + "/v1/items", headers={"Authorization": "Bearer " + tok},
                      json={"sku": "grpc-1", "name": "Lamp", "price_cents": 1500, "currency": "USD", "stock": 9})
    item_id = r.json()["id"]
    it = unary(srv.channel, I + "GetItem", None, pb.Item)(pb.GetItemRequest(id=item_id), timeout=5)
    assert (it.sku, it.name, it.price_cents, it.stock, it.version, it.seller_id) == ("grpc-1", "Lamp", 1500, 9, 1, uid)
    # the gRPC read filled the cache that REST reads
    r = requests.get(srv.url + "/v1/items/%d" % item_id)
    assert r.headers["Cache-Status"] == "bazaar; hit" and r.json()["name"] == "Lamp"
    with pytest.raises(grpc.RpcError) as e:
        unary(srv.channel, I + "GetItem", None, pb.Item)(pb.GetItemRequest(id=10 ** 12), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_import_items_counts_rejections_and_needs_auth(srv):
    uid, tok = rest_user(srv, "importer@example.com")
    imp = client_stream(srv.channel, I + "ImportItems", pb.ImportItemsResponse)

    def items():
        for i in range(250):
            yield pb.NewItem(sku="imp-%d" % i, name="Thing %d" % i, price_cents=100 + i, currency="USD", stock=5)
        yield pb.NewItem(sku="imp-bad", name="Bad", price_cents=-1, currency="USD", stock=1)
        yield pb.NewItem(sku="imp-3", name="Again", price_cents=1, currency="USD", stock=1)  # sku taken
        yield pb.NewItem(sku="imp-cur", name="Cur", price_cents=1, currency="usd", stock=1)

    res = imp(items(), metadata=bearer(tok), timeout=30)
    assert res.created == 250 and res.rejected == 3 and len(res.errors) == 3
    assert any("imp-bad" in x and "price_cents" in x for x in res.errors)
    assert any("imp-3" in x and "sku_taken" in x for x in res.errors)
    page = requests.get(srv.url + "/v1/items?seller_id=%d&limit=100" % uid).json()["data"]
    assert len(page) == 100 and page[0]["sku"] == "imp-0"
    with pytest.raises(grpc.RpcError) as e:
        imp(iter([pb.NewItem(sku="x", name="x", price_cents=1, currency="USD", stock=1)]), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_lookup_items_answers_each_request_in_order_as_it_comes(srv):
    uid, tok = rest_user(srv, "lookup@example.com")
    ids = []
    for i in range(3):
        r = requests.post(srv.url + "/v1/items", headers={"Authorization": "Bearer " + tok},
                          json={"sku": "lk-%d" % i, "name": "L%d" % i, "price_cents": 10, "currency": "USD",
                                "stock": 1})
        ids.append(r.json()["id"])
    lookup = bidi(srv.channel, I + "LookupItems", pb.ItemLookup)
    # ping-pong: the next request is sent only after the previous answer
    # came back, so the server must answer each one as soon as it is known
    q = []
    cond = threading.Condition()
    wanted = [ids[0], 999999999, ids[2], ids[1]]

    def requests_gen():
        for i, x in enumerate(wanted):
            with cond:
                assert cond.wait_for(lambda: len(q) == i, timeout=5), "answer %d did not come" % (i - 1)
            yield pb.GetItemRequest(id=x)

    for ans in lookup(requests_gen(), timeout=20):
        with cond:
            q.append(ans)
            cond.notify_all()
    assert [a.requested_id for a in q] == wanted
    assert [a.found for a in q] == [True, False, True, True]
    assert q[0].item.sku == "lk-0" and q[2].item.sku == "lk-2" and not q[1].HasField("item")


def test_get_order_and_watch_orders_follow_the_same_events_as_sse(srv):
    seller, stok = rest_user(srv, "wseller@example.com")
    buyer, btok = rest_user(srv, "wbuyer@example.com")
    H = {"Authorization": "Bearer " + btok}
    item = requests.post(srv.url + "/v1/items", headers={"Authorization": "Bearer " + stok},
                         json={"sku": "w-1", "name": "W", "price_cents": 700, "currency": "USD", "stock": 5}).json()
    acct = requests.post(srv.url + "/v1/accounts", headers=H, json={"currency": "USD"}).json()
    requests.post(srv.url + "/v1/accounts/%d/deposits" % acct["id"], headers=dict(H, **{"Idempotency-Key": "d1"}),
                  json={"amount_cents": 5000})
    order = requests.post(srv.url + "/v1/orders", headers=dict(H, **{"Idempotency-Key": "o1"}),
                          json={"account_id": acct["id"], "lines": [{"item_id": item["id"], "quantity": 2}]}).json()
    o = unary(srv.channel, O + "GetOrder", None, pb.Order)(pb.GetOrderRequest(id=order["id"]), metadata=bearer(btok),
                                                        timeout=5)
    assert (o.status, o.total_cents, o.currency, len(o.lines), o.lines[0].quantity) == ("pending", 1400, "USD", 1, 2)
    with pytest.raises(grpc.RpcError) as e:  # not yours
        unary(srv.channel, O + "GetOrder", None, pb.Order)(pb.GetOrderRequest(id=order["id"]), metadata=bearer(stok),
                                                        timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    watch = server_stream(srv.channel, O + "WatchOrders", pb.OrderEvent)
    call = watch(pb.WatchOrdersRequest(), metadata=bearer(btok), timeout=15)
    call.initial_metadata()  # headers are out: subscribed
    assert requests.post(srv.url + "/v1/orders/%d/pay" % order["id"], headers=H).json()["status"] == "paid"
    seen = []
    for ev in call:
        seen.append((ev.order_id, ev.status))
        assert ev.at.seconds > 0
        if ev.status == "shipped":
            call.cancel()
            break
    assert seen == [(order["id"], "paid"), (order["id"], "shipped")]


def test_deadline_is_reported_and_bounds_the_call(srv):
    uid, tok = rest_user(srv, "deadline@example.com")
    watch = server_stream(srv.channel, O + "WatchOrders", pb.OrderEvent)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        list(watch(pb.WatchOrdersRequest(), metadata=bearer(tok), timeout=0.5))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 3


def metric(srv, method, code):
    for line in requests.get(srv.url + "/metrics").text.splitlines():
        if line.startswith('bazaar_grpc_server_handled_total{method="%s",code="%s"}' % (method, code)):
            return int(line.rsplit(" ", 1)[1])
    return 0


def test_client_cancel_ends_the_call_server_side(srv):
    uid, tok = rest_user(srv, "cancel@example.com")
    before = metric(srv, "bazaar.v1.OrderService/WatchOrders", "CANCELLED")
    call = server_stream(srv.channel, O + "WatchOrders", pb.OrderEvent)(pb.WatchOrdersRequest(),
                                                                      metadata=bearer(tok), timeout=30)
    call.initial_metadata()
    call.cancel()
    deadline = time.time() + 5
    while metric(srv, "bazaar.v1.OrderService/WatchOrders", "CANCELLED") == before and time.time() < deadline:
        time.sleep(0.1)
    assert metric(srv, "bazaar.v1.OrderService/WatchOrders", "CANCELLED") == before + 1


def test_gzip_both_ways(srv):
    ch = grpc.insecure_channel("127.0.0.1:%d" % srv.gport, compression=grpc.Compression.Gzip)
    u = unary(ch, U + "CreateUser", None, pb.User)(
        pb.CreateUserRequest(email="gz@example.com", name="G" * 90, password="password1"), timeout=10)
    got = [x.name for x in server_stream(ch, U + "ListUsers", pb.User)(pb.ListUsersRequest(after_id=u.id - 1, limit=1),
                                                                       timeout=5)]
    assert got == ["G" * 90]
    ch.close()


def test_message_over_max_recv_bytes_is_resource_exhausted(srv):
    with pytest.raises(grpc.RpcError) as e:
        unary(srv.channel, U + "CreateUser", None, pb.User)(
            pb.CreateUserRequest(email="big@example.com", name="x" * 70000, password="password1"), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unknown_method_and_service_are_unimplemented(srv):
    for path in [U + "Nope", "/bazaar.v1.NoService/Get"]:
        with pytest.raises(grpc.RpcError) as e:
            unary(srv.channel, path, None, pb.User)(pb.GetUserRequest(id=1), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_request_id_metadata_is_echoed(srv):
    call = unary(srv.channel, U + "GetUser", None, pb.User).with_call(
        pb.GetUserRequest(id=1), metadata=(("x-request-id", "rid-grpc-42"),), timeout=5)
    assert dict(call[1].initial_metadata())["x-request-id"] == "rid-grpc-42"


def test_health_check_and_metrics(srv):
    check = unary(srv.channel, "/grpc.health.v1.Health/Check", None, health_pb2.HealthCheckResponse)
    for name in ["", "bazaar.v1.UserService", "bazaar.v1.ItemService", "bazaar.v1.OrderService"]:
        assert check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == 1  # SERVING
    with pytest.raises(grpc.RpcError) as e:
        check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    text = requests.get(srv.url + "/metrics").text
    assert '# TYPE bazaar_grpc_server_handled_total counter' in text
    assert 'bazaar_grpc_server_handled_total{method="grpc.health.v1.Health/Check",code="OK"}' in text
    assert 'bazaar_grpc_server_handling_seconds_bucket{method="bazaar.v1.UserService/GetUser",le="+Inf"}' in text


def test_grpc_on_the_http_address_too(srv):
    ch = grpc.insecure_channel("127.0.0.1:%d" % srv.port)
    u = unary(ch, U + "GetUser", None, pb.User)(pb.GetUserRequest(id=1), timeout=5)
    assert u.id == 1
    ch.close()
    # and REST keeps working on that address
    assert requests.get(srv.url + "/healthz").text == "ok"


def test_rate_limit_is_resource_exhausted(tmp_path):
    s = GrpcServer(str(tmp_path), "--rate-limit", "3")
    try:
        get = unary(s.channel, U + "GetUser", None, pb.User)
        # The limit counts in one-second windows aligned to the clock: start
        # at a window's beginning, and count what got through per window
        # (calls that began and ended in the same second).
        while time.time() % 1 > 0.05:
            time.sleep(0.01)
        codes, through = [], {}
        for _ in range(8):
            t0 = time.time()
            try:
                get(pb.GetUserRequest(id=1), timeout=5)
                code = "ok"
            except grpc.RpcError as e:
                code = e.code()
            codes.append(code)
            if code == grpc.StatusCode.NOT_FOUND and int(t0) == int(time.time()):
                through[int(t0)] = through.get(int(t0), 0) + 1
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert through and max(through.values()) <= 3, (through, codes)  # at most the limit per window
    finally:
        s.close(check=True)


def test_health_watch_reports_not_serving_when_draining(tmp_path):
    s = GrpcServer(str(tmp_path), "--shutdown-grace", "5s")
    watch = server_stream(s.channel, "/grpc.health.v1.Health/Watch", health_pb2.HealthCheckResponse)
    call = watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
    it = iter(call)
    assert next(it).status == 1  # SERVING
    s.proc.send_signal(signal.SIGTERM)
    nxt = next(it)
    assert nxt.status == 2  # NOT_SERVING while draining
    call.cancel()
    assert s.proc.wait(20) == 0
    s.channel.close()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_a_client_that_never_reads_a_huge_stream_costs_flat_memory(tmp_path):
    """1,000,000 users; a raw HTTP/2 client (python3-h2 frames) asks for all
    of them with every flow-control window wide open, then never reads its
    socket.  The server may only fill the socket buffers: its RSS stays
    flat while the call hangs, and other clients are still served."""
    import socket
    import sqlite3
    import h2.config
    import h2.connection
    import h2.settings

    s0 = GrpcServer(str(tmp_path))
    s0.close(check=True)  # migrated; now fill the users table directly
    db = s0.backend.db[len("sqlite://"):]
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO users (email, name, password_hash, created_at) VALUES (?, ?, 'x', "
                    "'2026-01-01T00:00:00.000000Z')", (("m%d@x.io" % i, "User %d" % i) for i in range(1000000)))
    con.commit()
    con.close()
    s = Server(s0.backend, grpc=True)
    try:
        sock = socket.create_connection(("127.0.0.1", s.gport))
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
        c.increment_flow_control_window(2 ** 31 - 1 - 65535)
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "bench"),
                           (":path", U + "ListUsers"), ("content-type", "application/grpc"), ("te", "trailers")])
        c.send_data(1, b"\0\0\0\0\0", end_stream=True)  # ListUsersRequest{}: everyone
        sock.sendall(c.data_to_send())
        # Wait until the server has filled what the socket takes and parked
        # (at once on a release build; slower under sanitizers), then watch.
        prev, deadline = rss_kb(s.proc.pid), time.time() + 30
        while time.time() < deadline:
            time.sleep(0.5)
            cur = rss_kb(s.proc.pid)
            if abs(cur - prev) < 256:
                break
            prev = cur
        before = rss_kb(s.proc.pid)
        time.sleep(4)
        after = rss_kb(s.proc.pid)
        assert after - before < 2048, "RSS grew %d KiB while the client did not read" % (after - before)
        # the server is still serving others
        u = unary(s.channel, U + "GetUser", None, pb.User)(pb.GetUserRequest(id=5), timeout=5)
        assert u.name == "User 4"
        # and the stream had not finished (it is parked, not done)
        assert metric(s, "bazaar.v1.UserService/ListUsers", "OK") == 0
        sock.close()
    finally:
        s.close(check=True)


def test_keepalive_pings_keep_a_live_peer_and_drop_a_dead_one(tmp_path):
    """--idle-timeout 2s: a quiet call is PINGed after 1 s.  grpcio answers
    the PINGs, so its Health.Watch stream outlives the idle timeout; a raw
    client that never answers is closed (GOAWAY, then EOF) once the
    read-header timeout passes without a byte from it."""
    import socket
    import h2.config
    import h2.connection
    import h2.events

    s = GrpcServer(str(tmp_path), "--idle-timeout", "2s", "--read-header-timeout", "1s")
    try:
        watch = server_stream(s.channel, "/grpc.health.v1.Health/Watch", health_pb2.HealthCheckResponse)
        call = watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        it = iter(call)
        assert next(it).status == 1
        time.sleep(5)  # well past the idle timeout, with no messages
        assert call.is_active()
        call.cancel()

        sock = socket.create_connection(("127.0.0.1", s.gport))
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                           (":path", "/grpc.health.v1.Health/Watch"), ("content-type", "application/grpc"),
                           ("te", "trailers")])
        c.send_data(1, b"\0\0\0\0\0", end_stream=True)
        sock.sendall(c.data_to_send())
        t0 = time.monotonic()
        sock.settimeout(10)
        events, data = [], b""
        while True:  # read, but never send anything back (no PING ACK)
            chunk = sock.recv(65536)
            if not chunk:
                break
            events += c.receive_data(chunk)
            c.clear_outbound_data_buffer()
        elapsed = time.monotonic() - t0
        assert any(isinstance(e, h2.events.PingReceived) for e in events), events
        assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), events
        assert 1.5 < elapsed < 8, elapsed
        sock.close()
    finally:
        s.close(check=True)
