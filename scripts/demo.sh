#!/usr/bin/env bash
# Starts a local three-member pgquorum cluster on loopback, in a temporary directory, and
# keeps it running until Ctrl-C. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --locked --bin pgquorum
bin="$PWD/target/debug/pgquorum"
dir=$(mktemp -d /tmp/pgquorum-demo.XXXXXX)
# PostgreSQL runs as user postgres when this runs as root: it must reach its data inside.
chmod 711 "$dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  cat > "$dir/n$i.toml" <<TOML
[node]
name = "n$i"
state_dir = "$dir/n$i"

[peer]
listen = "127.0.0.1:740$i"

[api]
listen = "127.0.0.1:810$i"

[proxy]
writer_listen = "127.0.0.1:50${i}0"
reader_listen = "127.0.0.1:50${i}1"

[postgresql]
listen = "127.0.0.1:544$i"
TOML
done

"$bin" init -c "$dir/n1.toml" > "$dir/init.out"
token=$(grep '^pgq1\.' "$dir/init.out")
"$bin" run -c "$dir/n1.toml" 2> "$dir/n1.log" & pids+=($!)
for i in 2 3; do
  # The first member must be serving before others can join.
  for _ in $(seq 100); do "$bin" list -c "$dir/n1.toml" >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin" node join 127.0.0.1:7401 --token "$token" -c "$dir/n$i.toml" >/dev/null
  "$bin" run -c "$dir/n$i.toml" 2> "$dir/n$i.log" & pids+=($!)
done
# Wait for one primary and two streaming replicas.
for _ in $(seq 600); do
  json=$("$bin" list --json -c "$dir/n1.toml" 2>/dev/null || true)
  leaders=$(grep -c '"role": "Leader"' <<<"$json" || true)
  streaming=$(grep -c '"state": "streaming"' <<<"$json" || true)
  [ "$leaders" = 1 ] && [ "$streaming" = 2 ] && break
  sleep 0.1
done

"$bin" list -c "$dir/n1.toml"
cat <<TEXT

A three-member PostgreSQL cluster is running in $dir (logs: $dir/n*.log).
Try, in another shell:
  $bin list -c $dir/n2.toml
  $bin ca export -c $dir/n1.toml > $dir/ca.pem   # the cluster CA, which the API's HTTPS uses
  curl -s --cacert $dir/ca.pem -o /dev/null -w '%{http_code}\\n' https://127.0.0.1:8101/primary   # 200 on the primary
  psql -h $dir/n1/run -p 5441 -U postgres        # (the primary's unix socket; n2: 5442, n3: 5443)
  # every member proxies: writer port 5010 (n1), 5020, 5030 -> the primary; reader 5011, 5021,
  # 5031 -> replicas (TCP needs a password: create a role first)
  $bin switchover -c $dir/n1.toml                # hand the primary role to a replica
  kill -9 \$(pgrep -f 'run -c $dir/n1.toml')     # lose a member's daemon (its PostgreSQL dies with it)
Press Ctrl-C to stop everything and remove the directory.
TEXT
wait
