//! The fence: a watchdog process that kills a primary PostgreSQL whose daemon can no longer
//! vouch for its lease (DESIGN §3).
//!
//! The lease keeps one writable primary only if the holder stops being writable by its
//! deadline, and the daemon does that itself — unless the daemon cannot run: stopped
//! (SIGSTOP, a debugger), starved, or stuck. Its PostgreSQL then keeps committing for every
//! client connected to it directly while another member is promoted. Patroni answers this with
//! a kernel watchdog that reboots the host; pgquorum answers it with this small process,
//! started by the daemon (`pgquorum fence`, the same binary), in a process group of its own so
//! that whatever freezes or kills the daemon's group does not touch it.
//!
//! ```text
//!   daemon ──stdin: "arm <ms> <pid>" | "disarm"──► fence
//!                                                   └─ <ms> pass without a new line:
//!                                                      SIGKILL to postmaster <pid>'s group
//! ```
//!
//! # Rules
//! - The daemon arms the fence whenever a renewal of its lease commits while its PostgreSQL is
//!   a writable primary, and before it promotes one: "kill postmaster `pid` in `ms` unless told
//!   otherwise". `ms` runs to the holder's deadline plus half the safety margin: later than
//!   the daemon's own demotion, so a live daemon always demotes first, and earlier than any
//!   other member can take the lease (it waits a whole ttl from the renewal it saw last, the
//!   margin after the holder's deadline).
//! - It disarms the fence once its PostgreSQL is seen stopped or in recovery, and as soon as
//!   a shutdown it asked for has begun (`postmaster.pid` says `stopping`): from then on the
//!   postmaster has ended every client session and refuses new ones, so it acknowledges no
//!   more writes, and its clean shutdown (which, cut off from its standbys, waits
//!   `wal_sender_timeout` for them) must not be turned into a crash.
//! - When the deadline passes, the fence kills the postmaster's process group (every backend
//!   with it) with SIGKILL, if that pid is still a live `postgres`, and disarms. A restarted
//!   PostgreSQL has another pid and is left alone.
//! - When its input ends (the daemon exited or died), the fence keeps its last instruction:
//!   an armed fence still fires at its deadline, then exits; a disarmed one exits at once.
//! - The fence reads nothing but its input and `/proc`, and writes only to stderr (the
//!   daemon's log): it cannot fail in a way that needs the daemon.

use std::io::{self, BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The daemon's handle on its fence process. Dropping it closes the fence's input (see the
/// module doc for what the fence then does).
pub struct Fence {
    inner: Mutex<Inner>,
}

struct Inner {
    child: Child,
    input: ChildStdin,
    /// The last instruction sent, so that a restarted fence gets it again.
    last: Instruction,
}

/// What the fence is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// Kill postmaster `pid` (its process group) once `after` has passed.
    Arm {
        after: Duration,
        pid: u32,
    },
    Disarm,
}

impl Instruction {
    /// The line the fence reads.
    fn to_line(self) -> String {
        match self {
            Instruction::Arm { after, pid } => format!("arm {} {pid}\n", after.as_millis()),
            Instruction::Disarm => "disarm\n".to_string(),
        }
    }

    /// Parses one line of the fence's input.
    pub fn parse(line: &str) -> Result<Instruction, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["disarm"] => Ok(Instruction::Disarm),
            ["arm", ms, pid] => {
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("arm: {ms:?} is not a number of milliseconds"))?;
                let pid: u32 = pid
                    .parse()
                    .ok()
                    .filter(|pid| *pid > 1)
                    .ok_or_else(|| format!("arm: {pid:?} is not a process id"))?;
                Ok(Instruction::Arm {
                    after: Duration::from_millis(ms),
                    pid,
                })
            }
            _ => Err(format!(
                "unknown instruction {line:?}: expected `arm <ms> <pid>` or `disarm`"
            )),
        }
    }
}

impl Fence {
    /// Starts the fence process (this executable, `fence`), in its own process group.
    pub fn spawn() -> anyhow::Result<Fence> {
        let (child, input) = start().context("starting the fence process (`pgquorum fence`)")?;
        Ok(Fence {
            inner: Mutex::new(Inner {
                child,
                input,
                last: Instruction::Disarm,
            }),
        })
    }

