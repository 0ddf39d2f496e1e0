#!/usr/bin/env bash
# The Vagrant demo without a hypervisor (acceptance items 3 and 4 of issue 6):
#
#  (a) `vagrant validate -p` passes on the Vagrantfile, and fails on a copy of it with a
#      misspelled setting (so the check bites).
#  (b) packaging/vagrant/provision.sh, unchanged, provisions three hosts as `vagrant up` would,
#      one after the other, with the same environment variables the Vagrantfile sets; then the
#      cluster must have three members (one Leader running, two replicas streaming), the VIP on
#      the primary's host only, and a client on the same LAN must reach a writable PostgreSQL
#      through the VIP and through the proxy ports.
#
# A "VM" here is a network namespace plus a chroot into an overlay of one Debian 12 root that
# has the .deb installed (scripts/debian-root.sh), with /proc, /dev and a /vagrant:
#
#   root namespace: bridge pgqv-br (no address)
#     ├── veth pgqv-pg1 ── netns pgqv-pg1: eth1 10.213.252.11/24    root  run/pg1/root
#     ├── veth pgqv-pg2 ── netns pgqv-pg2: eth1 10.213.252.12/24    root  run/pg2/root
#     ├── veth pgqv-pg3 ── netns pgqv-pg3: eth1 10.213.252.13/24    root  run/pg3/root
#     └── veth pgqv-cl  ── netns pgqv-cl:  eth1 10.213.252.200/24   root  run/cl/root (psql only)
#   VIP 10.213.252.100/24; every address used is inside 10.213.0.0/16.
#
# /vagrant behaves like the Vagrantfile's rsync synced folder: each host gets its own copy of
# the "project directory" (run/project: the Vagrantfile, packaging/vagrant/, the .deb) when it
# comes up, and what a host writes there reaches nobody else. The Vagrantfile's own Ruby
# triggers run around each `up` (with a stand-in machine whose communicator runs commands in
# our host instead of over SSH): the one after pg1's copies its join token to the project's
# .vagrant-demo/, so pg2 and pg3 find it in their copy. No systemd runs in a chroot, so
# provision.sh starts the daemon the way the unit would (its one branch for that).
#
# Needs root; without it, skips (and fails when CI=true). Installs vagrant, debootstrap,
# iproute2 and jq when missing. Everything it creates is removed on exit, and a crashed run's
# leftovers at the next start (all names start with pgqv; processes are found by namespace and
# by chroot directory). The Debian root is kept in target/vagrant-test/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PFX=pgqv
NET=10.213.252
VIP=$NET.100
PREFIX=24
NODES=(pg1 pg2 pg3)
declare -A IP=([pg1]=$NET.11 [pg2]=$NET.12 [pg3]=$NET.13 [cl]=$NET.200)
FIRST_IP=${IP[pg1]}
WORK=$REPO/target/vagrant-test
RUN=$WORK/run
PROJECT=$RUN/project
LOWER=$WORK/debian-root
DEADLINE_SECONDS=90 # for each check after provisioning (provisioning has its own)
started=$SECONDS

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "FAIL scripts/test-vagrant.sh needs root (network namespaces, chroot, mounts), and CI=true"
    echo "vagrant: 0 passed, 1 failed"
    exit 1
  fi
  echo "skipping scripts/test-vagrant.sh: needs root (network namespaces, chroot, mounts)"
  exit 0
fi

passed=0
failed=0
pass() {
  echo "PASS $*"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL $*"
  failed=$((failed + 1))
}
indent() { sed 's/^/    /'; }

# --- tools -------------------------------------------------------------------------------
missing=()
command -v vagrant >/dev/null || missing+=(vagrant)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ip >/dev/null || missing+=(iproute2)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt_log=$(mktemp)
  apt-get install -y --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1 ||
    { apt-get update >>"$apt_log" 2>&1 &&
      apt-get install -y --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1; } ||
    { tail -n 20 "$apt_log"; rm -f "$apt_log"; exit 1; }
  rm -f "$apt_log"
fi

