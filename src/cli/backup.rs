//! `pgquorum backup [--type]`, `backup list` and `backup info` (see `crate::backup`).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::Value;

use super::{client, output};
use crate::api::BackupReport;
use crate::cluster::BackupKind;
use crate::config::NodeConfig;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// full, diff (changes since the last full backup) or incr (since the last backup).
    #[arg(long = "type", value_parser = parse_kind, default_value = "full")]
    pub kind: crate::cluster::BackupKind,
    /// How long to follow the backup before returning (it goes on); 0 to return at once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub wait: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// The backups in the repository: label, type, when, size, WAL range.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The stanza's state, the archived WAL range, the backup running and the last one.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// The restore drill: a replica restores the newest backup into a scratch directory,
    /// starts it (archiving off, on no address), reads every database, and removes it.
    Verify {
        /// How long to follow the drill before returning (it goes on); 0 to return at once.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        wait: std::time::Duration,
    },
}

/// `--type`: full, diff or incr.
pub(super) fn parse_kind(text: &str) -> Result<BackupKind, String> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| format!("{text:?} is not a backup type: full, diff or incr"))
}

/// Asks the cluster for a backup (or with `verify` the restore drill) and, unless `wait`
/// is zero, follows it to its end.
pub(super) async fn take(
    config: &NodeConfig,
    kind: BackupKind,
    wait: Duration,
    verify: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "type": kind });
    let (path, what) = match verify {
        true => ("/admin/backup/verify", "restore drill"),
        false => ("/admin/backup", "backup"),
    };
    let reply: Value = (client(config, true)?)
        .post(path, &body)
        .await
        .with_context(|| format!("requesting a {what}"))?;
    let id = reply["id"]
        .as_u64()
        .with_context(|| format!("the daemon gave the {what} no id"))?;
    let report = self::report(config).await?;
    let runner = report.pending_runner.unwrap_or_default();
    match verify {
        true => output::line(&format!(
            "restore drill {id} requested; {runner} restores the newest backup into a \
             scratch directory"
        )),
        false => output::line(&format!(
            "backup {id} ({}) requested; {runner} takes it",
            kind.as_str()
        )),
    }
    if wait.is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        poll.tick().await;
        let report = self::report(config).await?;
        let last = if verify {
            &report.last_verify
        } else {
            &report.last
        };
        let ran = match verify {
            true => report.last_verify_runner.clone(),
            false => report.last_runner.clone(),
        };
        let ran = ran.unwrap_or_default();
        match last {
            Some(last) if last.id == id && last.ok => {
                let done = if verify { "passed on" } else { "taken by" };
                output::line(&format!("{what} {id} {done} {ran}: {}", last.message));
                return Ok(());
            }
            Some(last) if last.id == id => bail!("{what} {id} failed on {ran}: {}", last.message),
            _ => {}
        }
        if report.pending.as_ref().is_none_or(|p| p.id != id)
            && last.as_ref().is_none_or(|l| l.id < id)
        {
            bail!("{what} {id} was replaced before it finished; see `pgquorum backup info`");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} {id} is still running on {runner} after {}; it goes on, see `pgquorum backup info`", humantime::format_duration(wait));
        }
    }
}

async fn report(config: &NodeConfig) -> anyhow::Result<BackupReport> {
    client(config, false)?
        .get("/backup")
        .await
        .context("reading the backups")
}

/// `backup list`: one row per backup in the repository.
pub(super) async fn list(config: &NodeConfig, json: bool) -> anyhow::Result<()> {
    let report = report(config).await?;
    if json {
        output::json(&report);
        return Ok(());
    }
    let Some(info) = &report.info else {
        bail!("{}", report.info_error.unwrap_or_default());
    };
    output::line(&render_list(info));
    Ok(())
}

/// `backup info`: the stanza's state, its WAL range and the cluster's backup jobs.
pub(super) async fn info(config: &NodeConfig, json: bool) -> anyhow::Result<()> {
    let report = report(config).await?;
    if json {
        output::json(&report);
        return Ok(());
    }
    output::line(&render_info(&report));
    Ok(())
}

