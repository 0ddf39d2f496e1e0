//! Telling systemd how the daemon is doing (`Type=notify`, DESIGN §6): `READY=1` once the
//! node serves (ports bound, Raft started), a one-line `STATUS=`, `WATCHDOG=1` at half the
//! unit's `WatchdogSec` while the runtime is alive, and `STOPPING=1` at shutdown. Outside
//! systemd (no `NOTIFY_SOCKET`) every call does nothing.
//!
//! Children must not talk to systemd in our name: PostgreSQL built with systemd support
//! would announce its own readiness, so [`NOTIFY_SOCKET`] is removed from their environment
//! (the unit's `NotifyAccess=main` would ignore them anyway).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The variable through which systemd hands a service its notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `states`, logging (not failing) if systemd cannot be told.
fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os(NOTIFY_SOCKET).is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "telling systemd");
    }
}

/// The node serves: systemd may consider the unit started.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new one-line status for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the watchdog at half the unit's `WatchdogSec` until `shutdown`, if the unit has
/// one. The pings come from the daemon's own runtime, so a wedged runtime stops them and
/// systemd restarts the daemon (its PostgreSQL dies with it; the lease and the VIP expire
/// by themselves).
pub async fn watchdog(shutdown: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (timeout / 2).max(Duration::from_millis(100));
    tracing::info!(?timeout, "systemd watchdog on");
    loop {
        notify(&[NotifyState::Watchdog]);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
