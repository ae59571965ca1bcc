"""The REST contract (API.md §2–§8), row by row, against a real server —
run twice: on SQLite + in-process cache and on PostgreSQL + Redis."""
import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import Backend, PG_URL, Server
from rest import Client, account, key, new_user, problem

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason="needs with_services.sh"))]


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request, tmp_path_factory):
    b = Backend(request.param, str(tmp_path_factory.mktemp("api")))
    s = Server(b, "--login-rate-limit", "1000/min")
    yield s
    s.close()


# ---- conventions ----


def test_problem_json_404_and_request_id(srv):
    c = Client(srv)
    r = c.get("/v1/items/999999999")
    problem(r, 404, "not_found")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])
    r = c.get("/v1/items/999999999", headers={"X-Request-Id": "my-trace-1"})
    assert r.headers["X-Request-Id"] == "my-trace-1"
    problem(c.get("/v1/items/abc"), 404, "not_found")
    problem(c.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_405_with_allow(srv):
    r = requests.delete(srv.url + "/v1/users")
    assert r.status_code == 405
    assert set(a.strip() for a in r.headers["Allow"].split(",")) >= {"GET", "HEAD", "POST"}


def test_head_works_wherever_get_does(srv):
    c, _ = new_user(srv)
    r = c.head("/v1/me")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["Content-Length"]) > 0


def test_json_content_type_required(srv):
    r = requests.post(srv.url + "/v1/users", data="email=a", headers={"Content-Type": "application/x-www-form-urlencoded"})
    problem(r, 415, "unsupported_media_type")
    r = requests.post(srv.url + "/v1/users", data="{not json", headers={"Content-Type": "application/json"})
    problem(r, 400, "invalid_json")
    r = requests.post(srv.url + "/v1/users", data="[1,2]", headers={"Content-Type": "application/json; charset=utf-8"})
    problem(r, 400, "invalid_json")


# ---- users and sessions ----


def test_signup_validation_names_every_bad_field(srv):
    c = Client(srv)
    r = c.post("/v1/users", {"email": "no-at-sign", "name": "", "password": "short", "extra": 1})
    j = problem(r, 400, "validation_failed")
    assert {e["field"] for e in j["errors"]} == {"email", "name", "password"}
    j = problem(c.post("/v1/users", {"email": 7, "name": "x" * 101, "password": "p" * 129}), 400, "validation_failed")
    assert {e["field"] for e in j["errors"]} == {"email", "name", "password"}
    j = problem(c.post("/v1/users", {}), 400, "validation_failed")
    assert {e["field"] for e in j["errors"]} == {"email", "name", "password"}
    for bad in ["@x.io", "a@", "a@b@c", "a b@c.io", "x" * 250 + "@c.io"]:
        problem(c.post("/v1/users", {"email": bad, "name": "N", "password": "password1"}), 400, "validation_failed")
    # 100 characters of multi-byte UTF-8 are fine: the limit counts characters
    r = c.post("/v1/users", {"email": "utf8-%s@x.io" % key(), "name": "é" * 100, "password": "password1"})
    assert r.status_code == 201, r.text


def test_signup_login_me_and_email_case(srv):
    c = Client(srv)
    email = "Mixed.%s@Example.COM" % key()
    r = c.post("/v1/users", {"email": email, "name": "Mixed", "password": "s3cret-pass"})
    assert r.status_code == 201
    u = r.json()
    assert set(u) == {"id", "email", "name", "created_at"} and u["email"] == email.lower()
    assert r.headers["Location"] == "/v1/users/%d" % u["id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", u["created_at"])
    problem(c.post("/v1/users", {"email": email.upper(), "name": "Again", "password": "s3cret-pass"}), 409, "email_taken")
    r = c.post("/v1/sessions", {"email": email.upper(), "password": "s3cret-pass"})
    assert r.status_code == 201
    tok = r.json()["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", tok)
    assert r.json()["expires_at"].endswith("Z")
    me = Client(srv, tok).get("/v1/me")
    assert me.status_code == 200 and me.json() == u
    pub = c.get("/v1/users/%d" % u["id"]).json()
    assert pub == {"id": u["id"], "name": "Mixed", "created_at": u["created_at"]}
    found = c.get("/v1/users", params={"email": email.swapcase()}).json()
    assert found == {"data": [pub]}
    assert c.get("/v1/users", params={"email": "nobody@nowhere.io"}).json() == {"data": []}
    problem(c.get("/v1/users"), 400, "validation_failed")
    problem(c.get("/v1/users/987654321"), 404, "not_found")


