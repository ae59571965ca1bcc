#!/usr/bin/env bash
# scripts/check-layers.sh — the service layer knows no transport: nothing
# under app/svc/ may include an HTTP, REST or gRPC header, or name an HTTP
# request, a status line or a JSON writer.  Exits 1 naming each offence.
set -u
cd "$(dirname "$0")/.."
bad=$(grep -nE '#include +"(http|grpc|app/rest)/|#include +<(jansson|nghttp2|protobuf-c)|\bhttp_[a-z_]+\b|\bjw_[a-z]+\b|\bjson_[a-z_]+\b|problem\+json|application/json|\b(200|201|204|304|400|401|404|409|413|415|422|429|500|503)\b *[,;)]' app/svc/*.c app/svc/*.h || true)
if [ -n "$bad" ]; then
  echo "check-layers: the service layer must not know its transport:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "check-layers: app/svc/ is transport-free ($(ls app/svc/*.[ch] | wc -l) files)"
