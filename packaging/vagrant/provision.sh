#!/usr/bin/env bash
# Provisions one host of the three-VM Vagrant demo (see the Vagrantfile at the repository's
# root): the pgquorum .deb from the synced folder, /etc/pgquorum/pgquorum.toml from the
# environment, `pgquorum init` on the first host or `pgquorum node join` on the others, then
# the service. Safe to run again (`vagrant provision`): every step checks before it acts.
#
# Environment (set by the Vagrantfile; scripts/test-vagrant.sh sets the same variables):
#   NODE_NAME     this member's name            pg1
#   NODE_IP       its private-network address   192.168.56.11
#   FIRST_IP      the first member's address    192.168.56.11 (this host runs init)
#   VIP           the floating address          192.168.56.10
#   PREFIX        the private network's prefix  24
#   CLUSTER_SIZE  members of the finished demo  3 (the member that sees them all prints
#                 how to use the cluster)
#   WAIT_SECONDS  how long to wait for the join token, the first member and this member's
#                 PostgreSQL (default 600)
#
# The join token travels through the synced folder, as .vagrant-demo/join-token: the first
# host writes it into /vagrant, the Vagrantfile's trigger copies it to the host (an rsync
# synced folder only goes host -> guest), and the next hosts' `vagrant up` syncs it to them.
set -euo pipefail

: "${NODE_NAME:?NODE_NAME is not set (the Vagrantfile sets it)}"
: "${NODE_IP:?NODE_IP is not set}"
: "${FIRST_IP:?FIRST_IP is not set}"
: "${VIP:?VIP is not set}"
PREFIX=${PREFIX:-24}
CLUSTER_SIZE=${CLUSTER_SIZE:-3}
WAIT_SECONDS=${WAIT_SECONDS:-600}

SYNCED=/vagrant
TOKEN_FILE=$SYNCED/.vagrant-demo/join-token
CONFIG=/etc/pgquorum/pgquorum.toml
STATE_DIR=/var/lib/pgquorum
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

step() { echo "==> [$NODE_NAME] $*"; }
fail() {
    echo "==> [$NODE_NAME] FAILED: $*" >&2
    exit 1
}
deadline=$((SECONDS + WAIT_SECONDS))

# Whether host:port accepts a TCP connection now.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# "<role>|<state>" of member $1 in `pgquorum list`'s table (empty when it is not listed).
member_row() {
    pgquorum list --config "$CONFIG" 2>/dev/null |
        awk -F'|' -v m="$1" '{ gsub(/ /, "", $2) } $2 == m { gsub(/^ +| +$/, "", $4); gsub(/ /, "", $5); print $4 "|" $5; exit }'
}

step "1/6 no Debian 'main' PostgreSQL cluster on port 5432 (createcluster.d, before PostgreSQL is installed)"
# The package ships the same setting (50-pgquorum.conf), but apt installs PostgreSQL, one of
# its dependencies, before it; this file is there first.
mkdir -p /etc/postgresql-common/createcluster.d
cc=/etc/postgresql-common/createcluster.d/40-pgquorum-vagrant.conf
if [ "$(cat "$cc" 2>/dev/null)" != "create_main_cluster = false" ]; then
    echo "create_main_cluster = false" >"$cc"
fi

step "2/6 the pgquorum package from $SYNCED/target/debian"
deb=$(find "$SYNCED/target/debian" -maxdepth 1 -name 'pgquorum_*_amd64.deb' 2>/dev/null | sort -V | tail -n 1)
[ -n "$deb" ] || fail "no $SYNCED/target/debian/pgquorum_*_amd64.deb: build it on the host first (bash scripts/packages.sh), then \`vagrant rsync && vagrant provision\`"
version=$(dpkg-deb --field "$deb" Version)
if [ "$(dpkg-query --show --showformat '${Version} ${db:Status-Status}' pgquorum 2>/dev/null)" = "$version installed" ]; then
    echo "pgquorum $version is installed"
else
    apt_install() {
        apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$deb"
    }
    # apt resolves the Depends (PostgreSQL) from the box's mirror; refresh its lists only
    # when there are none or when they turn out to be stale.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        apt-get update
    fi
    apt_install || { apt-get update && apt_install; }