def test_bad_credentials_are_one_answer(srv):
    c, u = new_user(srv, password="right-password")
    a = c.post("/v1/sessions", {"email": u["email"], "password": "wrong-password"})
    b = Client(srv).post("/v1/sessions", {"email": "ghost-%s@x.io" % key(), "password": "wrong-password"})
    pa, pb = problem(a, 401, "invalid_credentials"), problem(b, 401, "invalid_credentials")
    assert pa == pb


def test_auth_required_and_logout_revokes_everywhere(srv):
    problem(Client(srv).get("/v1/me"), 401, "unauthorized")
    problem(Client(srv, "not-a-token").get("/v1/me"), 401, "unauthorized")
    c, _ = new_user(srv)
    assert c.get("/v1/me").status_code == 200
    r = c.delete("/v1/sessions/current")
    assert r.status_code == 204
    problem(c.get("/v1/me"), 401, "unauthorized")


def test_patch_user_self_only(srv):
    c, u = new_user(srv, password="first-password")
    other, ou = new_user(srv)
    problem(other.patch("/v1/users/%d" % u["id"], {"name": "Hijack"}), 404, "not_found")
    r = c.patch("/v1/users/%d" % u["id"], {"name": "Renamed", "password": "second-password"})
    assert r.status_code == 200 and r.json()["name"] == "Renamed" and r.json()["email"] == u["email"]
    problem(c.patch("/v1/users/%d" % u["id"], {"name": ""}), 400, "validation_failed")
    anon = Client(srv)
    problem(anon.post("/v1/sessions", {"email": u["email"], "password": "first-password"}), 401, "invalid_credentials")
    assert anon.post("/v1/sessions", {"email": u["email"], "password": "second-password"}).status_code == 201


# ---- accounts, deposits, transfers ----


def test_accounts(srv):
    c, u = new_user(srv)
    a = account(c, "USD")
    assert set(a) == {"id", "user_id", "currency", "balance_cents", "created_at"}
    assert a["user_id"] == u["id"] and a["balance_cents"] == 0
    problem(c.post("/v1/accounts", {"currency": "USD"}), 409, "account_exists")
    for bad in ["usd", "US", "USDX", 5]:
        problem(c.post("/v1/accounts", {"currency": bad}), 400, "validation_failed")
    e = account(c, "EUR")
    assert [x["currency"] for x in c.get("/v1/accounts").json()["data"]] == ["EUR", "USD"]
    assert c.get("/v1/accounts/%d" % e["id"]).json() == e
    other, _ = new_user(srv)
    problem(other.get("/v1/accounts/%d" % e["id"]), 404, "not_found")
    assert other.get("/v1/accounts").json() == {"data": []}


def test_deposit_idempotency_rules(srv):
    c, _ = new_user(srv)
    a = account(c)
    path = "/v1/accounts/%d/deposits" % a["id"]
    problem(c.post(path, {"amount_cents": 100}), 400, "idempotency_key_required")
    problem(c.post(path, {"amount_cents": 100}, key="x" * 256), 400, "invalid_idempotency_key")
    for bad in [0, 10**9 + 1, -5, 1.5, "100"]:
        problem(c.post(path, {"amount_cents": bad}, key=key()), 400, "validation_failed")
    k = key()
    r1 = c.post(path, {"amount_cents": 250}, key=k)
    assert r1.status_code == 201 and r1.json()["balance_cents"] == 250
    r2 = c.post(path, {"amount_cents": 250}, key=k)
    assert r2.status_code == 201 and r2.text == r1.text and r2.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in r1.headers
    problem(c.post(path, {"amount_cents": 999}, key=k), 422, "idempotency_key_reused")
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 250
    # keys are scoped per user: another user may use the same key
    other, _ = new_user(srv)
    oa = account(other)
    r = other.post("/v1/accounts/%d/deposits" % oa["id"], {"amount_cents": 5}, key=k)
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    problem(other.post(path, {"amount_cents": 5}, key=key()), 404, "not_found")


