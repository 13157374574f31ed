#!/usr/bin/env bash
# Measures wsline side by side with the servers users pick instead, on this machine, in one run:
# uWebSockets.js and Bun (the fastest relays; bench/uws, bench/bun) and the tutorial Node `ws`
# server (bench/node).
#   bench/run.sh                       # the five short scenarios, all four servers (about 4 minutes)
#   SERVERS="wsline uws" bench/run.sh  # a subset (wsline first: the report's ratios are to it)
#   SERVER_CORES=2 bench/run.sh        # the server on two cores (see below)
#   SCENARIOS="fanout chat" bench/run.sh
#   SCENARIOS=scale bench/run.sh       # connections to the open-files limit (about 6 minutes)
#   SCENARIOS=cluster bench/run.sh     # fan-out over two nodes through Redis, then the same with
#                                      # 10 000 rooms and Redis one hop away (about 3 minutes)
#   SCENARIOS=cluster-rooms bench/run.sh  # only the latter (about 1 minute)
# Each scenario runs against a fresh process of each server (wss, the same self-signed
# certificate), then a table shows each figure per server and the ratio wsline/node (the cluster
# scenarios get a table of their own, ratios of wsline-2 to the other setups).
# Result lines are kept in bench/results/LAST.jsonl. Needs cargo, node and npm, openssl, taskset.
#
# Every scenario pins the server to SERVER_CORES cores (default 1: cores 0..SERVER_CORES-1) and
# the load generator to the others, as uWebSockets.js and Bun serve every socket from one thread.
# When SERVER_CORES takes every core, the load generator shares them and the header says so:
# such figures measure the pair, not the server alone. SERVER_CPUS and LOADGEN_CPUS (taskset
# lists) override the split.
#
# `scale` runs against a fresh server each: presence off (open, hold, broadcast), then counts
# on (the same, then a presence storm, then /stats and /metrics at 10 000 rooms, wsline only:
# the tutorial server has neither rooms nor /stats). Knobs: SCALE_N (default: the open-files
# limit less 1000), SCALE_HOLD (seconds at rest, default 35: one 30 s heartbeat round),
# SCALE_STORM (joins, default 10000), SCALE_ROOMS (default 10000), SCALE_OPEN_TIMEOUT (default 60).
#
# `cluster` (and `cluster-max`, the same publisher as fast as delivery keeps up) spreads
# CLUSTER_SUBSCRIBERS (default 1000) over two nodes on one fresh redis-server (REDIS_PORT), the
# publisher on the first node at CLUSTER_RATE msg/s (default 1000), and runs four setups, each
# against fresh processes: wsline-2 (two wsline nodes, one `[cluster] redis`), wsline-1 (every
# subscriber on one wsline, no Redis), sio-2 (socket.io with @socket.io/redis-adapter on two Node
# processes, bench/node-cluster/, checked first with socket.io-client) and sio-1 (one socket.io
# process, no Redis). Needs redis-server as well.
#
# `cluster-rooms` (also run by `cluster`): the wsline-2 setup with Redis one hop away
# (`wsline-bench proxy`, HOP_US microseconds each way, default 1000) and CLUSTER_ROOMS rooms
# (default 10 000) held on the first node (`wsline-bench rooms`), relay.history 10: the time until
# that node's presence is in every room (after its start, and after a Redis restart; polled with
# redis-cli), then the cluster run (its "across nodes" latency is the delivery p99 between nodes
# with the rooms open). Needs redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS="${SCENARIOS:-fanout fanout-max chat idle connect}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
WSLINE_PORT="${WSLINE_PORT:-4456}"
NODE_PORT="${NODE_PORT:-4457}"
SCALE_HOLD="${SCALE_HOLD:-35}"
SCALE_STORM="${SCALE_STORM:-10000}"
SCALE_ROOMS="${SCALE_ROOMS:-10000}"
SCALE_OPEN_TIMEOUT="${SCALE_OPEN_TIMEOUT:-60}"
SERVERS="${SERVERS:-wsline uws bun node}"
WSLINE_PORT_B="${WSLINE_PORT_B:-4458}"
NODE_PORT_B="${NODE_PORT_B:-4459}"
REDIS_PORT="${REDIS_PORT:-4460}"
CLUSTER_SUBSCRIBERS="${CLUSTER_SUBSCRIBERS:-1000}"
CLUSTER_RATE="${CLUSTER_RATE:-1000}"
CLUSTER_ROOMS="${CLUSTER_ROOMS:-10000}"
HOP_US="${HOP_US:-1000}"
PROXY_PORT="${PROXY_PORT:-4461}"
# The server gets SERVER_CORES cores, the load generator the rest (all of them when none is left).
cores=$(nproc)
SERVER_CORES="${SERVER_CORES:-1}"
[ "$SERVER_CORES" -gt "$cores" ] && SERVER_CORES=$cores
SERVER_CPUS="${SERVER_CPUS:-0-$((SERVER_CORES - 1))}"
shared_cores=false
if [ -z "${LOADGEN_CPUS:-}" ]; then
    if [ "$SERVER_CORES" -lt "$cores" ]; then
        LOADGEN_CPUS="$SERVER_CORES-$((cores - 1))"
    else
        LOADGEN_CPUS="0-$((cores - 1))"
        shared_cores=true
    fi
