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
for _ in $(seq 200); do
  voters=$("$bin" list --json -c "$dir/n1.toml" 2>/dev/null | grep -cE '"raft_role": "(leader|voter)"' || true)
  [ "$voters" = 3 ] && break
  sleep 0.1
done

"$bin" list -c "$dir/n1.toml"
cat <<TEXT

A three-member cluster is running in $dir (logs: $dir/n*.log).
Try, in another shell:
  $bin list -c $dir/n2.toml
  $bin lease acquire -c $dir/n2.toml      # node 2 takes the leader lease
  kill -9 \$(pgrep -f 'run -c $dir/n1.toml')   # kill a member; the others keep a leader
Press Ctrl-C to stop everything and remove the directory.
TEXT
wait