def test_transfer_rules(srv):
    c, _ = new_user(srv)
    a = account(c, "USD", deposit=1000)
    eur = account(c, "EUR", deposit=1000)
    d, _ = new_user(srv)
    b = account(d, "USD")
    r = c.post("/v1/transfers", {"from_account_id": a["id"], "to_account_id": b["id"], "amount_cents": 300}, key=key())
    assert r.status_code == 201, r.text
    t = r.json()
    assert set(t) == {"id", "from_account_id", "to_account_id", "amount_cents", "currency", "created_at"}
    assert t["currency"] == "USD" and r.headers["Location"] == "/v1/transfers/%d" % t["id"]
    assert c.get(r.headers["Location"]).json() == t
    assert d.get(r.headers["Location"]).json() == t
    stranger, _ = new_user(srv)
    problem(stranger.get(r.headers["Location"]), 404, "not_found")
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 700
    assert d.get("/v1/accounts/%d" % b["id"]).json()["balance_cents"] == 300
    body = lambda f, to, n: {"from_account_id": f, "to_account_id": to, "amount_cents": n}
    problem(c.post("/v1/transfers", body(a["id"], a["id"], 1), key=key()), 422, "same_account")
    problem(c.post("/v1/transfers", body(a["id"], eur["id"], 1), key=key()), 422, "currency_mismatch")
    problem(c.post("/v1/transfers", body(a["id"], b["id"], 701), key=key()), 409, "insufficient_funds")
    problem(c.post("/v1/transfers", body(a["id"], 99999999, 1), key=key()), 404, "not_found")
    problem(d.post("/v1/transfers", body(a["id"], b["id"], 1), key=key()), 404, "not_found")
    problem(c.post("/v1/transfers", body(a["id"], b["id"], 0), key=key()), 400, "validation_failed")
    problem(c.post("/v1/transfers", body(a["id"], b["id"], 1)), 400, "idempotency_key_required")
    # a refused transfer is recorded and replayed too
    k = key()
    problem(c.post("/v1/transfers", body(a["id"], b["id"], 5000), key=k), 409, "insufficient_funds")
    r = c.post("/v1/transfers", body(a["id"], b["id"], 5000), key=k)
    assert r.status_code == 409 and r.headers["Idempotent-Replayed"] == "true"
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 700


def test_transfer_list_newest_first_with_cursor(srv):
    c, _ = new_user(srv)
    a = account(c, deposit=10000)
    d, _ = new_user(srv)
    b = account(d, deposit=10000)
    ids = []
    for i in range(7):
        f, t, cl = (a, b, c) if i % 2 == 0 else (b, a, d)
        r = cl.post("/v1/transfers", {"from_account_id": f["id"], "to_account_id": t["id"], "amount_cents": i + 1}, key=key())
        ids.append(r.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/v1/accounts/%d/transfers" % a["id"], params=params).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    problem(c.get("/v1/accounts/%d/transfers" % a["id"], params={"cursor": "bogus"}), 400, "invalid_cursor")
    # a cursor of another list is refused (it is bound to its list)
    first = c.get("/v1/accounts/%d/transfers" % a["id"], params={"limit": 1}).json()["next_cursor"]
    problem(d.get("/v1/accounts/%d/transfers" % b["id"], params={"cursor": first}), 400, "invalid_cursor")
    for bad in ["0", "101", "x"]:
        problem(c.get("/v1/accounts/%d/transfers" % a["id"], params={"limit": bad}), 400, "validation_failed")
    problem(d.get("/v1/accounts/%d/transfers" % a["id"]), 404, "not_found")


def test_concurrent_transfers_keep_the_total(srv):
    """40 threads of random transfers among 8 accounts: the sum never
    changes and no balance goes negative."""
    owners = []
    for _ in range(8):
        c, _ = new_user(srv)
        owners.append((c, account(c, deposit=1000)))
    total = sum(a["balance_cents"] for _, a in owners)
    statuses = []
    lock = threading.Lock()

    def worker(seed):
        rnd = random.Random(seed)
        for _ in range(15):
            i, j = rnd.sample(range(8), 2)
            c, a = owners[i]
            cl = Client(srv, c.token)
            r = cl.post("/v1/transfers", {"from_account_id": a["id"], "to_account_id": owners[j][1]["id"],
                                          "amount_cents": rnd.randint(1, 400)}, key=key())
            with lock:
                statuses.append(r.status_code)

    with ThreadPoolExecutor(40) as ex:
        list(ex.map(worker, range(40)))
    balances = [c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] for c, a in owners]
    assert sum(balances) == total
    assert min(balances) >= 0
    assert set(statuses) <= {201, 409, 503}, statuses
    assert statuses.count(201) > 100