fi

step "3/6 $CONFIG for $NODE_NAME ($NODE_IP, VIP $VIP/$PREFIX)"
new_config=$(
    cat <<TOML
# Written by packaging/vagrant/provision.sh (the Vagrant demo); provisioning rewrites it.
[node]
name = "$NODE_NAME"
state_dir = "$STATE_DIR"

[peer]
listen = "0.0.0.0:7400"
advertise = "$NODE_IP:7400"

[api]
listen = "0.0.0.0:8008"
advertise = "$NODE_IP:8008"

[postgresql]
# On every address, so that the VIP reaches it too; replicas use the advertised one.
listen = "0.0.0.0:5432"
advertise = "$NODE_IP:5432"

[proxy]
writer_listen = "0.0.0.0:5000"
reader_listen = "0.0.0.0:5001"

[vip]
# No interface: the one with an address in $VIP/$PREFIX (the private network, not the NAT).
address = "$VIP/$PREFIX"
TOML
)
config_changed=no
if [ "$(cat "$CONFIG" 2>/dev/null)" != "$new_config" ]; then
    printf '%s\n' "$new_config" >"$CONFIG.new"
    chmod 0644 "$CONFIG.new"
    mv "$CONFIG.new" "$CONFIG"
    config_changed=yes
fi
pgquorum config check --config "$CONFIG"

if [ -e "$STATE_DIR/node.json" ]; then
    step "4/6 already set up: $(pgquorum --version), state in $STATE_DIR"
elif [ "$NODE_IP" = "$FIRST_IP" ]; then
    step "4/6 pgquorum init (first member), join token -> $TOKEN_FILE"
    out=$(pgquorum init --config "$CONFIG" --token-uses $((CLUSTER_SIZE - 1)))
    token=$(grep -m1 '^pgq1\.' <<<"$out") || fail "no join token in the output of pgquorum init"
    # The rest of init's output, without the secret.
    while IFS= read -r line; do
        [[ $line == pgq1.* ]] && line="    (written to $TOKEN_FILE)"
        printf '%s\n' "$line"
    done <<<"$out"
    mkdir -p "$(dirname "$TOKEN_FILE")"
    (umask 077 && printf '%s\n' "$token" >"$TOKEN_FILE")
