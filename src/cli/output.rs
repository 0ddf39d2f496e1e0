//! Everything the CLI prints to standard output.
#![allow(clippy::print_stdout)]

use serde::Serialize;

use crate::api::{ClusterReport, MemberReport};
use crate::cluster::Tags;
use crate::config::NodeConfig;

pub fn line(text: &str) {
    println!("{text}");
}

pub fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

/// `value` as JSON with `--json`, else as `table` prints it.
pub fn json_or<T: Serialize>(json: bool, value: &T, table: impl FnOnce(&T)) {
    if json {
        self::json(value);
    } else {
        table(value);
    }
}

pub fn pools_table(report: &crate::pooler::pool::PoolsReport) {
    println!("{}", render_pools_table(report));
}

/// One row per pool, with PgBouncer's SHOW POOLS column names, under a line with the mode.
fn render_pools_table(report: &crate::pooler::pool::PoolsReport) -> String {
    let rows: Vec<[String; 9]> = (report.pools.iter())
        .map(|p| {
            [
                p.database.clone(),
                p.user.clone(),
                match p.side {
                    crate::pooler::pool::Side::Writer => "writer".into(),
                    crate::pooler::pool::Side::Reader => "reader".into(),
                },
                p.clients.saturating_sub(p.waiting).to_string(),
                p.waiting.to_string(),
                p.active.to_string(),
                p.idle.to_string(),
                p.logins.to_string(),
                format!("{:.3}", p.max_wait_ms as f64 / 1000.0),
            ]
        })
        .collect();
    let header = [
        "database",
        "user",
        "to",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_logins",
        "maxwait (s)",
    ];
    let mode = match report.mode {
        crate::pooler::pool::Mode::Session => "session",
        crate::pooler::pool::Mode::Transaction => "transaction",
    };
    let paused = if report.paused {
        "; new transactions held for a switchover"
    } else {
        ""
    };
    format!(
        "pool_mode {mode}, pool_size {}{paused}\n{}",
        report.pool_size,
        render_table(&header, &rows)
    )
}

pub fn config_ok(config: &NodeConfig) {
    println!("{}: ok", config.path.display());
    println!(
        "  member {} , state in {}",
        config.name,
        config.state_dir.display()
    );
    println!(
        "  peer {} (advertised {})",
        config.peer_listen, config.peer_advertise
    );
    println!(
        "  api  {} (advertised {})",
        config.api_listen, config.api_advertise
    );
    println!(
        "  raft heartbeat {:?}, election {:?}-{:?}",
        config.timings.heartbeat_interval,
        config.timings.election_timeout_min,
        config.timings.election_timeout_max
    );
}

/// A boxed table with a header row, columns as wide as their widest cell; no final newline.
pub(super) fn render_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let fmt_row = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut out = format!("+{sep}+\n");
    out += &format!("|{}|\n", fmt_row(&header.map(String::from)));
    out += &format!("+{sep}+\n");
    for row in rows {
        out += &format!("|{}|\n", fmt_row(row));
    }
    out + &format!("+{sep}+")
}

/// The timeline history as `patronictl history` prints it, from `GET /history`'s rows
/// (`[timeline, lsn, reason, timestamp, new_leader]`); the LSN in PostgreSQL's notation.
pub fn history_table(rows: &[serde_json::Value]) {
    println!("{}", render_history_table(rows));
}

fn render_history_table(rows: &[serde_json::Value]) -> String {
    let cell = |row: &serde_json::Value, i: usize| match &row[i] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            let lsn = row[1]
                .as_u64()
                .map_or_else(|| cell(row, 1), |l| crate::postgres::Lsn(l).to_string());
            [cell(row, 0), lsn, cell(row, 2), cell(row, 3), cell(row, 4)]
        })
        .collect();
    render_table(&["TL", "LSN", "Reason", "Timestamp", "New Leader"], &rows)
}

pub fn tokens_table(tokens: &serde_json::Value) {
    println!("{}", render_tokens_table(tokens));
}

