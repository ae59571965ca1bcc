"""Black-box tests of gRPC-Web on --http-addr, against a real `bazaar serve`:

* clients written elsewhere, from npm (tests/blackbox/grpcweb/client.mjs):
  Connect's createGrpcWebTransport (application/grpc-web+proto over fetch)
  and the grpc-web package (binary application/grpc-web+proto and text
  application/grpc-web-text over an XMLHttpRequest), each behind a stand-in
  for a browser's CORS rules (preflight, allowed headers, exposed headers);
* the wire by hand: requests (HTTP/1.1) and curl --http2-prior-knowledge
  (HTTP/2): message frames then one trailer frame (flag 0x80) with
  grpc-status, -text base64 both ways, error statuses, deadlines, gzip, a
  long server stream and one dropped mid-way, CORS preflight and headers.

The npm packages install themselves (npm ci) when node_modules is missing;
the message descriptors come from proto/bazaar.proto through protoc."""
import base64
import gzip
import json
import os
import re
import socket
import struct
import subprocess
import tempfile

import pytest
import requests

from harness import BAZAAR, Backend, ROOT, Server
from rest import Client, new_user

HERE = os.path.dirname(os.path.abspath(__file__))
NPM_DIR = os.path.join(HERE, "grpcweb")
ORIGIN = "http://localhost:3000"
OTHER_ORIGIN = "http://localhost:3001"
SEEDED = 600  # users put in by `bazaar seed` before the server starts
EXPOSED = {"grpc-status", "grpc-message", "grpc-status-details-bin"}
SVC = "/bazaar.v1.UserService/"


# ---- protobuf by hand (the few messages used here) ----

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_int(field, n):
    return varint(field << 3) + varint(n) if n else b""


def pb_str(field, s):
    b = s.encode()
    return varint(field << 3 | 2) + varint(len(b)) + b


def read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def pb_fields(b):
    """{field number: value} of a message (varints and length-delimited)."""
    out, i = {}, 0
    while i < len(b):
        key, i = read_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise AssertionError("unexpected wire type %d" % wt)
        out[f] = v
    return out


def user_of(msg):
    f = pb_fields(msg)
    return {"id": f.get(1, 0), "name": f.get(2, b"").decode(), "email": f.get(4, b"").decode(),
            "created_at": pb_fields(f[3]) if 3 in f else None}


def get_user_req(uid):
    return pb_int(1, uid)


def list_req(after=0, limit=0):
    return pb_int(1, after) + pb_int(2, limit)


# ---- gRPC-Web framing ----

def frame(msg, flags=0):
    return struct.pack(">BI", flags, len(msg)) + msg


def frames(body):
    """[(flags, payload)]; asserts the body is whole frames."""
    out, i = [], 0
    while i < len(body):
        assert len(body) - i >= 5, "a partial frame header at %d: %r" % (i, body[i:])
        flags, n = struct.unpack(">BI", body[i:i + 5])
        assert len(body) - i - 5 >= n, "a frame cut short at %d" % i
        out.append((flags, body[i + 5:i + 5 + n]))
        i += 5 + n
    return out


def b64_chunks_decode(text):
    """-text response bodies may pad mid-stream (each flush is encoded on
    its own); decode 4-character group by group, as clients do."""
    text = re.sub(rb"\s", b"", text)
    assert len(text) % 4 == 0, "base64 body length %d" % len(text)
    return b"".join(base64.b64decode(text[i:i + 4], validate=True) for i in range(0, len(text), 4))


def parse_trailers(payload):
    """The trailer frame: 'name: value\\r\\n' lines, names lowercase."""
    text = payload.decode("ascii")
    assert text.endswith("\r\n"), repr(text)
    out = {}
    for line in text[:-2].split("\r\n"):
        k, sep, v = line.partition(":")
        assert sep and k == k.strip() and k == k.lower(), repr(line)
        out[k] = v.strip()
    return out