fi
has() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }
# BUILD=debug for a quick smoke run on a busy machine (figures are then not comparable).
BUILD="${BUILD:-release}"

if [ "$BUILD" = release ]; then
    cargo build --release --locked -p wsline -p wsline-bench >&2
else
    cargo build --locked -p wsline -p wsline-bench >&2
fi
bin="target/$BUILD"
# The Node comparators (not needed when only the cluster at scale is measured).
node_too=true
[ "$SCENARIOS" = cluster-rooms ] && node_too=false
if $node_too; then
    has node && (cd bench/node && [ -d node_modules/ws ] || npm ci --no-audit --no-fund >&2)
    has uws && (cd bench/uws && [ -d node_modules/@trufflesuite ] || npm ci --no-audit --no-fund >&2)
    has bun && (cd bench/bun && [ -x node_modules/.bin/bun ] || npm ci --no-audit --no-fund >&2)
fi
case " $SCENARIOS " in
    *" cluster "* | *" cluster-max "*) (cd bench/node-cluster && [ -d node_modules/socket.io ] || npm ci --no-audit --no-fund >&2) ;;
esac

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# Each side of 10 000 connections needs a descriptor each: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"

# wsline with its defaults, except what a benchmark from loopback needs: every client comes
# from 127.0.0.1 (scale: 127.0.0.1-8), and the publisher sends faster than a chat user. Scale
# also gets a deeper listen queue and room for 10 000 rooms, and its storm holds TLS sessions
# open for seconds before upgrading them all at once, so the handshake deadline is longer.
# A cluster node (node id given) gets its own port and id and the shared Redis.
wsline_config() { # scenario [port node_id]
    local presence=json scale=false port=${2:-$WSLINE_PORT} node_id=${3:-}
    case "$1" in
        idle | scale) presence=off ;; # no presence traffic, so memory and CPU are measured at rest
        scale-count) presence=plain ;; # the count alone, as the tutorial server sends it
    esac
    case "$1" in scale*) scale=true ;; esac
    cat <<TOML
[server]
listen = "127.0.0.1:$port"
drain_timeout = "1s"
$($scale && echo 'backlog = 4096' || true)
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[relay]
$($scale && echo 'max_rooms = 20000' || true)
$([ "$1" = cluster-rooms ] && printf 'max_rooms = 20000\nhistory = 10\n' || true)
[presence]
format = "$presence"
[limits]
max_connections_per_ip = 100000
messages_per_second = 1000000
burst = 1000000
$($scale && echo 'handshake_timeout = "60s"' || true)
[log]
level = "warn"
$([ -n "$node_id" ] && printf '[cluster]\nredis = "redis://127.0.0.1:%s"\nnode_id = "%s"\n' "${CLUSTER_REDIS_PORT:-$REDIS_PORT}" "$node_id" || true)
TOML
}

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

