//! The few libc calls std does not wrap. Each is a thin, checked wrapper.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::Account;

pub use libc::{SIGHUP, SIGINT, SIGQUIT};

/// Whether the daemon runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The size in bytes of the filesystem that holds `path` (following symlinks).
pub fn filesystem_bytes(path: &std::path::Path) -> io::Result<u64> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs to overwrite.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and stat is a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0 {
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Ok(stat.f_blocks as u64 * stat.f_frsize as u64)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill has no memory-safety preconditions; pid > 0 targets one process.
    if pid > 0 && unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to every process of group `pgid`.
pub fn signal_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill has no memory-safety preconditions; -pgid (pgid > 1) targets one
    // process group, never "every process" (-1).
    if pgid > 1 && unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `pid` is a live (not zombie) process whose executable is `postgres` (or
/// `postmaster`), from `/proc/<pid>/stat`; guards against a stale `postmaster.pid`
/// whose pid was reused.
pub fn is_live_postgres(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    matches!(comm, "postgres" | "postmaster") && !matches!(state, Some('Z' | 'X' | 'x'))
}

/// Looks up `name` with getpwnam_r; `Ok(None)` if there is no such user.
pub fn lookup_user(name: &str) -> io::Result<Option<Account>> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut size = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: zeroed passwd is a valid value for this plain C struct (null pointers).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf outlives every use of pwd's
        // string fields below, which point into buf.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        let home = if pwd.pw_dir.is_null() {
            PathBuf::from("/")
        } else {
            // SAFETY: on success a non-null pw_dir is a NUL-terminated string inside buf.
            let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
            PathBuf::from(OsStr::from_bytes(dir.to_bytes()))
        };
        return Ok(Some(Account {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        }));
    }
}

/// The effective uid and gid of the daemon.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// The daemon's effective capability set (bit n is capability n), from
/// `/proc/self/status`; 0 when it cannot be read.
pub fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// Capability numbers (linux/capability.h), which the libc crate does not define.
pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;

/// Leaves the child (a PostgreSQL program) with none of the daemon's privileges: no
/// supplementary groups when it switches user (std drops them only when the daemon is root,
/// not when it switches with CAP_SETGID as its own user), and an empty ambient capability
/// set. The packaged unit grants the daemon ambient capabilities (for the VIP and for running
/// PostgreSQL as another user); they would pass to every program it runs, and a PostgreSQL
/// backend (say, `COPY ... TO PROGRAM`) must not be able to read the daemon's secrets, move
/// addresses or send raw frames. A failure refuses the start rather than run PostgreSQL
/// with what it must not have.
pub fn drop_privileges(cmd: &mut Command, switching_user: bool) {
    // SAFETY: the closure runs in the forked child before exec and calls only getgroups,
    // setgroups and prctl, which are async-signal-safe system calls; it allocates nothing
    // (errors are raw OS errors). std runs it after switching uid and gid: a non-root
    // daemon keeps CAP_SETGID across that switch, a root one has already dropped its
    // groups.
    unsafe {
        cmd.pre_exec(move || {
            if switching_user {
                let groups = libc::getgroups(0, std::ptr::null_mut());
                if groups < 0 {
                    return Err(io::Error::last_os_error());
                }
                if groups > 0 && libc::setgroups(0, std::ptr::null()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let cleared = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            // EINVAL: a kernel before 4.3 has no ambient set, so there is nothing to clear.
            if cleared != 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::EINVAL) {
                    return Err(error);
                }
            }
            Ok(())
        });
    }
}

/// Removes `caps` from the child's ambient set before exec, keeping the others (a hook
/// keeps CAP_NET_ADMIN and CAP_NET_RAW, which moving an address may need, but not the
/// daemon's power over other users' processes and files).
pub fn lower_ambient(cmd: &mut tokio::process::Command, caps: &'static [u32]) {
    // SAFETY: as in drop_privileges: only prctl, async-signal-safe, no allocation. A
    // capability not in the ambient set lowers to a no-op; EINVAL (no ambient set, or a
    // capability this kernel does not know) leaves nothing to lower.
    unsafe {
        cmd.pre_exec(move || {
            for &cap in caps {
                let lowered = libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_LOWER,
                    cap as libc::c_ulong,
                    0,
                    0,
                );
                if lowered != 0 {
                    let error = io::Error::last_os_error();
                    if error.raw_os_error() != Some(libc::EINVAL) {
                        return Err(error);
                    }
                }
            }
            Ok(())
        });
    }
}

/// Makes the child receive SIGQUIT (PostgreSQL's immediate shutdown) when the thread
/// that spawns it exits, and refuse to start if the daemon is already gone.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec. It calls only prctl and
    // getppid, both async-signal-safe, and does not allocate (the error is a raw OS
    // error). std runs it after switching uid, which matters because a credential change
    // clears the death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The daemon died between fork and prctl: we were reparented; do not start.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Raises the soft limit on open files to the hard one (at most 2^20): systemd's
/// `LimitNOFILE=` sets both, but a shell often leaves the soft limit at 1024, which the
/// connection caps of the open ports (see `crate::accept`) and the proxy would exceed before
/// they bind. Returns the soft limit before and after.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let wanted = limit.rlim_max.min(1 << 20);
    if before < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}
