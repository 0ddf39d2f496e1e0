//! Role-change hooks (`[hooks]` in the node config), like Patroni's callbacks: commands the
//! operator provides for what an L2 VIP cannot do (moving a cloud IP through the provider's
//! API, updating DNS, telling a load balancer) and for vetoing a promotion.
//!
//! - `pre_promote` runs before this member's replica is promoted; a non-zero exit, a failure
//!   to start or a timeout aborts the promotion: the lease is released and this member
//!   stands aside for [`REFUSAL_HOLD`] so another takes over.
//! - `on_role_change` runs after this member's PostgreSQL changes role (`primary`,
//!   `replica`, `stopped`), including the first role seen after the daemon starts. Runs are
//!   queued in order and never block the HA loop.
//!
//! Each runs as `/bin/sh -c '<command> "$@"' pgquorum-hook <role> <member> <epoch> <vip>`,
//! so the command may be a path or a path with arguments; `<epoch>` is the lease epoch (0
//! without a lease), `<vip>` the configured VIP or an empty argument. Output is logged.

use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

/// How long a member whose `pre_promote` hook refused stays out of the running.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(30);

/// The validated `[hooks]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HooksConfig {
    pub pre_promote: Option<String>,
    pub on_role_change: Option<String>,
    /// How long a hook may run before it is killed (and, for `pre_promote`, counts as a
    /// refusal). Default 30 s.
    pub timeout: Duration,
}

/// What a hook is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookArgs {
    pub role: String,
    pub member: String,
    pub epoch: u64,
    pub vip: String,
}

impl HookArgs {
    fn to_vec(&self) -> Vec<String> {
        vec![
            self.role.clone(),
            self.member.clone(),
            self.epoch.to_string(),
            self.vip.clone(),
        ]
    }
}

/// Runs `command` with `args` under `timeout`; Ok when it exits 0, else why not. Its output
/// is logged line by line under `hook`.
pub async fn run(
    hook: &'static str,
    command: &str,
    args: &HookArgs,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = Command::new("/bin/sh");
    child
        .arg("-c")
        .arg(format!("{command} \"$@\""))
        .arg("pgquorum-hook")
        .args(args.to_vec())
        .env_remove(crate::systemd::NOTIFY_SOCKET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // A group of its own, so that a timeout kills what the command started too.
        .process_group(0)
        .kill_on_drop(true);
    // As the daemon's user with its CAP_NET_ADMIN and CAP_NET_RAW (a hook may move an
    // address), not with its power over PostgreSQL's files and processes.
    crate::postgres::process::drop_switch_capabilities(&mut child);
    tracing::info!(hook, command, ?args, "running hook");
    let child = child
        .spawn()
        .map_err(|e| format!("{hook} hook `{command}` could not be started: {e}"))?;
    let group = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("{hook} hook `{command}` failed to run: {e}")),
        Err(_) => {
            if let Some(group) = group {
                crate::postgres::process::kill_group(group);
            }
            return Err(format!(
                "{hook} hook `{command}` did not finish within {} (killed)",
                humantime::format_duration(timeout)
            ));
        }
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        tracing::info!(hook, "{line}");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        tracing::warn!(hook, "{line}");
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{hook} hook `{command}` failed ({})",
            output.status
        ))
    }
}

/// Runs `on_role_change` for each role sent, one after the other, in the background.
#[derive(Clone)]
pub struct RoleChanges {
    tx: Option<mpsc::UnboundedSender<HookArgs>>,
}

impl RoleChanges {
    /// Starts the runner when `on_role_change` is configured.
    pub fn spawn(config: &HooksConfig) -> RoleChanges {
        let Some(command) = config.on_role_change.clone() else {
            return RoleChanges { tx: None };
        };
        let timeout = config.timeout;
        let (tx, mut rx) = mpsc::unbounded_channel::<HookArgs>();
        tokio::spawn(async move {
            while let Some(args) = rx.recv().await {
                if let Err(e) = run("on_role_change", &command, &args, timeout).await {
                    tracing::warn!(error = %e, "on_role_change hook");
                }
            }
        });
        RoleChanges { tx: Some(tx) }
    }

    /// Queues a run for the new role.
    pub fn changed(&self, args: HookArgs) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> HookArgs {
        HookArgs {
            role: "primary".into(),
            member: "n2".into(),
            epoch: 7,
            vip: String::new(),
        }
    }

    #[tokio::test]
    async fn a_hook_gets_its_arguments_and_its_exit_status_decides() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let record = format!("printf '%s|' >> {}", out.display());
        run("test", &record, &args(), Duration::from_secs(5))
            .await
            .expect("exit 0 is success");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "primary|n2|7||",
            "role, member, epoch and an empty VIP, as separate arguments"
        );
        // (command, timeout, what the error must say); only the sleeper is meant to time out.
        let cases = [
            ("exit 3", 5_000, "failed (exit status: 3)"),
            ("sleep 5; true", 200, "did not finish within 200ms (killed)"),
            ("/nonexistent/hook", 5_000, "failed (exit status: 127)"),
        ];
        for (command, timeout_ms, want) in cases {
            let timeout = Duration::from_millis(timeout_ms);
            let err = run("pre_promote", command, &args(), timeout)
                .await
                .expect_err(command);
            assert!(err.contains(want), "{command}: {err:?} should say {want:?}");
            assert!(
                err.starts_with("pre_promote hook"),
                "{err:?} names the hook"
            );
        }
    }
}
