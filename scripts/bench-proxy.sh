#!/usr/bin/env bash
# Throughput through the built-in proxy (issue 4): starts a three-member cluster on loopback
# (release build), then runs pgbench, select-only (-S) and the default TPC-B-like mode, with
# CLIENTS clients for SECONDS seconds each against (a) the primary's PostgreSQL directly,
# (b) pgquorum's writer port on the primary's member, (c) Debian's HAProxy configured as
# Patroni's documentation does (option httpchk OPTIONS /primary against pgquorum's health
# endpoint, on-marked-down shutdown-sessions), and (d) the reader port for -S. RUNS rounds,
# the targets taking turns within each; prints per target the median TPS with its range, the
# median mean latency, the ratio to direct, and the relaying process's CPU time per
# transaction (user + system of the primary's pgquorum daemon, or of HAProxy, over the run:
# on a host whose cores are all busy, that CPU is what the extra hop costs). Installs haproxy
# when missing.
#
#   RUNS=3 SECONDS_EACH=20 CLIENTS=8 SCALE=10 TTL=10s [MODES="-S tpcb"] scripts/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_EACH:-20}
clients=${CLIENTS:-8}
scale=${SCALE:-10}
runs=${RUNS:-3}
ttl=${TTL:-10s}

command -v haproxy >/dev/null 2>&1 || {
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq haproxy >/dev/null
}
cargo build --release -q
bin=$PWD/target/release/pgquorum
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

dir=$(mktemp -d /tmp/pgq-bench-proxy-XXXXXX)
chmod 711 "$dir"
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" != 0 ] || [ -n "${KEEP:-}" ]; then
    echo "logs kept in $dir (KEEP=1 keeps them on success too)" >&2
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  cat > "$dir/n$i.toml" <<TOML
[node]
name = "n$i"
state_dir = "$dir/n$i"

[peer]
listen = "127.0.0.1:1740$i"

[api]
listen = "127.0.0.1:1810$i"

[proxy]
writer_listen = "127.0.0.1:150${i}0"
reader_listen = "127.0.0.1:150${i}1"

[postgresql]
listen = "127.0.0.1:1544$i"
TOML
done
"$bin" init -c "$dir/n1.toml" > "$dir/init.out"
token=$(grep '^pgq1\.' "$dir/init.out")
"$bin" run -c "$dir/n1.toml" 2> "$dir/n1.log" & pids+=($!)
for i in 2 3; do
  for _ in $(seq 100); do "$bin" list -c "$dir/n1.toml" >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin" node join 127.0.0.1:17401 --token "$token" -c "$dir/n$i.toml" >/dev/null
  "$bin" run -c "$dir/n$i.toml" 2> "$dir/n$i.log" & pids+=($!)
done
primary=""
for _ in $(seq 600); do
  json=$("$bin" list --json -c "$dir/n1.toml" 2>/dev/null || true)
  streaming=$(grep -c '"state": "streaming"' <<<"$json" || true)
  if [ "$streaming" = 2 ]; then
    primary=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print([m["name"] for m in d["members"] if m["role"]=="Leader"][0])' <<<"$json")
    break
  fi
  sleep 0.1
done
[ -n "$primary" ] || { echo "the cluster did not become healthy; logs in $dir" >&2; exit 1; }
# This measures throughput, not failover: all three members, their PostgreSQL servers and
# pgbench share the host's cores, and at 100 % CPU the host stalled all three daemons at once
# for 1-2 s now and then (Raft heartbeats timed out), which with the default ttl of 2 s fenced
# the primary mid-run. TTL=2s reproduces that.
"$bin" config set "ttl=$ttl" -c "$dir/n1.toml" >/dev/null
i=${primary#n}
pg_port=1544$i
socket=$dir/$primary/run

"$pgbin/psql" -X -q -h "$socket" -p "$pg_port" -U postgres -c "create role bench login password 'bench'" postgres
"$pgbin/pgbench" -q -i -s "$scale" -h "$socket" -p "$pg_port" -U postgres postgres >/dev/null 2>&1
"$pgbin/psql" -X -q -h "$socket" -p "$pg_port" -U postgres \
  -c "grant all on all tables in schema public to bench" postgres

# The API is HTTPS with the cluster CA: HAProxy verifies it as it would Patroni's.
"$bin" ca export -c "$dir/n1.toml" > "$dir/ca.pem"
cat > "$dir/haproxy.cfg" <<CFG
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 5s
listen primary
    bind 127.0.0.1:15999
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 3s fastinter 1s fall 3 rise 2 on-marked-down shutdown-sessions check-ssl verify required ca-file $dir/ca.pem
    server n1 127.0.0.1:15441 maxconn 100 check port 18101
    server n2 127.0.0.1:15442 maxconn 100 check port 18102
    server n3 127.0.0.1:15443 maxconn 100 check port 18103
CFG
haproxy -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 & pids+=($!)
# HAProxy marks the primary up after `rise` checks.
for _ in $(seq 100); do
  PGPASSWORD=bench "$pgbin/psql" -X -q -h 127.0.0.1 -p 15999 -U bench -c 'select 1' postgres \
    >/dev/null 2>&1 && break
  sleep 0.2
done

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)
# The process doing the relaying for each target: the primary's daemon for its ports.
relay_pid() {
  case $1 in
    writer | reader) echo "${pids[$((i - 1))]}" ;;
    haproxy) echo "${pids[3]}" ;;
    *) echo "" ;;
  esac
}