def test_one_key_sixteen_concurrent_requests_one_effect(srv):
    c, _ = new_user(srv)
    a = account(c)
    k = key()
    barrier = threading.Barrier(16)

    def go(_):
        cl = Client(srv, c.token)
        barrier.wait()
        return cl.post("/v1/accounts/%d/deposits" % a["id"], {"amount_cents": 7}, key=k)

    with ThreadPoolExecutor(16) as ex:
        rs = list(ex.map(go, range(16)))
    codes = sorted(r.status_code for r in rs)
    assert set(codes) <= {201, 409}, codes
    for r in rs:
        if r.status_code == 409:
            problem(r, 409, "idempotency_key_in_use")
    ok = [r for r in rs if r.status_code == 201]
    assert len({r.text for r in ok}) == 1
    assert c.get("/v1/accounts/%d" % a["id"]).json()["balance_cents"] == 7
    # afterwards the key replays
    r = c.post("/v1/accounts/%d/deposits" % a["id"], {"amount_cents": 7}, key=k)
    assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"


# ---- items ----


def new_item(c, **kw):
    body = {"sku": "sku-" + key(), "name": "Widget", "price_cents": 250, "currency": "USD", "stock": 10}
    body.update(kw)
    r = c.post("/v1/items", body)
    assert r.status_code == 201, r.text
    return r.json()


def test_item_create_get_etag_and_cache_status(srv):
    c, u = new_user(srv)
    it = new_item(c)
    assert set(it) == {"id", "seller_id", "sku", "name", "price_cents", "currency", "stock", "version",
                       "created_at", "updated_at"}
    assert it["seller_id"] == u["id"] and it["version"] == 1
    problem(c.post("/v1/items", {"sku": it["sku"], "name": "Dup", "price_cents": 1, "currency": "USD", "stock": 1}),
            409, "sku_taken")
    problem(c.post("/v1/items", {"sku": "", "name": "x", "price_cents": -1, "currency": "usd"}), 400, "validation_failed")
    problem(Client(srv).post("/v1/items", {"sku": "a", "name": "b", "price_cents": 1, "currency": "USD", "stock": 1}),
            401, "unauthorized")
    anon = Client(srv)
    r1 = anon.get("/v1/items/%d" % it["id"])
    r2 = anon.get("/v1/items/%d" % it["id"])
    assert r1.json() == it and r2.json() == it
    assert r2.headers["Cache-Status"] == ("bazaar; hit" if srv.backend.cache != "none" else "bazaar; fwd=miss")
    etag = r2.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]+"', etag)
    for inm in [etag, "W/" + etag, '"nope", ' + etag, "*"]:
        r = anon.get("/v1/items/%d" % it["id"], headers={"If-None-Match": inm})
        assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag, inm
    assert anon.get("/v1/items/%d" % it["id"], headers={"If-None-Match": '"other"'}).status_code == 200


def test_item_ids_in_the_path_read_as_decimal_escaped_or_not(srv):
    """An id is read where it lies when it has no escape, decoded first
    when it has one: the same item either way; anything but a positive
    decimal names nothing."""
    c, _ = new_user(srv)
    it = new_item(c)
    anon = Client(srv)
    digits = str(it["id"])
    escaped = "".join("%%%02X" % ord(ch) for ch in digits)
    assert anon.get("/v1/items/" + digits).json() == it
    assert anon.get("/v1/items/" + escaped).json() == it
    assert anon.get("/v1/items/%" + "%02x" % ord(digits[0]) + digits[1:]).json() == it
    for bad in ["0", "-" + digits, digits + "x", "+" + digits, " " + digits, "%20" + digits, digits + "%00",
                "99999999999999999999", "0x1", "%zz", "1e3"]:
        problem(anon.get("/v1/items/" + bad), 404, "not_found")


