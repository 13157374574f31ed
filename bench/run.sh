#!/usr/bin/env bash
# Measures wsline and the tutorial Node `ws` server side by side, on this machine, in one run:
#   bench/run.sh                       # every scenario, defaults of the issue (about 4 minutes)
#   SCENARIOS="fanout chat" bench/run.sh
# Each scenario runs against a fresh process of each server (wss, the same self-signed
# certificate), then a table shows each figure per server and the ratio wsline/node.
# Result lines are kept in bench/results/LAST.jsonl. Needs cargo, node and npm, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS="${SCENARIOS:-fanout fanout-max chat idle connect}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
WSLINE_PORT="${WSLINE_PORT:-4456}"
NODE_PORT="${NODE_PORT:-4457}"

cargo build --release --locked -p wsline -p wsline-bench >&2
(cd bench/node && [ -d node_modules/ws ] || npm ci --no-audit --no-fund >&2)

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# Each side of 10 000 connections needs a descriptor each: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"

# wsline with its defaults, except what a benchmark from one address needs: every client comes
# from 127.0.0.1, and the publisher sends faster than a chat user.
wsline_config() {
    cat <<TOML
[server]
listen = "127.0.0.1:$WSLINE_PORT"
drain_timeout = "1s"
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[limits]
max_connections_per_ip = 100000
messages_per_second = 1000000
burst = 1000000
[log]
level = "warn"
TOML
    # Idle: no presence traffic on either server, so memory is measured at rest.
    [ "$1" = idle ] && printf '[presence]\nformat = "off"\n'
    return 0
}

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

bench() { # scenario label port pid
    local scenario=$1 label=$2 port=$3 pid=$4
    local common=(--url "wss://127.0.0.1:$port/bench" --insecure --server-pid "$pid" --label "$label")
    case "$scenario" in
        fanout) target/release/wsline-bench fanout "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        fanout-max) target/release/wsline-bench fanout --max "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        chat) target/release/wsline-bench chat "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        idle) target/release/wsline-bench idle "${common[@]}" ;;
        connect) target/release/wsline-bench connect "${common[@]}" -t "$SECONDS_PER_RUN" ;;
    esac
}

mkdir -p bench/results
results=bench/results/LAST.jsonl
: > "$results"
for scenario in $SCENARIOS; do
    echo "== $scenario: wsline" >&2
    wsline_config "$scenario" > "$work/wsline.toml"
    target/release/wsline --config "$work/wsline.toml" &
    pid=$!
    wait_port "$WSLINE_PORT"
    bench "$scenario" wsline "$WSLINE_PORT" "$pid" | tee -a "$results"
    kill -TERM "$pid"; wait "$pid" || true

    echo "== $scenario: node" >&2
    count=1; [ "$scenario" = idle ] && count=0
    COUNT=$count node bench/node/server.js "$NODE_PORT" "$work/cert.pem" "$work/key.pem" >/dev/null &
    pid=$!
    wait_port "$NODE_PORT"
    bench "$scenario" node "$NODE_PORT" "$pid" | tee -a "$results"
    kill -TERM "$pid"; wait "$pid" || true
done

echo
echo "$(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d), node $(node --version), ws $(node -p 'require("./bench/node/node_modules/ws/package.json").version')"
target/release/wsline-bench report "$results"
