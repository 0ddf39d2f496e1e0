//! The floating VIP (DESIGN §3 and §5): an address present on exactly the member that holds
//! the lease and runs a healthy writable primary, added over netlink and announced so the
//! LAN's neighbour caches follow it, removed before PostgreSQL is demoted.
//!
//! ```text
//!   ha executor ── hold_until(lease deadline) ──► reconcile task ──► netlink: add/refresh, remove
//!              └── release().await (before demoting) ─┘     └──────► packet socket: announce
//! ```
//!
//! The HA executor is the only writer: after each committed renewal of a healthy primary it
//! asks for the address *until the lease deadline*, and before anything that makes this
//! member stop being a writable primary it releases it and waits for the removal. The task
//! removes the address by itself when the deadline passes without a new renewal, so a
//! stalled HA loop cannot keep it, and the kernel removes it when its lifetime (refreshed
//! with each renewal, see [`netlink`]) runs out, so a killed or stopped daemon cannot either.
//!
//! Modes: `netlink` (default when an address is set) does all of the above; `hook` only
//! passes the address to the role-change hooks (for clouds, where an L2 address cannot
//! move between subnets); `off` ignores it.

pub mod announce;
pub mod netlink;
pub mod socket;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use netlink::{Interface, Netlink};

/// How often the kernel is asked whether the address is as it should be (someone may have
/// removed or added it by hand).
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How soon a failed netlink call is tried again.
const RETRY: Duration = Duration::from_millis(500);
/// How long [`Vip::release`] waits for the removal before letting the demotion go on.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// A VIP error: which step, and the kernel's reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}")]
    NoInterface { what: String },
    #[error("{doing}: {message}")]
    Netlink { doing: String, message: String },
    #[error("{doing}: {source}")]
    Announce {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "[vip] mode = \"netlink\" needs {missing} to {why}, and this process lacks it; run as \
         root, or grant it (the packaged unit sets AmbientCapabilities=CAP_NET_ADMIN \
         CAP_NET_RAW), or set [vip] mode = \"hook\" to leave moving the address to a hook"
    )]
    Capability { missing: String, why: &'static str },
}

/// `[vip]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    /// The address with its prefix length, e.g. `"10.0.0.100/24"`.
    pub address: Option<String>,
    /// The interface; default: the one with an address in the VIP's subnet.
    pub interface: Option<String>,
    pub mode: Option<Mode>,
}

/// How the VIP is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// By this daemon, over netlink, announced with gratuitous ARP / unsolicited NA.
    Netlink,
    /// By the operator's role-change hooks, which are told the address.
    Hook,
    /// Not at all.
    Off,
}

/// The validated `[vip]` section: an address this member moves (or hands to hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub address: IpAddr,
    pub prefix: u8,
    /// `None`: found by subnet at start.
    pub interface: Option<String>,
    /// `Netlink` or `Hook` (`Off` is no config at all).
    pub mode: Mode,
}

impl fmt::Display for VipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl VipConfig {
    /// Validates `[vip]`; `Ok(None)` when there is no VIP (no address, or mode off). Errors
    /// name the key and the fix.
    pub fn from_section(section: &VipSection) -> Result<Option<VipConfig>, String> {
        let mode = section.mode;
        let Some(text) = section.address.as_deref() else {
            return match mode {
                Some(m @ (Mode::Netlink | Mode::Hook)) => Err(format!(
                    "[vip] mode = \"{}\" needs [vip] address, e.g. address = \"10.0.0.100/24\"",
                    if m == Mode::Netlink {
                        "netlink"
                    } else {
                        "hook"
                    }
                )),
                _ => Ok(None),
            };
        };
        if mode == Some(Mode::Off) {
            return Ok(None);
        }
        let (ip, prefix) = text.split_once('/').ok_or_else(|| {
            format!(
                "[vip] address = {text:?} needs a prefix length, the one of the interface's \
                 subnet, e.g. \"{text}/24\""
            )
        })?;
        let address: IpAddr = ip.trim().parse().map_err(|_| {
            format!("[vip] address = {text:?} is not an IP address with a prefix, e.g. \"10.0.0.100/24\"")
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| {
                format!("[vip] address = {text:?} has a prefix length out of range; use 0 to {max}")
            })?;
        if address.is_loopback() || address.is_unspecified() || address.is_multicast() {
            return Err(format!(
                "[vip] address = {text:?} is a loopback, unspecified or multicast address; a VIP \
                 is an unused unicast address of the hosts' LAN"
            ));
        }
        if let Some(name) = &section.interface {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(format!(
                    "[vip] interface = {name:?} is not an interface name (1 to 15 characters, \
                     as `ip link` shows them); remove it to pick the interface by subnet"
                ));
            }
        }
        Ok(Some(VipConfig {
            address,
            prefix,
            interface: section.interface.clone(),
            mode: mode.unwrap_or(Mode::Netlink),
        }))
    }
}