def split(body):
    """(messages, trailers): data frames, then exactly one trailer frame last."""
    fs = frames(body)
    assert fs, "no frames"
    assert fs[-1][0] == 0x80, "the last frame is not the trailer frame: %r" % (fs[-1],)
    msgs = []
    for flags, payload in fs[:-1]:
        assert flags in (0, 1), "a data frame with flags 0x%02x" % flags
        msgs.append(gzip.decompress(payload) if flags & 1 else payload)
    return msgs, parse_trailers(fs[-1][1])


class Reply:
    def __init__(self, status, headers, body, text=False):
        self.status = status
        self.headers = headers  # lowercase names
        self.raw = body
        self.body = b64_chunks_decode(body) if text else body
        self.msgs, self.trailers = split(self.body) if status == 200 else ([], {})

    @property
    def code(self):
        return int(self.trailers["grpc-status"])

    @property
    def message(self):
        return requests.utils.unquote(self.trailers.get("grpc-message", ""))


def web(server, method, msg=b"", text=False, origin=ORIGIN, headers=None, body=None, session=None):
    """One gRPC-Web call over HTTP/1.1 with requests."""
    ct = "application/grpc-web-text" if text else "application/grpc-web+proto"
    h = {"Content-Type": ct, "X-Grpc-Web": "1", "X-User-Agent": "bazaar-tests"}
    if text:
        h["Accept"] = "application/grpc-web-text"
    if origin:
        h["Origin"] = origin
    h.update(headers or {})
    if body is None:
        body = frame(msg)
        if text:
            body = base64.b64encode(body)
    r = (session or requests).post(server.url + SVC + method, data=body, headers=h, timeout=30)
    return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content, text)


def curl_h2(server, method, msg=b"", text=False, origin=ORIGIN, extra=()):
    """One gRPC-Web call over HTTP/2 (h2c prior knowledge) with curl."""
    body = frame(msg)
    if text:
        body = base64.b64encode(body)
    with tempfile.TemporaryDirectory() as d:
        req, hdr, out = (os.path.join(d, n) for n in ("req", "hdr", "out"))
        with open(req, "wb") as f:
            f.write(body)
        ct = "application/grpc-web-text" if text else "application/grpc-web+proto"
        argv = ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "20", "-D", hdr, "-o", out,
                "-H", "Content-Type: " + ct, "-H", "X-Grpc-Web: 1", "--data-binary", "@" + req]
        if origin:
            argv += ["-H", "Origin: " + origin]
        for e in extra:
            argv += ["-H", e]
        subprocess.run(argv + [server.url + SVC + method], check=True, capture_output=True)
        with open(hdr, "rb") as f:
            head = f.read().decode("latin-1")
        with open(out, "rb") as f:
            data = f.read()
    lines = [l for l in head.split("\r\n") if l]
    assert lines[0].startswith("HTTP/2 "), lines[0]
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Reply(int(lines[0].split()[1]), headers, data, text)


# ---- the server, the users, the npm clients ----

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("grpcweb"))
    backend = Backend("sqlite", tmp)
    subprocess.run([BAZAAR, "seed", "--db", backend.db, "--users", str(SEEDED), "--items", "0", "--orders", "0"],
                   check=True, capture_output=True)
    srv = Server(backend, "--grpc-web-origins", ORIGIN + ",http://127.0.0.1:3000")
    try:
        client, me = new_user(srv, name="Web Tester")  # over REST
        yield {"srv": srv, "me": me, "token": client.token, "tmp": tmp}
    finally:
        rc = srv.stop()
        log = srv.log()
        os.unlink(srv.logf.name)
    assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]
    assert rc == 0, "bazaar exited %r:\n%s" % (rc, log[-4000:])


@pytest.fixture(scope="module")
def srv(env):
    return env["srv"]


@pytest.fixture(scope="module")
def me(env):
    return env["me"]