def test_item_writes_are_never_read_stale(srv):
    c, _ = new_user(srv)
    it = new_item(c)
    anon = Client(srv)
    for i in range(5):
        anon.get("/v1/items/%d" % it["id"])  # warm the cache
        r = c.patch("/v1/items/%d" % it["id"], {"price_cents": 1000 + i})
        assert r.status_code == 200 and r.json()["version"] == it["version"] + i + 1
        g = anon.get("/v1/items/%d" % it["id"]).json()
        assert g["price_cents"] == 1000 + i and g["version"] == it["version"] + i + 1
    full = {"sku": it["sku"], "name": "Replaced", "price_cents": 5, "currency": "USD", "stock": 3}
    r1 = c.put("/v1/items/%d" % it["id"], full)
    r2 = c.put("/v1/items/%d" % it["id"], full)
    assert r1.status_code == 200 and r1.json() == r2.json()  # PUT is idempotent
    assert anon.get("/v1/items/%d" % it["id"]).json() == r1.json()
    problem(c.put("/v1/items/%d" % it["id"], {"name": "missing fields"}), 400, "validation_failed")
    other, _ = new_user(srv)
    problem(other.patch("/v1/items/%d" % it["id"], {"name": "x"}), 404, "not_found")
    problem(other.delete("/v1/items/%d" % it["id"]), 404, "not_found")
    taken = new_item(c)
    problem(c.patch("/v1/items/%d" % it["id"], {"sku": taken["sku"]}), 409, "sku_taken")
    assert c.delete("/v1/items/%d" % it["id"]).status_code == 204
    problem(anon.get("/v1/items/%d" % it["id"]), 404, "not_found")
    problem(c.delete("/v1/items/%d" % it["id"]), 404, "not_found")


def test_item_hits_served_from_the_kept_answer_follow_every_write(srv):
    """A hit is answered from the ETag and JSON kept with the record bytes
    they were made from (app/svc/rendition.c): repeated hits are the same
    answer, and every write (PATCH, PUT, DELETE) is seen at once, with a new
    ETag that the old one no longer matches."""
    c, _ = new_user(srv)
    it = new_item(c)
    anon = Client(srv)
    url = "/v1/items/%d" % it["id"]
    first = anon.get(url)
    for _ in range(4):  # several hits per server thread
        r = anon.get(url)
        assert r.status_code == 200 and r.content == first.content and r.headers["ETag"] == first.headers["ETag"]
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    old_tag = first.headers["ETag"]
    for i, change in enumerate([{"name": "Renamed"}, {"price_cents": 777}, {"stock": 0}]):
        p = c.patch(url, change)
        assert p.status_code == 200
        for _ in range(3):
            g = anon.get(url)
            assert g.status_code == 200 and g.json() == p.json(), change
            assert g.headers["ETag"] != old_tag
            assert anon.get(url, headers={"If-None-Match": old_tag}).status_code == 200
            assert anon.get(url, headers={"If-None-Match": g.headers["ETag"]}).status_code == 304
        old_tag = g.headers["ETag"]
    full = {"sku": it["sku"], "name": "Put", "price_cents": 5, "currency": "USD", "stock": 3}
    put = c.put(url, full).json()
    for _ in range(3):
        assert anon.get(url).json() == put
    assert c.delete(url).status_code == 204
    for _ in range(3):
        problem(anon.get(url), 404, "not_found")