bench() { # scenario label port pid [scale options]
    local scenario=$1 label=$2 port=$3 pid=$4
    shift 4
    local common=(--url "wss://127.0.0.1:$port/bench" --insecure --server-pid "$pid" --label "$label")
    local gen=(taskset -c "$LOADGEN_CPUS" $bin/wsline-bench)
    case "$scenario" in
        fanout) "${gen[@]}" fanout "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        fanout-max) "${gen[@]}" fanout --max "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        chat) "${gen[@]}" chat "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        idle) "${gen[@]}" idle "${common[@]}" ;;
        connect) "${gen[@]}" connect "${common[@]}" -t "$SECONDS_PER_RUN" ;;
        scale*) "${gen[@]}" scale "${common[@]}" \
            ${SCALE_N:+-n "$SCALE_N"} --hold "$SCALE_HOLD" --storm "$SCALE_STORM" \
            --rooms "$SCALE_ROOMS" --open-timeout "$SCALE_OPEN_TIMEOUT" "$@" ;;
    esac
}

# Starts a fresh server for `scenario` (sets pid and port), pinned to SERVER_CPUS.
start() { # server scenario
    local pin=(taskset -c "$SERVER_CPUS") count=1
    # The count on every join and leave, except where wsline's presence is off.
    case "$2" in idle | scale) count=0 ;; esac
    case "$1" in
        wsline)
            wsline_config "$2" > "$work/wsline.toml"
            "${pin[@]}" $bin/wsline --config "$work/wsline.toml" &
            pid=$!
            port=$WSLINE_PORT
            ;;
        node)
            # The count on every join and leave, except where wsline's presence is off; scale
            # adds the ws README's 30 s heartbeat, as wsline pings every 30 s by default.
            local heartbeat=0
            case "$2" in scale*) heartbeat=30000 ;; esac
            COUNT=$count HEARTBEAT_MS=$heartbeat "${pin[@]}" node bench/node/server.js \
                "$NODE_PORT" "$work/cert.pem" "$work/key.pem" >/dev/null &
            pid=$!
            port=$NODE_PORT
            ;;
        uws)
            COUNT=$count "${pin[@]}" node bench/uws/server.js \
                "$NODE_PORT" "$work/cert.pem" "$work/key.pem" >/dev/null &
            pid=$!
            port=$NODE_PORT
            ;;
        bun)
            COUNT=$count "${pin[@]}" bench/bun/node_modules/.bin/bun bench/bun/server.js \
                "$NODE_PORT" "$work/cert.pem" "$work/key.pem" >/dev/null &
            pid=$!
            port=$NODE_PORT
            ;;
    esac
    wait_port "$port"
}

stop() {
    kill -TERM "$pid"
    wait "$pid" || true
}

# One measurement against a fresh server; its result line is kept.
measure() { # server scenario [scale options]
    local server=$1 scenario=$2
    shift 2
    echo "== $scenario: $server $*" >&2
    start "$server" "$scenario"
    bench "$scenario" "$server" "$port" "$pid" "$@" | tee -a "$results"
    stop
}

# The cluster scenarios: a fresh redis-server (when two nodes share it) and fresh nodes per setup;
# sets `urls` and `node_pids` (the publisher's node first) and `redis_pid` (empty without Redis).
start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --loglevel warning >/dev/null &
    redis_pid=$!
    wait_port "$REDIS_PORT"
}

