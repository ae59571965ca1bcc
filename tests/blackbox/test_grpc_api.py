"""The whole marketplace over gRPC: the 21 bazaar.proto methods that are
the twins of REST operations (sessions, accounts, deposits, transfers,
item create/list/update/delete, order create/pay/cancel/list, the
leaderboard, GetMe, UpdateUser, FindUserByEmail), driven by python3-grpcio
against the same rules as REST: auth (UNAUTHENTICATED), not yours →
NOT_FOUND, field violations in google.rpc.BadRequest, the REST `code`
first in the status message, idempotent replay across transports (one
record per key, whichever transport used it), and page tokens that are
REST cursors.  One server serves both transports; run on SQLite + memory
cache and on PostgreSQL + Redis."""
import time
import uuid

import grpc
import pytest

from grpc_stubs import pb, status_pb2
from harness import Backend, PG_URL, Server
from rest import Client, account, key, new_user

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason="needs with_services.sh"))]
P = "/bazaar.v1."


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request, tmp_path_factory):
    """`bazaar serve` with REST on --http-addr and gRPC on --grpc-addr."""
    s = Server(Backend(request.param, str(tmp_path_factory.mktemp("grpcapi"))), "--login-rate-limit", "1000/min",
               grpc=True)
    yield s
    s.close(check=True)


RESP = {
    "UserService/GetMe": pb.User, "UserService/UpdateUser": pb.User, "UserService/FindUserByEmail": pb.User,
    "UserService/GetUser": pb.User,
    "SessionService/CreateSession": pb.Session, "SessionService/DeleteSession": None,
    "AccountService/CreateAccount": pb.Account, "AccountService/ListAccounts": pb.ListAccountsResponse,
    "AccountService/GetAccount": pb.Account, "AccountService/Deposit": pb.Account,
    "AccountService/Transfer": pb.TransferRecord, "AccountService/GetTransfer": pb.TransferRecord,
    "AccountService/ListTransfers": pb.ListTransfersResponse,
    "ItemService/CreateItem": pb.Item, "ItemService/ListItems": pb.ListItemsResponse,
    "ItemService/UpdateItem": pb.Item, "ItemService/DeleteItem": None, "ItemService/GetItem": pb.Item,
    "OrderService/CreateOrder": pb.Order, "OrderService/PayOrder": pb.Order, "OrderService/CancelOrder": pb.Order,
    "OrderService/ListOrders": pb.ListOrdersResponse, "OrderService/GetOrder": pb.Order,
    "LeaderboardService/TopSpenders": pb.TopSpendersResponse,
}


def empty_pb():
    from google.protobuf import empty_pb2
    return empty_pb2.Empty


def call(srv, method, req=None, token=None, idem=None, with_call=False):
    """One unary call: the response (and the call, for its metadata)."""
    resp = RESP[method] or empty_pb()
    md = []
    if token:
        md.append(("authorization", "Bearer " + token))
    if idem:
        md.append(("idempotency-key", idem))
    stub = srv.channel.unary_unary(P + method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=resp.FromString)
    if req is None:
        req = empty_pb()()
    out, c = stub.with_call(req, metadata=md, timeout=15)
    return (out, c) if with_call else out


def refused(srv, method, req=None, token=None, idem=None):
    with pytest.raises(grpc.RpcError) as e:
        call(srv, method, req, token, idem)
    return e.value


def fails(err, code, rest_code):
    """The status and, first in its message, REST's problem code."""
    assert err.code() == code, (err.code(), err.details())
    assert err.details().startswith(rest_code + ": "), err.details()


def violations(err):
    """The fields of google.rpc.BadRequest in grpc-status-details-bin."""
    fails(err, grpc.StatusCode.INVALID_ARGUMENT, "validation_failed")
    raw = dict(err.trailing_metadata()).get("grpc-status-details-bin")
    assert raw, "no grpc-status-details-bin"
    st = status_pb2.Status.FromString(raw)
    assert st.details[0].type_url == "type.googleapis.com/google.rpc.BadRequest"
    return {v.field for v in status_pb2.BadRequest.FromString(st.details[0].value).field_violations}


def replayed(c):
    return dict(c.initial_metadata()).get("idempotent-replayed")


