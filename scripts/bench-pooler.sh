#!/usr/bin/env bash
# The pooler against Debian's PgBouncer (issue 20): starts a three-member cluster on loopback
# (release build) whose members run the pooled port in transaction mode (pool_size 20, as
# PgBouncer's default_pool_size), and a PgBouncer in transaction mode on the same host in
# front of the primary's PostgreSQL (default_pool_size 20, SCRAM pass-through from an
# auth_file holding the role's verifier). PostgreSQL keeps its max_connections of 100.
# Runs pgbench, select-only (-S) and TPC-B-like, with 8 and with 200 clients, and -S with -C
# (a new connection per transaction), against (a) PostgreSQL directly (not with 200 clients:
# more than max_connections), (b) the pooled port on the primary's member, (c) PgBouncer.
# RUNS rounds, the targets taking turns within each. Prints per row the median TPS with its
# range, the median mean latency, the most server connections seen during the run, and the
# relaying process's CPU time per transaction (user + system of the primary's pgquorum
# daemon, or of PgBouncer). Installs pgbouncer when missing.
#
#   RUNS=3 SECONDS_EACH=10 SCALE=10 TTL=10s SSLMODE=disable [ROWS="-S/8 tpcb/8 -S/200 tpcb/200 -S-C/8"] \
#     scripts/bench-pooler.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_EACH:-10}
scale=${SCALE:-10}
runs=${RUNS:-3}
ttl=${TTL:-10s}
rows=${ROWS:-"-S/8 tpcb/8 -S/200 tpcb/200 -S-C/8"}
# PgBouncer speaks TLS to clients only when configured to (client_tls_sslmode defaults to
# disable), the pooler and PostgreSQL whenever asked: every target runs without it.
sslmode=${SSLMODE:-disable}

sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
[ -x /usr/sbin/pgbouncer ] || DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq pgbouncer >/dev/null
# The package starts its own instance on 6432; this benchmark runs its own.
$sudo_cmd systemctl stop pgbouncer >/dev/null 2>&1 || true
cargo build --release -q
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/pgquorum
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

dir=$(mktemp -d /tmp/pgq-bench-pooler-XXXXXX)
chmod 711 "$dir"
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -u postgres -f "sbin/pgbouncer $dir" 2>/dev/null || true
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

[pooler]
listen = "127.0.0.1:1643$i"
pool_mode = "transaction"
pool_size = 20
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
# Throughput, not failover: on two shared cores a saturated host can stall the daemons long
# enough to fence a primary with the default ttl (see bench-proxy.sh).
"$bin" config set "ttl=$ttl" -c "$dir/n1.toml" >/dev/null
i=${primary#n}
pg_port=1544$i
socket=$dir/$primary/run
psql_pg() { "$pgbin/psql" -X -q -At -h "$socket" -p "$pg_port" -U postgres "$@" postgres; }

psql_pg -c "create role bench login password 'bench'"
"$pgbin/pgbench" -q -i -s "$scale" -h "$socket" -p "$pg_port" -U postgres postgres >/dev/null 2>&1
psql_pg -c "grant all on all tables in schema public to bench"

# PgBouncer as its documentation sets up SCRAM pass-through: the role's verifier in the
# auth_file. It refuses to run as root, so it runs as the postgres OS user.
verifier=$(psql_pg -c "select rolpassword from pg_authid where rolname = 'bench'")
mkdir -p "$dir/pgbouncer"
echo "\"bench\" \"$verifier\"" > "$dir/pgbouncer/userlist.txt"
cat > "$dir/pgbouncer/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pg_port dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 16999
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
logfile = $dir/pgbouncer/pgbouncer.log
pidfile = $dir/pgbouncer/pgbouncer.pid
INI
chown -R postgres "$dir/pgbouncer"
runuser -u postgres -- /usr/sbin/pgbouncer "$dir/pgbouncer/pgbouncer.ini" & pids+=($!)
for target in 16999 "1643$i"; do
  for _ in $(seq 100); do
    PGPASSWORD=bench "$pgbin/psql" -X -q -h 127.0.0.1 -p "$target" -U bench -c 'select 1' postgres \
      >/dev/null 2>&1 && break
    sleep 0.1
  done
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)
relay_pid() {
  case $1 in
    pooler) echo "${pids[$((i - 1))]}" ;;
    pgbouncer) pgrep -u postgres -f "sbin/pgbouncer $dir" | head -1 ;;
    *) echo "" ;;
  esac
}
# Each target's clients carry their own application_name, which both poolers set on the
# server connections they use, so each run counts only its own target's connections.
server_connections() { # target
  psql_pg -c "select count(*) from pg_stat_activity where application_name = 'bench-$1'"
}