def test_item_list_keyset_seller_filter_and_offset(srv):
    c, u = new_user(srv)
    mine = [new_item(c)["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "seller_id": u["id"]}
        if cursor:
            params["cursor"] = cursor
        page = Client(srv).get("/v1/items", params=params).json()
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == mine
    page = Client(srv).get("/v1/items", params={"seller_id": u["id"], "offset": 3, "limit": 10}).json()
    assert [i["id"] for i in page["data"]] == mine[3:]
    everything = Client(srv).get("/v1/items", params={"limit": 100}).json()["data"]
    ids = [i["id"] for i in everything]
    assert ids == sorted(ids)
    problem(Client(srv).get("/v1/items", params={"offset": -1}), 400, "validation_failed")
    problem(Client(srv).get("/v1/items", params={"cursor": "AAAA"}), 400, "invalid_cursor")


# ---- orders ----


def shop(srv, stock=10, price=250, funds=100000):
    seller, su = new_user(srv)
    item = new_item(seller, stock=stock, price_cents=price)
    buyer, bu = new_user(srv)
    acct = account(buyer, deposit=funds) if funds else account(buyer)
    return seller, su, item, buyer, bu, acct


def order(buyer, acct, item, qty=1, k=None):
    return buyer.post("/v1/orders", {"account_id": acct["id"], "lines": [{"item_id": item["id"], "quantity": qty}]},
                      key=k or key())


def test_order_create_reserves_stock(srv):
    seller, su, item, buyer, bu, acct = shop(srv, stock=5)
    r = order(buyer, acct, item, qty=3)
    assert r.status_code == 201, r.text
    o = r.json()
    assert set(o) == {"id", "customer_id", "account_id", "status", "total_cents", "currency", "lines",
                      "created_at", "updated_at"}
    assert o["status"] == "pending" and o["total_cents"] == 750 and o["customer_id"] == bu["id"]
    assert o["lines"] == [{"item_id": item["id"], "quantity": 3, "unit_price_cents": 250}]
    assert r.headers["Location"] == "/v1/orders/%d" % o["id"]
    assert buyer.get("/v1/orders/%d" % o["id"]).json() == o
    problem(seller.get("/v1/orders/%d" % o["id"]), 404, "not_found")
    assert Client(srv).get("/v1/items/%d" % item["id"]).json()["stock"] == 2  # not stale
    problem(order(buyer, acct, item, qty=3), 409, "out_of_stock")
    # two lines of the same item add up
    r = buyer.post("/v1/orders", {"account_id": acct["id"], "lines": [{"item_id": item["id"], "quantity": 2},
                                                                      {"item_id": item["id"], "quantity": 1}]}, key=key())
    problem(r, 409, "out_of_stock")
    eur = account(buyer, "EUR")
    problem(order(buyer, eur, item), 422, "currency_mismatch")
    problem(buyer.post("/v1/orders", {"account_id": acct["id"], "lines": [{"item_id": 99999999, "quantity": 1}]}, key=key()),
            404, "not_found")
    problem(seller.post("/v1/orders", {"account_id": acct["id"], "lines": [{"item_id": item["id"], "quantity": 1}]},
                        key=key()), 404, "not_found")
    for lines in [[], [{"item_id": item["id"], "quantity": 0}], [{"item_id": item["id"], "quantity": 1001}],
                  [{"item_id": item["id"], "quantity": 1}] * 51, "x", [5]]:
        problem(buyer.post("/v1/orders", {"account_id": acct["id"], "lines": lines}, key=key()), 400, "validation_failed")
    problem(buyer.post("/v1/orders", {"account_id": acct["id"], "lines": [{"item_id": item["id"], "quantity": 1}]}),
            400, "idempotency_key_required")


def test_pay_cancel_and_ship(srv):
    seller, su, item, buyer, bu, acct = shop(srv, stock=10, price=300, funds=1000)
    o = order(buyer, acct, item, qty=2).json()
    r = buyer.post("/v1/orders/%d/pay" % o["id"])
    assert r.status_code == 200 and r.json()["status"] == "paid", r.text
    assert buyer.get("/v1/accounts/%d" % acct["id"]).json()["balance_cents"] == 400
    seller_usd = [a for a in seller.get("/v1/accounts").json()["data"] if a["currency"] == "USD"]
    assert seller_usd and seller_usd[0]["balance_cents"] == 600  # created by the payment
    again = buyer.post("/v1/orders/%d/pay" % o["id"])
    assert again.status_code == 200 and again.json()["status"] in ("paid", "shipped")
    assert buyer.get("/v1/accounts/%d" % acct["id"]).json()["balance_cents"] == 400
    problem(buyer.post("/v1/orders/%d/cancel" % o["id"]), 409, "order_not_cancellable")
    problem(seller.post("/v1/orders/%d/pay" % o["id"]), 404, "not_found")
    deadline = time.time() + 10
    while buyer.get("/v1/orders/%d" % o["id"]).json()["status"] != "shipped":
        assert time.time() < deadline, "not shipped within 10 s"
        time.sleep(0.2)
    # cancel: stock comes back; twice is fine; paying it is refused
    o2 = order(buyer, acct, item, qty=4).json()
    assert Client(srv).get("/v1/items/%d" % item["id"]).json()["stock"] == 4
    r = buyer.post("/v1/orders/%d/cancel" % o2["id"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert buyer.post("/v1/orders/%d/cancel" % o2["id"]).json()["status"] == "cancelled"
    assert Client(srv).get("/v1/items/%d" % item["id"]).json()["stock"] == 8
    problem(buyer.post("/v1/orders/%d/pay" % o2["id"]), 409, "order_not_payable")
    # not enough money
    o3 = order(buyer, acct, item, qty=2).json()
    problem(buyer.post("/v1/orders/%d/pay" % o3["id"]), 409, "insufficient_funds")
    assert buyer.get("/v1/orders/%d" % o3["id"]).json()["status"] == "pending"


def test_order_list_filters_and_pages(srv):
    seller, su, item, buyer, bu, acct = shop(srv, stock=100)
    ids = [order(buyer, acct, item).json()["id"] for _ in range(6)]
    for oid in ids[:2]:
        assert buyer.post("/v1/orders/%d/cancel" % oid).status_code == 200
    lst = buyer.get("/v1/users/%d/orders" % bu["id"]).json()
    assert [o["id"] for o in lst["data"]] == ids[::-1] and lst["next_cursor"] is None
    assert all(o["lines"] == [{"item_id": item["id"], "quantity": 1, "unit_price_cents": 250}] for o in lst["data"])
    canc = buyer.get("/v1/users/%d/orders" % bu["id"], params={"status": "cancelled"}).json()
    assert [o["id"] for o in canc["data"]] == ids[:2][::-1]
    seen, cursor = [], None
    while True:
        params = {"limit": 4, "status": "pending"}
        if cursor:
            params["cursor"] = cursor
        page = buyer.get("/v1/users/%d/orders" % bu["id"], params=params).json()
        seen += [o["id"] for o in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[2:][::-1]
    problem(buyer.get("/v1/users/%d/orders" % bu["id"], params={"status": "lost"}), 400, "validation_failed")
    problem(seller.get("/v1/users/%d/orders" % bu["id"]), 404, "not_found")
    first = buyer.get("/v1/users/%d/orders" % bu["id"], params={"limit": 1}).json()["next_cursor"]
    problem(buyer.get("/v1/users/%d/orders" % bu["id"], params={"cursor": first, "status": "paid"}), 400, "invalid_cursor")


def test_paging_while_orders_are_inserted_never_repeats_or_skips(srv):
    seller, su, item, buyer, bu, acct = shop(srv, stock=1000)
    before = [order(buyer, acct, item).json()["id"] for _ in range(12)]
    stop = threading.Event()

    def inserter():
        cl = Client(srv, buyer.token)
        while not stop.is_set():
            order(cl, acct, item)

    t = threading.Thread(target=inserter)
    t.start()
    try:
        seen, cursor = [], None
        while True:
            params = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = buyer.get("/v1/users/%d/orders" % bu["id"], params=params).json()
            seen += [o["id"] for o in page["data"]]
            cursor = page["next_cursor"]
            time.sleep(0.02)
            if not cursor:
                break
    finally:
        stop.set()
        t.join()
    assert len(seen) == len(set(seen)), "a row was repeated"
    old = [i for i in seen if i in set(before)]
    assert old == before[::-1], "a pre-existing row was skipped or reordered"


def test_order_events_stream(srv):
    seller, su, item, buyer, bu, acct = shop(srv)
    o = order(buyer, acct, item).json()
    events = []
    got_shipped = threading.Event()
    with requests.get(srv.url + "/v1/users/%d/orders/events" % bu["id"], stream=True, timeout=20,
                      headers={"Authorization": "Bearer " + buyer.token}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")

        def read():
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["status"] == "shipped":
                        got_shipped.set()
                        return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.3)
        assert buyer.post("/v1/orders/%d/pay" % o["id"]).status_code == 200
        assert got_shipped.wait(15), events
    assert [(e["order_id"], e["status"]) for e in events] == [(o["id"], "paid"), (o["id"], "shipped")]
    assert all(e["at"].endswith("Z") for e in events)
    problem(seller.get("/v1/users/%d/orders/events" % bu["id"]), 404, "not_found")


def test_leaderboard(srv):
    spenders = []
    for spend in (3, 1, 2):
        seller, su, item, buyer, bu, acct = shop(srv, price=100000 * spend, funds=10 ** 9)
        o = order(buyer, acct, item, currency_hint=None) if False else order(buyer, acct, item)
        assert buyer.post("/v1/orders/%d/pay" % o.json()["id"]).status_code == 200
        spenders.append((bu["id"], 100000 * spend))
    top = Client(srv).get("/v1/leaderboard/spenders", params={"currency": "USD", "limit": 100}).json()["data"]
    mine = [e for e in top if e["user_id"] in {s[0] for s in spenders}]
    want = sorted(spenders, key=lambda s: -s[1])
    assert [(e["user_id"], e["spent_cents"]) for e in mine] == want
    assert [e["rank"] for e in top] == list(range(1, len(top) + 1))
    assert all(e["name"] for e in mine)
    problem(Client(srv).get("/v1/leaderboard/spenders", params={"currency": "usd"}), 400, "validation_failed")


# ---- operations ----


def test_metrics_and_openapi(srv):
    Client(srv).get("/v1/items/1")
    m = requests.get(srv.url + "/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    t = m.text
    assert re.search(r'bazaar_http_requests_total\{route="GET /v1/items/\{id\}",method="GET",status="\d+"\} \d+', t)
    assert 'bazaar_http_request_duration_seconds_bucket{route="GET /v1/items/{id}",method="GET",le="+Inf"}' in t
    for name in ["bazaar_http_requests_in_flight", "bazaar_db_open_connections", "bazaar_db_in_use_connections",
                 "bazaar_db_idle_connections", "bazaar_db_wait_count_total", "bazaar_db_wait_duration_seconds_total",
                 "bazaar_db_max_lifetime_closed_total", "bazaar_cache_hits_total", "bazaar_cache_misses_total",
                 "bazaar_cache_shared_loads_total", "bazaar_rate_limited_total"]:
        assert re.search(r"^%s [0-9.e+-]+$" % name, t, re.M), name
    doc = requests.get(srv.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    contract = ["POST /v1/users", "GET /v1/users/{id}", "GET /v1/users", "GET /v1/me", "PATCH /v1/users/{id}",
                "POST /v1/sessions", "DELETE /v1/sessions/current", "POST /v1/accounts", "GET /v1/accounts",
                "GET /v1/accounts/{id}", "POST /v1/accounts/{id}/deposits", "POST /v1/transfers",
                "GET /v1/transfers/{id}", "GET /v1/accounts/{id}/transfers", "POST /v1/items", "GET /v1/items/{id}",
                "GET /v1/items", "PUT /v1/items/{id}", "PATCH /v1/items/{id}", "DELETE /v1/items/{id}",
                "POST /v1/orders", "GET /v1/orders/{id}", "GET /v1/users/{id}/orders", "POST /v1/orders/{id}/pay",
                "POST /v1/orders/{id}/cancel", "GET /v1/users/{id}/orders/events", "GET /v1/leaderboard/spenders",
                "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json"]
    for route in contract:
        method, path = route.split(" ")
        assert method.lower() in doc["paths"].get(path, {}), route
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for ref in re.findall(r'"#/components/schemas/(\w+)"', json.dumps(op)):
                assert ref in doc["components"]["schemas"], ref


def test_order_list_cache_never_serves_a_stale_page(srv):
    seller, su, item, buyer, bu, acct = shop(srv, stock=100)
    path = "/v1/users/%d/orders" % bu["id"]
    o1 = order(buyer, acct, item).json()
    first = buyer.get(path)
    again = buyer.get(path)
    assert again.json() == first.json()
    assert again.headers["Cache-Status"] == "bazaar; hit"
    o2 = order(buyer, acct, item).json()  # create
    assert [o["id"] for o in buyer.get(path).json()["data"]] == [o2["id"], o1["id"]]
    buyer.post("/v1/orders/%d/cancel" % o1["id"])  # cancel
    assert [o["status"] for o in buyer.get(path).json()["data"]] == ["pending", "cancelled"]
    assert buyer.post("/v1/orders/%d/pay" % o2["id"]).status_code == 200  # pay
    assert buyer.get(path).json()["data"][0]["status"] in ("paid", "shipped")
    deadline = time.time() + 10  # the worker ships: the list follows
    while buyer.get(path).json()["data"][0]["status"] != "shipped":
        assert time.time() < deadline
        time.sleep(0.2)
    assert buyer.get(path, params={"status": "shipped"}).json()["data"][0]["id"] == o2["id"]