def run(argv, cwd, timeout):
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "%s failed (%d):\n%s\n%s" % (" ".join(argv), p.returncode, p.stdout[-3000:],
                                                          p.stderr[-3000:])
    return p.stdout


@pytest.fixture(scope="module")
def node_client(env):
    """Runs client.mjs: installs its npm packages (npm ci) if they are
    missing, builds the FileDescriptorSet with protoc."""
    for tool in ("node", "npm", "protoc"):
        if not subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True).returncode == 0:
            pytest.fail("%s is not installed (the gRPC-Web client tests need node >= 18, npm and protoc)" % tool)
    stamp = os.path.join(NPM_DIR, "node_modules", ".package-lock.json")
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < os.path.getmtime(
            os.path.join(NPM_DIR, "package-lock.json")):
        run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel", "error"], NPM_DIR, 300)
    fds = os.path.join(env["tmp"], "bazaar.pb")
    run(["protoc", "--include_imports", "--descriptor_set_out=" + fds, "-I" + os.path.join(ROOT, "proto"),
         "-I/usr/include", os.path.join(ROOT, "proto", "bazaar.proto")], ROOT, 60)

    def call(client, fmt, **kw):
        opts = {"fds": fds, "url": env["srv"].url, "client": client, "format": fmt, "origin": ORIGIN,
                "userId": env["me"]["id"], "token": env["token"], "listAfter": 0, "listLimit": 0}
        opts.update(kw)
        out = run(["node", "client.mjs", json.dumps(opts)], NPM_DIR, 120)
        return json.loads(out.strip().splitlines()[-1])

    return call


# ---- the npm clients ----

CLIENTS = [("connect", "binary"), ("grpcweb", "binary"), ("grpcweb", "text")]


@pytest.mark.parametrize("client,fmt", CLIENTS, ids=["connect-web+proto", "grpc-web+proto", "grpc-web-text"])
def test_npm_client(node_client, srv, me, client, fmt):
    email = "npm-%s-%s@example.com" % (client, fmt)
    out = node_client(client, fmt, createEmail=email, listAfter=me["id"] - 5)
    bad = {k: v["error"] for k, v in out.items() if isinstance(v, dict) and "error" in v
           and k not in ("missing", "createBad")}
    assert not bad, "calls failed: %s\nrequests: %s" % (bad, json.dumps(out["requests"], indent=1)[:4000])

    # GetUser: public fields; the email only for the caller's own token
    u = out["getUser"]["ok"]
    assert u["id"] == str(me["id"]) and u["name"] == "Web Tester" and "email" not in u, u
    assert u["createdAt"].startswith(me["created_at"][:19]), (u, me)
    assert out["getUserAuth"]["ok"]["email"] == me["email"], out["getUserAuth"]
    assert out["after"]["ok"] == u

    # errors: the status from the trailer frame
    assert out["missing"]["error"]["code"] == 5, out["missing"]  # NOT_FOUND
    assert "987654321" in out["missing"]["error"]["message"]
    assert out["createBad"]["error"]["code"] == 3, out["createBad"]  # INVALID_ARGUMENT

    # CreateUser over gRPC-Web, then the REST view of the same user
    made = out["create"]["ok"]
    assert made["email"] == email and made["name"] == "Made by " + client and int(made["id"]) > me["id"]
    r = Client(srv).get("/v1/users/%s" % made["id"])
    assert r.status_code == 200 and r.json()["name"] == "Made by " + client, r.text

    # ListUsers (server streaming): every user after listAfter, in order,
    # including the one just made
    ids = [int(x["id"]) for x in out["list"]["ok"]]
    assert ids == sorted(ids) and ids[0] == me["id"] - 4 and int(made["id"]) in ids, ids
    assert me["id"] in ids and len(ids) == len(set(ids))
    first2 = out["listFirst2"]["ok"]
    assert [int(x["id"]) for x in first2[:2]] == [1, 2], first2

    # what a browser would have seen: preflights that allow the origin, the
    # method and every header the client sent; answers that allow the origin
    # and expose the grpc-status trailers' names
    posts = [q for q in out["requests"] if q["method"] == "POST"]
    pre = [q for q in out["requests"] if q["method"] == "OPTIONS"]
    assert pre and posts
    for q in pre:
        assert q["status"] == 204 and q["allowOrigin"] == ORIGIN, q
        assert "authorization" in q["allowHeaders"] and "grpc-timeout" in q["allowHeaders"]
    for q in posts:
        assert "refused" not in q, q
        assert q["status"] == 200 and q["allowOrigin"] == ORIGIN, q
        assert EXPOSED <= set(q["exposeHeaders"]), q
        want = "application/grpc-web-text" if fmt == "text" else "application/grpc-web+proto"
        assert q["contentType"].startswith(want), q
        assert q["requestHeaders"]["content-type"].startswith(want.split("+")[0])
    assert any("authorization" in q["requestHeaders"] for q in posts)


