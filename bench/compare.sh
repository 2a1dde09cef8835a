#!/usr/bin/env bash
# The side-by-side REST benchmark: `tokenmint serve` beside the Node peer (fastify +
# jsonwebtoken, two processes) of ../shared/bench, in one run, on the access and guest routes.
#
#   bash bench/compare.sh                       # PEERS=node REPEAT=3
#   PEERS="node fastapi" CONNS=128 bash bench/compare.sh
#
# It reads the peers' settings (BENCH_JWT_SECRET_HEX, BENCH_API_KEYS) and writes a manifests
# directory that makes `serve --manifests` accept the same keys and sign with the same secret:
# one ServiceKey and key Secret per key, and the keyring Secret. Every row's `srv%` is the
# server's CPU (100 = one core): req/s ÷ (srv% / 100) is requests per server core. Last, the
# same load on a bare axum route (`benches/bare_route.rs`) gives the HTTP stack's own ceiling.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shared="${SHARED_BENCH:-../shared/bench}"
[ -d "$shared" ] || { echo "no $shared (set SHARED_BENCH)" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
    echo "installing wrk from Debian" >&2
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi

work="$(mktemp -d)"
pid=""
bare_pid=""
cleanup() { kill $pid $bare_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The peers install their dependencies beside themselves: run a copy.
cp -r "$shared" "$work/bench"
# shellcheck disable=SC1091
. "$work/bench/bench.env"

manifests="$work/manifests"
mkdir -p "$manifests"
secret_b64="$(printf '%s' "$BENCH_JWT_SECRET_HEX" | xxd -r -p | base64 -w0)"
keyring="{\"active\":\"hs256-bench\",\"keys\":[{\"kid\":\"hs256-bench\",\"alg\":\"HS256\",\"key\":\"$secret_b64\",\"createdAt\":\"2026-01-01T00:00:00Z\"}]}"
cat >"$manifests/keyring.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: tokenmint-keyring, namespace: tokenmint-system}
stringData:
  keyring.json: '$keyring'
YAML
IFS=, read -ra pairs <<<"$BENCH_API_KEYS"
for pair in "${pairs[@]}"; do
    key="${pair%%:*}" id="${pair##*:}"
    cat >"$manifests/key-$id.yaml" <<YAML
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: bench-$id, namespace: bench}
spec:
  principal: {id: "$id", email: "bench$id@example.com", name: "bench$id"}
  workspaces: ["*"]
---
apiVersion: v1
kind: Secret
metadata:
  name: bench-$id-service-key
  namespace: bench
  labels: {app.kubernetes.io/managed-by: tokenmint}
stringData: {key: "$key", username: "bench$id"}
YAML
done

cargo build --release --quiet
cargo bench --no-run --quiet --bench bare_route 2>/dev/null
bare_bin="$(ls -t target/release/deps/bare_route-* | grep -v '\.d$' | head -n1)"
RUST_LOG="${RUST_LOG:-info}" target/release/tokenmint serve --manifests "$manifests" \
    --tokens-dir "$work/tokens" --listen 127.0.0.1:18080 2>"$work/serve.log" &
pid=$!
for attempt in $(seq 100); do
    curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break
    [ "$attempt" = 100 ] && { echo "serve did not become ready" >&2; cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done

PEERS="${PEERS:-node}" REPEAT="${REPEAT:-3}" OUTDIR="${OUTDIR:-$work/results}" \
    "$work/bench/run_all.sh" "ours=http://127.0.0.1:18080@$pid"

# The ceiling: an axum route answering a fixed body, under the same load, per server core.
# Divided by Node's per-core figure above, it says what ratio a route that does nothing would
# reach in this run.
kill "$pid"
"$bare_bin" 127.0.0.1:18081 2>/dev/null &
bare_pid=$!
sleep 1
echo "bare axum route (fixed body), wrk -t${THREADS:-1} -d${DURATION:-10s}:"
for conns in ${CONNS:-32 128}; do
    wrk -t"${THREADS:-1}" -c"$conns" -d"${WARMUP:-3s}" http://127.0.0.1:18081/bare >/dev/null
    before="$(awk '{print $14 + $15}' "/proc/$bare_pid/stat")"
    rps="$(wrk -t"${THREADS:-1}" -c"$conns" -d"${DURATION:-10s}" -s "$work/bench/wrk/post_token.lua" \
        http://127.0.0.1:18081/bare | awk '/^Requests\/sec/ {printf "%d", $2}')"
    after="$(awk '{print $14 + $15}' "/proc/$bare_pid/stat")"
    seconds="${DURATION:-10s}"
    awk -v rps="$rps" -v ticks="$((after - before))" -v hz="$(getconf CLK_TCK)" -v s="${seconds%s}" -v c="$conns" \
        'BEGIN { srv = 100 * ticks / hz / s; printf "  c=%s  %d req/s  srv%% %.0f  per core %.0f\n", c, rps, srv, rps * 100 / srv }'
done