/// What the executor asks for: the address until an instant (the lease deadline), or not
/// at all. `seq` counts requests, so a release can wait for *its* removal.
#[derive(Debug, Clone, Copy)]
struct Want {
    seq: u64,
    until: Option<Instant>,
}

/// What the task has done: the last request it carried out and whether the address is on.
#[derive(Debug, Clone, Copy, Default)]
struct Applied {
    seq: u64,
    present: bool,
}

/// The handle the HA executor holds. Cheap to clone.
#[derive(Clone)]
pub struct Vip {
    config: VipConfig,
    want: watch::Sender<Want>,
    applied: watch::Receiver<Applied>,
}

/// A VIP ready to be managed: checked and cleaned up at start, before any port is bound.
pub struct Opened {
    config: VipConfig,
    netlink: Netlink,
    interface: Interface,
    announcer: socket::Announcer,
}

impl Opened {
    /// Checks the capabilities, finds the interface, opens the announcement socket, and
    /// removes a copy of the address left on this host by an earlier run (a crash): this
    /// member holds no renewed lease yet, and the first renewal as a primary adds it back.
    pub async fn open(config: &VipConfig) -> Result<Opened, Error> {
        let missing = netlink::missing_capabilities();
        if !missing.is_empty() {
            let why = match missing.as_slice() {
                ["CAP_NET_RAW"] => "announce the address (gratuitous ARP)",
                ["CAP_NET_ADMIN"] => "add and remove the address",
                _ => "add, remove and announce the address",
            };
            return Err(Error::Capability {
                missing: missing.join(" and "),
                why,
            });
        }
        let netlink = Netlink::connect()?;
        let interface = netlink
            .interface(config.interface.as_deref(), config.address)
            .await?;
        let announcer = socket::Announcer::open(&interface, config.address)?;
        if netlink.remove(&interface, config.address).await? {
            tracing::warn!(
                vip = %config,
                interface = %interface.name,
                "removed a VIP left on this host by an earlier run; it returns when this member \
                 is a primary with a renewed lease"
            );
        }
        Ok(Opened {
            config: config.clone(),
            netlink,
            interface,
            announcer,
        })
    }

    /// Starts the reconcile task; it removes the address and ends when `shutdown` is
    /// cancelled or every handle is dropped.
    pub fn spawn(self, shutdown: CancellationToken, tasks: &tokio_util::task::TaskTracker) -> Vip {
        let (want, want_rx) = watch::channel(Want {
            seq: 0,
            until: None,
        });
        let (applied_tx, applied) = watch::channel(Applied::default());
        let config = self.config.clone();
        tracing::info!(vip = %config, interface = %self.interface.name, "managing the VIP");
        tasks.spawn(reconcile(self, want_rx, applied_tx, shutdown));
        Vip {
            config,
            want,
            applied,
        }
    }
}

impl Vip {
    pub fn config(&self) -> &VipConfig {
        &self.config
    }

    /// Asks for the address until `deadline` (extending an earlier request). Does not wait.
    pub fn hold_until(&self, deadline: Instant) {
        self.want.send_modify(|w| {
            w.seq += 1;
            w.until = Some(deadline);
        });
    }

    /// Removes the address and waits until it is gone (at most [`RELEASE_WAIT`]; a failure
    /// is logged and the caller goes on: demoting PostgreSQL matters more). Returns at once
    /// when the address is not held and no request for it is pending.
    pub async fn release(&self) {
        let pending = self.want.borrow().until.is_some();
        if !pending && !self.applied.borrow().present {
            return;
        }
        let mut seq = 0;
        self.want.send_modify(|w| {
            w.seq += 1;
            w.until = None;
            seq = w.seq;
        });
        let mut applied = self.applied.clone();
        let removed = tokio::time::timeout(RELEASE_WAIT, async {
            applied
                .wait_for(|a| a.seq >= seq && !a.present)
                .await
                .is_ok()
        })
        .await;
        if removed != Ok(true) {
            tracing::error!(
                vip = %self.config,
                "the VIP was not removed within {RELEASE_WAIT:?}; going on without it"
            );
        }
    }

