#!/usr/bin/env bash
# Load figure of cmd/ingress on this machine: a real nats-server with file
# storage, the ingress, and bench/ingressload sending distinct signed
# notifications at a fixed rate (open loop), all on 127.0.0.1.
#
# usage: bench/ingress.sh [-d 30s] [-u 5s] [-s default|always] [-c http|raw] [-w WORKERS] [-g 50ms] [-S DIR] [-t] [-k] [-P] [-F] [RATE ...]
#   RATE        notifications/s (default 10000). Several rates make a ramp:
#               one run per rate, each against a fresh NATS server and
#               ingress, stopping at the first rate not held (p99 >= goal or
#               any error or a stream mismatch).
#   -d          measured send duration per run (default 30s)
#   -u          ramp-up before it, 0 to RATE linearly (default 5s; its
#               errors count, its latencies are reported apart)
#   -s          NATS JetStream sync_interval: default (fsync every 2 min) or
#               always (fsync every write)
#   -c          generator client: http (net/http Client/Transport)
#               or raw (default: HTTP/1.1 written on pooled keep-alive connections by
#               the requesting goroutine: less generator CPU)
#   -w          generator workers = most requests in flight (default 1000)
#   -g          p99 goal (default 50ms)
#   -S          parent directory of the JetStream store (default: the work
#               directory under /tmp, on this machine's disk); -S /dev/shm
#               puts it in memory, to tell disk stalls from the rest
#   -t          print the per-second timeline
#   -k          keep the work directory (logs, keys) under /tmp
#   -P          record a CPU profile of the ingress and nats-server with perf
#               over the measured window (needs perf; prints the top
#               functions; perf itself costs some CPU)
#   -F          floor: run 'ingressload floor' in place of the ingress. It
#               reads each body, publishes it to WXPAY with a Nats-Msg-Id,
#               waits for the ack and answers 200: no signature check, no
#               decryption, no envelope, log or metrics. Its CPU per
#               notification is what net/http, nats.go and nats-server cost
#               by themselves, the part no change to the ingress can remove.
# Environment: INGRESS_ENV and NATS_ENV hold extra VAR=value words for the
# ingress and nats-server processes (e.g. INGRESS_ENV="GOMAXPROCS=1 GOGC=200").
#
# Each run first signs rate × (duration + ramp-up/2) distinct notifications
# (RSA, 1.1-1.7 ms of CPU each on this shared machine: the 325,000 of a
# 10,000/s run take 3-4.5 min on 2 cores) and starts sending as soon as
# signing is done. The ingress accepts a Wechatpay-Timestamp within ±5 min
# of its clock, so the notifications carry signing-start + 280 s: they are
# accepted from signing-start - 20 s to signing-start + 9 min 40 s, and
# ingressload refuses a run that would not end inside that window.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=30s
RAMPUP=5s
SYNC=default
CLIENT=raw
WORKERS=1000
GOAL=50ms
TIMELINE=
KEEP=
PROFILE=
FLOOR=
STORE_PARENT=
while getopts "d:u:s:c:w:g:S:tkPF" opt; do
  case $opt in
    d) DURATION=$OPTARG ;;
    u) RAMPUP=$OPTARG ;;
    s) SYNC=$OPTARG ;;
    c) CLIENT=$OPTARG ;;
    w) WORKERS=$OPTARG ;;
    g) GOAL=$OPTARG ;;
    S) STORE_PARENT=$OPTARG ;;
    t) TIMELINE=-timeline ;;
    k) KEEP=1 ;;
    P) PROFILE=1 ;;
    F) FLOOR=1 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
RATES=("${@:-10000}")
case $SYNC in default|always) ;; *) echo "-s must be default or always" >&2; exit 2 ;; esac

NATS_VERSION=v2.15.2
NATS_ADDR=127.0.0.1:4333
LISTEN_ADDR=127.0.0.1:8088
ADMIN_ADDR=127.0.0.1:9098

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for a in $NATS_ADDR $LISTEN_ADDR $ADMIN_ADDR; do
  if port_open "$a"; then echo "bench: $a is in use; stop what listens there first" >&2; exit 1; fi
done

