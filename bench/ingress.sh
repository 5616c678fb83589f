#!/usr/bin/env bash
# Load figure of cmd/ingress on this machine: a real nats-server with file
# storage, the ingress, and bench/ingressload sending distinct signed
# notifications at a fixed rate (open loop), all on 127.0.0.1.
#
# usage: bench/ingress.sh [-d 30s] [-u 5s] [-s default|always] [-c http|raw] [-w WORKERS] [-g 50ms] [-S DIR] [-t] [-k] [-P] [-F | -A] [-V] [RATE ...]
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
#   -V          with -F or -A: the floor also verifies each signature
#               (SHA256withRSA with crypto/rsa, 401 when it fails), the one
#               cost WeChat Pay forces on every ingress; the ratio then
#               measures the ingress's own overhead alone.
#   -A          comparison: at each RATE run the floor, then the ingress,
#               on one corpus signed for both (and for the next rates while
#               its timestamps stay accepted), and print each side's highest
#               rate held and the ratio ingress/floor. A side that did not
#               hold a rate runs it once more (after the other side's run);
#               failing twice, it is not run at higher rates, and the ramp
#               ends when both sides stopped. -d defaults to 15s here (a
#               ramp of 8 rates takes 10-15 min); the exit status is 0 when
#               the comparison ran, whatever it found.
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

DURATION=
RAMPUP=5s
SYNC=default
CLIENT=raw
WORKERS=1000
GOAL=50ms
TIMELINE=
KEEP=
PROFILE=
FLOOR=
COMPARE=
VERIFY=
STORE_PARENT=
while getopts "d:u:s:c:w:g:S:tkPFAV" opt; do
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
    A) COMPARE=1 ;;
    V) VERIFY=1 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
RATES=("${@:-10000}")
case $SYNC in default|always) ;; *) echo "-s must be default or always" >&2; exit 2 ;; esac
if [ -n "$COMPARE" ] && [ -n "$FLOOR" ]; then echo "-A runs the floor itself: drop -F" >&2; exit 2; fi
if [ -n "$VERIFY" ] && [ -z "$COMPARE$FLOOR" ]; then echo "-V changes the floor: use it with -F or -A" >&2; exit 2; fi
# 15 s windows in -A mode keep a five-rate comparison near 10 minutes.
DURATION=${DURATION:-$([ -n "$COMPARE" ] && echo 15s || echo 30s)}

# secs DURATION: whole seconds of a duration written Ns or Nm.
secs() {
  local v
  case $1 in
    0) v=0 ;;
    *ms) v=$(( (${1%ms} + 999) / 1000 )) ;;
    *s) v=${1%s} ;;
    *m) v=$((${1%m} * 60)) ;;
  esac
  case ${v:-x} in
    *[!0-9]*) echo "bench: duration $1: write it as Nms, Ns or Nm" >&2; exit 2 ;;
  esac
  echo "$v"
}
DURATION_S=$(secs "$DURATION")
RAMPUP_S=$(secs "$RAMPUP")

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
    env ${INGRESS_ENV:-} "$WORK/ingressload" floor -listen "$LISTEN_ADDR" -nats "nats://$NATS_ADDR" \
      ${VERIFY:+-verify-key "$WORK/keys/pub_key.pem"} >"$WORK/ingress.log" 2>&1 &
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

echo "== machine: $(nproc) cores, $(uname -r); ${COMPARE:+COMPARISON floor/ingress; }${FLOOR:+FLOOR (ingressload floor in place of the ingress); }${VERIFY:+the floor verifies signatures; }nats-server $NATS_VERSION (sync_interval: $SYNC, store under ${STORE_PARENT:-$WORK}); go $(go env GOVERSION); client $CLIENT${INGRESS_ENV:+; ingress env $INGRESS_ENV}${NATS_ENV:+; nats env $NATS_ENV}"