    /// Tells the fence `instruction`. If the fence process has died, a new one is started
    /// and told. Errors are logged: the daemon carries on (its own demotion still holds).
    pub fn tell(&self, instruction: Instruction) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.last == Instruction::Disarm && instruction == Instruction::Disarm {
            return;
        }
        let line = instruction.to_line();
        if inner.input.write_all(line.as_bytes()).is_err() {
            let status = inner.child.try_wait().ok().flatten();
            tracing::error!(?status, "the fence process is gone; starting a new one");
            match start() {
                Ok((child, mut input)) => {
                    if let Err(e) = input.write_all(line.as_bytes()) {
                        tracing::error!(error = %e, "telling the new fence process");
                    }
                    inner.child = child;
                    inner.input = input;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "restarting the fence"),
            }
        }
        inner.last = instruction;
    }
}

fn start() -> io::Result<(Child, ChildStdin)> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("fence")
        .env_remove(crate::systemd::NOTIFY_SOCKET)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()?;
    let input = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("the fence's stdin was not piped"))?;
    Ok((child, input))
}

/// The fence process's main loop (`pgquorum fence`): reads instructions from stdin until
/// it ends, firing at the deadline of the last `arm` (see the module doc). Returns when the
/// input has ended and no armed deadline is left.
pub fn run() {
    let (lines, incoming) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut armed: Option<(Instant, u32)> = None;
    let mut input_open = true;
    loop {
        let received = match (armed, input_open) {
            (None, false) => return,
            (None, true) => incoming.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (Some((deadline, _)), true) => {
                incoming.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            (Some((deadline, _)), false) => {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                Err(RecvTimeoutError::Timeout)
            }
        };
        match received {
            Ok(line) => match Instruction::parse(&line) {
                Ok(Instruction::Arm { after, pid }) => {
                    armed = Some((Instant::now() + after, pid));
                }
                Ok(Instruction::Disarm) => armed = None,
                Err(why) => eprintln!("pgquorum fence: ignoring input: {why}"),
            },
            Err(RecvTimeoutError::Disconnected) => input_open = false,
            Err(RecvTimeoutError::Timeout) => {
                if let Some((deadline, pid)) = armed {
                    if Instant::now() >= deadline {
                        fire(pid);
                        armed = None;
                    }
                }
            }
        }
    }
}

/// Kills postmaster `pid` and its process group, if it is still a live `postgres`.
fn fire(pid: u32) {
    if !crate::postgres::process::is_live_postgres(pid) {
        return;
    }
    let outcome = crate::postgres::process::kill_group_checked(pid);
    // The daemon's log (stderr): the one line that explains a primary's sudden death.
    let mut err = io::stderr().lock();
    let _ = match outcome {
        Ok(()) => writeln!(
            err,
            "pgquorum fence: the daemon neither renewed the lease of this primary before its \
             deadline nor reported it shutting down (is the daemon stopped or stuck?); killed \
             PostgreSQL (postmaster {pid}) so that it accepts no write while another member \
             may be promoted"
        ),
        Err(e) => writeln!(err, "pgquorum fence: killing postmaster {pid}: {e}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_round_trip_and_bad_lines_are_named() {
        let cases: &[(&str, Result<Instruction, &str>)] = &[
            (
                "arm 1250 4242",
                Ok(Instruction::Arm {
                    after: Duration::from_millis(1250),
                    pid: 4242,
                }),
            ),
            ("disarm", Ok(Instruction::Disarm)),
            ("  disarm  ", Ok(Instruction::Disarm)),
            (
                "arm soon 4242",
                Err("\"soon\" is not a number of milliseconds"),
            ),
            ("arm 10 1", Err("\"1\" is not a process id")),
            ("arm 10 -5", Err("\"-5\" is not a process id")),
            ("arm 10", Err("unknown instruction")),
            ("fire", Err("unknown instruction")),
        ];
        for (line, want) in cases {
            let got = Instruction::parse(line);
            match (want, &got) {
                (Ok(want), Ok(got)) => assert_eq!(got, want, "{line:?}"),
                (Err(needle), Err(why)) => assert!(why.contains(needle), "{line:?}: {why}"),
                _ => panic!("{line:?}: want {want:?}, got {got:?}"),
            }
            if let Ok(instruction) = got {
                assert_eq!(Instruction::parse(&instruction.to_line()), Ok(instruction));
            }
        }
    }
}
