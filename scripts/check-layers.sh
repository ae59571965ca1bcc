#!/usr/bin/env bash
# scripts/check-layers.sh — the layering rules no compiler checks.
#  1. The service layer knows no transport: nothing under app/svc/ may
#     include an HTTP, REST or gRPC header, or name an HTTP request, a
#     status line or a JSON writer.
#  2. The marketplace is a user of the public API only: app/ and cmd/
#     include <bazaar/...>, their own "app/..." headers, the marketplace's
#     generated protobuf headers and system headers — never a layer's
#     private header (anything under base/ rt/ http/ grpc/ db/ cache/
#     service/, quoted or angled).
#  3. Every public header exports what it declares: it wraps its
#     declarations in `#pragma GCC visibility push(default)` ... `pop`
#     (the library is built with -fvisibility=hidden).
# Exits 1 naming each offence.
set -u
cd "$(dirname "$0")/.."
fail=0

# ---- 2: app/ and cmd/ on the public API ----
# The generated headers of the marketplace's own protos (Makefile
# MARKET_PROTOS); the other generated headers are the library's.
market_pb='bazaar|google/protobuf/(timestamp|wrappers|empty)'
# Private includes that stay until the `life` branch lands (issue #17):
# base/config.h becomes app/config.h (the marketplace's flag table) and
# base/notify.h gives way to the lifecycle.  Each entry is FILE:HEADER;
# an entry that no longer matches an include is an error, so the list
# only shrinks.  Empty it when those moves are merged.
allow=(
  app/app-private.h:base/config.h
  app/app.h:base/config.h
  app/svc/svc.h:base/config.h
  app/tls.h:base/config.h
  cmd/bazaar.c:base/config.h
  app/main.c:base/notify.h
  app/tls.c:base/notify.h
)
layers='base|rt|http|grpc|db|cache|service'
used=()
while IFS= read -r hit; do
  file=${hit%%:*}
  inc=$(sed -E 's/^[^:]*:[0-9]+: *# *include +[<"]([^>"]*)[>"].*/\1/' <<<"$hit")
  case "$hit" in
  *'#'*include*'<'*) # angled: a system header, or a layer's through -I.
    [[ $inc =~ ^($layers)/ ]] || continue ;;
  *) # quoted: the app's own, or the marketplace's generated code
    [[ $inc =~ ^app/ ]] && continue
    [[ $inc =~ ^($market_pb)\.pb-c\.h$ ]] && continue ;;
  esac
  if printf '%s\n' "${allow[@]}" | grep -qxF "$file:$inc"; then
    used+=("$file:$inc")
    continue
  fi
  echo "check-layers: $hit — app/ and cmd/ use the public API only (<bazaar/...>); $inc is private" >&2
  fail=1
done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' $(find app cmd -name '*.[ch]' | sort))
for a in "${allow[@]}"; do
  if ! printf '%s\n' "${used[@]}" | grep -qxF "$a"; then
    echo "check-layers: allow-list entry $a matches no include any more: remove it from scripts/check-layers.sh" >&2
    fail=1
  fi
done
[ $fail -eq 0 ] && echo "check-layers: app/ and cmd/ include only public headers (${#allow[@]} allowed exceptions, see the allow-list)"

# ---- 3: the public headers export their declarations ----
for h in include/bazaar/*.h; do
  if ! grep -qx '#pragma GCC visibility push(default)' "$h" || ! grep -qx '#pragma GCC visibility pop' "$h"; then
    echo "check-layers: $h lacks '#pragma GCC visibility push(default)' after its includes and '#pragma GCC visibility pop' before its #endif" >&2
    fail=1
  fi
done
[ $fail -eq 0 ] && echo "check-layers: every public header exports its declarations ($(ls include/bazaar/*.h | wc -l) headers)"
[ $fail -eq 0 ] || exit 1

# ---- 1: the service layer is transport-free ----
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
