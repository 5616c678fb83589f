#!/usr/bin/env bash
# Throughput of the services against their floors, measured in one
# sitting on this machine: each side is run alternately with the least
# code that gives the same guarantees, so that the ratio stays meaningful
# on a shared, noisy machine where absolute figures are not.
#
# usage: bench/compare.sh [-W | -I] [-n EVENTS] [-r RUNS] [-c CONCURRENCY] [RATE ...]
#   -W          worker comparison only
#   -I          ingress comparison only
#   -n          worker: distinct events per run (default 100000)
#   -r          worker: floor/worker pairs (default 3)
#   -c          worker: router concurrency, and the floor's batch (default 64)
#   RATE        ingress: notifications/s of the ramp (default 4000 to 9000
#               by 1000: steps of 1,000/s, since a ratio of highest rates
#               held is only as fine as the steps)
#
# Worker: bench/workerload -mode compare runs, alternately, the floor (a
# bare loop: fetch a batch, one Redis pipeline claiming it, one finishing
# it, ack) and the router with a no-op handler logging at info through the
# batched writer cmd/worker uses, each on freshly published events, and
# prints each run's events/s and CPU per event and the ratio worker/floor
# of the medians. It needs Redis at 127.0.0.1:6379 (database 14 is
# flushed) and starts its own nats-server on 127.0.0.1:4341.
#
# Ingress: bench/ingress.sh -A RATE... (floor and ingress alternately at
# each rate, the ratio of the highest rates held at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER=1 INGRESS=1 EVENTS=100000 RUNS=3 CONCURRENCY=64
while getopts "WIn:r:c:" opt; do
  case $opt in
    W) INGRESS= ;;
    I) WORKER= ;;
    n) EVENTS=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    c) CONCURRENCY=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then RATES=("$@"); else RATES=(4000 5000 6000 7000 8000 9000); fi

NATS_VERSION=v2.15.2
NATS_ADDR=127.0.0.1:4341
REDIS_URL=redis://127.0.0.1:6379/14

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

WORK=$(mktemp -d /tmp/wxpay-compare.XXXXXX)
NATS_PID=
cleanup() {
  # Only the process this script started, by pid.
  if [ -n "$NATS_PID" ]; then kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status=0
if [ -n "$WORKER" ]; then
  if port_open "$NATS_ADDR"; then echo "compare: $NATS_ADDR is in use; stop what listens there first" >&2; exit 1; fi
  if ! port_open 127.0.0.1:6379; then echo "compare: no Redis at 127.0.0.1:6379" >&2; exit 1; fi
  echo "== building bench/workerload into $WORK"
  GOFLAGS="${GOFLAGS:-} -buildvcs=false" go build -o "$WORK/workerload" ./bench/workerload
  # The same cached build of a current nats-server as .ci/run and bench/ingress.sh.
  NATS_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/wxpay-notify/nats-server-$NATS_VERSION/nats-server"
  if [ ! -x "$NATS_BIN" ]; then
    echo "== building nats-server $NATS_VERSION"
    mkdir -p "$(dirname "$NATS_BIN")"
    GOBIN="$(dirname "$NATS_BIN")" GOFLAGS= go install "github.com/nats-io/nats-server/v2@$NATS_VERSION"
  fi
  mkdir -p "$WORK/store"
  printf 'listen: %s\njetstream {\n  store_dir: "%s"\n}\n' "$NATS_ADDR" "$WORK/store" >"$WORK/nats.conf"
  "$NATS_BIN" -c "$WORK/nats.conf" >"$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 1 50); do port_open "$NATS_ADDR" && break; sleep 0.1; done
  port_open "$NATS_ADDR" || { echo "compare: nats-server did not start" >&2; cat "$WORK/nats.log" >&2; exit 1; }

  echo "== worker: floor and router (no-op handler, log at info) alternately, $RUNS pairs of $EVENTS events, concurrency $CONCURRENCY — $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); nats-server $NATS_VERSION (file store), Redis $REDIS_URL; go $(go env GOVERSION)"
  set +e
  "$WORK/workerload" -mode compare -runs "$RUNS" -n "$EVENTS" -concurrency "$CONCURRENCY" -nats "nats://$NATS_ADDR" -redis "$REDIS_URL" 2>&1 | grep -v '^RESULT '
  status=${PIPESTATUS[0]}
  set -e
  kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; NATS_PID=
fi

# ---- ingress comparison: bench/ingress.sh -A RATE... ----------------------
if [ -n "$INGRESS" ]; then
  echo
  echo "== ingress: bench/ingress.sh -A ${RATES[*]}"
  bench/ingress.sh -A "${RATES[@]}" || status=$?
fi
exit "$status"