run() { # name port mode-flag -> "tps latency-ms relay-cpu-us-per-transaction"
  local out pid before=0 after=0
  pid=$(relay_pid "$1")
  [ -z "$pid" ] || before=$(cpu_ticks "$pid")
  out=$(PGPASSWORD=bench "$pgbin/pgbench" -h 127.0.0.1 -p "$2" -U bench -c "$clients" -j 2 \
    -T "$seconds" $3 postgres 2>&1 | tee "$dir/pgbench-$1.out")
  [ -z "$pid" ] || after=$(cpu_ticks "$pid")
  local tps lat cpu
  tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | tail -1)
  lat=$(grep -oP 'latency average = \K[0-9.]+' <<<"$out")
  cpu=$(awk -v t="$((after - before))" -v hz="$ticks_per_s" -v tps="$tps" -v s="$seconds" \
    'BEGIN { printf "%.1f", 1e6 * t / hz / (tps * s) }')
  echo "$tps $lat $cpu"
}
# RUNS rounds; within a round every target runs once, in turn, so that a slow spell on the
# shared cores hits all of them alike. Prints the median TPS (and range) over the rounds.
declare -A tps_of lat_of cpu_of
targets() { # mode
  echo "direct:$pg_port" "writer:150${i}0" "haproxy:15999"
  [ "$1" = "-S" ] && echo "reader:150${i}1"
}
for mode in ${MODES:--S tpcb}; do
  [ "$mode" = tpcb ] && mode=""
  for round in $(seq "$runs"); do
    for target in $(targets "$mode"); do
      name=${target%:*}; port=${target##*:}
      read -r tps lat cpu < <(run "$name" "$port" "$mode") || {
        echo "pgbench against $name (port $port) failed; see $dir/pgbench-$name.out" >&2
        exit 1
      }
      tps_of[$mode/$name]+="$tps "
      lat_of[$mode/$name]+="$lat "
      cpu_of[$mode/$name]+="$cpu "
      echo "round $round ${mode:-tpcb} $name: $tps tps, $lat ms, relay CPU $cpu us/txn" >&2
    done
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f %.0f %.0f", m, v[1], v[NR] }'; }
median_f() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m }'; }
echo
printf '%-8s %-24s %10s %15s %12s %9s %14s\n' mode target "tps median" "range" "latency ms" \
  "vs direct" "relay us/txn"
for mode in ${MODES:--S tpcb}; do
  [ "$mode" = tpcb ] && mode=""
  label=${mode:-tpcb}; [ "$label" = "-S" ] && label=select
  read -r d_med _ _ <<<"$(median <<<"${tps_of[$mode/direct]}")"
  for target in $(targets "$mode"); do
    name=${target%:*}
    read -r med lo hi <<<"$(median <<<"${tps_of[$mode/$name]}")"
    lat=$(median_f <<<"${lat_of[$mode/$name]}")
    cpu=$(median_f <<<"${cpu_of[$mode/$name]}")
    [ "$name" = direct ] && cpu=-
    case $name in
      direct) shown="direct PostgreSQL" ;; writer) shown="writer port" ;;
      haproxy) shown="HAProxy (Patroni cfg)" ;; reader) shown="reader port" ;;
    esac
    ratio=$(awk -v a="$med" -v b="$d_med" 'BEGIN { printf "%.0f%%", 100 * a / b }')
    printf '%-8s %-24s %10s %15s %12s %9s %14s\n' "$label" "$shown" "$med" "$lo-$hi" "$lat" \
      "$ratio" "$cpu"
  done
done
echo
echo "settings: ttl $ttl, $runs rounds, $clients clients, -j 2, ${seconds}s each, pgbench scale $scale, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(haproxy -v | head -1 | awk '{print $1, $3}'); primary $primary; load $(cut -d' ' -f1-3 /proc/loadavg)"
