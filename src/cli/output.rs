//! Everything the CLI prints to standard output.
#![allow(clippy::print_stdout)]

use serde::Serialize;

use crate::api::ClusterReport;
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

/// A `patronictl list`-style table: one row per member.
pub fn cluster_table(report: &ClusterReport) {
    let lease = match &report.lease {
        Some(l) => format!(
            "held by node {} (epoch {}, renewal {})",
            l.holder, l.epoch, l.seq
        ),
        None => "free".to_string(),
    };
    println!(
        "+ Cluster: {} (term {}, lease {}) as seen by {} +",
        if report.cluster_id.is_empty() {
            "-"
        } else {
            &report.cluster_id
        },
        report.term,
        lease,
        report.answered_by
    );
    let rows: Vec<[String; 5]> = report
        .members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.id.to_string(),
                m.peer_addr.clone(),
                m.raft_role.clone(),
                if m.lease_holder {
                    "*".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let header = ["Member", "Id", "Peer", "Raft", "Lease"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
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
    println!("+{sep}+");
    println!("|{}|", fmt_row(&header.map(String::from)));
    println!("+{sep}+");
    for row in &rows {
        println!("|{}|", fmt_row(row));
    }
    println!("+{sep}+");
}
