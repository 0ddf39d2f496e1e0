//! OS users and process credentials: how the packaged unit runs the daemon, and what a
//! running process is allowed to do.

use std::process::Command;
use std::sync::OnceLock;

/// The packaged unit, `packaging/systemd/pgquorum.service`.
fn unit() -> &'static str {
    static UNIT: OnceLock<String> = OnceLock::new();
    UNIT.get_or_init(|| {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/systemd/pgquorum.service"
        ))
        .expect("reading packaging/systemd/pgquorum.service")
    })
}

fn unit_setting(key: &str) -> String {
    unit()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the packaged unit has no {key}="))
        .trim()
        .to_string()
}

/// The unit's `User=`.
pub fn unit_user() -> String {
    unit_setting("User")
}

/// The unit's `AmbientCapabilities=`, as capability numbers' bits.
pub fn unit_capability_bits() -> u64 {
    unit_setting("AmbientCapabilities")
        .split_whitespace()
        .map(|name| match name {
            "CAP_CHOWN" => 0,
            "CAP_DAC_OVERRIDE" => 1,
            "CAP_FOWNER" => 3,
            "CAP_KILL" => 5,
            "CAP_SETGID" => 6,
            "CAP_SETUID" => 7,
            "CAP_NET_BIND_SERVICE" => 10,
            "CAP_NET_ADMIN" => 12,
            "CAP_NET_RAW" => 13,
            other => panic!("the unit grants {other}, which the harness does not know"),
        })
        .fold(0, |set, cap| set | 1u64 << cap)
}

/// The unit's `AmbientCapabilities=` in setpriv's form: `+net_admin,+setuid,...`.
pub fn unit_capabilities_for_setpriv() -> String {
    unit_setting("AmbientCapabilities")
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the unit's user when it is missing, as the packages do (a system user with a
/// group of its own, no login); returns its uid and gid. Needs root.
pub fn ensure_unit_user() -> (u32, u32) {
    // Once per test binary: two useradd at the same time fail on /etc/passwd's lock.
    static CREATED: OnceLock<(u32, u32)> = OnceLock::new();
    *CREATED.get_or_init(|| {
        let user = unit_user();
        if ids_of(&user).is_none() {
            let output = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
                .arg(&user)
                .output()
                .expect("running useradd");
            assert!(
                output.status.success(),
                "useradd {user}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        ids_of(&user).unwrap_or_else(|| panic!("no OS user {user} after useradd"))
    })
}

/// The uid and gid of OS user `name`, from `id`.
pub fn ids_of(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A capability set (`CapEff`, `CapAmb`, ...) of process `pid`.
pub fn capabilities_of(pid: u32, set: &str) -> Option<u64> {
    capabilities_in(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        set,
    )
}

/// A capability set (`CapEff`, ...) in the text of a `/proc/<pid>/status`.
pub fn capabilities_in(status: &str, set: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The effective uid of process `pid`.
pub fn uid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether the tests run as root; when not, a test that needs it must fail in CI.
pub fn require_root(what: &str) -> bool {
    super::needs(
        (uid_of(std::process::id()) == Some(0))
            .then_some(())
            .ok_or_else(|| format!("{what} needs root (CI runs as root)")),
    )
}