# run_one SIDE RATE [corpus]: one run against a fresh nats-server and
# server (SIDE ingress or floor); sets status to ingressload's exit status
# (0 held, 3 p99 missed, else failed) and keeps its report in
# $WORK/report-SIDE-RATE.txt.
run_one() {
  local side=$1 rate=$2 corpus=${3:-} server_name=ingress metrics_url=http://$ADMIN_ADDR/metrics
  FLOOR=
  if [ "$side" = floor ]; then FLOOR=1 server_name=floor metrics_url=; fi
  echo
  echo "== ${COMPARE:+$side: }$rate notifications/s for $DURATION after a $RAMPUP ramp-up, sync_interval: $SYNC — $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  STORE=$(mktemp -d "${STORE_PARENT:-$WORK}/wxpay-bench-store.XXXXXX")
  start_services "$STORE"
  local source=(-keys "$WORK/keys")
  if [ -n "$corpus" ]; then source=(-corpus "$corpus"); fi
  set +e
  "$WORK/ingressload" run -url "http://$LISTEN_ADDR/notify/$MCHID" "${source[@]}" -nats "nats://$NATS_ADDR" \
    -rate "$rate" -duration "$DURATION" -ramp-up "$RAMPUP" -workers "$WORKERS" -client "$CLIENT" -max-p99 "$GOAL" $TIMELINE \
    -metrics "$metrics_url" -cpu-pids "$server_name=$INGRESS_PID,nats=$NATS_PID" \
    ${PROFILE:+-profile-cmd "perf record -F 499 -g -o $WORK/perf-$side-$rate.data -p $INGRESS_PID,$NATS_PID"} \
    2>&1 | tee "$WORK/report-$side-$rate.txt"
  status=${PIPESTATUS[0]}
  set -e
  if [ -n "$PROFILE" ] && [ -f "$WORK/perf-$side-$rate.data" ]; then
    echo "-- perf: CPU by process and function (self time, top 40)"
    perf report -i "$WORK/perf-$side-$rate.data" --no-children --stdio -g none --sort comm,dso,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 || true
  fi
  # The ingress logs one line per notification at info (its default level,
  # as in production); show the lines at warn and above.
  local lines
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
}

if [ -z "$COMPARE" ]; then
  SIDE=ingress
  if [ -n "$FLOOR" ]; then SIDE=floor; fi
  status=0
  for rate in "${RATES[@]}"; do
    run_one "$SIDE" "$rate"
    if [ $status -ne 0 ]; then break; fi
  done
  exit $status
fi