def test_npm_client_disallowed_origin_is_refused_by_the_browser(node_client):
    """A page on an origin not in --grpc-web-origins: the preflight is
    answered 403, so the browser never sends the call."""
    out = node_client("connect", "binary", origin=OTHER_ORIGIN)
    assert "error" in out["getUser"], out["getUser"]
    assert not any(q["method"] == "POST" for q in out["requests"]), out["requests"]
    assert all(q["status"] == 403 for q in out["requests"]), out["requests"]


# ---- the wire by hand: HTTP/1.1 ----

def test_unary_binary_framing(srv, me):
    r = web(srv, "GetUser", get_user_req(me["id"]))
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/grpc-web+proto"), r.headers
    assert len(r.msgs) == 1 and r.trailers == {"grpc-status": "0"}, (r.msgs, r.trailers)
    u = user_of(r.msgs[0])
    assert u["id"] == me["id"] and u["name"] == "Web Tester" and u["email"] == ""
    assert u["created_at"][1] > 1_700_000_000  # seconds
    # no HTTP trailers and no status in the headers: it is in the body
    assert "grpc-status" not in r.headers
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert EXPOSED <= {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}


def test_plain_grpc_web_content_type_and_parameters(srv, me):
    for ct in ("application/grpc-web", "application/grpc-web+proto", "application/grpc-web; charset=utf-8",
               "Application/GRPC-Web+Proto"):
        r = web(srv, "GetUser", get_user_req(me["id"]), headers={"Content-Type": ct})
        assert r.status == 200 and r.code == 0, (ct, r.trailers)
        assert user_of(r.msgs[0])["id"] == me["id"]


def test_unary_with_authorization_metadata(env, srv, me):
    r = web(srv, "GetUser", get_user_req(me["id"]), headers={"Authorization": "Bearer " + env["token"]})
    assert r.code == 0 and user_of(r.msgs[0])["email"] == me["email"]
    # GetUser is public: a token that is no good just shows the public fields
    r = web(srv, "GetUser", get_user_req(me["id"]), headers={"Authorization": "Bearer nope"})
    assert r.code == 0 and user_of(r.msgs[0])["email"] == "", r.trailers
    # a method that needs one refuses the call without a good one
    for h in ({}, {"Authorization": "Bearer nope"}):
        r = requests.post(srv.url + "/bazaar.v1.OrderService/GetOrder", data=frame(pb_int(1, 1)),
                          headers=dict({"Content-Type": "application/grpc-web+proto", "Origin": ORIGIN}, **h),
                          timeout=10)
        assert r.status_code == 200 and split(r.content)[1]["grpc-status"] == "16", r.content  # UNAUTHENTICATED


