#!/usr/bin/env bash
# Throughput through the built-in proxy (issue 4): starts a three-member cluster on loopback
# (release build), then runs pgbench, select-only (-S) and the default TPC-B-like mode, with
# CLIENTS clients for SECONDS seconds each against (a) the primary's PostgreSQL directly,
# (b) pgquorum's writer port on the primary's member, (c) Debian's HAProxy configured as
# Patroni's documentation does (option httpchk OPTIONS /primary against pgquorum's health
# endpoint, on-marked-down shutdown-sessions), and (d) the reader port for -S. Prints TPS and
# mean latency and the ratio to direct. Installs haproxy when missing.
#
#   SECONDS_EACH=20 CLIENTS=8 SCALE=10 scripts/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_EACH:-20}
clients=${CLIENTS:-8}
scale=${SCALE:-10}

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
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
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
i=${primary#n}
pg_port=1544$i
socket=$dir/$primary/run

"$pgbin/psql" -X -q -h "$socket" -p "$pg_port" -U postgres -c "create role bench login password 'bench'" postgres
"$pgbin/pgbench" -q -i -s "$scale" -h "$socket" -p "$pg_port" -U postgres postgres >/dev/null 2>&1
"$pgbin/psql" -X -q -h "$socket" -p "$pg_port" -U postgres \
  -c "grant all on all tables in schema public to bench" postgres

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
    default-server inter 3s fastinter 1s fall 3 rise 2 on-marked-down shutdown-sessions
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

run() { # name port mode-flag
  local out
  out=$(PGPASSWORD=bench "$pgbin/pgbench" -h 127.0.0.1 -p "$2" -U bench -c "$clients" -j 2 \
    -T "$seconds" $3 postgres 2>&1)
  local tps lat
  tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | tail -1)
  lat=$(grep -oP 'latency average = \K[0-9.]+' <<<"$out")
  echo "$tps $lat"
}
printf '%-10s %-22s %10s %12s %9s\n' mode target tps "latency ms" "vs direct"
for mode in "-S" ""; do
  label=${mode:-tpcb}; [ "$label" = "-S" ] && label=select
  read -r d_tps d_lat < <(run direct "$pg_port" "$mode")
  printf '%-10s %-22s %10.0f %12.3f %9s\n' "$label" "direct PostgreSQL" "$d_tps" "$d_lat" "100%"
  for target in "writer port:150${i}0" "HAProxy (Patroni cfg):15999" ${mode:+"reader port:150${i}1"}; do
    name=${target%:*}; port=${target##*:}
    read -r tps lat < <(run "$name" "$port" "$mode")
    ratio=$(awk -v a="$tps" -v b="$d_tps" 'BEGIN { printf "%.0f%%", 100 * a / b }')
    printf '%-10s %-22s %10.0f %12.3f %9s\n' "$label" "$name" "$tps" "$lat" "$ratio"
  done
done
echo
echo "settings: $clients clients, -j 2, ${seconds}s each, pgbench scale $scale, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(haproxy -v | head -1 | awk '{print $1, $3}'); primary $primary; load $(cut -d' ' -f1-3 /proc/loadavg)"