/// One row per join token: id, uses left, expiry (UTC, RFC 3339) and whether it can still
/// admit a member.
fn render_tokens_table(tokens: &serde_json::Value) -> String {
    let rows: Vec<[String; 4]> = (tokens.as_array().into_iter().flatten())
        .map(|t| {
            let expires = t["expires_at_unix"]
                .as_u64()
                .map(|at| {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
                    humantime::format_rfc3339_seconds(at).to_string()
                })
                .unwrap_or_default();
            let usable = if t["usable"].as_bool() == Some(true) {
                "usable"
            } else {
                "expired or used up"
            };
            [
                t["id"].as_str().unwrap_or_default().to_string(),
                t["uses_left"].to_string(),
                expires,
                usable.to_string(),
            ]
        })
        .collect();
    render_table(&["Token", "Uses left", "Expires", "State"], &rows)
}

/// A `patronictl list`-style table, one row per member:
///
/// ```text
/// + Cluster: 7f3a… (lease epoch 3, raft term 2) as seen by n2 +
/// +--------+----------------+---------+-----------+----+-----------+-----------------+--------+------+
/// | Member | Host           | Role    | State     | TL | Lag in MB | Pending restart | Raft   | Tags |
/// ```
///
/// Host is the member's PostgreSQL address, or its peer address for a witness. Lag is
/// empty for the leader and `unknown` for a replica whose lag cannot be computed.
pub fn cluster_table(report: &ClusterReport) {
    println!("{}", render_cluster_table(report));
}

fn render_cluster_table(report: &ClusterReport) -> String {
    let mut out = format!(
        "+ Cluster: {} (lease epoch {}, raft term {}) as seen by {} +\n",
        if report.cluster_id.is_empty() {
            "-"
        } else {
            &report.cluster_id
        },
        report.lease_epoch,
        report.term,
        report.answered_by
    );
    let rows: Vec<[String; 9]> = report.members.iter().map(member_row).collect();
    let header = [
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Lag in MB",
        "Pending restart",
        "Raft",
        "Tags",
    ];
    out += &render_table(&header, &rows);
    if report.paused {
        out += "\n Maintenance mode: on";
    }
    if let Some(vip) = &report.vip {
        let on: Vec<&str> = report
            .members
            .iter()
            .filter(|m| m.vip)
            .map(|m| m.name.as_str())
            .collect();
        let on = match on.as_slice() {
            [] => "on no member".to_string(),
            [one] => format!("on {one}"),
            many => format!("on {} (more than one: check the hosts)", many.join(", ")),
        };
        out += &format!("\n VIP {vip}: {on}");
    }
    // No running primary: say what each member waits for (its last HA sentence).
    let primary_runs = report
        .members
        .iter()
        .any(|m| m.role == "Leader" && m.state == "running");
    if !primary_runs {
        out += "\n No primary. What each member says:";
        for m in &report.members {
            let summary = if m.summary.is_empty() {
                format!("{}: no status", m.name)
            } else {
                m.summary.clone()
            };
            out += &format!("\n   {summary}");
        }
    }
    if let Some(switchover) = &report.switchover {
        let to = switchover
            .to
            .map_or("the best replica".to_string(), |id| format!("node {id}"));
        out += &format!("\n Switchover pending: node {} to {to}", switchover.from);
    }
    match report.ca_rotation_waiting.as_deref() {
        None => {}
        Some([]) => {
            out += "\n CA rotation under way: every member has moved to the new CA; give \
                    clients `pgquorum ca export`, then `pgquorum ca rotate --finish`"
        }
        Some(waiting) => {
            out += &format!(
                "\n CA rotation under way: still to move to the new CA: {}",
                waiting.join(", ")
            )
        }
    }
    for warning in &report.warnings {
        out += &format!("\n Warning: {warning}");
    }
    out
}

