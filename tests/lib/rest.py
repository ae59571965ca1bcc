"""The contract's REST API from a test's side (spec/API.md): a client bound
to one server and one bearer token, sign-up and login in one call, and the
RFC 9457 problem check.  BAZAAR_TEST_H2C=1 sends every request over HTTP/2
(h2c prior knowledge) instead of HTTP/1.1: the same suite, the other
transport."""
import itertools
import os
import uuid

import requests


class Client:
    """A REST client bound to one server and (optionally) one token."""

    def __init__(self, server, token=None):
        self.base = server.url if hasattr(server, "url") else server
        self.token = token
        self.s = requests.Session()
        if os.environ.get("BAZAAR_TEST_H2C"):
            # the same contract over HTTP/2 (h2c prior knowledge)
            from h2c import H2CAdapter
            self.s.mount("http://", H2CAdapter())

    def headers(self, key=None, extra=None):
        h = {}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if key:
            h["Idempotency-Key"] = key
        if extra:
            h.update(extra)
        return h

    def get(self, path, **kw):
        return self.s.get(self.base + path, headers=self.headers(extra=kw.pop("headers", None)), timeout=30, **kw)

    def head(self, path, **kw):
        return self.s.head(self.base + path, headers=self.headers(extra=kw.pop("headers", None)), timeout=30, **kw)

    def post(self, path, body=None, key=None, **kw):
        return self.s.post(self.base + path, json=body, headers=self.headers(key, kw.pop("headers", None)),
                           timeout=30, **kw)

    def put(self, path, body=None, **kw):
        return self.s.put(self.base + path, json=body, headers=self.headers(extra=kw.pop("headers", None)),
                          timeout=30, **kw)

    def patch(self, path, body=None, **kw):
        return self.s.patch(self.base + path, json=body, headers=self.headers(extra=kw.pop("headers", None)),
                            timeout=30, **kw)

    def delete(self, path, **kw):
        return self.s.delete(self.base + path, headers=self.headers(extra=kw.pop("headers", None)), timeout=30, **kw)


_users = itertools.count(1)


def new_user(server, name=None, password="correct horse"):
    """Signs up a fresh user and logs in: (client with token, user json)."""
    n = next(_users)
    email = "u%d-%s@Example.COM" % (n, uuid.uuid4().hex[:6])
    c = Client(server)
    r = c.post("/v1/users", {"email": email, "name": name or "User %d" % n, "password": password})
    assert r.status_code == 201, r.text
    user = r.json()
    r = c.post("/v1/sessions", {"email": email, "password": password})
    assert r.status_code == 201, r.text
    c.token = r.json()["token"]
    return c, user


def key():
    return uuid.uuid4().hex


def account(c, currency="USD", deposit=0):
    r = c.post("/v1/accounts", {"currency": currency})
    assert r.status_code == 201, r.text
    a = r.json()
    if deposit:
        r = c.post("/v1/accounts/%d/deposits" % a["id"], {"amount_cents": deposit}, key=key())
        assert r.status_code == 201, r.text
        a = r.json()
    return a


def problem(r, status, code):
    """Asserts r is an RFC 9457 problem with this status and code."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    j = r.json()
    assert j["status"] == status and j["code"] == code, j
    assert j["title"]
    return j
