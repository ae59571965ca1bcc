"""Python modules for bazaar.proto, health.proto and google.rpc.Status,
generated at test time by Debian's protoc into a temp dir, for tests that
drive bazaar with python3-grpcio.  (Python's own `grpc` package owns the
name `grpc`, so grpc/health/v1/health_pb2.py is loaded from its path.)"""
import importlib.util
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_OUT = tempfile.mkdtemp(prefix="bazaar-pb-")
subprocess.run(["protoc", "-I" + os.path.join(ROOT, "proto"), "-I/usr/include", "-I/usr/share/grpc-proto",
                "--python_out=" + _OUT, "bazaar.proto", "google/rpc/status.proto",
                "grpc/health/v1/health.proto"], check=True)
sys.path.insert(0, _OUT)


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_OUT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


import bazaar_pb2 as pb  # noqa: E402

health_pb2 = _load("bazaar_health_pb2", "grpc/health/v1/health_pb2.py")
status_pb2 = _load("bazaar_status_pb2", "google/rpc/status_pb2.py")


def unary(channel, path, req, resp_type):
    return channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=resp_type.FromString)


def server_stream(channel, path, resp_type):
    return channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp_type.FromString)


def client_stream(channel, path, resp_type):
    return channel.stream_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp_type.FromString)


def bidi(channel, path, resp_type):
    return channel.stream_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=resp_type.FromString)