    /// Whether the address is on this host's interface (as the task last saw it).
    pub fn is_held(&self) -> bool {
        self.applied.borrow().present
    }
}

/// The gap before announcement number `sent + 1`: three frames 200 ms apart, three more
/// two seconds later (a switch port that was still learning), then one a minute while held
/// (caches with long timeouts that missed both bursts).
fn announce_gap(sent: u32) -> Duration {
    match sent {
        1 | 2 | 4 | 5 => Duration::from_millis(200),
        3 => Duration::from_millis(1600),
        _ => Duration::from_secs(60),
    }
}

/// The lifetime the kernel gives the address when asked for it until `until`: whole
/// seconds left, rounded down (at least one). It only matters when this process can no
/// longer act (killed, stopped, hung): then the kernel drops the address at about the
/// deadline (its expiry check runs up to a second late), not after it as rounding up would.
/// While renewals flow the lifetime is refreshed long before it runs out; should one be
/// late, the kernel drops the address a little early, the safe side, and the next renewal
/// puts it back.
fn lifetime(until: Instant, now: Instant) -> Duration {
    let left = until.saturating_duration_since(now);
    Duration::from_secs(left.as_secs()).max(Duration::from_secs(1))
}

/// The reconcile loop: makes the kernel match the latest request.
async fn reconcile(
    vip: Opened,
    mut want: watch::Receiver<Want>,
    applied: watch::Sender<Applied>,
    shutdown: CancellationToken,
) {
    let Opened {
        config,
        netlink,
        interface,
        announcer,
    } = vip;
    // Some(until): the address is on, and the kernel was last asked to keep it that long.
    let mut holding: Option<Instant> = None;
    let mut announced = 0u32;
    let mut announce_at: Option<Instant> = None;
    let mut retry_at: Option<Instant>;
    let mut check_at = Instant::now() + CHECK_EVERY;
    loop {
        let request = *want.borrow_and_update();
        let now = Instant::now();
        let wanted = request.until.filter(|until| *until > now);
        retry_at = None;
        match wanted {
            Some(until) if holding != Some(until) => {
                match netlink
                    .add(
                        &interface,
                        config.address,
                        config.prefix,
                        lifetime(until, now),
                    )
                    .await
                {
                    Ok(()) => {
                        if holding.is_none() {
                            tracing::info!(vip = %config, interface = %interface.name, "VIP added");
                            announced = 0;
                            announce_at = Some(Instant::now());
                        }
                        holding = Some(until);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "adding the VIP; retrying");
                        retry_at = Some(now + RETRY);
                    }
                }
            }
            None if holding.is_some() => match netlink.remove(&interface, config.address).await {
                Ok(_) => {
                    holding = None;
                    announce_at = None;
                    let why = if request.until.is_some() {
                        "the lease deadline passed without a renewal"
                    } else {
                        "released"
                    };
                    tracing::info!(vip = %config, why, "VIP removed");
                }
                Err(e) => {
                    tracing::error!(error = %e, "removing the VIP; retrying");
                    retry_at = Some(now + RETRY);
                }
            },
            _ => {}
        }
        applied.send_replace(Applied {
            seq: request.seq,
            present: holding.is_some(),
        });

        let now = Instant::now();
        if announce_at.is_some_and(|at| at <= now) {
            if let Err(e) = announcer.send() {
                tracing::warn!(error = %e, "announcing the VIP");
            }
            announced += 1;
            announce_at = Some(now + announce_gap(announced));
        }
        if check_at <= now {
            check_at = now + CHECK_EVERY;
            match netlink.is_present(&interface, config.address).await {
                Ok(present) if present != holding.is_some() => {
                    let what = if present {
                        "the VIP is on this host but should not be (added by hand?); removing it"
                    } else {
                        "the VIP is missing (removed by hand, or its kernel lifetime ran out \
                         before a late renewal); adding it back"
                    };
                    tracing::warn!(vip = %config, "{what}");
                    if present {
                        // Not ours to have: the next pass removes it.
                        holding = Some(now);
                    } else {
                        holding = None;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "checking the VIP"),
            }
        }

        let far = now + CHECK_EVERY;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = want.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(holding.unwrap_or(far)), if holding.is_some() => {}
            _ = tokio::time::sleep_until(announce_at.unwrap_or(far)), if announce_at.is_some() => {}
            _ = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {}
            _ = tokio::time::sleep_until(check_at) => {}
        }
    }
    if holding.is_some() {
        match netlink.remove(&interface, config.address).await {
            Ok(_) => tracing::info!(vip = %config, "VIP removed at shutdown"),
            Err(e) => tracing::error!(error = %e, "removing the VIP at shutdown"),
        }
    }
    applied.send_replace(Applied {
        seq: u64::MAX,
        present: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(address: Option<&str>, interface: Option<&str>, mode: Option<Mode>) -> VipSection {
        VipSection {
            address: address.map(str::to_string),
            interface: interface.map(str::to_string),
            mode,
        }
    }

    #[test]
    fn the_vip_section_is_validated_with_the_fix_in_the_message() {
        // (what, section, Ok(Some(display, mode)) / Ok(None) / Err(part of the message))
        type Case = (
            &'static str,
            VipSection,
            Result<Option<(&'static str, Mode)>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("no section", section(None, None, None), Ok(None)),
            (
                "off without address",
                section(None, None, Some(Mode::Off)),
                Ok(None),
            ),
            (
                "off with an address",
                section(Some("10.0.0.100/24"), None, Some(Mode::Off)),
                Ok(None),
            ),
            (
                "netlink is the default",
                section(Some("10.0.0.100/24"), Some("eth1"), None),
                Ok(Some(("10.0.0.100/24", Mode::Netlink))),
            ),
            (
                "hook mode",
                section(Some("10.0.0.100/24"), None, Some(Mode::Hook)),
                Ok(Some(("10.0.0.100/24", Mode::Hook))),
            ),
            (
                "IPv6",
                section(Some("fd00:77::100/64"), None, None),
                Ok(Some(("fd00:77::100/64", Mode::Netlink))),
            ),
            (
                "a mode needs an address",
                section(None, None, Some(Mode::Netlink)),
                Err("needs [vip] address"),
            ),
            (
                "a prefix is required",
                section(Some("10.0.0.100"), None, None),
                Err("needs a prefix length"),
            ),
            (
                "prefix in range",
                section(Some("10.0.0.100/33"), None, None),
                Err("use 0 to 32"),
            ),
            (
                "not an address",
                section(Some("vip.example/24"), None, None),
                Err("is not an IP address"),
            ),
            (
                "loopback refused",
                section(Some("127.0.0.2/8"), None, None),
                Err("loopback"),
            ),
            (
                "interface name too long",
                section(Some("10.0.0.100/24"), Some("averyveryverylongname"), None),
                Err("not an interface name"),
            ),
        ];
        for (what, section, want) in cases {
            let got = VipConfig::from_section(&section);
            match (got, want) {
                (Ok(None), Ok(None)) => {}
                (Ok(Some(config)), Ok(Some((display, mode)))) => {
                    assert_eq!(config.to_string(), display, "{what}");
                    assert_eq!(config.mode, mode, "{what}");
                }
                (Err(message), Err(part)) => {
                    assert!(message.contains(part), "{what}: {message}");
                    assert!(
                        message.starts_with("[vip]"),
                        "{what}: names the key: {message}"
                    );
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_kernel_lifetime_ends_by_the_deadline() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let cases = [
            ("1.5 s rounds down", ms(1500), 1),
            ("exactly 2 s", ms(2000), 2),
            ("a moment left is still the minimum second", ms(10), 1),
            ("already past: the minimum", Duration::ZERO, 1),
            ("a WAN lease", ms(7500), 7),
        ];
        for (what, left, want) in cases {
            let got = lifetime(now + left, now);
            assert_eq!(got, Duration::from_secs(want), "{what}");
            assert!(got <= left.max(Duration::from_secs(1)), "{what}");
        }
    }

    #[test]
    fn announcements_come_in_two_bursts_then_each_minute() {
        let mut at = Duration::ZERO;
        let mut times = vec![at];
        for sent in 1..=7 {
            at += announce_gap(sent);
            times.push(at);
        }
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            times,
            [
                ms(0),
                ms(200),
                ms(400),
                ms(2000),
                ms(2200),
                ms(2400),
                ms(62_400),
                ms(122_400)
            ]
        );
    }
}
