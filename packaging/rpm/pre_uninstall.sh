# pgquorum %preun. $1: 0 when the package is erased, 1 or more on upgrade.
# On erase: stop the daemon (it removes the VIP, stops PostgreSQL and releases the lease)
# and disable the unit. An upgrade leaves the running daemon alone.
if [ "$1" -eq 0 ]; then
    systemctl disable --now pgquorum.service >/dev/null 2>&1 || :
fi
exit 0