start_cluster() { # setup scenario
    node_pids=() redis_pid=
    local port node=a sio_path='/socket.io/?EIO=4&transport=websocket&room=bench'
    case "$1" in
        wsline-2)
            start_redis
            for port in "$WSLINE_PORT" "$WSLINE_PORT_B"; do
                wsline_config "$2" "$port" "bench-$node" > "$work/wsline-$node.toml"
                $bin/wsline --config "$work/wsline-$node.toml" &
                node_pids+=("$!")
                node=b
            done
            wait_port "$WSLINE_PORT"
            wait_port "$WSLINE_PORT_B"
            urls=("wss://127.0.0.1:$WSLINE_PORT/bench" "wss://127.0.0.1:$WSLINE_PORT_B/bench")
            ;;
        wsline-1)
            wsline_config "$2" > "$work/wsline.toml"
            $bin/wsline --config "$work/wsline.toml" &
            node_pids+=("$!")
            wait_port "$WSLINE_PORT"
            urls=("wss://127.0.0.1:$WSLINE_PORT/bench")
            ;;
        sio-2)
            start_redis
            for port in "$NODE_PORT" "$NODE_PORT_B"; do
                node bench/node-cluster/server.js "$port" "$work/cert.pem" "$work/key.pem" \
                    "redis://127.0.0.1:$REDIS_PORT" >/dev/null &
                node_pids+=("$!")
            done
            wait_port "$NODE_PORT"
            wait_port "$NODE_PORT_B"
            node bench/node-cluster/check.js "https://127.0.0.1:$NODE_PORT" "https://127.0.0.1:$NODE_PORT_B"
            urls=("wss://127.0.0.1:$NODE_PORT$sio_path" "wss://127.0.0.1:$NODE_PORT_B$sio_path")
            ;;
        sio-1)
            node bench/node-cluster/server.js "$NODE_PORT" "$work/cert.pem" "$work/key.pem" >/dev/null &
            node_pids+=("$!")
            wait_port "$NODE_PORT"
            urls=("wss://127.0.0.1:$NODE_PORT$sio_path")
            ;;
    esac
}

# One cluster measurement against fresh processes; its result line is kept.
measure_cluster() { # setup scenario
    local setup=$1 scenario=$2
    echo "== $scenario: $setup" >&2
    start_cluster "$setup" "$scenario"
    local args=(cluster --url "${urls[0]}" --server-pid "${node_pids[0]}" --insecure
        --label "$setup" -n "$CLUSTER_SUBSCRIBERS" -t "$SECONDS_PER_RUN")
    if [ "$scenario" = cluster-max ]; then args+=(--max); else args+=(-r "$CLUSTER_RATE"); fi
    if [ "${#urls[@]}" -gt 1 ]; then args+=(--node "${urls[1]}" --node-pid "${node_pids[1]}"); fi
    if [ -n "$redis_pid" ]; then args+=(--redis-pid "$redis_pid"); fi
    case "$setup" in sio-*) args+=(--socketio) ;; esac
    $bin/wsline-bench "${args[@]}" | tee -a "$results"
    # The nodes first, then Redis.
    local p
    for p in "${node_pids[@]}" $redis_pid; do
        kill -TERM "$p"
        wait "$p" || true
    done
}

# Seconds (decimal) until the first node's presence is in every held room; gives up after 120 s.
synced_after() { # start (date +%s.%N)
    local instance key
    for _ in $(seq 2400); do
        instance=$(redis-cli -p "$REDIS_PORT" SMEMBERS wsline:nodes 2>/dev/null | grep '^bench-a:' | head -1 || true)
        key="wsline:node:$instance:rooms"
        if [ -n "$instance" ] && [ "$(redis-cli -p "$REDIS_PORT" SCARD "$key" 2>/dev/null || echo 0)" -ge "$CLUSTER_ROOMS" ]; then
            awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'
            return
        fi
        sleep 0.05
    done
    echo "never (120 s)"
}

