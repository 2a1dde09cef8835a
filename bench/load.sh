#!/usr/bin/env bash
# Load benchmark of the REST sidecar: requests/s and p99 latency of the access-token and
# guest-token routes at 32 and 128 connections, beside a bare axum route returning a fixed body
# in the same run, so the cost of minting shows as a ratio.
#
#   bash bench/load.sh            # 10 s per run; DURATION=30s bash bench/load.sh for longer
#
# Installs wrk from Debian when missing. Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-10s}"
THREADS="${THREADS:-2}"
SERVE_ADDR=127.0.0.1:18080
BARE_ADDR=127.0.0.1:18081
KEY="$(sed -n 's/^ *key: *//p' examples/quickstart/*.yaml | head -n1 | tr -d '"')"

if ! command -v wrk >/dev/null; then
    echo "installing wrk from Debian" >&2
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi

cargo build --release --quiet
cargo bench --no-run --quiet --bench bare_route 2>/dev/null
bare_bin="$(ls -t target/release/deps/bare_route-* | grep -v '\.d$' | head -n1)"

work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

target/release/tokenmint serve --manifests examples/quickstart --listen "$SERVE_ADDR" 2>"$work/serve.log" &
pids+=($!)
"$bare_bin" "$BARE_ADDR" 2>/dev/null &
pids+=($!)
# Wait until both listen (bash's /dev/tcp, no extra tool).
for addr in "$SERVE_ADDR" "$BARE_ADDR"; do
    for attempt in $(seq 100); do
        (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
        [ "$attempt" = 100 ] && { echo "nothing listens on $addr" >&2; cat "$work/serve.log" >&2; exit 1; }
        sleep 0.1
    done
done

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("AUTH") or ""
wrk.body = os.getenv("BODY") or ""
LUA

# run NAME URL AUTH BODY CONNECTIONS -> "rps p99_ms"
run() {
    local out
    out="$(AUTH="$3" BODY="$4" wrk -t"$THREADS" -c"$5" -d"$DURATION" --latency -s "$work/post.lua" "$2")"
    if grep -q 'Non-2xx' <<<"$out"; then
        echo "$1: non-2xx answers during the run:" >&2
        echo "$out" >&2
        exit 1
    fi
    local rps p99
    rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    printf '%s %s\n' "$rps" "$p99"
}

printf '%-14s %5s %12s %10s %14s\n' route conns req/s p99 "vs bare"
for conns in 32 128; do
    read -r bare_rps bare_p99 < <(run bare "http://$BARE_ADDR/bare" "" "" "$conns")
    printf '%-14s %5s %12s %10s %14s\n' bare "$conns" "$bare_rps" "$bare_p99" "1.00"
    read -r rps p99 < <(run access "http://$SERVE_ADDR/api/admin/v1/api_token/get_access_token" "Bearer $KEY" "" "$conns")
    printf '%-14s %5s %12s %10s %14s\n' access-token "$conns" "$rps" "$p99" "$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN {printf "%.2f", a / b}')"
    read -r rps p99 < <(run guest "http://$SERVE_ADDR/api/v1/guest-token/create" "Bearer $KEY" '{"workspaceName":"w1","clientId":"acme","expiryTime":3600000}' "$conns")
    printf '%-14s %5s %12s %10s %14s\n' guest-token "$conns" "$rps" "$p99" "$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN {printf "%.2f", a / b}')"
done