def unauthenticated(srv, method, req=None):
    fails(refused(srv, method, req), grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
    fails(refused(srv, method, req, token="not-a-token"), grpc.StatusCode.UNAUTHENTICATED, "unauthorized")


def email():
    return "g-%s@Example.com" % uuid.uuid4().hex[:8]


def new_item(c, **kw):
    body = {"sku": "sku-" + uuid.uuid4().hex[:8], "name": "Thing", "price_cents": 250, "currency": "USD",
            "stock": 10}
    body.update(kw)
    r = c.post("/v1/items", body)
    assert r.status_code == 201, r.text
    return r.json()


# ---- users and sessions ----


def test_create_session_and_delete_session(srv):
    addr = email()
    Client(srv).post("/v1/users", {"email": addr, "name": "Sid", "password": "password1"})
    s, c = call(srv, "SessionService/CreateSession", pb.CreateSessionRequest(email=addr.upper(), password="password1"),
                with_call=True)
    assert len(s.token) > 20 and s.expires_at.seconds > time.time() + 23 * 3600
    # the login limiter's state, as REST's RateLimit-* headers (--login-rate-limit 1000/min)
    md = dict(c.initial_metadata())
    assert md["ratelimit-limit"] == "1000" and 0 <= int(md["ratelimit-remaining"]) < 1000
    assert int(md["ratelimit-reset"]) >= 1
    assert Client(srv, s.token).get("/v1/me").json()["email"] == addr.lower()  # a token for REST too
    # a wrong password and an unknown email: the same answer
    for em, pw in ((addr, "password2"), ("nobody-%s@example.com" % uuid.uuid4().hex[:6], "password1")):
        fails(refused(srv, "SessionService/CreateSession", pb.CreateSessionRequest(email=em, password=pw)),
              grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials")
    unauthenticated(srv, "SessionService/DeleteSession")
    call(srv, "SessionService/DeleteSession", token=s.token)
    # the token stops working everywhere at once
    assert Client(srv, s.token).get("/v1/me").status_code == 401
    fails(refused(srv, "UserService/GetMe", token=s.token), grpc.StatusCode.UNAUTHENTICATED, "unauthorized")


def test_get_me(srv):
    c, u = new_user(srv)
    unauthenticated(srv, "UserService/GetMe")
    me = call(srv, "UserService/GetMe", token=c.token)
    assert (me.id, me.name, me.email) == (u["id"], u["name"], u["email"]) and me.created_at.seconds > 0


def test_update_user_self_only_and_password_ends_other_sessions(srv):
    c, u = new_user(srv, password="password1")
    other, ou = new_user(srv)
    unauthenticated(srv, "UserService/UpdateUser", pb.UpdateUserRequest(id=u["id"]))
    # another user's id is not yours: not found (before anything is changed)
    fails(refused(srv, "UserService/UpdateUser", pb.UpdateUserRequest(id=u["id"], name={"value": "X"}),
                  token=other.token), grpc.StatusCode.NOT_FOUND, "not_found")
    assert Client(srv).get("/v1/users/%d" % u["id"]).json()["name"] == u["name"]
    err = refused(srv, "UserService/UpdateUser",
                  pb.UpdateUserRequest(id=u["id"], name={"value": ""}, password={"value": "short"}), token=c.token)
    assert violations(err) == {"name", "password"}
    # only the fields that are set change
    got = call(srv, "UserService/UpdateUser", pb.UpdateUserRequest(id=u["id"], name={"value": "Renamed"}),
               token=c.token)
    assert got.name == "Renamed" and got.email == u["email"]
    second = Client(srv).post("/v1/sessions", {"email": u["email"], "password": "password1"}).json()["token"]
    call(srv, "UserService/UpdateUser", pb.UpdateUserRequest(id=u["id"], password={"value": "password2"}),
         token=c.token)
    fails(refused(srv, "UserService/GetMe", token=second), grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
    assert Client(srv).post("/v1/sessions", {"email": u["email"], "password": "password2"}).status_code == 201


def test_find_user_by_email(srv):
    c, u = new_user(srv)
    got = call(srv, "UserService/FindUserByEmail", pb.FindUserByEmailRequest(email=u["email"].upper()))
    assert got.id == u["id"] and got.name == u["name"] and got.email == ""  # public fields, as REST's list
    rest = Client(srv).get("/v1/users", params={"email": u["email"].upper()}).json()["data"]
    assert [x["id"] for x in rest] == [got.id]
    fails(refused(srv, "UserService/FindUserByEmail", pb.FindUserByEmailRequest(email="nobody@nowhere.io")),
          grpc.StatusCode.NOT_FOUND, "not_found")
    assert violations(refused(srv, "UserService/FindUserByEmail", pb.FindUserByEmailRequest())) == {"email"}


# ---- accounts and transfers ----


def test_accounts_create_list_get(srv):
    c, u = new_user(srv)
    other, _ = new_user(srv)
    unauthenticated(srv, "AccountService/CreateAccount", pb.CreateAccountRequest(currency="USD"))
    unauthenticated(srv, "AccountService/ListAccounts")
    assert violations(refused(srv, "AccountService/CreateAccount", pb.CreateAccountRequest(currency="usd"),
                              token=c.token)) == {"currency"}
    a = call(srv, "AccountService/CreateAccount", pb.CreateAccountRequest(currency="EUR"), token=c.token)
    assert a.id > 0 and a.user_id == u["id"] and a.currency == "EUR" and a.balance_cents == 0
    fails(refused(srv, "AccountService/CreateAccount", pb.CreateAccountRequest(currency="EUR"), token=c.token),
          grpc.StatusCode.ALREADY_EXISTS, "account_exists")
    b = account(c, "USD")
    lst = call(srv, "AccountService/ListAccounts", token=c.token)
    assert sorted(x.id for x in lst.accounts) == sorted([a.id, b["id"]])
    assert [x["id"] for x in c.get("/v1/accounts").json()["data"]] == [x.id for x in lst.accounts]
    # a key is honoured when sent: REST then gRPC
    k = key()
    r = c.post("/v1/accounts", {"currency": "GBP"}, key=k)
    assert r.status_code == 201
    again, cl = call(srv, "AccountService/CreateAccount", pb.CreateAccountRequest(currency="GBP"), token=c.token,
                     idem=k, with_call=True)
    assert again.id == r.json()["id"] and replayed(cl) == "true"
    got = call(srv, "AccountService/GetAccount", pb.GetAccountRequest(id=b["id"]), token=c.token)
    assert (got.id, got.currency) == (b["id"], "USD")
    fails(refused(srv, "AccountService/GetAccount", pb.GetAccountRequest(id=b["id"]), token=other.token),
          grpc.StatusCode.NOT_FOUND, "not_found")
    unauthenticated(srv, "AccountService/GetAccount", pb.GetAccountRequest(id=b["id"]))


def test_deposit_rules_and_replay_across_transports(srv):
    c, u = new_user(srv)
    other, _ = new_user(srv)
    a = account(c)
    dep = lambda amt, **kw: call(srv, "AccountService/Deposit", pb.DepositRequest(account_id=a["id"],
                                                                                 amount_cents=amt), **kw)
    unauthenticated(srv, "AccountService/Deposit", pb.DepositRequest(account_id=a["id"], amount_cents=1))
    fails(refused(srv, "AccountService/Deposit", pb.DepositRequest(account_id=a["id"], amount_cents=100),
                  token=c.token), grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key_required")
    assert violations(refused(srv, "AccountService/Deposit", pb.DepositRequest(account_id=a["id"], amount_cents=0),
                              token=c.token, idem=key())) == {"amount_cents"}
    fails(refused(srv, "AccountService/Deposit", pb.DepositRequest(account_id=a["id"], amount_cents=5),
                  token=other.token, idem=key()), grpc.StatusCode.NOT_FOUND, "not_found")
    # REST first, then gRPC with the same key: the original result, replayed
    k1 = key()
    r = c.post("/v1/accounts/%d/deposits" % a["id"], {"amount_cents": 700}, key=k1)
    assert r.status_code == 201 and r.json()["balance_cents"] == 700
    got, cl = dep(700, token=c.token, idem=k1, with_call=True)
    assert replayed(cl) == "true"
    assert (got.id, got.balance_cents) == (a["id"], 700)
    # gRPC first, then REST
    k2 = key()
    got, cl = dep(300, token=c.token, idem=k2, with_call=True)
    assert got.balance_cents == 1000 and replayed(cl) is None
    r = c.post("/v1/accounts/%d/deposits" % a["id"], {"amount_cents": 300}, key=k2)
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true"
    assert r.json()["balance_cents"] == 1000
    # one effect each
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 1000
    # the same key with another input: refused on either transport
    fails(refused(srv, "AccountService/Deposit", pb.DepositRequest(account_id=a["id"], amount_cents=1),
                  token=c.token, idem=k1), grpc.StatusCode.FAILED_PRECONDITION, "idempotency_key_reused")


def test_transfer_rules_get_and_replay(srv):
    c, u = new_user(srv)
    d, _ = new_user(srv)
    e, _ = new_user(srv)
    a = account(c, deposit=1000)
    b = account(d)
    tr = lambda amt, frm=a["id"], tok=c.token, **kw: call(
        srv, "AccountService/Transfer", pb.TransferRequest(from_account_id=frm, to_account_id=b["id"],
                                                           amount_cents=amt), token=tok, **kw)
    unauthenticated(srv, "AccountService/Transfer", pb.TransferRequest(from_account_id=a["id"]))
    assert violations(refused(srv, "AccountService/Transfer", pb.TransferRequest(to_account_id=b["id"]),
                              token=c.token, idem=key())) == {"from_account_id", "amount_cents"}
    fails(refused(srv, "AccountService/Transfer", pb.TransferRequest(from_account_id=a["id"], to_account_id=b["id"],
                                                                     amount_cents=1), token=c.token),
          grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key_required")
    with pytest.raises(grpc.RpcError) as err:  # the from account is not yours
        tr(10, tok=d.token, idem=key())
    fails(err.value, grpc.StatusCode.NOT_FOUND, "not_found")
    with pytest.raises(grpc.RpcError) as err:
        tr(5000, idem=key())
    fails(err.value, grpc.StatusCode.FAILED_PRECONDITION, "insufficient_funds")
    k = key()
    t, cl = tr(400, idem=k, with_call=True)
    assert (t.from_account_id, t.to_account_id, t.amount_cents, t.currency) == (a["id"], b["id"], 400, "USD")
    r = c.post("/v1/transfers", {"from_account_id": a["id"], "to_account_id": b["id"], "amount_cents": 400}, key=k)
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true" and r.json()["id"] == t.id
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 600
    # either side may read it; a third user may not
    for tok in (c.token, d.token):
        got = call(srv, "AccountService/GetTransfer", pb.GetTransferRequest(id=t.id), token=tok)
        assert got.id == t.id and got.amount_cents == 400
    fails(refused(srv, "AccountService/GetTransfer", pb.GetTransferRequest(id=t.id), token=e.token),
          grpc.StatusCode.NOT_FOUND, "not_found")
    unauthenticated(srv, "AccountService/GetTransfer", pb.GetTransferRequest(id=t.id))
    # REST first, then gRPC
    k = key()
    r = c.post("/v1/transfers", {"from_account_id": a["id"], "to_account_id": b["id"], "amount_cents": 50}, key=k)
    assert r.status_code == 201
    t2, cl = tr(50, idem=k, with_call=True)
    assert t2.id == r.json()["id"] and replayed(cl) == "true"
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 550


def test_list_transfers_pages_with_rest_cursors(srv):
    c, u = new_user(srv)
    other, _ = new_user(srv)
    a = account(c, deposit=10000)
    b = account(other)
    ids = []
    for i in range(5):
        r = c.post("/v1/transfers", {"from_account_id": a["id"], "to_account_id": b["id"], "amount_cents": i + 1},
                   key=key())
        ids.append(r.json()["id"])
    lst = lambda **kw: call(srv, "AccountService/ListTransfers", pb.ListTransfersRequest(account_id=a["id"], **kw),
                            token=c.token)
    assert [t.id for t in lst().transfers] == ids[::-1] and lst().next_page_token == ""
    # page_size pages; a gRPC token is a REST cursor and a REST cursor a page token
    p1 = lst(page_size=2)
    assert [t.id for t in p1.transfers] == ids[::-1][:2] and p1.next_page_token
    r = c.get("/v1/accounts/%d/transfers" % a["id"], params={"limit": 2, "cursor": p1.next_page_token}).json()
    assert [t["id"] for t in r["data"]] == ids[::-1][2:4] and r["next_cursor"]
    p3 = lst(page_size=2, page_token=r["next_cursor"])
    assert [t.id for t in p3.transfers] == ids[::-1][4:] and p3.next_page_token == ""
    assert violations(refused(srv, "AccountService/ListTransfers",
                              pb.ListTransfersRequest(account_id=a["id"], page_size=101), token=c.token)) == {"page_size"}
    fails(refused(srv, "AccountService/ListTransfers", pb.ListTransfersRequest(account_id=a["id"], page_token="bogus"),
                  token=c.token), grpc.StatusCode.INVALID_ARGUMENT, "invalid_cursor")
    fails(refused(srv, "AccountService/ListTransfers", pb.ListTransfersRequest(account_id=a["id"]),
                  token=other.token), grpc.StatusCode.NOT_FOUND, "not_found")
    unauthenticated(srv, "AccountService/ListTransfers", pb.ListTransfersRequest(account_id=a["id"]))


# ---- items ----


def test_create_item_rules_and_replay(srv):
    c, u = new_user(srv)
    unauthenticated(srv, "ItemService/CreateItem", pb.NewItem(sku="x", name="x", price_cents=1, currency="USD"))
    err = refused(srv, "ItemService/CreateItem", pb.NewItem(sku="", name="", price_cents=-1, currency="usd",
                                                            stock=-1), token=c.token)
    assert violations(err) == {"sku", "name", "price_cents", "currency", "stock"}
    sku = "g-" + uuid.uuid4().hex[:8]
    it = call(srv, "ItemService/CreateItem", pb.NewItem(sku=sku, name="Lamp", price_cents=999, currency="USD",
                                                        stock=3), token=c.token)
    assert it.id > 0 and it.seller_id == u["id"] and (it.sku, it.price_cents, it.stock, it.version) == (sku, 999, 3, 1)
    assert Client(srv).get("/v1/items/%d" % it.id).json()["name"] == "Lamp"
    fails(refused(srv, "ItemService/CreateItem", pb.NewItem(sku=sku, name="Lamp", price_cents=1, currency="USD"),
                  token=c.token), grpc.StatusCode.ALREADY_EXISTS, "sku_taken")
    # a key is honoured when sent: REST then gRPC
    k = key()
    body = {"sku": "k-" + uuid.uuid4().hex[:8], "name": "Once", "price_cents": 5, "currency": "USD", "stock": 1}
    r = c.post("/v1/items", body, key=k)
    assert r.status_code == 201
    again, cl = call(srv, "ItemService/CreateItem", pb.NewItem(**body), token=c.token, idem=k, with_call=True)
    assert again.id == r.json()["id"] and replayed(cl) == "true"


def test_list_items_filter_and_pages_with_rest_cursors(srv):
    c, u = new_user(srv)
    ids = [new_item(c)["id"] for _ in range(5)]
    lst = lambda **kw: call(srv, "ItemService/ListItems", pb.ListItemsRequest(seller_id=u["id"], **kw))
    everything = lst()
    assert [i.id for i in everything.items] == ids and everything.next_page_token == ""
    assert all(i.seller_id == u["id"] for i in everything.items)
    p1 = lst(page_size=2)
    assert [i.id for i in p1.items] == ids[:2] and p1.next_page_token
    r = Client(srv).get("/v1/items", params={"seller_id": u["id"], "limit": 2, "cursor": p1.next_page_token}).json()
    assert [i["id"] for i in r["data"]] == ids[2:4]
    p3 = lst(page_size=2, page_token=r["next_cursor"])
    assert [i.id for i in p3.items] == ids[4:] and p3.next_page_token == ""
    # every seller (seller_id 0), first page
    assert len(call(srv, "ItemService/ListItems", pb.ListItemsRequest(page_size=3)).items) == 3
    assert violations(refused(srv, "ItemService/ListItems", pb.ListItemsRequest(page_size=-1))) == {"page_size"}
    fails(refused(srv, "ItemService/ListItems", pb.ListItemsRequest(page_token="AAAA")),
          grpc.StatusCode.INVALID_ARGUMENT, "invalid_cursor")


def test_update_item_seller_only_patch_semantics(srv):
    c, u = new_user(srv)
    other, _ = new_user(srv)
    it = new_item(c, price_cents=100, stock=4)
    unauthenticated(srv, "ItemService/UpdateItem", pb.UpdateItemRequest(id=it["id"]))
    fails(refused(srv, "ItemService/UpdateItem", pb.UpdateItemRequest(id=it["id"], stock={"value": 1}),
                  token=other.token), grpc.StatusCode.NOT_FOUND, "not_found")
    assert violations(refused(srv, "ItemService/UpdateItem",
                              pb.UpdateItemRequest(id=it["id"], currency={"value": "usd"}, stock={"value": -2}),
                              token=c.token)) == {"currency", "stock"}
    got = call(srv, "ItemService/UpdateItem", pb.UpdateItemRequest(id=it["id"], price_cents={"value": 150}),
               token=c.token)
    assert (got.price_cents, got.stock, got.name, got.version) == (150, 4, it["name"], it["version"] + 1)
    # REST reads the change at once (the cache entry was invalidated)
    assert Client(srv).get("/v1/items/%d" % it["id"]).json()["price_cents"] == 150
    fails(refused(srv, "ItemService/UpdateItem", pb.UpdateItemRequest(id=99999999, stock={"value": 1}),
                  token=c.token), grpc.StatusCode.NOT_FOUND, "not_found")


def test_get_item_hits_from_the_kept_bytes_follow_every_write(srv):
    """GetItem hits are answered with the protobuf bytes kept with the
    record they were packed from (app/svc/rendition.c); every write through
    either transport is seen at once, gzip-compressed calls included."""
    c, _ = new_user(srv)
    it = new_item(c)
    get = lambda **kw: call(srv, "ItemService/GetItem", pb.GetItemRequest(id=it["id"]), **kw)
    first = get()
    for _ in range(4):
        assert get().SerializeToString() == first.SerializeToString()
    got = call(srv, "ItemService/UpdateItem", pb.UpdateItemRequest(id=it["id"], name={"value": "Renamed by gRPC"}),
               token=c.token)
    for _ in range(3):
        g = get()
        assert g.name == "Renamed by gRPC" and g.version == got.version
    r = c.patch("/v1/items/%d" % it["id"], {"price_cents": 4321})
    assert r.status_code == 200
    for _ in range(3):
        g = get()
        assert (g.price_cents, g.name, g.version) == (4321, "Renamed by gRPC", r.json()["version"])
    ch = grpc.insecure_channel("127.0.0.1:%d" % srv.gport, compression=grpc.Compression.Gzip)
    try:
        m = ch.unary_unary("/bazaar.v1.ItemService/GetItem", request_serializer=pb.GetItemRequest.SerializeToString,
                           response_deserializer=pb.Item.FromString)
        assert m(pb.GetItemRequest(id=it["id"]), timeout=5).price_cents == 4321
    finally:
        ch.close()
    assert c.delete("/v1/items/%d" % it["id"]).status_code == 204
    fails(refused(srv, "ItemService/GetItem", pb.GetItemRequest(id=it["id"])), grpc.StatusCode.NOT_FOUND, "not_found")


def test_delete_item_seller_only(srv):
    c, u = new_user(srv)
    other, _ = new_user(srv)
    it = new_item(c)
    unauthenticated(srv, "ItemService/DeleteItem", pb.DeleteItemRequest(id=it["id"]))
    fails(refused(srv, "ItemService/DeleteItem", pb.DeleteItemRequest(id=it["id"]), token=other.token),
          grpc.StatusCode.NOT_FOUND, "not_found")
    call(srv, "ItemService/DeleteItem", pb.DeleteItemRequest(id=it["id"]), token=c.token)
    assert Client(srv).get("/v1/items/%d" % it["id"]).status_code == 404
    fails(refused(srv, "ItemService/GetItem", pb.GetItemRequest(id=it["id"])), grpc.StatusCode.NOT_FOUND, "not_found")
    fails(refused(srv, "ItemService/DeleteItem", pb.DeleteItemRequest(id=it["id"]), token=c.token),
          grpc.StatusCode.NOT_FOUND, "not_found")


# ---- orders and the leaderboard ----


def shop(srv, stock=10, price=250, funds=100000):
    seller, su = new_user(srv)
    item = new_item(seller, stock=stock, price_cents=price)
    buyer, bu = new_user(srv)
    acct = account(buyer, deposit=funds)
    return seller, item, buyer, bu, acct


def order_req(acct, item, qty=1):
    return pb.CreateOrderRequest(account_id=acct["id"], lines=[pb.OrderLineRequest(item_id=item["id"], quantity=qty)])


def test_create_order_rules_and_replay(srv):
    seller, item, buyer, bu, acct = shop(srv, stock=5)
    unauthenticated(srv, "OrderService/CreateOrder", order_req(acct, item))
    fails(refused(srv, "OrderService/CreateOrder", order_req(acct, item), token=buyer.token),
          grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key_required")
    assert violations(refused(srv, "OrderService/CreateOrder", pb.CreateOrderRequest(account_id=acct["id"]),
                              token=buyer.token, idem=key())) == {"lines"}
    assert violations(refused(srv, "OrderService/CreateOrder", order_req(acct, item, qty=0), token=buyer.token,
                              idem=key())) == {"lines[0].quantity"}
    # the seller cannot order on the buyer's account
    fails(refused(srv, "OrderService/CreateOrder", order_req(acct, item), token=seller.token, idem=key()),
          grpc.StatusCode.NOT_FOUND, "not_found")
    k = key()
    o, cl = call(srv, "OrderService/CreateOrder", order_req(acct, item, qty=2), token=buyer.token, idem=k,
                 with_call=True)
    assert (o.status, o.total_cents, o.customer_id, o.currency) == ("pending", 500, bu["id"], "USD")
    assert [(l.item_id, l.quantity, l.unit_price_cents) for l in o.lines] == [(item["id"], 2, 250)]
    assert replayed(cl) is None
    body = {"account_id": acct["id"], "lines": [{"item_id": item["id"], "quantity": 2}]}
    r = buyer.post("/v1/orders", body, key=k)
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true" and r.json()["id"] == o.id
    k = key()
    r = buyer.post("/v1/orders", body, key=k)
    again, cl = call(srv, "OrderService/CreateOrder", order_req(acct, item, qty=2), token=buyer.token, idem=k,
                     with_call=True)
    assert again.id == r.json()["id"] and replayed(cl) == "true"
    assert Client(srv).get("/v1/items/%d" % item["id"]).json()["stock"] == 1  # two orders, not four
    fails(refused(srv, "OrderService/CreateOrder", order_req(acct, item, qty=2), token=buyer.token, idem=key()),
          grpc.StatusCode.FAILED_PRECONDITION, "out_of_stock")


def test_pay_and_cancel_order(srv):
    seller, item, buyer, bu, acct = shop(srv, stock=10, price=300, funds=1000)
    o = call(srv, "OrderService/CreateOrder", order_req(acct, item, qty=2), token=buyer.token, idem=key())
    unauthenticated(srv, "OrderService/PayOrder", pb.PayOrderRequest(id=o.id))
    fails(refused(srv, "OrderService/PayOrder", pb.PayOrderRequest(id=o.id), token=seller.token),
          grpc.StatusCode.NOT_FOUND, "not_found")
    k = key()
    paid, cl = call(srv, "OrderService/PayOrder", pb.PayOrderRequest(id=o.id), token=buyer.token, idem=k,
                    with_call=True)
    assert paid.id == o.id and paid.status == "paid" and replayed(cl) is None
    assert buyer.get("/v1/accounts/%d" % acct["id"]).json()["balance_cents"] == 400
    # the same key over REST: the stored answer, no second payment
    r = buyer.post("/v1/orders/%d/pay" % o.id, key=k)
    assert r.status_code == 200 and r.headers.get("Idempotent-Replayed") == "true" and r.json()["status"] == "paid"
    assert buyer.get("/v1/accounts/%d" % acct["id"]).json()["balance_cents"] == 400
    fails(refused(srv, "OrderService/CancelOrder", pb.CancelOrderRequest(id=o.id), token=buyer.token),
          grpc.StatusCode.FAILED_PRECONDITION, "order_not_cancellable")
    o2 = call(srv, "OrderService/CreateOrder", order_req(acct, item, qty=4), token=buyer.token, idem=key())
    unauthenticated(srv, "OrderService/CancelOrder", pb.CancelOrderRequest(id=o2.id))
    fails(refused(srv, "OrderService/CancelOrder", pb.CancelOrderRequest(id=o2.id), token=seller.token),
          grpc.StatusCode.NOT_FOUND, "not_found")
    c2 = call(srv, "OrderService/CancelOrder", pb.CancelOrderRequest(id=o2.id), token=buyer.token)
    assert c2.status == "cancelled"
    assert Client(srv).get("/v1/items/%d" % item["id"]).json()["stock"] == 8  # stock came back
    fails(refused(srv, "OrderService/PayOrder", pb.PayOrderRequest(id=o2.id), token=buyer.token),
          grpc.StatusCode.FAILED_PRECONDITION, "order_not_payable")
    o3 = call(srv, "OrderService/CreateOrder", order_req(acct, item, qty=2), token=buyer.token, idem=key())
    fails(refused(srv, "OrderService/PayOrder", pb.PayOrderRequest(id=o3.id), token=buyer.token),
          grpc.StatusCode.FAILED_PRECONDITION, "insufficient_funds")


def test_list_orders_filter_and_pages_with_rest_cursors(srv):
    seller, item, buyer, bu, acct = shop(srv, stock=100)
    ids = [call(srv, "OrderService/CreateOrder", order_req(acct, item), token=buyer.token, idem=key()).id
           for _ in range(5)]
    for oid in ids[:2]:
        call(srv, "OrderService/CancelOrder", pb.CancelOrderRequest(id=oid), token=buyer.token)
    unauthenticated(srv, "OrderService/ListOrders", pb.ListOrdersRequest())
    lst = lambda **kw: call(srv, "OrderService/ListOrders", pb.ListOrdersRequest(**kw), token=buyer.token)
    assert [o.id for o in lst().orders] == ids[::-1] and lst().next_page_token == ""
    assert [o.id for o in lst(status="cancelled").orders] == ids[:2][::-1]
    # the seller sees none of the buyer's orders (their own list is empty)
    assert list(call(srv, "OrderService/ListOrders", pb.ListOrdersRequest(), token=seller.token).orders) == []
    p1 = lst(page_size=2)
    assert [o.id for o in p1.orders] == ids[::-1][:2]
    r = buyer.get("/v1/users/%d/orders" % bu["id"], params={"limit": 2, "cursor": p1.next_page_token}).json()
    assert [o["id"] for o in r["data"]] == ids[::-1][2:4]
    p3 = lst(page_size=2, page_token=r["next_cursor"])
    assert [o.id for o in p3.orders] == ids[::-1][4:] and p3.next_page_token == ""
    assert violations(refused(srv, "OrderService/ListOrders", pb.ListOrdersRequest(status="lost"),
                              token=buyer.token)) == {"status"}
    assert violations(refused(srv, "OrderService/ListOrders", pb.ListOrdersRequest(page_size=500),
                              token=buyer.token)) == {"page_size"}
    # a token of another list (another status) is refused, as REST refuses the cursor
    fails(refused(srv, "OrderService/ListOrders", pb.ListOrdersRequest(page_token=p1.next_page_token, status="paid"),
                  token=buyer.token), grpc.StatusCode.INVALID_ARGUMENT, "invalid_cursor")


def test_top_spenders(srv):
    spent = []
    for mult in (3, 1, 2):
        seller, item, buyer, bu, acct = shop(srv, price=100000 * mult, funds=10 ** 9)
        o = call(srv, "OrderService/CreateOrder", order_req(acct, item), token=buyer.token, idem=key())
        call(srv, "OrderService/PayOrder", pb.PayOrderRequest(id=o.id), token=buyer.token)
        spent.append((bu["id"], 100000 * mult))
    top = call(srv, "LeaderboardService/TopSpenders", pb.TopSpendersRequest(currency="USD", limit=100)).spenders
    mine = [(s.user_id, s.spent_cents) for s in top if s.user_id in {x[0] for x in spent}]
    assert mine == sorted(spent, key=lambda s: -s[1])
    assert [s.rank for s in top] == list(range(1, len(top) + 1)) and all(s.name for s in top)
    rest = Client(srv).get("/v1/leaderboard/spenders", params={"currency": "USD", "limit": 100}).json()["data"]
    assert [(e["rank"], e["user_id"], e["spent_cents"]) for e in rest] == [(s.rank, s.user_id, s.spent_cents)
                                                                           for s in top]
    # the defaults: USD, 10
    assert len(call(srv, "LeaderboardService/TopSpenders", pb.TopSpendersRequest()).spenders) <= 10
    assert violations(refused(srv, "LeaderboardService/TopSpenders", pb.TopSpendersRequest(currency="usd"))) == {
        "currency"}
    assert violations(refused(srv, "LeaderboardService/TopSpenders", pb.TopSpendersRequest(limit=101))) == {"limit"}


def test_every_contract_method_is_served(srv):
    """No bazaar.proto method answers UNIMPLEMENTED."""
    for svc in pb.DESCRIPTOR.services_by_name.values():
        for m in svc.methods:
            if m.client_streaming or m.server_streaming:
                continue
            stub = srv.channel.unary_unary("/%s/%s" % (svc.full_name, m.name), request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
            try:
                stub(b"", timeout=10)
            except grpc.RpcError as e:
                assert e.code() != grpc.StatusCode.UNIMPLEMENTED, (svc.full_name, m.name)


# ---- one policy for both transports ----


def test_request_id_is_the_rest_policy(srv):
    """x-request-id: a valid one is echoed, else one is made as REST makes
    it (128 bits, 32 hex digits)."""
    import re
    for sent, want in ((None, None), ("bad id!", None), ("x" * 65, None), ("rid:grpc-7", "rid:grpc-7")):
        md = [("x-request-id", sent)] if sent else []
        stub = srv.channel.unary_unary(P + "ItemService/ListItems", request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=pb.ListItemsResponse.FromString)
        _, c = stub.with_call(pb.ListItemsRequest(page_size=1), metadata=md, timeout=10)
        got = dict(c.initial_metadata())["x-request-id"]
        if want:
            assert got == want
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", got), got
    r = Client(srv).get("/v1/items", params={"limit": 1})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])


def test_list_users_limit_is_the_services_rule(srv):
    stream = srv.channel.unary_stream(P + "UserService/ListUsers", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=pb.User.FromString)
    with pytest.raises(grpc.RpcError) as e:
        list(stream(pb.ListUsersRequest(limit=-1), timeout=10))
    assert violations(e.value) == {"limit"}


def test_public_profile_on_rest_own_email_on_get_user(srv):
    """GET /v1/users/{id} is the public profile even for its owner (the
    service's svc_user_profile); GetUser shows the caller their email."""
    c, u = new_user(srv)
    assert "email" not in c.get("/v1/users/%d" % u["id"]).json()
    assert call(srv, "UserService/GetUser", pb.GetUserRequest(id=u["id"]), token=c.token).email == u["email"]
    assert call(srv, "UserService/GetUser", pb.GetUserRequest(id=u["id"])).email == ""


def test_ids_that_name_nothing_are_not_found(srv):
    """REST answers 404 for a path id that is not a positive number; over
    gRPC such an id reaches the service, which finds nothing."""
    c, u = new_user(srv)
    for method, req in [("AccountService/GetAccount", pb.GetAccountRequest(id=0)),
                        ("AccountService/Deposit", pb.DepositRequest(account_id=-5, amount_cents=5)),
                        ("AccountService/GetTransfer", pb.GetTransferRequest(id=-1)),
                        ("AccountService/ListTransfers", pb.ListTransfersRequest(account_id=0)),
                        ("ItemService/UpdateItem", pb.UpdateItemRequest(id=0, stock={"value": 1})),
                        ("ItemService/DeleteItem", pb.DeleteItemRequest(id=-1)),
                        ("OrderService/PayOrder", pb.PayOrderRequest(id=0)),
                        ("OrderService/CancelOrder", pb.CancelOrderRequest(id=-1)),
                        ("UserService/UpdateUser", pb.UpdateUserRequest(id=0, name={"value": "x"}))]:
        fails(refused(srv, method, req, token=c.token, idem=key()), grpc.StatusCode.NOT_FOUND, "not_found")
