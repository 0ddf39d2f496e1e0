//! Role-change hooks on real PostgreSQL: `pre_promote` can veto a promotion (another member
//! is promoted instead) and `on_role_change` is told each member's new role.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pg::{replicas_streaming, writable};
use common::{eventually, require_postgres, TestCluster};

/// Formation, initdb and two base backups.
const FORMATION: Duration = Duration::from_secs(60);
/// From a lost primary, through one refused promotion, to a writable new one.
const FAILOVER: Duration = Duration::from_secs(30);

/// Lines of `file` (empty when it does not exist yet).
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_refusing_pre_promote_hook_hands_the_promotion_to_another_member() {
    if !require_postgres() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir for the hooks");
    let calls = dir.path().join("pre_promote.calls");
    let roles = dir.path().join("on_role_change.calls");
    // The first member asked to promote is refused (the directory is created once,
    // atomically), every later one allowed; both hooks record their arguments.
    let pre_promote = dir.path().join("pre_promote.sh");
    std::fs::write(
        &pre_promote,
        format!(
            "echo \"$*\" >> {calls}\nmkdir {dir}/refused 2>/dev/null && {{ echo refusing >&2; \
             exit 1; }}\nexit 0\n",
            calls = calls.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let on_role_change = dir.path().join("on_role_change.sh");
    std::fs::write(
        &on_role_change,
        format!("echo \"$*\" >> {}\n", roles.display()),
    )
    .unwrap();
    let hooks = format!(
        "[hooks]\npre_promote = \"sh {}\"\non_role_change = \"sh {}\"\ntimeout = \"10s\"\n",
        pre_promote.display(),
        on_role_change.display()
    );
    let mut cluster = TestCluster::start_with_postgres_tagged(3, &[1, 2, 3], &hooks);
    let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "replicas stream", || {
        replicas_streaming(&cluster, primary)
    });
    // Bootstrap is no promotion: pre_promote has not run; on_role_change said "primary".
    assert!(lines(&calls).is_empty(), "{:?}", lines(&calls));
    let first = format!("primary n{primary} ");
    eventually(FORMATION, "on_role_change told the primary", || {
        let seen = lines(&roles);
        if seen.iter().any(|l| l.starts_with(&first)) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });

    cluster.node_mut(primary).kill();
    let promoted = eventually(FAILOVER, "another member is promoted", || {
        writable(&cluster)
    });
    let asked = lines(&calls);
    assert_eq!(
        asked.len(),
        2,
        "pre_promote ran for the refused member, then for the promoted one: {asked:?}"
    );
    let member_of = |line: &str| {
        line.split(' ')
            .nth(1)
            .and_then(|n| n.strip_prefix('n'))
            .and_then(|i| i.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("pre_promote arguments {line:?}"))
    };
    let refused = member_of(&asked[0]);
    assert_ne!(refused, primary, "{asked:?}");
    assert_eq!(member_of(&asked[1]), promoted, "{asked:?}");
    assert_ne!(refused, promoted, "the refused member must not be promoted");
    assert!(
        asked.iter().all(|l| l.starts_with("primary n")),
        "role, member, epoch, VIP: {asked:?}"
    );
    assert_eq!(
        cluster
            .node(refused)
            .sql("select pg_is_in_recovery()")
            .as_deref(),
        Ok("t"),
        "n{refused} stays a replica"
    );
    let log = cluster.node(refused).log();
    assert!(
        log.contains("the pre_promote hook refused promotion"),
        "n{refused} says why it released the lease:\n{log}"
    );
    let promoted_line = format!("primary n{promoted} ");
    eventually(FAILOVER, "on_role_change told the new primary", || {
        let seen = lines(&roles);
        if seen.iter().any(|l| l.starts_with(&promoted_line)) {
            Ok(seen)
        } else {
            Err(format!("{seen:?}"))
        }
    });
}