# --- cleanup (also of a crashed run's leftovers) -----------------------------------------
# Processes of our hosts: in our namespaces, or chrooted into our run directory (a process
# outlives the deletion of its namespace's name).
our_pids() {
  local ns p root
  for ns in $(ip netns list | awk -v p="$PFX-" 'index($1, p) == 1 { print $1 }'); do
    ip netns pids "$ns" 2>/dev/null || true
  done
  for p in /proc/[0-9]*; do
    root=$(readlink "$p/root" 2>/dev/null) || continue
    case $root in "$RUN"/*) echo "${p#/proc/}" ;; esac
  done
}
# Waits up to $1 seconds for processes $2... to be gone.
wait_gone() {
  local until=$((SECONDS + $1)) p
  shift
  while [ "$SECONDS" -lt "$until" ]; do
    for p in "$@"; do
      [ -d "/proc/$p" ] && { sleep 0.2; continue 2; }
    done
    return 0
  done
  return 1
}
cleanup() {
  local pids daemons p m ns
  mapfile -t pids < <(our_pids | sort -un)
  if [ ${#pids[@]} -gt 0 ]; then
    # The daemons first, so that they stop their PostgreSQL; then whatever is left.
    daemons=()
    for p in "${pids[@]}"; do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = pgquorum ] && daemons+=("$p")
    done
    if [ ${#daemons[@]} -gt 0 ]; then
      kill -TERM "${daemons[@]}" 2>/dev/null || true
      wait_gone 20 "${daemons[@]}" || true
    fi
    mapfile -t pids < <(our_pids | sort -un)
    if [ ${#pids[@]} -gt 0 ]; then
      kill -KILL "${pids[@]}" 2>/dev/null || true
      wait_gone 10 "${pids[@]}" || echo "warning: processes ${pids[*]} survived SIGKILL" >&2
    fi
  fi
  # Deepest first; findmnt lists submounts of the /dev bind mounts too.
  for m in $(findmnt -rn -o TARGET | awk -v r="$RUN/" 'index($0, r) == 1' | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  for ns in $(ip netns list | awk -v p="$PFX-" 'index($1, p) == 1 { print $1 }'); do
    ip netns delete "$ns" || true
  done
  for m in "${NODES[@]}" cl br; do
    ip link show "$PFX-$m" >/dev/null 2>&1 && ip link delete "$PFX-$m"
  done
  if findmnt -rn -o TARGET | awk -v r="$RUN/" 'index($0, r) == 1' | grep -q .; then
    echo "warning: mounts left under $RUN; not removing it" >&2
  else
    rm -rf --one-file-system "$RUN"
  fi
}

show_logs() {
  local h root
  for h in "${NODES[@]}"; do
    root=$RUN/$h/root
    [ -d "$root/var/log" ] || continue
    echo "--- $h: /var/log/pgquorum.log (last 40 lines)"
    tail -n 40 "$root/var/log/pgquorum.log" 2>/dev/null || echo "(none)"
    echo "--- $h: /var/lib/pgquorum/postgresql.log (last 15 lines)"
    tail -n 15 "$root/var/lib/pgquorum/postgresql.log" 2>/dev/null || echo "(none)"
  done
}

finish() {
  local rc=$?
  if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
    show_logs
    [ "$failed" -gt 0 ] || fail "scripts/test-vagrant.sh stopped (exit status $rc)"
  fi
  cleanup
  echo "(took $((SECONDS - started)) s)"
  echo "vagrant: $passed passed, $failed failed"
  if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then exit 1; fi
  exit 0
}

# A check that failed so that the ones after it cannot be judged: stop here.
give_up() {
  fail "$@"
  exit 1
}

cleanup
trap finish EXIT

# --- (a) vagrant validate -p ---------------------------------------------------------------
# Vagrant keeps machine data in .vagrant/ next to the Vagrantfile; not in the repository here.
export VAGRANT_DOTFILE_PATH=$RUN/vagrant-dotfile
mkdir -p "$RUN"
if out=$(vagrant validate -p 2>&1); then
  pass "vagrant validate -p (Vagrant $(vagrant --version | awk '{ print $2 }'))"
else
  fail "vagrant validate -p:"
  indent <<<"$out"
fi
broken=$RUN/broken-vagrantfile
mkdir -p "$broken/packaging"
cp -a packaging/vagrant "$broken/packaging/"
sed 's/node\.vm\.hostname = name/node.vm.hostnme = name/' Vagrantfile >"$broken/Vagrantfile"
if grep -q hostnme "$broken/Vagrantfile" &&
  out=$(cd "$broken" && vagrant validate -p 2>&1; echo "rc=$?") &&
  ! grep -qx 'rc=0' <<<"$out" && grep -q 'hostnme' <<<"$out"; then
  pass "vagrant validate -p refuses a misspelled setting (vm.hostnme)"
else
  fail "vagrant validate -p accepted a Vagrantfile with vm.hostnme:"
  indent <<<"$out"
fi
unset VAGRANT_DOTFILE_PATH

# --- the Debian root with the .deb installed ---------------------------------------------
deb=$(find target/debian -maxdepth 1 -name 'pgquorum_*_amd64.deb' 2>/dev/null | sort -V | tail -n 1)
if [ -z "$deb" ]; then
  echo "no target/debian/pgquorum_*_amd64.deb: building the packages (scripts/packages.sh)"
  bash scripts/packages.sh
  deb=$(find target/debian -maxdepth 1 -name 'pgquorum_*_amd64.deb' | sort -V | tail -n 1)
  [ -n "$deb" ] || give_up "scripts/packages.sh made no target/debian/pgquorum_*_amd64.deb"
fi
# One copy of it for the whole run (a rebuild of the .deb meanwhile cannot change it halfway).
cp "$deb" "$RUN/"
deb=$RUN/$(basename "$deb")
dpkg-deb --info "$deb" >/dev/null || give_up "$deb is not a whole .deb (being rebuilt?)"
# The root is rebuilt when the .deb or the script that makes it changes.
want="$(sha256sum "$deb" scripts/debian-root.sh | awk '{ print $1 }' | tr '\n' ' ')"
if [ "$(cat "$LOWER.stamp" 2>/dev/null)" != "$want" ]; then
  echo "making the Debian 12 root with $(basename "$deb") (scripts/debian-root.sh $LOWER)"
  rm -f "$LOWER.stamp"
  if [ -e "$LOWER" ]; then
    findmnt -rn -o TARGET | awk -v r="$LOWER/" 'index($0, r) == 1' | grep -q . &&
      give_up "mounts under $LOWER; unmount them first"
    rm -rf --one-file-system "$LOWER"
  fi
  bash scripts/debian-root.sh "$LOWER" "$deb" || give_up "scripts/debian-root.sh $LOWER $deb"
  echo "$want" >"$LOWER.stamp"
fi
[ ! -e "$LOWER/run/systemd/system" ] ||
  give_up "$LOWER/run/systemd/system exists: provision.sh would take the root for a booted system"

# --- hosts -------------------------------------------------------------------------------
ip link add "$PFX-br" type bridge
ip link set "$PFX-br" up

# make_host NAME: its namespace on the bridge, and its root (overlay, /proc, /dev).
make_host() {
  local h=$1 ns=$PFX-$1 dir=$RUN/$1
  ip netns add "$ns"
  ip link add "$ns" type veth peer name eth1 netns "$ns"
  ip link set "$ns" master "$PFX-br"
  ip link set "$ns" up
  ip -n "$ns" addr add "${IP[$h]}/$PREFIX" dev eth1
  ip -n "$ns" link set eth1 up
  ip -n "$ns" link set lo up
  mkdir -p "$dir/upper" "$dir/work" "$dir/root"
  mount -t overlay overlay \
    -o "lowerdir=$LOWER,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
  mount -t proc proc "$dir/root/proc"
  # PostgreSQL needs /dev/null, /dev/urandom and /dev/shm. rslave: an unmount here never
  # propagates back to the real /dev.
  mount --rbind /dev "$dir/root/dev"
  mount --make-rslave "$dir/root/dev"
}

# in_host NAME CMD...: CMD inside host NAME, with a clean environment.
in_host() {
  local h=$1
  shift
  ip netns exec "$PFX-$h" chroot "$RUN/$h/root" \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# The project directory as the host would rsync it: the Vagrantfile, packaging/vagrant/ and
# the .deb.
mkdir -p "$PROJECT/packaging" "$PROJECT/target/debian"
cp Vagrantfile "$PROJECT/"
cp -a packaging/vagrant "$PROJECT/packaging/"
cp "$deb" "$PROJECT/target/debian/"

# Runs the Vagrantfile's own Ruby triggers of `vagrant up` (ARGV: project dir, machine, before
# or after, --, the command prefix that runs a shell command in that machine), with a stand-in
# machine: its communicator runs commands inside our host instead of over SSH.
cat >"$RUN/triggers.rb" <<'RUBY'
require "vagrant"
require "open3"
require "timeout"
require "tmpdir"

dir, name, stage, _sep, *prefix = ARGV
Dir.mktmpdir("pgqv-vagrant-") do |data|
  env = Vagrant::Environment.new(cwd: dir, local_data_path: data)
  config = env.vagrantfile.machine_config(name.to_sym, nil, nil)[:config]
  all = stage == "before" ? config.trigger.before_triggers : config.trigger.after_triggers
  triggers = all.select { |t| t.command == :up && t.ruby_block }
  communicator = Object.new
  communicator.define_singleton_method(:sudo) do |command, opts = {}, &block|
    out, status = Open3.capture2(*prefix, "sh", "-c", command)
    block&.call(:stdout, out) unless out.empty?
    if !status.success? && opts.fetch(:error_check, true)
      raise "#{command}: exit status #{status.exitstatus}"
    end
    status.exitstatus
  end
  ui = Object.new
  %i[info warn error].each { |l| ui.define_singleton_method(l) { |m| puts "#{name}: #{m}" } }
  state = Struct.new(:id).new(:not_created)
  machine = Struct.new(:name, :communicate, :ui, :state)
                  .new(name.to_sym, communicator, ui, state)
  Timeout.timeout(60) do
    triggers.each do |t|
      puts "trigger #{stage} up on #{name}: #{t.name}"
      t.ruby_block.call(env, machine)
    end
  end
end
RUBY
run_triggers() { # NAME before|after
  (cd "$RUN" && ruby "$RUN/triggers.rb" "$PROJECT" "$1" "$2" -- \
    ip netns exec "$PFX-$1" chroot "$RUN/$1/root") 2>&1 | indent
}

# vagrant_up NAME: what `vagrant up NAME` does: the triggers before it, boot (make the host),
# sync /vagrant (its own copy of the project directory), the provisioner with the
# Vagrantfile's environment, the triggers after it.
vagrant_up() {
  local h=$1
  echo "--- vagrant up $h"
  run_triggers "$h" before || return 1
  make_host "$h"
  mkdir -p "$RUN/$h/vagrant" "$RUN/$h/root/vagrant"
  cp -a "$PROJECT/." "$RUN/$h/vagrant/"
  mount --bind "$RUN/$h/vagrant" "$RUN/$h/root/vagrant"
  echo "    provisioning: packaging/vagrant/provision.sh in netns $PFX-$h"
  provision "$h" | indent || return 1
  run_triggers "$h" after
}
# provision NAME: the Vagrantfile's shell provisioner: provision.sh with its environment.
provision() {
  in_host "$1" NODE_NAME="$1" NODE_IP="${IP[$1]}" FIRST_IP="$FIRST_IP" VIP="$VIP" \
    PREFIX="$PREFIX" CLUSTER_SIZE="${#NODES[@]}" \
    bash /vagrant/packaging/vagrant/provision.sh 2>&1
}

for h in "${NODES[@]}"; do
  if vagrant_up "$h"; then
    pass "vagrant up $h: provisioned ($([ "$h" = pg1 ] && echo "pgquorum init" ||
      echo "pgquorum node join $FIRST_IP:7400"), service started)"
  else
    give_up "vagrant up $h: provision.sh or a trigger failed"
  fi
  if [ "$h" = pg1 ]; then
    guest_mode=$(stat -c %a "$RUN/pg1/vagrant/.vagrant-demo/join-token" 2>/dev/null || echo missing)
    host_token=$PROJECT/.vagrant-demo/join-token
    host_mode=$(stat -c %a "$host_token" 2>/dev/null || echo missing)
    if [ "$guest_mode" = 600 ] && [ "$host_mode" = 600 ] && grep -q '^pgq1\.' "$host_token"; then
      pass "pg1's join token: /vagrant/.vagrant-demo/join-token (0600) in pg1, copied by the Vagrantfile's trigger to the project's .vagrant-demo/ (0600)"
    else
      give_up "pg1's join token: guest file mode $guest_mode, host copy mode $host_mode"
    fi
  fi
done

# --- the cluster -------------------------------------------------------------------------
# poll SECONDS CMD...: runs CMD until it succeeds, for at most SECONDS.
poll() {
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$until" ] || return 1
    sleep 0.5
  done
}

# The cluster as host $1 sees it, in $report.
report=
cluster_formed() {
  report=$(in_host "$1" pgquorum list --json 2>/dev/null) || return 1
  jq -e '
    (.members | length) == 3
    and ([.members[] | select(.raft_role == "leader" or .raft_role == "voter")] | length) == 3
    and ([.members[] | select(.lease_holder and .role == "Leader" and .state == "running")]
         | length) == 1
    and ([.members[] | select((.lease_holder | not) and .state == "streaming")] | length) == 2
  ' <<<"$report" >/dev/null
}
primary=
for h in "${NODES[@]}"; do
  if poll "$DEADLINE_SECONDS" cluster_formed "$h"; then
    p=$(jq -r '.members[] | select(.lease_holder) | .name' <<<"$report")
    if [ -z "$primary" ] || [ "$p" = "$primary" ]; then
      primary=$p
      pass "pgquorum list --json on $h: 3 voters, Leader $p running, 2 replicas streaming"
      continue
    fi
    fail "pgquorum list --json on $h: Leader $p, but ${NODES[0]} saw $primary"
  else
    fail "pgquorum list --json on $h after ${DEADLINE_SECONDS} s:"
    indent <<<"${report:-(no answer)}"
  fi
  [ -n "$primary" ] || give_up "no primary: the checks below need one"
done
[ -n "$primary" ] || give_up "no primary"

# The hosts whose eth1 carries the VIP, as "pg1 pg3".
vip_holders() {
  local h
  for h in "${NODES[@]}"; do
    ip -n "$PFX-$h" -o addr show dev eth1 | grep -qF "inet $VIP/$PREFIX " && printf '%s ' "$h"
  done
}
vip_on_primary_only() { [ "$(vip_holders)" = "$primary " ]; }
if poll "$DEADLINE_SECONDS" vip_on_primary_only; then
  pass "VIP $VIP/$PREFIX is on $primary's eth1 and on no other host (ip -n <ns> -o addr show)"
else
  fail "VIP $VIP/$PREFIX on: '$(vip_holders)', expected only $primary"
fi
table=$(in_host "$primary" pgquorum list 2>&1 || true)
if grep -qF "VIP $VIP/$PREFIX: on $primary" <<<"$table"; then
  pass "pgquorum list says: VIP $VIP/$PREFIX: on $primary"
else
  fail "pgquorum list does not say 'VIP $VIP/$PREFIX: on $primary':"
  indent <<<"$table"
fi

# The daemon as the unit runs it (pgquorum), PostgreSQL as postgres, and the daemon's secrets
# out of reach of PostgreSQL's superuser: pg_read_file and COPY ... TO PROGRAM are refused on
# each of them, while both read the daemon's node.json (so the refusal is the file's).
superuser_sql() { in_host "$1" runuser -u postgres -- psql -h /var/lib/pgquorum/run -d postgres -XqAt -v ON_ERROR_STOP=1 -c "$2" 2>&1; }
for h in "${NODES[@]}"; do
  # Owners as the host's own /etc/passwd names them (the chroot's, not ours).
  daemon=$(for pid in $(ip netns pids "$PFX-$h"); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pgquorum ]; then in_host "$h" stat -c %U "/proc/$pid" || true; fi
  done | sort -u | tr '\n' ' ')
  postmaster=$(in_host "$h" sh -c 'stat -c %U "/proc/$(head -n 1 /var/lib/pgquorum/pgdata/postmaster.pid)"' 2>&1 || true)
  refused=()
  for secret in ca.key node.key admin.token replication.password rewind.password; do
    f=/var/lib/pgquorum/$secret
    superuser_sql "$h" "select pg_read_file('$f')" >/dev/null && refused+=("pg_read_file read $secret")
    superuser_sql "$h" "copy (select 1) to program 'cat >/dev/null; cat $f >/dev/null'" >/dev/null && refused+=("cat read $secret")
  done
  superuser_sql "$h" "select length(pg_read_file('/var/lib/pgquorum/node.json'))" >/dev/null || refused+=("pg_read_file cannot read node.json")
  superuser_sql "$h" "copy (select 1) to program 'cat >/dev/null; cat /var/lib/pgquorum/node.json >/dev/null'" >/dev/null || refused+=("cat cannot read node.json")
  if [ "$daemon" = "pgquorum " ] && [ "$postmaster" = postgres ] && [ ${#refused[@]} -eq 0 ]; then
    pass "$h: daemon runs as pgquorum, PostgreSQL as postgres; its superuser reads none of the 5 secrets (pg_read_file, COPY TO PROGRAM cat)"
  else
    fail "$h: daemon as '$daemon', postmaster as '$postmaster'; ${refused[*]:-}"
  fi
done

# Replication over TLS from the cluster CA: both walsenders on the primary are encrypted.
tls_walsenders() {
  superuser_sql "$primary" "select count(*) filter (where s.ssl) || '/' || count(*) from pg_stat_replication r join pg_stat_ssl s using (pid) where r.application_name like 'pgquorum\\_%'"
}
both_over_tls() { [ "$(tls_walsenders)" = 2/2 ]; }
if poll "$DEADLINE_SECONDS" both_over_tls; then
  pass "$primary: both replicas stream over TLS (pg_stat_ssl of every walsender)"
else
  fail "$primary: walsenders over TLS / all: $(tls_walsenders)"
fi

# `vagrant provision` again (pg1 ran init, pg2 joined): nothing is set up twice.
for h in pg1 pg2; do
  if out=$(provision "$h") && grep -q "4/6 already set up" <<<"$out" &&
    grep -q "pgquorum already runs" <<<"$out" && poll "$DEADLINE_SECONDS" cluster_formed "$h" &&
    [ "$(jq -r '.members[] | select(.lease_holder) | .name' <<<"$report")" = "$primary" ]; then
    pass "vagrant provision $h again: already set up, daemon left running, cluster unchanged"
  else
    fail "vagrant provision $h again:"
    indent <<<"$out"
  fi
done

# --- a client on the LAN -----------------------------------------------------------------
# The password role, on the primary through its local socket, as the demo's guide says.
if in_host "$primary" runuser -u postgres -- psql -h /var/lib/pgquorum/run -d postgres \
  -v ON_ERROR_STOP=1 -qAtc "CREATE ROLE demo LOGIN CREATEDB PASSWORD 'demo'"; then
  pass "CREATE ROLE demo on $primary through /var/lib/pgquorum/run"
else
  give_up "CREATE ROLE demo on $primary"
fi
make_host cl
answer=
# client_sees HOST PORT WANT: psql from the client host answers pg_is_in_recovery() = WANT.
client_sees() {
  answer=$(in_host cl PGPASSWORD=demo PGCONNECT_TIMEOUT=3 psql \
    "host=$1 port=$2 user=demo dbname=postgres" -qAtc 'SELECT pg_is_in_recovery()' 2>&1) &&
    [ "$answer" = "$3" ]
}
replica=
for h in "${NODES[@]}"; do [ "$h" = "$primary" ] || { replica=$h; break; }; done
for target in "$VIP 5432 f VIP:5432 (PostgreSQL on the VIP)" \
  "$VIP 5000 f VIP:5000 (the writer proxy on the VIP)" \
  "${IP[$replica]} 5000 f $replica:5000 (the writer proxy of a replica's host)" \
  "${IP[$replica]} 5001 t $replica:5001 (the reader proxy)"; do
  read -r addr port want what <<<"$target"
  if poll "$DEADLINE_SECONDS" client_sees "$addr" "$port" "$want"; then
    pass "client $NET.200 -> $what: pg_is_in_recovery() = $want"
  else
    fail "client $NET.200 -> $what: wanted pg_is_in_recovery() = $want, got: $answer"
  fi
done