else
    step "4/6 pgquorum node join $FIRST_IP:7400"
    echo "waiting up to $((deadline - SECONDS)) s for $TOKEN_FILE (written by the first member's provisioning, copied to the host by the Vagrantfile's trigger and synced here at vagrant up)"
    until [ -s "$TOKEN_FILE" ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "no $TOKEN_FILE: provision the first member first (vagrant up pg1), then \`vagrant rsync $NODE_NAME && vagrant provision $NODE_NAME\`"
        sleep 2
    done
    echo "waiting up to $((deadline - SECONDS)) s for the first member's peer port $FIRST_IP:7400"
    until port_open "$FIRST_IP" 7400; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$FIRST_IP:7400 does not answer: is pgquorum running on the first member?"
        sleep 2
    done
    # The token through the environment, not the command line (ps shows command lines).
    # A refused join leaves nothing behind, so it may be retried.
    for attempt in 1 2 3; do
        if PGQUORUM_JOIN_TOKEN=$(cat "$TOKEN_FILE") pgquorum node join --config "$CONFIG" "$FIRST_IP:7400"; then
            break
        fi
        [ "$attempt" -lt 3 ] || fail "pgquorum node join failed three times (see above)"
        sleep 5
    done
fi

step "5/6 the pgquorum service"
if [ -d /run/systemd/system ]; then
    systemctl enable pgquorum
    if [ "$config_changed" = yes ] && systemctl --quiet is-active pgquorum; then
        systemctl restart pgquorum
    fi
    # Type=notify: this returns once the daemon serves (or has failed).
    systemctl start pgquorum || {
        journalctl -u pgquorum -n 40 --no-pager || true
        fail "systemctl start pgquorum failed"
    }
else
    # No systemd (a chroot: scripts/test-vagrant.sh): start the daemon as the unit would, as
    # its User= with its AmbientCapabilities=, read from the installed unit itself, logging
    # to a file.
    unit=$(ls /usr/lib/systemd/system/pgquorum.service /lib/systemd/system/pgquorum.service 2>/dev/null | head -n 1)
    [ -n "$unit" ] || fail "the package installed no pgquorum.service"
    user=$(sed -n 's/^User=//p' "$unit")
    caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
    if port_open 127.0.0.1 8008; then
        echo "pgquorum already runs (port 8008 answers)"
    else
        echo "no systemd here: starting pgquorum run as $user ($caps), log in /var/log/pgquorum.log"
        setsid -f setpriv --reuid "$user" --regid "$user" --init-groups \
            --inh-caps "$caps" --ambient-caps "$caps" \
            /usr/bin/pgquorum run --config "$CONFIG" >>/var/log/pgquorum.log 2>&1 </dev/null
    fi
fi

step "6/6 waiting up to $((deadline - SECONDS)) s for $NODE_NAME's PostgreSQL (primary running, or replica streaming)"
row=
until [[ $row == Leader\|running || $row == *\|streaming ]]; do
    [ "$SECONDS" -lt "$deadline" ] || {
        pgquorum list --config "$CONFIG" || true
        fail "$NODE_NAME's PostgreSQL is not up (last seen: '${row:-not listed}'); see journalctl -u pgquorum or /var/log/pgquorum.log"
    }
    sleep 1
    row=$(member_row "$NODE_NAME")
done
pgquorum list --config "$CONFIG"

if [ -e "$TOKEN_FILE" ] || [ "$NODE_IP" != "$FIRST_IP" ]; then
    :
else
    # The first member set up by an earlier run whose token file is gone: a fresh one.
    (umask 077 && pgquorum token create --config "$CONFIG" --uses $((CLUSTER_SIZE - 1)) | grep -m1 '^pgq1\.' >"$TOKEN_FILE")
    echo "a new join token is in $TOKEN_FILE"
fi

json=$(pgquorum list --config "$CONFIG" --json)
members=$(grep -c '"peer_addr"' <<<"$json" || true)
if [ "$members" -ge "$CLUSTER_SIZE" ]; then
    primary=$(pgquorum list --config "$CONFIG" | awk -F'|' '$4 ~ /^ *Leader *$/ { gsub(/ /, "", $2); print $2; exit }')
    primary=${primary:-<the Leader in pgquorum list>}
    cat <<GUIDE

==> The demo cluster is up: $members members, primary $primary, VIP $VIP.

  See it (on any member):
      vagrant ssh $NODE_NAME -c 'pgquorum list'

  A role with a password (pg_hba.conf trusts only the local socket; TCP needs SCRAM),
  created on the primary through its socket; not a superuser (a superuser on TCP is one
  password away from running programs as postgres):
      vagrant ssh $primary -c "sudo -u postgres psql -h $STATE_DIR/run -c \"CREATE ROLE demo LOGIN CREATEDB PASSWORD 'demo'\""

  Connect through the VIP, to PostgreSQL itself or to the writer proxy on it (from the host
  if it has psql, or from any VM: vagrant ssh $NODE_NAME -c "PGPASSWORD=demo psql ..."):
      PGPASSWORD=demo psql -h $VIP -U demo -d postgres -c 'SELECT pg_is_in_recovery()'   # f
      PGPASSWORD=demo psql -h $VIP -p 5000 -U demo -d postgres
  Or through the proxy of any member: port 5000 reaches the primary, 5001 a replica:
      PGPASSWORD=demo psql -h $NODE_IP -p 5000 -U demo -d postgres -c 'SELECT pg_is_in_recovery()'   # f
      PGPASSWORD=demo psql -h $NODE_IP -p 5001 -U demo -d postgres -c 'SELECT pg_is_in_recovery()'   # t

  Fail over, and watch the VIP and the writer port follow the new primary:
      vagrant halt $primary                                # unplanned: the primary is gone
      vagrant ssh $NODE_NAME -c 'watch -n1 pgquorum list'   # (pick a member that is up)
      vagrant ssh $primary -c 'sudo pgquorum switchover'   # planned: to the best replica
      vagrant up $primary                                  # it rejoins as a replica
GUIDE
fi
step "done"