fn member_row(m: &MemberReport) -> [String; 9] {
    let witness = m.pg_addr.is_empty();
    let lag = match m.lag_mb {
        Some(mb) => format!("{mb:.1}"),
        None if !witness && !m.lease_holder && m.state != "stopped" => "unknown".into(),
        None => String::new(),
    };
    let defaults = Tags::default();
    let mut tags = Vec::new();
    if m.tags.nofailover != defaults.nofailover {
        tags.push(format!("nofailover: {}", m.tags.nofailover));
    }
    if m.tags.noloadbalance != defaults.noloadbalance {
        tags.push(format!("noloadbalance: {}", m.tags.noloadbalance));
    }
    if m.tags.failover_priority != defaults.failover_priority {
        tags.push(format!("failover_priority: {}", m.tags.failover_priority));
    }
    [
        m.name.clone(),
        if witness {
            m.peer_addr.clone()
        } else {
            m.pg_addr.clone()
        },
        m.role.clone(),
        m.state.clone(),
        m.timeline.map(|tl| tl.to_string()).unwrap_or_default(),
        lag,
        if m.pending_restart { "*" } else { "" }.into(),
        m.raft_role.clone(),
        tags.join(", "),
    ]
}

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn the_history_prints_one_row_per_promotion() {
        let rows = [serde_json::json!([
            1,
            0x3000060u64,
            "no recovery target specified",
            "2026-12-06T03:34:56.123Z",
            "n2"
        ])];
        assert_eq!(
            render_history_table(&rows),
            "\
+----+-----------+------------------------------+--------------------------+------------+
| TL | LSN       | Reason                       | Timestamp                | New Leader |
+----+-----------+------------------------------+--------------------------+------------+
| 1  | 0/3000060 | no recovery target specified | 2026-12-06T03:34:56.123Z | n2         |
+----+-----------+------------------------------+--------------------------+------------+"
        );
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_print_without_secrets_one_row_each() {
        let tokens = serde_json::json!([
            {"id": "ab12cd", "uses_left": 2, "expires_at_unix": 1_796_000_000u64, "usable": true},
            {"id": "ef34gh", "uses_left": 0, "expires_at_unix": 1_796_000_000u64, "usable": false},
        ]);
        assert_eq!(
            render_tokens_table(&tokens),
            "\
+--------+-----------+----------------------+--------------------+
| Token  | Uses left | Expires              | State              |
+--------+-----------+----------------------+--------------------+
| ab12cd | 2         | 2026-11-30T00:53:20Z | usable             |
| ef34gh | 0         | 2026-11-30T00:53:20Z | expired or used up |
+--------+-----------+----------------------+--------------------+"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str, state: &str, lag_mb: Option<f64>) -> MemberReport {
        MemberReport {
            id: 1,
            name: name.into(),
            peer_addr: format!("{name}:7400"),
            api_addr: format!("{name}:8008"),
            pg_addr: if role.is_empty() {
                String::new()
            } else {
                format!("{name}:5432")
            },
            raft_role: "voter".into(),
            lease_holder: role == "Leader",
            role: role.into(),
            state: state.into(),
            timeline: (!role.is_empty() && state != "stopped").then_some(1),
            lag_mb,
            pending_restart: false,
            tags: Tags::default(),
            summary: format!("{name}: ..."),
            vip: false,
        }
    }

    /// Cluster c1 as n2 sees it: term 2, lease epoch 3.
    fn report(members: Vec<MemberReport>) -> ClusterReport {
        ClusterReport {
            cluster_id: "c1".into(),
            answered_by: "n2".into(),
            raft_state: "Follower".into(),
            term: 2,
            leader: Some(1),
            last_applied: Some(10),
            lease: None,
            lease_epoch: 3,
            paused: false,
            switchover: None,
            vip: None,
            ca_rotation_waiting: None,
            warnings: Vec::new(),
            members,
        }
    }

    #[test]
    fn a_ca_rotation_under_way_is_shown_with_who_has_still_to_move() {
        let mut r = report(Vec::new());
        assert!(!render_cluster_table(&r).contains("CA rotation"));
        r.ca_rotation_waiting = Some(vec!["n2".into(), "n3".into()]);
        let text = render_cluster_table(&r);
        assert!(
            text.contains("CA rotation under way: still to move to the new CA: n2, n3"),
            "{text}"
        );
        r.ca_rotation_waiting = Some(Vec::new());
        let text = render_cluster_table(&r);
        assert!(text.contains("`pgquorum ca rotate --finish`"), "{text}");
    }

    #[test]
    fn the_vip_line_names_the_member_that_carries_it() {
        let with_vip = |on: &[&str]| {
            let members = ["n1", "n2", "n3"]
                .iter()
                .map(|n| MemberReport {
                    vip: on.contains(n),
                    ..member(n, "Replica", "streaming", None)
                })
                .collect();
            ClusterReport {
                vip: Some("10.0.0.100/24".into()),
                ..report(members)
            }
        };
        let last_line = |r: &ClusterReport| {
            render_cluster_table(r)
                .lines()
                .filter(|l| l.contains("VIP"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cases: [(&str, &[&str], &str); 3] = [
            ("on one member", &["n1"], " VIP 10.0.0.100/24: on n1"),
            (
                "on none (a failover)",
                &[],
                " VIP 10.0.0.100/24: on no member",
            ),
            (
                "on two: said loudly",
                &["n1", "n3"],
                " VIP 10.0.0.100/24: on n1, n3 (more than one: check the hosts)",
            ),
        ];
        for (what, on, want) in cases {
            assert_eq!(last_line(&with_vip(on)), want, "{what}");
        }
        // Without a VIP configured, no line.
        assert_eq!(
            last_line(&report(vec![member("n1", "Leader", "running", None)])),
            ""
        );
    }

    #[test]
    fn the_table_reads_like_patronictl_list() {
        let mut replica = member("n2", "Replica", "streaming", Some(0.0));
        replica.pending_restart = true;
        replica.tags.nofailover = true;
        let report = report(vec![
            member("n1", "Leader", "running", None),
            replica,
            member("n3", "Replica", "streaming", None),
            member("w", "", "", None),
        ]);
        let expected = "\
+ Cluster: c1 (lease epoch 3, raft term 2) as seen by n2 +
+--------+---------+---------+-----------+----+-----------+-----------------+-------+------------------+
| Member | Host    | Role    | State     | TL | Lag in MB | Pending restart | Raft  | Tags             |
+--------+---------+---------+-----------+----+-----------+-----------------+-------+------------------+
| n1     | n1:5432 | Leader  | running   | 1  |           |                 | voter |                  |
| n2     | n2:5432 | Replica | streaming | 1  | 0.0       | *               | voter | nofailover: true |
| n3     | n3:5432 | Replica | streaming | 1  | unknown   |                 | voter |                  |
| w      | w:7400  |         |           |    |           |                 | voter |                  |
+--------+---------+---------+-----------+----+-----------+-----------------+-------+------------------+";
        assert_eq!(render_cluster_table(&report), expected);
    }

    #[test]
    fn without_a_running_primary_the_table_says_what_each_member_waits_for() {
        let mut n2 = member("n2", "Replica", "streaming", None);
        n2.summary = "n2: lease of n1 expired (epoch 3); not eligible: tagged nofailover".into();
        let mut n3 = member("n3", "Replica", "streaming", None);
        n3.summary = String::new();
        let report = report(vec![member("n1", "Leader", "stopped", None), n2, n3]);
        let table = render_cluster_table(&report);
        let tail: Vec<&str> = table.lines().rev().take(4).collect();
        assert_eq!(
            tail,
            vec![
                "   n3: no status",
                "   n2: lease of n1 expired (epoch 3); not eligible: tagged nofailover",
                "   n1: ...",
                " No primary. What each member says:",
            ]
        );
    }
}

#[cfg(test)]
mod pools_tests {
    use super::*;
    use crate::pooler::pool::{Mode, PoolStats, PoolsReport};

    #[test]
    fn pools_are_shown_as_show_pools_does() {
        let report = PoolsReport {
            mode: Mode::Transaction,
            pool_size: 20,
            paused: true,
            pools: vec![PoolStats {
                database: "shop".into(),
                user: "app".into(),
                side: crate::pooler::pool::Side::Reader,
                clients: 50,
                waiting: 3,
                active: 20,
                idle: 0,
                logins: 21,
                max_wait_ms: 1_500,
            }],
        };
        let text = render_pools_table(&report);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("pool_mode transaction, pool_size 20; new transactions held for a switchover")
        );
        let table = lines.collect::<Vec<_>>().join("\n");
        assert!(table.contains("cl_waiting"), "{table}");
        let row = table.lines().find(|l| l.contains("shop")).unwrap();
        let cells: Vec<&str> = row
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            ["shop", "app", "reader", "47", "3", "20", "0", "21", "1.500"]
        );
    }
}