fn time(unix: Option<u64>) -> String {
    unix.map(|at| {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(at);
        humantime::format_rfc3339_seconds(at).to_string()
    })
    .unwrap_or_default()
}

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => String::new(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// The table of `pgbackrest info`'s backups, oldest first.
pub(super) fn render_list(info: &Value) -> String {
    let rows: Vec<[String; 7]> = (info["backup"].as_array().into_iter().flatten())
        .map(|b| {
            let start = b.pointer("/timestamp/start").and_then(Value::as_u64);
            let stop = b.pointer("/timestamp/stop").and_then(Value::as_u64);
            let took = match (start, stop) {
                (Some(a), Some(b)) => {
                    humantime::format_duration(Duration::from_secs(b.saturating_sub(a))).to_string()
                }
                _ => String::new(),
            };
            let wal = format!(
                "{}..{}",
                b.pointer("/archive/start")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                b.pointer("/archive/stop")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            [
                b["label"].as_str().unwrap_or_default().to_string(),
                b["type"].as_str().unwrap_or_default().to_string(),
                time(stop),
                took,
                size(b.pointer("/info/size").and_then(Value::as_u64)),
                size(b.pointer("/info/repository/delta").and_then(Value::as_u64)),
                wal,
            ]
        })
        .collect();
    output::render_table(
        &[
            "Backup", "Type", "Finished", "Took", "Size", "In repo", "WAL",
        ],
        &rows,
    )
}

/// The summary `backup info` prints.
pub(super) fn render_info(report: &BackupReport) -> String {
    let mut out = Vec::new();
    let stanza = report
        .stanza
        .clone()
        .unwrap_or_else(|| "(no [backup] configured)".into());
    out.push(format!("stanza: {stanza}"));
    if let Some(info) = &report.info {
        out.push(format!(
            "status: {}",
            info.pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        ));
        for archive in info["archive"].as_array().into_iter().flatten() {
            out.push(format!(
                "WAL archived: {} .. {} ({})",
                archive["min"].as_str().unwrap_or("-"),
                archive["max"].as_str().unwrap_or("-"),
                archive["id"].as_str().unwrap_or("")
            ));
        }
        let backups = info["backup"].as_array().map_or(0, Vec::len);
        out.push(format!("backups: {backups}"));
    } else if let Some(error) = &report.info_error {
        out.push(format!("repository: {error}"));
    }
    if let Some(job) = &report.pending {
        let what = match job.verify {
            true => format!("restore drill {}", job.id),
            false => format!("backup {} ({})", job.id, job.kind.as_str()),
        };
        out.push(format!(
            "running: {what} on {}",
            report.pending_runner.clone().unwrap_or_default()
        ));
    }
    if let Some(last) = &report.last {
        let how = if last.ok { "ok" } else { "FAILED" };
        out.push(format!(
            "last: backup {} ({}) on {} at {}: {how}: {}",
            last.id,
            last.kind.as_str(),
            report.last_runner.clone().unwrap_or_default(),
            time(Some(last.finished_unix)),
            last.message
        ));
    }
    if let Some(last) = &report.last_verify {
        let how = if last.ok { "ok" } else { "FAILED" };
        out.push(format!(
            "last restore drill: {} on {} at {}: {how}: {}",
            last.id,
            report.last_verify_runner.clone().unwrap_or_default(),
            time(Some(last.finished_unix)),
            last.message
        ));
    }
    if let Some(restore) = &report.restore {
        out.push(format!(
            "restoring: restore {} to {} by node {}; stopped: {:?}",
            restore.id, restore.target, restore.runner, restore.stopped
        ));
    }
    if let Some(last) = &report.last_restore {
        let how = if last.ok { "ok" } else { "FAILED" };
        out.push(format!(
            "last restore: {} to {} by node {} at {}: {how}: {}",
            last.id,
            last.target,
            last.runner,
            time(Some(last.finished_unix)),
            last.message
        ));
    }
    out.join("\n")
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Where to: latest (the end of the archive), a WAL position (16/B374D848), a time with
    /// its UTC offset ("2026-12-07 14:30:00+00"), or name:<restore point>.
    #[arg(long)]
    pub to: String,
    /// Remove the members' data directories instead of moving them aside
    /// (`<data dir>.before-restore-<id>`).
    #[arg(long)]
    pub force: bool,
    /// How long to follow the restore before returning (it goes on); 0 to return at once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub wait: std::time::Duration,
}

/// `pgquorum restore --to`: asks for the restore and, unless `--wait 0`, follows it until
/// the restored primary runs.
pub(super) async fn restore(config: &NodeConfig, args: &RestoreArgs) -> anyhow::Result<()> {
    let body = serde_json::json!({ "to": args.to, "force": args.force });
    let reply: Value = (client(config, true)?)
        .post("/admin/restore", &body)
        .await
        .context("requesting a restore")?;
    let id = reply["id"]
        .as_u64()
        .context("the daemon gave the restore no id")?;
    let put = if args.force { "removes" } else { "moves aside" };
    output::line(&format!(
        "restore {id} to {} requested: every member stops PostgreSQL and {put} its data \
         directory, then one restores from the repository",
        args.to
    ));
    if args.wait.is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        poll.tick().await;
        // Members restart meanwhile: a failed read is retried.
        if let Ok(report) = self::report(config).await {
            match &report.last_restore {
                Some(last) if last.id == id && last.ok => {
                    output::line(&format!(
                        "restore {id} done by node {}: {}; the other members clone it now \
                         (`pgquorum list`)",
                        last.runner, last.message
                    ));
                    return Ok(());
                }
                Some(last) if last.id == id => bail!(
                    "restore {id} failed on node {}: {}\nThe old data directories are \
                     untouched beside each data directory; restore again, to another target",
                    last.runner,
                    last.message
                ),
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "restore {id} is still under way after {}; it goes on, see `pgquorum backup info`",
                humantime::format_duration(args.wait)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_a_row_per_backup_and_info_names_the_failure() {
        let info = serde_json::json!({
            "name": "pgquorum",
            "status": {"code": 0, "message": "ok"},
            "archive": [{"id": "15-1", "min": "000000010000000000000004", "max": "000000020000000000000009"}],
            "backup": [{
                "label": "20261207-112300F",
                "type": "full",
                "timestamp": {"start": 1796642580u64, "stop": 1796642592u64},
                "info": {"size": 23_000_000u64, "repository": {"delta": 3_000_000u64}},
                "archive": {"start": "000000010000000000000005", "stop": "000000010000000000000005"}
            }]
        });
        let table = render_list(&info);
        assert!(table.contains("20261207-112300F"), "{table}");
        assert!(table.contains("| 12s"), "{table}");
        assert!(table.contains("21.9 MiB"), "{table}");
        assert!(
            table.contains("000000010000000000000005..000000010000000000000005"),
            "{table}"
        );
        let report = BackupReport {
            stanza: Some("pgquorum".into()),
            pending: None,
            pending_runner: None,
            last: Some(crate::cluster::BackupOutcome {
                id: 3,
                kind: BackupKind::Diff,
                runner: crate::cluster::NodeId(2),
                ok: false,
                message: "pgbackrest backup failed".into(),
                finished_unix: 1796642592,
                verify: false,
            }),
            last_runner: Some("n2".into()),
            info: Some(info),
            info_error: None,
            last_verify: None,
            last_verify_runner: None,
            restore: None,
            last_restore: Some(crate::cluster::RestoreOutcome {
                id: 1,
                target: crate::cluster::RestoreTarget::Latest,
                runner: crate::cluster::NodeId(1),
                ok: true,
                message: "restored to latest along timeline 2; primary on timeline 3".into(),
                finished_unix: 1796642600,
            }),
        };
        let text = render_info(&report);
        assert!(
            text.contains("last restore: 1 to latest (the end of the archive) by node 1 at 2026-"),
            "{text}"
        );
        assert!(
            text.contains("WAL archived: 000000010000000000000004 .. 000000020000000000000009"),
            "{text}"
        );
        assert!(text.contains("last: backup 3 (diff) on n2 at "), "{text}");
        assert!(text.contains("FAILED: pgbackrest backup failed"), "{text}");
    }
}