run() { # name port clients flags -> "tps latency-ms relay-cpu-us-per-transaction max-servers"
  local out pid before=0 after=0 sampler max=0
  pid=$(relay_pid "$1")
  [ -z "$pid" ] || before=$(cpu_ticks "$pid")
  (while :; do server_connections "$1"; sleep 0.5; done) > "$dir/servers-$1.txt" 2>/dev/null &
  sampler=$!
  out=$(PGPASSWORD=bench PGSSLMODE="$sslmode" PGAPPNAME="bench-$1" "$pgbin/pgbench" -h 127.0.0.1 -p "$2" -U bench -c "$3" -j 2 \
    -T "$seconds" $4 postgres 2>&1 | tee "$dir/pgbench-$1.out")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  [ -z "$pid" ] || after=$(cpu_ticks "$pid")
  max=$(sort -n "$dir/servers-$1.txt" | tail -1)
  local tps lat cpu
  tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | tail -1)
  lat=$(grep -oP 'latency average = \K[0-9.]+' <<<"$out")
  [ -n "$tps" ] || return 1
  cpu=$(awk -v t="$((after - before))" -v hz="$ticks_per_s" -v tps="$tps" -v s="$seconds" \
    'BEGIN { printf "%.1f", 1e6 * t / hz / (tps * s) }')
  echo "$tps $lat $cpu ${max:-0}"
}
declare -A tps_of lat_of cpu_of srv_of
targets() { # clients
  [ "$1" -le 90 ] && echo "direct:$pg_port"
  echo "pooler:1643$i" "pgbouncer:16999"
}
flags_of() { # row -> pgbench flags
  case ${1%/*} in -S) echo "-S" ;; tpcb) echo "" ;; -S-C) echo "-S -C" ;; esac
}
for row in $rows; do
  clients=${row#*/}
  for round in $(seq "$runs"); do
    for target in $(targets "$clients"); do
      name=${target%:*}; port=${target##*:}
      read -r tps lat cpu srv < <(run "$name" "$port" "$clients" "$(flags_of "$row")") || {
        echo "pgbench against $name (port $port) failed; see $dir/pgbench-$name.out" >&2
        exit 1
      }
      tps_of[$row/$name]+="$tps "; lat_of[$row/$name]+="$lat "
      cpu_of[$row/$name]+="$cpu "; srv_of[$row/$name]+="$srv "
      echo "round $round $row $name: $tps tps, $lat ms, $srv server connections, relay CPU $cpu us/txn" >&2
    done
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f %.0f %.0f", m, v[1], v[NR] }'; }
median_f() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m }'; }
echo
printf '%-10s %8s %-18s %10s %13s %11s %12s %13s\n' mode clients target "tps median" "range" \
  "latency ms" "server conns" "relay us/txn"
for row in $rows; do
  clients=${row#*/}
  label=${row%/*}; label=${label/-S-C/select -C}; label=${label/-S/select}
  for target in $(targets "$clients"); do
    name=${target%:*}
    read -r med lo hi <<<"$(median <<<"${tps_of[$row/$name]}")"
    lat=$(median_f <<<"${lat_of[$row/$name]}")
    cpu=$(median_f <<<"${cpu_of[$row/$name]}")
    srv=$(tr ' ' '\n' <<<"${srv_of[$row/$name]}" | grep . | sort -n | tail -1)
    [ "$name" = direct ] && cpu=-
    case $name in
      direct) shown="direct PostgreSQL" ;; pooler) shown="pgquorum pooler" ;;
      pgbouncer) shown="PgBouncer" ;;
    esac
    printf '%-10s %8s %-18s %10s %13s %11s %12s %13s\n' "$label" "$clients" "$shown" "$med" \
      "$lo-$hi" "$lat" "$srv" "$cpu"
  done
done
echo
echo "settings: ttl $ttl, $runs rounds, -j 2, ${seconds}s each, pgbench scale $scale, pool size 20 in transaction mode for both, max_connections 100, client sslmode $sslmode, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(/usr/sbin/pgbouncer --version | head -1); primary $primary; load $(cut -d' ' -f1-3 /proc/loadavg)"
