//! Which capability sets let a daemon that is not root run PostgreSQL as another user.

use crate::postgres::process::{privilege_from, Privilege, SWITCH_CAPABILITIES};

fn caps(names: &[&str]) -> u64 {
    let known = SWITCH_CAPABILITIES
        .iter()
        .map(|(cap, name)| (*name, *cap))
        .chain([("CAP_NET_ADMIN", 12), ("CAP_NET_RAW", 13)]);
    known
        .filter(|(name, _)| names.contains(name))
        .fold(0, |set, (_, cap)| set | 1 << cap)
}

#[test]
fn privilege_follows_the_capability_set() {
    let all = [
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_CHOWN",
        "CAP_FOWNER",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
    ];
    let unit: Vec<&str> = all
        .iter()
        .copied()
        .chain(["CAP_NET_ADMIN", "CAP_NET_RAW"])
        .collect();
    let cases: [(&str, u64, Privilege); 6] = [
        ("no capabilities", 0, Privilege::Unprivileged),
        (
            "the old unit: VIP capabilities only",
            caps(&["CAP_NET_ADMIN", "CAP_NET_RAW"]),
            Privilege::Unprivileged,
        ),
        ("the packaged unit", caps(&unit), Privilege::Capabilities),
        (
            "exactly the switch set",
            caps(&all),
            Privilege::Capabilities,
        ),
        (
            "CAP_SETUID alone",
            caps(&["CAP_SETUID"]),
            Privilege::Partial {
                missing: vec![
                    "CAP_SETGID",
                    "CAP_CHOWN",
                    "CAP_FOWNER",
                    "CAP_DAC_OVERRIDE",
                    "CAP_KILL",
                ],
            },
        ),
        (
            "a drop-in that removed CAP_KILL",
            caps(&all[..5]),
            Privilege::Partial {
                missing: vec!["CAP_KILL"],
            },
        ),
    ];
    for (case, set, expected) in cases {
        assert_eq!(privilege_from(set), expected, "{case}");
    }
}