def test_unary_text_both_ways(srv, me):
    r = web(srv, "GetUser", get_user_req(me["id"]), text=True)
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/grpc-web-text"), r.headers
    assert re.fullmatch(rb"[A-Za-z0-9+/=]+", r.raw), r.raw  # base64 only
    assert len(r.msgs) == 1 and r.code == 0
    assert user_of(r.msgs[0])["id"] == me["id"]


def test_text_request_split_across_chunks(srv, me):
    """The base64 arrives in pieces that do not end on 4-character groups."""
    text = base64.b64encode(frame(get_user_req(me["id"])))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(("POST %sGetUser HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web-text\r\n"
                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % SVC).encode())
        for i in range(0, len(text), 3):
            piece = text[i:i + 3]
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        s.sendall(b"0\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"chunked" in head.lower():
        out, rest = b"", body
        while True:
            line, _, rest = rest.partition(b"\r\n")
            n = int(line, 16)
            if not n:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    msgs, trailers = split(b64_chunks_decode(body))
    assert trailers["grpc-status"] == "0" and user_of(msgs[0])["id"] == me["id"]


def test_text_request_padded_per_chunk(srv, me):
    """A -text body made of separately encoded pieces, the first padded (as
    the gRPC-Web protocol allows for -text streams)."""
    f = frame(get_user_req(me["id"]))
    body = base64.b64encode(f[:1]) + base64.b64encode(f[1:])
    assert b"=" in body[:-2]
    r = web(srv, "GetUser", text=True, body=body)
    assert r.code == 0, r.trailers


def test_text_request_not_base64(srv):
    r = web(srv, "GetUser", text=True, body=b"!!!!not-base64!!")
    assert r.status == 200 and r.code == 3, r.trailers


def test_missing_user_is_not_found_in_trailer_frame(srv):
    for text in (False, True):
        r = web(srv, "GetUser", get_user_req(987654321), text=text)
        assert r.status == 200, r.raw
        assert r.msgs == [] and r.code == 5, r.trailers  # NOT_FOUND
        assert "987654321" in r.message
        assert r.headers["access-control-allow-origin"] == ORIGIN


def test_invalid_argument_carries_status_details(srv):
    r = web(srv, "CreateUser", pb_str(1, "not an email") + pb_str(3, "x"))
    assert r.code == 3, r.trailers  # INVALID_ARGUMENT
    st = pb_fields(base64.b64decode(r.trailers["grpc-status-details-bin"] + "=="))
    assert st[1] == 3  # google.rpc.Status.code
    assert b"google.rpc.BadRequest" in st[3]


def test_create_user_over_grpc_web(srv):
    r = web(srv, "CreateUser", pb_str(1, "raw-web@example.com") + pb_str(2, "Raw Web") +
            pb_str(3, "correct horse"), text=True)
    assert r.code == 0, r.trailers
    u = user_of(r.msgs[0])
    assert u["email"] == "raw-web@example.com" and u["id"] > SEEDED
    # a second time: the email is taken
    r = web(srv, "CreateUser", pb_str(1, "raw-web@example.com") + pb_str(2, "Raw Web") +
            pb_str(3, "correct horse"))
    assert r.code == 6, r.trailers  # ALREADY_EXISTS
    # the session works over REST
    r = Client(srv).post("/v1/sessions", {"email": "raw-web@example.com", "password": "correct horse"})
    assert r.status_code == 201, r.text


def test_unknown_method_is_unimplemented(srv):
    r = web(srv, "NoSuchMethod", b"")
    assert r.status == 200 and r.code == 12, r.trailers
    r = requests.post(srv.url + "/bazaar.v1.NoService/X", data=frame(b""),
                      headers={"Content-Type": "application/grpc-web+proto"}, timeout=10)
    assert r.status_code == 200 and split(r.content)[1]["grpc-status"] == "12"


def test_empty_body_for_unary_is_an_error(srv):
    r = web(srv, "GetUser", body=b"")
    assert r.status == 200 and r.code != 0, r.trailers


def test_truncated_frame_is_invalid_argument(srv):
    r = web(srv, "GetUser", body=frame(get_user_req(1))[:-1])
    assert r.code == 3, r.trailers


def test_gzip_request_and_answer(srv, me):
    r = web(srv, "GetUser", body=frame(gzip.compress(get_user_req(me["id"])), flags=1),
            headers={"grpc-encoding": "gzip", "grpc-accept-encoding": "gzip"})
    assert r.code == 0 and user_of(r.msgs[0])["id"] == me["id"], r.trailers


def test_setup_fields_are_read_whatever_their_case(srv, me):
    """HTTP/1.1 field names come in any case: the call's setup finds
    x-request-id, grpc-timeout, grpc-encoding and grpc-accept-encoding
    in its one pass over the fields however they are spelled."""
    r = web(srv, "GetUser", body=frame(gzip.compress(get_user_req(me["id"])), flags=1),
            headers={"X-REQUEST-ID": "Web-Rid-7", "GRPC-Encoding": "gzip", "Grpc-Accept-Encoding": "gzip"})
    assert r.code == 0 and user_of(r.msgs[0])["id"] == me["id"], r.trailers
    assert r.headers["x-request-id"] == "Web-Rid-7"
    assert r.headers.get("grpc-encoding") == "gzip"
    r = web(srv, "ListUsers", list_req(), headers={"GRPC-TIMEOUT": "1n"})
    assert r.status == 200 and r.code == 4, r.trailers  # DEADLINE_EXCEEDED
    r = web(srv, "GetUser", get_user_req(me["id"]), headers={"Grpc-Timeout": "soon"})
    assert r.status == 200 and r.code == 13 and "grpc-timeout" in r.message, r.trailers


def test_deadline_exceeded(srv):
    r = web(srv, "ListUsers", list_req(), headers={"grpc-timeout": "1n"})
    assert r.status == 200 and r.code == 4, r.trailers  # DEADLINE_EXCEEDED


def test_server_stream_binary_and_text(srv, me):
    want = list(range(1, me["id"] + 1))
    for text in (False, True):
        r = web(srv, "ListUsers", list_req(), text=text)
        assert r.code == 0, r.trailers
        ids = [user_of(m)["id"] for m in r.msgs]
        assert ids[:len(want)] == want, ids[:20]
        assert len(ids) >= SEEDED + 1
    r = web(srv, "ListUsers", list_req(after=10, limit=5))
    assert [user_of(m)["id"] for m in r.msgs] == [11, 12, 13, 14, 15] and r.code == 0


def test_keep_alive_several_calls_on_one_connection(srv, me):
    s = requests.Session()
    for i in range(6):
        r = web(srv, "ListUsers" if i % 2 else "GetUser",
                list_req(limit=3) if i % 2 else get_user_req(me["id"]), text=bool(i % 3 == 0), session=s)
        assert r.code == 0 and r.msgs, (i, r.trailers)


def test_stream_dropped_midway_leaves_server_healthy(srv, me):
    """A client that reads a little of a long stream and goes away."""
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            body = frame(list_req())
            s.sendall(("POST %sListUsers HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\n"
                       "Content-Length: %d\r\n\r\n" % (SVC, len(body))).encode() + body)
            got = s.recv(4096)
            assert got.startswith(b"HTTP/1.1 200"), got[:100]
    r = web(srv, "GetUser", get_user_req(me["id"]))
    assert r.code == 0


def test_response_without_origin_has_no_cors_headers(srv, me):
    r = web(srv, "GetUser", get_user_req(me["id"]), origin=None)
    assert r.code == 0
    assert "access-control-allow-origin" not in r.headers


def test_response_to_disallowed_origin_has_no_allow_origin(srv, me):
    r = web(srv, "GetUser", get_user_req(me["id"]), origin=OTHER_ORIGIN)
    assert "access-control-allow-origin" not in r.headers


def test_second_allowed_origin(srv, me):
    r = web(srv, "GetUser", get_user_req(me["id"]), origin="http://127.0.0.1:3000")
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"


# ---- CORS preflight ----

def preflight(srv, origin, method="POST", headers="content-type,x-grpc-web,x-user-agent,grpc-timeout"):
    h = {"Access-Control-Request-Method": method}
    if origin:
        h["Origin"] = origin
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(srv.url + SVC + "ListUsers", headers=h, timeout=10)


def test_preflight_allowed(srv):
    r = preflight(srv, ORIGIN)
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in [m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")]
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "authorization"} <= allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "origin" in r.headers.get("Vary", "").lower()
    assert r.content == b""


@pytest.mark.parametrize("origin", [OTHER_ORIGIN, "http://localhost:3000.evil.example", "null", None])
def test_preflight_refused(srv, origin):
    r = preflight(srv, origin)
    assert r.status_code == 403, (r.status_code, r.headers)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_preflight_over_http2(srv):
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "-X", "OPTIONS",
                        "-H", "Origin: " + ORIGIN, "-H", "Access-Control-Request-Method: POST",
                        srv.url + SVC + "GetUser"], check=True, capture_output=True, text=True)
    head = p.stdout.lower()
    assert head.startswith("http/2 204"), head
    assert "access-control-allow-origin: " + ORIGIN in head


