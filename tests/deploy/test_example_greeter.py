"""examples/greeter, built out of the tree against an installed libbazaar,
and what reflection says about a program's own services.

- `make install-lib DESTDIR=<tmp> PREFIX=/usr`; the greeter's directory is
  copied out of the tree and built with its own Makefile (protoc-c, then
  cc with `pkg-config --define-prefix` pointed into the DESTDIR), and run
  with LD_LIBRARY_PATH there;
- it is driven with python3-grpcio (hand-serialised messages, and messages
  built from the descriptors reflection served), curl (/healthz, and a raw
  gRPC call with grpc-timeout to time the server's own DEADLINE_EXCEEDED),
  and grpc-js-reflection-client (npm), a third-party reflection client;
- tests/deploy/describe is a program that registers the services of
  rich.proto and legacy.proto (every shape of field, enum, map, oneof,
  default, import) with no descriptor set: reflection's FileDescriptorProtos
  for them are compared with protoc's for the same files, field by field.
  What protobuf-c's descriptors cannot carry is left out of the comparison
  and documented in grpc/describe.c: file names, declaration order, oneof
  names.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import harness

ROOT = harness.ROOT
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_CLIENT_DIR = os.path.join(ROOT, "tests", "blackbox", "reflection")
GREETER = "helloworld.Greeter"
VERSIONS = ["v1", "v1alpha"]


# ---- the installed tree and the out-of-tree builds ---------------------------------------------


@pytest.fixture(scope="module")
def installed():
    d = tempfile.mkdtemp(prefix="bazaar-greeter-")
    dest = os.path.join(d, "dest")
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "install-lib", "DESTDIR=" + dest, "PREFIX=/usr",
                        "BUILD=" + harness.BUILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(dest, "usr", "lib", "pkgconfig"),
               PKG_CONFIG="pkg-config --define-prefix", LD_LIBRARY_PATH=os.path.join(dest, "usr", "lib"))
    yield {"dir": d, "dest": dest, "env": env}
    shutil.rmtree(d, ignore_errors=True)


def build_outside(installed, src, name, cmds):
    """Copies src out of the tree and runs cmds there; returns the copy."""
    work = os.path.join(installed["dir"], name)
    shutil.copytree(src, work)
    for cmd in cmds:
        r = subprocess.run(cmd, cwd=work, env=installed["env"], shell=isinstance(cmd, str), capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, "%s failed:\n%s%s" % (cmd, r.stdout, r.stderr)
    return work


class Program:
    """A built example on a free loopback port, stopped by PID."""

    def __init__(self, installed, exe, grpc_addr=False):
        self.http = "127.0.0.1:%d" % harness.free_port()
        argv = [exe, "--http-addr", self.http]
        if grpc_addr:  # the lifecycle's --grpc-addr (gRPC alone); else gRPC on --http-addr
            self.addr = "127.0.0.1:%d" % harness.free_port()
            argv += ["--grpc-addr", self.addr]
        else:
            self.addr = self.http
        self.log = open(os.path.join(os.path.dirname(exe), "run.log"), "wb")
        self.proc = subprocess.Popen(argv, env=installed["env"], stdout=subprocess.DEVNULL, stderr=self.log)
        up = harness.wait_for(lambda: self.proc.poll() is None and grpc_health(self.addr) is not None, 20)
        assert up, "%s did not come up:\n%s" % (exe, harness.tail(self.log.name))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log.close()
        return rc


def grpc_health(addr, service=""):
    """grpc.health.v1.Health/Check: the status number, the error code's
    name, or None if nothing answers."""
    with grpc.insecure_channel(addr) as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        try:
            out = call(field_bytes(1, service.encode()) if service else b"", timeout=2)
        except grpc.RpcError as e:
            # UNAVAILABLE: not up yet; another code is the server's answer
            return None if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
        return out[1] if out else 0


@pytest.fixture(scope="module")
def greeter(installed):
    work = build_outside(installed, os.path.join(ROOT, "examples", "greeter"), "greeter", [["make"]])
    p = Program(installed, os.path.join(work, "greeter"), grpc_addr=True)
    yield p
    # a clean exit on SIGTERM: drained, no crash
    assert p.stop() == 0, harness.tail(p.log.name)


@pytest.fixture(scope="module")
def describer(installed):
    srcs = "describe.c rich.pb-c.c other.pb-c.c legacy.pb-c.c google/protobuf/timestamp.pb-c.c"
    work = build_outside(installed, os.path.join(HERE, "describe"), "describe", [
        ["protoc-c", "-I.", "-I/usr/include", "--c_out=.", "rich.proto", "other.proto", "legacy.proto",
         "google/protobuf/timestamp.proto"],
        "cc -std=c17 -Wall -Wextra -Wno-unused-parameter -Werror -I. -o describe %s "
        "$($PKG_CONFIG --cflags --libs bazaar)" % srcs,
        ["protoc", "-I.", "-I/usr/include", "--include_imports", "--descriptor_set_out=protoc.pb", "rich.proto",
         "legacy.proto"],
    ])
    p = Program(installed, os.path.join(work, "describe"), grpc_addr=True)
    with open(os.path.join(work, "protoc.pb"), "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    yield {"addr": p.addr, "protoc": {f.name: f for f in fds.file}}
    assert p.stop() == 0, harness.tail(p.log.name)


# ---- messages by hand --------------------------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_bytes(num, b):
    return varint(num << 3 | 2) + varint(len(b)) + b


def hello_request(name, delay_ms=0, count=0):
    out = field_bytes(1, name.encode())
    if delay_ms:
        out += varint(2 << 3) + varint(delay_ms)
    if count:
        out += varint(3 << 3) + varint(count)
    return out


def reply_text(b):
    assert b[0] == 0x0A, b
    return b[2:2 + b[1]].decode()


def raw(ch, method, stream=False):
    make = ch.unary_stream if stream else ch.unary_unary
    return make("/helloworld.Greeter/" + method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


# ---- the greeter -------------------------------------------------------------------------------


def test_built_out_of_tree_against_the_installed_library(installed, greeter):
    exe = greeter.proc.args[0]
    assert not exe.startswith(ROOT)
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, env=installed["env"]).stdout
    line = [l for l in ldd.splitlines() if "libbazaar.so.0" in l]
    assert line and installed["dest"] in line[0], ldd


def test_healthz(greeter):
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "http://%s/healthz" % greeter.http],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "ok\n200"


def test_grpc_on_the_http_address_too(greeter):
    """--http-addr serves gRPC by content type beside /healthz."""
    with grpc.insecure_channel(greeter.http) as ch:
        assert reply_text(raw(ch, "SayHello")(hello_request("h2c"), timeout=5)) == "Hello, h2c!"


def test_unary_and_server_streaming(greeter):
    with grpc.insecure_channel(greeter.addr) as ch:
        assert reply_text(raw(ch, "SayHello")(hello_request("Ada"), timeout=5)) == "Hello, Ada!"
        got = [reply_text(b) for b in raw(ch, "SayHellos", stream=True)(hello_request("Bo", count=3), timeout=5)]
        assert got == ["Hello #1, Bo!", "Hello #2, Bo!", "Hello #3, Bo!"]
        with pytest.raises(grpc.RpcError) as e:
            raw(ch, "SayHello")(hello_request(""), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a unary call with no request message never reaches the handler
        call = ch.stream_unary("/helloworld.Greeter/SayHello", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            call(iter([]), timeout=5)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        # a method the proto lacks
        with pytest.raises(grpc.RpcError) as e:
            raw(ch, "SayGoodbye")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_calls_are_logged_and_counted(greeter):
    """A gRPC server made by bazaar_grpc observes every call: one access-log
    line (the same keys as REST's) and the gRPC call families on /metrics."""
    def logged():
        greeter.log.flush()
        with open(greeter.log.name, "rb") as f:
            lines = [json.loads(l) for l in f.read().splitlines() if l.startswith(b"{")]
        return [l for l in lines if l.get("msg") == "grpc" and l.get("method") == "/helloworld.Greeter/SayHello"]
    # Earlier tests' calls are in the log too, and the server holds info
    # lines up to 100 ms before it writes them: wait for this call's line,
    # the first one past those already there.
    time.sleep(0.2)
    before = len(logged())
    with grpc.insecure_channel(greeter.addr) as ch:
        assert reply_text(raw(ch, "SayHello")(hello_request("Log"), timeout=5)) == "Hello, Log!"
    lines = harness.wait_for(lambda: logged()[before:], 5)
    assert lines and len(lines) == 1 and lines[0]["code"] == "OK" and len(lines[0]["trace_id"]) == 32, lines
    r = subprocess.run(["curl", "-s", "http://%s/metrics" % greeter.http], capture_output=True, text=True, timeout=10)
    assert 'bazaar_grpc_server_handled_total{method="helloworld.Greeter/SayHello",code="OK"}' in r.stdout, r.stdout


def test_client_deadline(greeter):
    with grpc.insecure_channel(greeter.addr) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            raw(ch, "SayHello")(hello_request("late", delay_ms=5000), timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 3
        # within the deadline the same call answers
        assert reply_text(raw(ch, "SayHello")(hello_request("soon", delay_ms=50), timeout=5)) == "Hello, soon!"


def curl_grpc(addr, method, msg, timeout=None):
    """One gRPC call with curl (h2c prior knowledge): the response headers
    and trailers as a dict, and the seconds it took."""
    frame = b"\x00" + len(msg).to_bytes(4, "big") + msg
    argv = ["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "--data-binary", "@-",
            "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if timeout:
        argv += ["-H", "grpc-timeout: " + timeout]
    t0 = time.monotonic()
    r = subprocess.run(argv + ["http://%s/helloworld.Greeter/%s" % (addr, method)], input=frame,
                       capture_output=True, timeout=30)
    dt = time.monotonic() - t0
    fields = {}
    for line in r.stdout.decode(errors="replace").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return fields, dt


def test_the_server_itself_ends_the_call_at_the_deadline(greeter):
    """grpc-timeout bounds the handler's rt_sleep on the call's context:
    the server sends DEADLINE_EXCEEDED at the deadline (a client that
    waited longer sees it), not the reply 5 s later."""
    fields, dt = curl_grpc(greeter.addr, "SayHello", hello_request("late", delay_ms=5000), timeout="300m")
    assert fields.get("grpc-status") == "4", fields
    assert 0.25 <= dt < 3, dt
    # a streaming call too: some replies, then the status at the deadline
    fields, dt = curl_grpc(greeter.addr, "SayHellos", hello_request("s", delay_ms=100, count=100), timeout="400m")
    assert fields.get("grpc-status") == "4", fields
    assert 0.35 <= dt < 3, dt
    # without a deadline it answers
    fields, dt = curl_grpc(greeter.addr, "SayHello", hello_request("on time", delay_ms=100))
    assert fields.get("grpc-status") == "0", fields


def test_health_reports_the_registered_services(greeter):
    assert grpc_health(greeter.addr) == 1  # SERVING
    assert grpc_health(greeter.addr, GREETER) == 1
    assert grpc_health(greeter.addr, "helloworld.Nope") == "NOT_FOUND"


# ---- reflection, python3-grpcio with protoc's reflection messages ------------------------------


@pytest.fixture(scope="module")
def pb():
    out = tempfile.mkdtemp(prefix="bazaar-greeter-py-")
    subprocess.run(["protoc", "-I/usr/share/grpc-proto", "-I/usr/include", "--python_out=" + out,
                    "grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"], check=True)
    mods = {}
    for v in VERSIONS:
        spec = importlib.util.spec_from_file_location(
            "greeter_reflection_%s_pb2" % v, os.path.join(out, "grpc", "reflection", v, "reflection_pb2.py"))
        mods[v] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[v])
    yield mods
    shutil.rmtree(out, ignore_errors=True)


def reflect(addr, pb, version, requests):
    m = pb[version]
    with grpc.insecure_channel(addr) as ch:
        call = ch.stream_stream("/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
                                request_serializer=m.ServerReflectionRequest.SerializeToString,
                                response_deserializer=m.ServerReflectionResponse.FromString)
        return list(call(iter([m.ServerReflectionRequest(**r) for r in requests]), timeout=10))


def files_of(resp):
    assert resp.WhichOneof("message_response") == "file_descriptor_response", resp
    return [descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in resp.file_descriptor_response.file_descriptor_proto]


def pool_of(fds):
    """A DescriptorPool of an answer's files: fails if a dependency is missing."""
    pool = descriptor_pool.DescriptorPool()
    left, done = list(fds), set()
    while left:
        ready = [f for f in left if set(f.dependency) <= done]
        assert ready, "missing dependencies: %s" % sorted({d for f in left for d in f.dependency} - done)
        for f in ready:
            pool.Add(f)
            done.add(f.name)
            left.remove(f)
    return pool


@pytest.mark.parametrize("version", VERSIONS)
def test_reflection_lists_and_describes_the_greeter(greeter, pb, version):
    rs = reflect(greeter.addr, pb, version, [dict(list_services=""),
                                             dict(file_containing_symbol=GREETER),
                                             dict(file_containing_symbol="helloworld.HelloRequest.delay_ms"),
                                             dict(file_containing_symbol="grpc.health.v1.Health"),
                                             dict(file_containing_symbol="helloworld.Nope")])
    assert [s.name for s in rs[0].list_services_response.service] == [
        "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
        GREETER]
    fds = files_of(rs[1])
    assert fds[0].package == "helloworld" and fds[0].syntax == "proto3"
    pool = pool_of(fds)
    svc = pool.FindServiceByName(GREETER)
    assert [(m.name, m.input_type.full_name, m.output_type.full_name) for m in svc.methods] == [
        ("SayHello", "helloworld.HelloRequest", "helloworld.HelloReply"),
        ("SayHellos", "helloworld.HelloRequest", "helloworld.HelloReply")]
    assert {m.name: (m.client_streaming, m.server_streaming) for m in fds[0].service[0].method} == {
        "SayHello": (False, False), "SayHellos": (False, True)}
    req = pool.FindMessageTypeByName("helloworld.HelloRequest")
    F = descriptor_pb2.FieldDescriptorProto
    assert [(f.number, f.name, f.type) for f in req.fields] == [(1, "name", F.TYPE_STRING),
                                                                 (2, "delay_ms", F.TYPE_INT32),
                                                                 (3, "count", F.TYPE_INT32)]
    assert files_of(rs[2])[0].name == fds[0].name
    # the standard services come exactly as protoc wrote them
    assert files_of(rs[3])[0].name == "grpc/health/v1/health.proto"
    assert rs[4].WhichOneof("message_response") == "error_response" and rs[4].error_response.error_code == 5
    # the file is also found by its name
    assert files_of(reflect(greeter.addr, pb, version, [dict(file_by_filename=fds[0].name)])[0])[0] == fds[0]


def test_a_client_calls_with_the_reflected_types(greeter, pb):
    """What a dynamic client (grpcurl, Postman) does: build the request from
    the reflected descriptor, call, decode the reply with it."""
    pool = pool_of(files_of(reflect(greeter.addr, pb, "v1", [dict(file_containing_symbol=GREETER)])[0]))
    factory = message_factory.MessageFactory(pool)
    Req = factory.GetPrototype(pool.FindMessageTypeByName("helloworld.HelloRequest"))
    Rep = factory.GetPrototype(pool.FindMessageTypeByName("helloworld.HelloReply"))
    with grpc.insecure_channel(greeter.addr) as ch:
        call = ch.unary_unary("/helloworld.Greeter/SayHello", request_serializer=Req.SerializeToString,
                              response_deserializer=Rep.FromString)
        assert call(Req(name="reflected", delay_ms=1), timeout=5).message == "Hello, reflected!"


# ---- reflection, a third-party client ----------------------------------------------------------


@pytest.fixture(scope="module")
def node_client():
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the reflection client"
    if not os.path.isdir(os.path.join(NODE_CLIENT_DIR, "node_modules", "grpc-js-reflection-client")):
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT_DIR, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, "npm ci failed:\n" + r.stdout + r.stderr
    return node


@pytest.mark.parametrize("version", VERSIONS)
def test_third_party_reflection_client(greeter, node_client, version):
    r = subprocess.run([node_client, os.path.join(HERE, "reflect.js"), greeter.addr, version, GREETER,
                        "helloworld.HelloRequest"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=os.path.join(NODE_CLIENT_DIR, "node_modules")))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert GREETER in d["services"] and "grpc.health.v1.Health" in d["services"]
    assert d["methods"] == [
        {"name": "SayHello", "requestType": ".helloworld.HelloRequest", "responseType": ".helloworld.HelloReply",
         "requestStream": False, "responseStream": False},
        {"name": "SayHellos", "requestType": ".helloworld.HelloRequest", "responseType": ".helloworld.HelloReply",
         "requestStream": False, "responseStream": True}]
    # protobufjs camel-cases field names
    assert d["fields"] == [{"name": "name", "id": 1, "type": "string", "repeated": False},
                           {"name": "delayMs", "id": 2, "type": "int32", "repeated": False},
                           {"name": "count", "id": 3, "type": "int32", "repeated": False}]


# ---- the description against protoc's ----------------------------------------------------------


def enum_values(fd):
    """{".pkg.Enum": {value name: number}} for the file's enums, nested too."""
    out = {}

    def walk(scope, msgs, enums):
        for e in enums:
            out[scope + "." + e.name] = {v.name: v.number for v in e.value}
        for m in msgs:
            walk(scope + "." + m.name, m.nested_type, m.enum_type)
    walk("." + fd.package if fd.package else "", fd.message_type, fd.enum_type)
    return out


def norm_message(m, enums):
    """What a client relies on in a DescriptorProto, without what protobuf-c
    cannot carry (declaration order, oneof names, which alias an enum
    default names: its number is what it means)."""
    oneofs = {}
    for f in m.field:
        if f.HasField("oneof_index"):
            oneofs.setdefault(f.oneof_index, set()).add(f.name)
    fields = []
    for f in sorted(m.field, key=lambda f: f.number):
        fields.append(dict(name=f.name, number=f.number, label=f.label, type=f.type, type_name=f.type_name,
                           default=(enums[f.type_name][f.default_value] if f.type == f.TYPE_ENUM
                                    else f.default_value) if f.HasField("default_value") else None,
                           json_name=f.json_name,
                           packed=f.options.packed if f.options.HasField("packed") else None,
                           deprecated=f.options.deprecated,
                           oneof=sorted(oneofs[f.oneof_index]) if f.HasField("oneof_index") else None))
    return dict(name=m.name, fields=fields, map_entry=m.options.map_entry, noneofs=len(m.oneof_decl),
                nested=sorted((norm_message(n, enums) for n in m.nested_type), key=lambda n: n["name"]),
                enums=sorted((norm_enum(e) for e in m.enum_type), key=lambda e: e["name"]))


def norm_enum(e):
    return dict(name=e.name, values=sorted((v.number, v.name) for v in e.value), allow_alias=e.options.allow_alias)


def norm_file(fd, rename):
    return dict(package=fd.package, syntax=fd.syntax, dependency=sorted(rename.get(d, d) for d in fd.dependency),
                messages=sorted((norm_message(m, enum_values(fd)) for m in fd.message_type), key=lambda m: m["name"]),
                enums=sorted((norm_enum(e) for e in fd.enum_type), key=lambda e: e["name"]),
                services=[dict(name=s.name, methods=[(m.name, m.input_type, m.output_type, m.client_streaming,
                                                      m.server_streaming) for m in s.method]) for s in fd.service])


def flatten(v, path=""):
    """A nested description as a set of (path, value) leaves, so a
    difference names its place (messages, fields, enums by name)."""
    if isinstance(v, dict):
        key = v.get("name")
        return set().union(*[flatten(x, "%s/%s" % (path, k)) for k, x in v.items()]) if v else {(path, "{}")}
    if isinstance(v, list):
        if not v:
            return {(path, "[]")}
        out = set()
        for i, x in enumerate(v):
            name = x.get("name") if isinstance(x, dict) else None
            out |= flatten(x, "%s[%s]" % (path, name if name is not None else i))
        return out
    return {(path, repr(v))}


def test_health_with_no_list_reports_every_registered_service(describer):
    """grpc_health_register(g, NULL, ...): the services with a method on g."""
    for name in ("", "describe.v3.Kitchen", "describe.v2.Admin", "grpc.health.v1.Health",
                 "grpc.reflection.v1.ServerReflection"):
        assert grpc_health(describer["addr"], name) == 1, name
    for name in ("describe.v3", "describe.v3.Kitchen.Get", "describe.v3.Kitche", "describe.other.Thing"):
        assert grpc_health(describer["addr"], name) == "NOT_FOUND", name


@pytest.mark.parametrize("symbol,protoc_file", [("describe.v3.Kitchen", "rich.proto"),
                                                ("describe.other.Thing", "other.proto"),
                                                ("describe.v2.Admin", "legacy.proto")])
def test_description_matches_protoc(describer, pb, symbol, protoc_file):
    fds = files_of(reflect(describer["addr"], pb, "v1", [dict(file_containing_symbol=symbol)])[0])
    pool_of(fds)  # the answer is complete and consistent
    got = fds[0]
    # one file per package, named after it
    rename = {"rich.proto": "describe.v3.proto", "other.proto": "describe.other.proto",
              "legacy.proto": "describe.v2.proto"}
    assert got.name == rename[protoc_file]
    want = describer["protoc"][protoc_file]
    g, w = flatten(norm_file(got, {})), flatten(norm_file(want, rename))
    assert g == w, "described, not protoc's: %s\nprotoc's, not described: %s" % (sorted(g - w), sorted(w - g))
    # the well-known type comes from the library's set, byte for byte as protoc wrote it
    if protoc_file == "rich.proto":
        ts = [f for f in fds if f.name == "google/protobuf/timestamp.proto"]
        assert ts and ts[0] == describer["protoc"]["google/protobuf/timestamp.proto"]
