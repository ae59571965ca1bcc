"""The soak's normal clients: the fault suite's Load (every write recorded
with its Idempotency-Key, so the database can be checked against every
acknowledged response afterwards) with a wider mix, plus a sign-up thread
and an event-stream thread.

  workers (N threads, one keep-alive connection and one gRPC channel each):
    item reads (hot items: cache hits; absent ids: misses, 404), item writes
    (PATCH by the seller, which invalidates the cached copy), deposits,
    transfers, orders + pay (Idempotency-Keys), a user's order list paged
    by cursor, the leaderboard, gRPC GetItem / GetOrder / GetUser;
  sign-ups: a new user every few seconds: sign up, log in, /v1/me, log out;
  streams: an SSE order stream or a gRPC WatchOrders, held a few seconds,
    then closed, one after another.

Every answer is recorded in load.latencies as (t0, seconds, status, kind);
gRPC answers as "grpc:<CODE>".  `unexpected` says which answers a kind may
not give."""
import json
import random
import socket
import threading
import time
import uuid

import grpc

import harness
from grpc_stubs import pb, server_stream, unary

# kind -> weight in the workers' mix
MIX = (("item", 30), ("item_miss", 6), ("item_write", 4), ("deposit", 10), ("transfer", 10), ("order", 12),
       ("orders_page", 6), ("leaderboard", 5), ("grpc_item", 7), ("grpc_order", 5), ("grpc_user", 5))

# answers a kind may give besides 2xx: 409 for money that ran out; 404 for
# the misses.  Anything else (and any 5xx but the designed 503s) is
# unexpected.
ALLOWED = {"item_miss": {404}, "transfer": {409}, "pay": {409}}
# 503s the contract designs: the hashing queue is full, a transaction's
# retries ran out.  Both carry Retry-After (the harness notes when not).
DESIGNED_5XX = {(503, "overloaded"), (503, "contention")}