# ---- HTTP/2 (curl, h2c prior knowledge) ----

def test_h2_unary_binary_and_text(srv, me):
    for text in (False, True):
        r = curl_h2(srv, "GetUser", get_user_req(me["id"]), text=text)
        assert r.status == 200
        want = "application/grpc-web-text" if text else "application/grpc-web+proto"
        assert r.headers["content-type"].startswith(want), r.headers
        assert r.code == 0 and user_of(r.msgs[0])["id"] == me["id"]
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert EXPOSED <= {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}


def test_h2_not_found(srv):
    for text in (False, True):
        r = curl_h2(srv, "GetUser", get_user_req(987654321), text=text)
        assert r.status == 200 and r.msgs == [] and r.code == 5, r.trailers


def test_h2_server_stream(srv, me):
    for text in (False, True):
        r = curl_h2(srv, "ListUsers", list_req(after=me["id"] - 3), text=text)
        assert r.code == 0
        ids = [user_of(m)["id"] for m in r.msgs]
        assert ids[:3] == [me["id"] - 2, me["id"] - 1, me["id"]], ids


def test_h2_authorization(env, srv, me):
    r = curl_h2(srv, "GetUser", get_user_req(me["id"]), extra=["Authorization: Bearer " + env["token"]])
    assert r.code == 0 and user_of(r.msgs[0])["email"] == me["email"]


# ---- content types that are not gRPC-Web+proto ----

@pytest.mark.parametrize("ct", ["application/grpc-web+json", "application/grpc-web+thrift"])
def test_unsupported_codec_is_refused(srv, me, ct):
    """A codec the server does not have must not be read as protobuf and
    answered as +proto: 415 or a non-OK status."""
    r = requests.post(srv.url + SVC + "GetUser", data=frame(get_user_req(me["id"])),
                      headers={"Content-Type": ct, "Origin": ORIGIN}, timeout=10)
    if r.status_code == 200:
        assert split(r.content)[1]["grpc-status"] != "0", r.headers
    else:
        assert r.status_code == 415


def test_native_grpc_over_http1_is_refused(srv):
    r = requests.post(srv.url + SVC + "GetUser", data=frame(get_user_req(1)),
                      headers={"Content-Type": "application/grpc"}, timeout=10)
    assert r.status_code == 505, r.status_code


def test_get_is_not_a_call(srv):
    r = requests.get(srv.url + SVC + "GetUser", headers={"Content-Type": "application/grpc-web+proto"},
                     timeout=10)
    assert r.status_code == 405, r.status_code
