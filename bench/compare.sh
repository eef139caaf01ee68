#!/usr/bin/env bash
# bench/compare.sh OLD_BIN NEW_BIN [LABEL] — the data-path figures of two
# relay builds measured in the same run, alternating old/new ROUNDS times
# (default 3) so drift on the machine hits both: relay CPU µs per message
# and throughput in rtt (64 B and 16 KiB, 4 binaries × 4 phones, one
# worker) and RSS per idle connection (IDLE_CONN connections, default
# 10000). Prints a Markdown table of the medians and every run's figures.
# The relay runs on CPU 0, the load generator on CPU 1 (as bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/compare.sh OLD_BIN NEW_BIN [LABEL]}
NEW=${2:?usage: bench/compare.sh OLD_BIN NEW_BIN [LABEL]}
LABEL=${3:-new}
ROUNDS=${ROUNDS:-3} SECS=${SECS:-8} IDLE_CONN=${IDLE_CONN:-10000}
mkdir -p build/release
gcc -O2 -Wall -Wextra -o build/release/loadgen bench/loadgen.c
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
DROP=(); [[ $(id -u) == 0 ]] && DROP=(setpriv --bounding-set=-all,+net_bind_service --)
LG=(taskset -c 1 build/release/loadgen)
PORT=19700

start() { # bin extra-flags...
    PORT=$((PORT + 1))
    local bin=$1; shift
    taskset -c 0 "${DROP[@]}" "$bin" --insecure-listen 127.0.0.1:$PORT --workers 1 --metrics-listen= \
        --rate-limit-burst 0 --max-connections 2000000 --max-phones-per-server 0 \
        --max-frames-per-second 0 --log-format json "$@" 2>/tmp/compare-relay.log &
    PID=$!
    for _ in $(seq 100); do
        curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && return
        sleep 0.05
    done
    echo "relay $bin did not start" >&2; cat /tmp/compare-relay.log >&2; exit 1
}
stop() {
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}
val() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }

rtt() { # bin size -> "cpu_us msgs_per_s mb_per_s"
    start "$1"
    local t0 t1 r
    t0=$(ticks)
    r=$("${LG[@]}" --scenario rtt --port $PORT --binaries 4 --phones 4 --size "$2" --duration "$SECS")
    t1=$(ticks)
    stop
    awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v m="$(val sent "$r")" \
        -v mps="$(val msgs_per_s "$r")" -v bps="$(val bytes_per_s "$r")" \
        'BEGIN { printf "%.2f %d %.1f\n", (m > 0 ? t / hz * 1e6 / (2 * m) : 0), mps, bps / 1e6 }'
}
idle() { # bin -> bytes per connection
    start "$1" --heartbeat-interval 1s --heartbeat-timeout 5s
    local r
    r=$("${LG[@]}" --scenario idle --port $PORT --conns "$IDLE_CONN" --duration 3 --pid "$PID" 2>&1)
    stop
    val bytes_per_conn "$r"
}

declare -A fig
for round in $(seq "$ROUNDS"); do
    for who in old new; do
        bin=$OLD; [[ $who == new ]] && bin=$NEW
        read -r c m b <<<"$(rtt "$bin" 64)"
        fig[$who,cpu64]+="$c " fig[$who,msgs64]+="$m "
        read -r c m b <<<"$(rtt "$bin" 16384)"
        fig[$who,cpu16k]+="$c " fig[$who,mb16k]+="$b "
        fig[$who,idle]+="$(idle "$bin") "
        echo "round $round $who done" >&2
    done
done

median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
change() { awk -v o="$1" -v n="$2" 'BEGIN { if (o > 0) printf "%+.1f %%", 100 * (n - o) / o; else print "n/a" }'; }

echo "| figure (median of $ROUNDS, alternated) | old | $LABEL | change | old runs | $LABEL runs |"
echo "|---|---|---|---|---|---|"
row() { # key title
    local o n
    o=$(median "${fig[old,$1]}") n=$(median "${fig[new,$1]}")
    echo "| $2 | $o | $n | $(change "$o" "$n") | ${fig[old,$1]% } | ${fig[new,$1]% } |"
}
row cpu64 "relay CPU µs per message, rtt 64 B"
row cpu16k "relay CPU µs per message, rtt 16 KiB"
row msgs64 "rtt 64 B msgs/s"
row mb16k "rtt 16 KiB MB/s"
row idle "RSS per idle connection ($IDLE_CONN), bytes"