class MixedLoad(harness.Load):
    MIX = MIX

    def __init__(self, url, nthreads=6, nitems=200, seed=1):
        super().__init__(url, nthreads=nthreads, nitems=nitems, seed=seed)
        self.target = "127.0.0.1:%d" % self.port
        self.orders_of = {u.id: [] for u in self.users}   # a few recent order ids per user
        self.sse_events = 0
        self.streams = 0
        self.signups = 0
        self.extra_threads = []

    # -- recording what is not an http.client answer --

    def _rec(self, kind, status, t0):
        """A gRPC call's or a stream's answer, in the same books as REST's."""
        el = time.monotonic() - t0
        with self.lk:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies.append((t0, el, status, kind))

    def _grpc(self, kind, fn, req, md=()):
        t0 = time.monotonic()
        try:
            fn(req, timeout=harness.REQUEST_TIMEOUT + 3, metadata=md)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        self._rec(kind, "grpc:" + code, t0)
        if code != "OK":
            time.sleep(0.05)

    # -- running --

    def start(self):
        super().start()
        for fn in (self._signups, self._streams):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.extra_threads.append(t)

    def stop(self, timeout=30):
        super().stop(timeout)
        for t in self.extra_threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.extra_threads), "a load thread hung"

    def _worker(self, i):
        rng = random.Random(1000 + i)
        conn = harness.Conn(self.port)
        ch = grpc.insecure_channel(self.target)
        get_item = unary(ch, "/bazaar.v1.ItemService/GetItem", None, pb.Item)
        get_order = unary(ch, "/bazaar.v1.OrderService/GetOrder", None, pb.Order)
        get_user = unary(ch, "/bazaar.v1.UserService/GetUser", None, pb.User)
        me = self.users[i]
        md = (("authorization", "Bearer " + me.token),)
        ops = [op for op, n in self.MIX for _ in range(n)]
        while not self.stop_ev.is_set():
            op = rng.choice(ops)
            if op == "item":
                self._get(conn, None, "/v1/items/%d" % rng.choice(self.items), "item")
            elif op == "item_miss":
                self._get(conn, None, "/v1/items/%d" % rng.randint(10 ** 12, 10 ** 13), "item_miss")
            elif op == "item_write":
                r = self._call(conn, self.seller, "PATCH", "/v1/items/%d" % rng.choice(self.items),
                               {"price_cents": rng.randint(100, 900)})
                self._note(r, "item_write")
                self._backoff(r)
            elif op == "deposit":
                amt = rng.randint(1, 5000)
                self._do(conn, self._write("deposit", me, "/v1/accounts/%d/deposits" % me.account,
                                           {"amount_cents": amt}, amt))
            elif op == "transfer":
                to = rng.choice([u for u in self.users if u is not me])
                self._do(conn, self._write("transfer", me, "/v1/transfers",
                                           {"from_account_id": me.account, "to_account_id": to.account,
                                            "amount_cents": rng.randint(1, 3000)}))
            elif op == "order":
                self._order_and_pay(conn, me, rng)
            elif op == "orders_page":
                self._orders_pages(conn, me, rng)
            elif op == "leaderboard":
                self._get(conn, None, "/v1/leaderboard/spenders?currency=USD&limit=10", "leaderboard")
            elif op == "grpc_item":
                self._grpc("grpc_item", get_item, pb.GetItemRequest(id=rng.choice(self.items)))
            elif op == "grpc_order":
                mine = self.orders_of[me.id]
                if mine:
                    self._grpc("grpc_order", get_order, pb.GetOrderRequest(id=rng.choice(mine)), md)
            else:
                self._grpc("grpc_user", get_user, pb.GetUserRequest(id=rng.choice(self.users).id))
        conn.close()
        ch.close()

    def _backoff(self, r):
        if r.status is None or r.status >= 500:
            time.sleep(0.05)

    def _get(self, conn, user, path, kind):
        r = self._call(conn, user, "GET", path)
        self._note(r, kind)
        self._backoff(r)
        return r

    def _write(self, kind, user, path, body, amount=0):
        w = harness.Write(kind, user, "POST", path, body, uuid.uuid4().hex, amount)
        self._add(w)
        return w

    def _order_and_pay(self, conn, me, rng):
        lines = [{"item_id": rng.choice(self.items), "quantity": rng.randint(1, 3)}]
        w = self._write("order", me, "/v1/orders", {"account_id": me.account, "lines": lines})
        self._do(conn, w)
        if not w.acked:
            return
        oid = json.loads(w.resp)["id"]
        mine = self.orders_of[me.id]
        mine.append(oid)
        del mine[:-50]
        if rng.random() < 0.85:           # some orders stay pending
            p = self._write("pay", me, "/v1/orders/%d/pay" % oid, None)
            p.order = oid
            self._do(conn, p)

    def _orders_pages(self, conn, me, rng):
        path = "/v1/users/%d/orders?limit=%d" % (me.id, rng.choice((5, 20, 50)))
        for _ in range(3):
            r = self._get(conn, me, path, "orders_page")
            if r.status != 200:
                return
            cur = r.json().get("next_cursor")
            if not cur:
                return
            path = "/v1/users/%d/orders?limit=20&cursor=%s" % (me.id, cur)

    def _signups(self):
        """A new user every ~4 s: sign up, log in (Argon2id), /v1/me, log out."""
        conn = harness.Conn(self.port)
        rng = random.Random(7)
        while not self.stop_ev.wait(rng.uniform(2, 6)):
            email = "soak-%s@example.com" % uuid.uuid4().hex[:10]
            r = self._call(conn, None, "POST", "/v1/users", {"email": email, "name": "soak", "password": "pw-soak-12345"})
            self._note(r, "signup")
            if r.status != 201:
                continue
            r = self._call(conn, None, "POST", "/v1/sessions", {"email": email, "password": "pw-soak-12345"})
            self._note(r, "login")
            if r.status != 201:
                continue
            u = harness.User(email, "pw-soak-12345")
            u.token = r.json()["token"]
            self._note(self._call(conn, u, "GET", "/v1/me"), "me")
            self._note(self._call(conn, u, "DELETE", "/v1/sessions/current"), "logout")
            with self.lk:
                self.signups += 1
        conn.close()

    def _streams(self):
        """One order stream at a time for a buyer who is ordering: SSE and
        WatchOrders in turn, each held 3..10 s, then closed by the client."""
        rng = random.Random(11)
        ch = grpc.insecure_channel(self.target)
        watch = server_stream(ch, "/bazaar.v1.OrderService/WatchOrders", pb.OrderEvent)
        n = 0
        while not self.stop_ev.wait(rng.uniform(0.5, 2)):
            u = rng.choice(self.users)
            hold = rng.uniform(3, 10)
            t0 = time.monotonic()
            if n % 2 == 0:
                status, events = self._sse(u, hold)
            else:
                status, events = "grpc:OK", 0
                call = watch(pb.WatchOrdersRequest(), timeout=hold + 30,
                             metadata=(("authorization", "Bearer " + u.token),))
                threading.Timer(hold, call.cancel).start()
                try:
                    for _ in call:
                        events += 1
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.CANCELLED:     # we cancelled it: that is the end
                        status = "grpc:" + e.code().name
            n += 1
            with self.lk:
                self.sse_events += events
                self.streams += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.latencies.append((t0, 0.0, status, "stream"))   # not a latency: held on purpose
        ch.close()

    def _sse(self, u, hold):
        """Holds GET /v1/users/{id}/orders/events for `hold` seconds; returns
        (status, events seen)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            s.sendall(b"GET /v1/users/%d/orders/events HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer %s\r\n\r\n"
                      % (u.id, u.token.encode()))
            got = b""
            end = time.monotonic() + hold
            while time.monotonic() < end:
                s.settimeout(max(0.05, end - time.monotonic()))
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                if not b:
                    return "sse-closed-early", got.count(b"event: order")
                got += b
            st = int(got[9:12]) if got.startswith(b"HTTP/1.1 ") else "sse-no-answer"
            return st, got.count(b"event: order")
        except OSError as e:
            return type(e).__name__, 0
        finally:
            s.close()


def unexpected(kind, status):
    """True when `status` is not an answer `kind` may give (designed 503s
    are judged by problem code elsewhere)."""
    if isinstance(status, str):          # a gRPC code, or a connection error's name
        return status != "grpc:OK"
    if 200 <= status < 300:
        return False
    if status == 503:
        return False          # judged by its problem code (DESIGNED_5XX)
    return status not in ALLOWED.get(kind, set())