# Comparison (-A). One corpus serves both sides of a rate, and the next
# rates while its timestamps stay inside the ingress's window: gen stamps
# them with its start + 280 s and the ingress accepts them until 5 min
# after that, so a corpus signed at T is usable until T + 580 s.
CORPUS=$WORK/corpus.bin
CORPUS_N=0 CORPUS_UNTIL=0
SIGN_RATE=1000 # notifications signed per second, measured by each signing
notes_for() { echo $(( $1 * (2 * DURATION_S + RAMPUP_S) / 2 + 1 )); }
# A pair of runs: ramp-up, window, startup, report and shutdown, twice.
PAIR_S=$(( 2 * (RAMPUP_S + DURATION_S + 10) ))
# sign_corpus IDX: a new corpus for RATES[IDX] and the next rates whose
# runs still fit in its window after signing them (at the last signing's
# speed).
sign_corpus() {
  local idx=$1 rate=${RATES[$1]} n m r pairs=1 signed_at took
  n=$(notes_for "$rate")
  # Enough for this rate and the next ones whose runs still fit in the
  # window after signing them (at the last signing's speed).
  for r in "${RATES[@]:$((idx + 1))}"; do
    m=$(notes_for "$r"); m=$(( m > n ? m : n ))
    [ $(( m / SIGN_RATE + (pairs + 1) * PAIR_S + 30 )) -le 580 ] || break
    n=$m pairs=$((pairs + 1))
  done
  echo
  echo "== signing $n notifications for $pairs rate(s) from $rate on — $(date -u '+%H:%M:%S UTC'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  signed_at=$(date +%s)
  "$WORK/ingressload" gen -n "$n" -out "$CORPUS" -keys "$WORK/keys"
  took=$(( $(date +%s) - signed_at ))
  SIGN_RATE=$(( n / (took > 0 ? took : 1) ))
  CORPUS_N=$n CORPUS_UNTIL=$(( signed_at + 580 ))
  echo "   signed in $took s; usable until $(date -u -d "@$CORPUS_UNTIL" '+%H:%M:%S UTC')"
}
# corpus_fits: the corpus is still accepted until after one more run.
corpus_fits() { [ $(( $(date +%s) + RAMPUP_S + DURATION_S + 25 )) -le "$CORPUS_UNTIL" ]; }
declare -A RESULT P99 CPU
floor_best=0 ingress_best=0 floor_alive=1 ingress_alive=1
for idx in "${!RATES[@]}"; do
  rate=${RATES[$idx]}
  [ -n "$floor_alive$ingress_alive" ] || break
  need=$(notes_for "$rate")
  if [ "$CORPUS_N" -lt "$need" ] || [ $(( $(date +%s) + PAIR_S + 15 )) -gt "$CORPUS_UNTIL" ]; then
    sign_corpus "$idx"
  fi
  # Floor, then ingress; a side that did not hold runs the rate once more
  # (after the other side's run) before its ramp ends: on this shared
  # machine a single run can fail to another process's burst.
  for try in 1 2; do
    for side in floor ingress; do
      alive=${side}_alive
      [ -n "${!alive}" ] || continue
      prev=${RESULT[$side,$rate]:-}
      if [ "$try" = 2 ] && { [ -z "$prev" ] || [ "$prev" = held ]; }; then continue; fi
      corpus_fits || sign_corpus "$idx"
      run_one "$side" "$rate" "$CORPUS"
      case $status in
        0) result=held ;;
        3) result="p99 missed" ;;
        *) result="not held" ;;
      esac
      p99=$(sed -n 's/^latency from the scheduled send time: .* p99 \([^ ]*\) .*/\1/p' "$WORK/report-$side-$rate.txt")
      CPU[$side,$rate]=$(sed -n "s/^CPU over the measured window.*: $side \([0-9.]*\), nats \([0-9.]*\), generator \([0-9.]*\);.*other processes \([-0-9.]*\)).*/\1 \/ \2 \/ \3 \/ \4/p" "$WORK/report-$side-$rate.txt")
      if [ "$try" = 1 ]; then
        RESULT[$side,$rate]=$result P99[$side,$rate]=$p99
      else
        RESULT[$side,$rate]="$result on retry" P99[$side,$rate]="$p99 (first $prev, ${P99[$side,$rate]})"
      fi
      if [ "$status" -eq 0 ]; then
        eval "${side}_best=$rate"
      elif [ "$try" = 2 ]; then
        eval "${side}_alive="
      fi
    done
  done
done

echo
echo "== comparison, $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg): ${DURATION} windows after a ${RAMPUP} ramp-up, p99 goal $GOAL, sync_interval $SYNC"
printf '%-8s  %-44s  %-44s\n' "rate/s" "floor: result, p99" "ingress: result, p99"
for rate in "${RATES[@]}"; do
  f=${RESULT[floor,$rate]:-}; i=${RESULT[ingress,$rate]:-}
  [ -n "$f$i" ] || continue
  printf '%-8s  %-44s  %-44s\n' "$rate" "${f:-not run}${f:+, ${P99[floor,$rate]}}" "${i:-not run}${i:+, ${P99[ingress,$rate]}}"
done
echo "CPU in cores, server / nats / generator / other (the last run of each):"
for rate in "${RATES[@]}"; do
  for side in floor ingress; do
    c=${CPU[$side,$rate]:-}
    [ -n "$c" ] || continue
    us=$(awk -v c="${c%% *}" -v r="$rate" 'BEGIN { printf "%.0f", c / r * 1e6 }')
    printf '  %-8s %-8s %s   (%s µs of server CPU per notification)\n' "$rate" "$side" "$c" "$us"
  done
done
ratio=$(awk -v i="$ingress_best" -v f="$floor_best" 'BEGIN { if (f > 0) printf "%.2f", i / f; else print "n/a" }')
echo "highest rate held: floor $floor_best/s, ingress $ingress_best/s; ingress/floor = $ratio"