WORK=$(mktemp -d /tmp/wxpay-bench.XXXXXX)
NATS_PID= INGRESS_PID=
stop_services() {
  # Only the processes this script started, by pid.
  if [ -n "$INGRESS_PID" ]; then kill "$INGRESS_PID" 2>/dev/null || true; wait "$INGRESS_PID" 2>/dev/null || true; INGRESS_PID=; fi
  if [ -n "$NATS_PID" ]; then kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; NATS_PID=; fi
}
cleanup() {
  stop_services
  if [ -n "${STORE:-}" ]; then rm -rf "$STORE"; fi
  if [ -n "$KEEP" ]; then echo "bench: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building cmd/ingress and bench/ingressload into $WORK"
GOFLAGS="${GOFLAGS:-} -buildvcs=false" go build -o "$WORK/ingress" ./cmd/ingress
GOFLAGS="${GOFLAGS:-} -buildvcs=false" go build -o "$WORK/ingressload" ./bench/ingressload

# The same cached build of a current nats-server as .ci/run.
NATS_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/wxpay-notify/nats-server-$NATS_VERSION/nats-server"
if [ ! -x "$NATS_BIN" ]; then
  echo "== building nats-server $NATS_VERSION"
  mkdir -p "$(dirname "$NATS_BIN")"
  GOBIN="$(dirname "$NATS_BIN")" GOFLAGS= go install "github.com/nats-io/nats-server/v2@$NATS_VERSION"
fi

"$WORK/ingressload" keys -dir "$WORK/keys" >/dev/null
MCHID=$(sed -n 's/^WXPAY_MCHID=//p' "$WORK/keys/ingress.env")

wait_ready() { # url what
  for _ in $(seq 1 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)" = 200 ]; then return 0; fi
    sleep 0.1
  done
  echo "bench: $2 not ready at $1" >&2
  return 1
}

start_services() { # store dir
  local store=$1
  mkdir -p "$store"
  {
    echo "listen: $NATS_ADDR"
    echo "jetstream {"
    echo "  store_dir: \"$store\""
    if [ "$SYNC" = always ]; then echo "  sync_interval: always"; fi
    echo "}"
  } >"$WORK/nats.conf"
  # shellcheck disable=SC2086
  env ${NATS_ENV:-} "$NATS_BIN" -c "$WORK/nats.conf" >"$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 1 50); do port_open "$NATS_ADDR" && break; sleep 0.1; done
  port_open "$NATS_ADDR" || { echo "bench: nats-server did not start" >&2; cat "$WORK/nats.log" >&2; return 1; }
  if [ -n "$FLOOR" ]; then
    # shellcheck disable=SC2086
    env ${INGRESS_ENV:-} "$WORK/ingressload" floor -listen "$LISTEN_ADDR" -nats "nats://$NATS_ADDR" >"$WORK/ingress.log" 2>&1 &
    INGRESS_PID=$!
    for _ in $(seq 1 50); do port_open "$LISTEN_ADDR" && return 0; sleep 0.1; done
    echo "bench: the floor server did not start" >&2; cat "$WORK/ingress.log" >&2; return 1
  fi
  (
    set -a
    . "$WORK/keys/ingress.env"
    set +a
    # shellcheck disable=SC2086
    exec env NATS_URL="nats://$NATS_ADDR" LISTEN_ADDR=$LISTEN_ADDR ADMIN_ADDR=$ADMIN_ADDR ${INGRESS_ENV:-} \
      "$WORK/ingress"
  ) >"$WORK/ingress.log" 2>&1 &
  INGRESS_PID=$!
  wait_ready "http://$ADMIN_ADDR/readyz" ingress || { cat "$WORK/ingress.log" >&2; return 1; }
}

echo "== machine: $(nproc) cores, $(uname -r); ${FLOOR:+FLOOR (ingressload floor in place of the ingress); }nats-server $NATS_VERSION (sync_interval: $SYNC, store under ${STORE_PARENT:-$WORK}); go $(go env GOVERSION); client $CLIENT${INGRESS_ENV:+; ingress env $INGRESS_ENV}${NATS_ENV:+; nats env $NATS_ENV}"
SERVER_NAME=ingress METRICS_URL=http://$ADMIN_ADDR/metrics
if [ -n "$FLOOR" ]; then SERVER_NAME=floor METRICS_URL=; fi
status=0
for rate in "${RATES[@]}"; do
  echo
  echo "== $rate notifications/s for $DURATION after a $RAMPUP ramp-up, sync_interval: $SYNC — $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  STORE=$(mktemp -d "${STORE_PARENT:-$WORK}/wxpay-bench-store.XXXXXX")
  start_services "$STORE"
  set +e
  "$WORK/ingressload" run -url "http://$LISTEN_ADDR/notify/$MCHID" -keys "$WORK/keys" -nats "nats://$NATS_ADDR" \
    -rate "$rate" -duration "$DURATION" -ramp-up "$RAMPUP" -workers "$WORKERS" -client "$CLIENT" -max-p99 "$GOAL" $TIMELINE \
    -metrics "$METRICS_URL" -cpu-pids "$SERVER_NAME=$INGRESS_PID,nats=$NATS_PID" \
    ${PROFILE:+-profile-cmd "perf record -F 499 -g -o $WORK/perf-$rate.data -p $INGRESS_PID,$NATS_PID"}
  status=$?
  set -e
  if [ -n "$PROFILE" ] && [ -f "$WORK/perf-$rate.data" ]; then
    echo "-- perf: CPU by process and function (self time, top 40)"
    perf report -i "$WORK/perf-$rate.data" --no-children --stdio -g none --sort comm,dso,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 || true
  fi
  # The ingress logs one line per notification at info (its default level,
  # as in production); show the lines at warn and above.
  lines=$(wc -l <"$WORK/ingress.log")
  if [ -n "$FLOOR" ]; then
    echo "-- floor log: $(tail -n 3 "$WORK/ingress.log" | tr '\n' ' ')"
  elif grep -qvE '"level":"(info|debug)"' "$WORK/ingress.log"; then
    echo "-- ingress log: $lines lines; warn and above: $(grep -cvE '"level":"(info|debug)"' "$WORK/ingress.log"), first 5:"
    grep -vE '"level":"(info|debug)"' "$WORK/ingress.log" | head -5
  else
    echo "-- ingress log: $lines lines, none at warn or above"
  fi
  [ -n "$KEEP" ] || rm -f "$WORK/ingress.log"
  stop_services
  rm -rf "$STORE"; STORE=
  if [ $status -ne 0 ]; then break; fi
done
exit $status