# The cluster at scale (see `cluster-rooms` above); its result line goes to LAST-rooms.jsonl.
measure_cluster_rooms() {
    echo "== cluster-rooms: wsline-2, $CLUSTER_ROOMS rooms on the first node, Redis $HOP_US us away each way" >&2
    start_redis
    $bin/wsline-bench proxy --listen "127.0.0.1:$PROXY_PORT" --to "127.0.0.1:$REDIS_PORT" --delay-us "$HOP_US" &
    local proxy_pid=$! node=a port rooms_pid t0
    wait_port "$PROXY_PORT"
    node_pids=()
    for port in "$WSLINE_PORT" "$WSLINE_PORT_B"; do
        CLUSTER_REDIS_PORT=$PROXY_PORT wsline_config cluster-rooms "$port" "bench-$node" > "$work/wsline-$node.toml"
        $bin/wsline --config "$work/wsline-$node.toml" &
        node_pids+=("$!")
        node=b
    done
    wait_port "$WSLINE_PORT"
    wait_port "$WSLINE_PORT_B"
    t0=$(date +%s.%N)
    $bin/wsline-bench rooms --url "wss://127.0.0.1:$WSLINE_PORT/room-" -k -n "$CLUSTER_ROOMS" &
    rooms_pid=$!
    rooms_line="cluster-rooms: $CLUSTER_ROOMS rooms opened and synced $(synced_after "$t0") s after the first connect"
    kill -TERM "$redis_pid"
    wait "$redis_pid" || true
    t0=$(date +%s.%N)
    start_redis
    rooms_line="$rooms_line; presence back in every room $(synced_after "$t0") s after Redis restarted"
    $bin/wsline-bench cluster --url "wss://127.0.0.1:$WSLINE_PORT/bench" --server-pid "${node_pids[0]}" --insecure \
        --label wsline-2-hop -n "$CLUSTER_SUBSCRIBERS" -t "$SECONDS_PER_RUN" -r "$CLUSTER_RATE" \
        --node "wss://127.0.0.1:$WSLINE_PORT_B/bench" --node-pid "${node_pids[1]}" \
        --redis-pid "$redis_pid" | tee -a "$rooms_results"
    local p
    for p in "$rooms_pid" "${node_pids[@]}" "$proxy_pid" "$redis_pid"; do
        kill -TERM "$p"
        wait "$p" || true
    done
}

mkdir -p bench/results
results=bench/results/LAST.jsonl
rooms_results=bench/results/LAST-rooms.jsonl
rooms_line=
: > "$rooms_results"
: > "$results"
for scenario in $SCENARIOS; do
    case "$scenario" in
        scale)
            for server in $SERVERS; do
                measure "$server" scale --presence off
            done
            for server in $SERVERS; do
                measure "$server" scale-count --presence count
                measure "$server" scale-count --presence count --phases storm
            done
            measure wsline scale-count --presence count --phases rooms
            ;;
        cluster | cluster-max)
            for setup in wsline-2 wsline-1 sio-2 sio-1; do
                measure_cluster "$setup" "$scenario"
            done
            [ "$scenario" = cluster ] && measure_cluster_rooms
            ;;
        cluster-rooms) measure_cluster_rooms ;;
        *)
            for server in $SERVERS; do
                measure "$server" "$scenario"
            done
            ;;
    esac
done

echo
versions="$(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
if $node_too; then
    versions="$versions, node $(node --version)"
    has node && versions="$versions, ws $(node -p 'require("./bench/node/node_modules/ws/package.json").version')"
    has uws && versions="$versions, uWebSockets.js $(node -p 'require("./bench/uws/node_modules/@trufflesuite/uws-js-unofficial/package.json").version')"
    has bun && versions="$versions, bun $(bench/bun/node_modules/.bin/bun --version)"
fi
echo "$versions"
echo "server on CPU $SERVER_CPUS ($SERVER_CORES core(s)), load generator on CPU $LOADGEN_CPUS$($shared_cores && echo ' (SHARED with the server: these figures measure the pair)')"
case " $SCENARIOS " in
    *" scale "*) echo "scale: $(ulimit -n) open files each, hold ${SCALE_HOLD}s" ;;
esac
case " $SCENARIOS " in
    *" cluster "* | *" cluster-max "*)
        v() { node -p "require('./bench/node-cluster/node_modules/$1/package.json').version"; }
        echo "cluster: $CLUSTER_SUBSCRIBERS subscribers, $(redis-server --version | grep -o 'v=[^ ]*'), socket.io $(v socket.io), @socket.io/redis-adapter $(v @socket.io/redis-adapter), redis (node) $(v redis)"
        ;;
esac
[ -s "$results" ] && $bin/wsline-bench report "$results"
if [ -n "$rooms_line" ]; then
    echo "$rooms_line"
    $bin/wsline-bench report "$rooms_results"
fi
