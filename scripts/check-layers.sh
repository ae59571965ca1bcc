#!/usr/bin/env bash
# scripts/check-layers.sh — the service layer knows no transport: nothing
# under app/svc/ may include an HTTP, REST or gRPC header, or name an HTTP
# request, a status line or a JSON writer.  Exits 1 naming each offence.
set -u
cd "$(dirname "$0")/.."
bad=$(grep -nE '#include +"(http|grpc|app/rest|app/grpc)/|#include +<(jansson|nghttp2|protobuf-c)|pb-c\.h|\bhttp_[a-z_]+\b|\bjw_[a-z]+\b|\bjson_[a-z_]+\b|problem\+json|application/json|\b(200|201|204|304|400|401|404|409|413|415|422|429|500|503)\b *[,;)]' app/svc/*.c app/svc/*.h || true)
if [ -n "$bad" ]; then
  echo "check-layers: the service layer must not know its transport:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "check-layers: app/svc/ is transport-free ($(ls app/svc/*.[ch] | wc -l) files)"
# The gRPC contract: proto/bazaar.proto is the spec's, copied.
spec=../shared/spec/bazaar.proto
if [ -f "$spec" ] && ! cmp -s "$spec" proto/bazaar.proto; then
  echo "check-layers: proto/bazaar.proto differs from $spec" >&2
  exit 1
fi
