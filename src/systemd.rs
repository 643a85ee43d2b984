//! The service manager protocols kpld speaks: socket activation
//! (`LISTEN_PID`/`LISTEN_FDS`, `sd_listen_fds(3)`), readiness and status
//! notification (`$NOTIFY_SOCKET`, `sd_notify(3)`) and the watchdog
//! (`WATCHDOG_USEC`/`WATCHDOG_PID`, `sd_watchdog_enabled(3)`).
//!
//! Everything here is a no-op when the variables are absent, so the same
//! binary runs under systemd, in a container and from a shell.
//!
//! Invariants:
//! - [`listen_fds`] runs once, before any thread is started (it unsets the
//!   `LISTEN_*` variables, which is only sound while the process has a
//!   single thread), and takes ownership of fd 3 only when `LISTEN_PID` is
//!   this process: the fd was then passed by the service manager for us.
//! - [`notify`] never blocks on a missing manager and never fails the caller:
//!   it returns `Ok(false)` when there is nobody to tell.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The first passed file descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// Why the passed socket cannot be used. Each message says which variable
/// or unit setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    #[error("{name}={value:?} is not a number (set by the service manager for socket activation)")]
    BadVariable { name: &'static str, value: String },
    #[error(
        "the service manager passed {0} file descriptors (LISTEN_FDS); kpld listens on exactly one \
         socket: give the .socket unit a single ListenStream="
    )]
    NotOne(usize),
    #[error(
        "the socket passed as fd 3 is not a listening Unix stream socket ({0}); use \
         ListenStream=/path/to/kpld.sock in the .socket unit, without Accept=yes"
    )]
    NotUnixStreamListener(String),
    #[error("the socket passed as fd 3 cannot be used: {0}")]
    Io(#[from] io::Error),
}

/// How many fds were passed to this process, from the raw variables.
/// `None`: socket activation is not in use (no `LISTEN_FDS`, or
/// `LISTEN_PID` names another process, e.g. a parent that forgot to unset
/// them).
fn passed_fd_count(
    our_pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
) -> Result<Option<usize>, ListenFdsError> {
    let Some(fds) = listen_fds else {
        return Ok(None);
    };
    // sd_listen_fds: LISTEN_PID is required; one that names another process
    // means the variables were inherited, not meant for us.
    let Some(pid) = listen_pid else {
        return Ok(None);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ListenFdsError::BadVariable {
            name: "LISTEN_PID",
            value: pid.to_string(),
        })?;
    if pid != our_pid {
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| ListenFdsError::BadVariable {
            name: "LISTEN_FDS",
            value: fds.to_string(),
        })?;
    match n {
        0 => Ok(None),
        1 => Ok(Some(1)),
        n => Err(ListenFdsError::NotOne(n)),
    }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket passed by the service manager (a systemd `.socket`
/// unit, `systemd-socket-activate`, or any manager speaking the
/// `sd_listen_fds` protocol), or `None` when kpld should bind its own.
///
/// Checks that `LISTEN_PID` is this process, that exactly one fd was passed
/// and that it is a listening `AF_UNIX` `SOCK_STREAM` socket; marks it
/// close-on-exec and unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
/// The listener is in blocking mode, as passed; call `set_nonblocking(true)`
/// before handing it to tokio.
///
/// Call it once, from `main`, before the async runtime (or any other thread)
/// starts. A second call returns `Ok(None)`.
pub fn listen_fds() -> Result<Option<UnixListener>, ListenFdsError> {
    let listen_pid = std::env::var("LISTEN_PID").ok();
    let listen_fds = std::env::var("LISTEN_FDS").ok();
    // Not inherited by anything kpld might start. Sound here: the caller
    // guarantees the process is still single-threaded.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let count = passed_fd_count(
        std::process::id(),
        listen_pid.as_deref(),
        listen_fds.as_deref(),
    )?;
    if count.is_none() || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let fd = take_passed_fd();
    check_listening_unix_stream(&fd)?;
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    let listener = UnixListener::from(fd);
    // std refuses a non-AF_UNIX address here ("not a Unix socket").
    listener
        .local_addr()
        .map_err(|e| ListenFdsError::NotUnixStreamListener(e.to_string()))?;
    Ok(Some(listener))
}

/// Takes ownership of fd 3.
#[allow(unsafe_code)]
fn take_passed_fd() -> OwnedFd {
    // SAFETY: `listen_fds` calls this only when LISTEN_PID is this process
    // and LISTEN_FDS >= 1. By the sd_listen_fds protocol the service manager
    // then opened fd 3 for this process and nothing else in it owns that fd
    // (std opens stdin/out/err only, and the runtime has not started). The
    // TAKEN flag makes this run at most once, so the OwnedFd is the only
    // owner and closing it on drop is correct.
    unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }
}

fn check_listening_unix_stream(fd: &OwnedFd) -> Result<(), ListenFdsError> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    let ty = getsockopt(&fd.as_fd(), sockopt::SockType)
        .map_err(|e| ListenFdsError::NotUnixStreamListener(format!("not a socket: {e}")))?;
    if ty != SockType::Stream {
        return Err(ListenFdsError::NotUnixStreamListener(format!(
            "socket type {ty:?}"
        )));
    }
    let listening = getsockopt(&fd.as_fd(), sockopt::AcceptConn).map_err(io::Error::from)?;
    if !listening {
        return Err(ListenFdsError::NotUnixStreamListener(
            "a connected socket, not a listening one (Accept=yes?)".into(),
        ));
    }
    Ok(())
}

/// `$NOTIFY_SOCKET` as read at the first notification (the variable is left
/// in place: the manager expects notifications until the end).
fn notify_socket() -> Option<&'static OsString> {
    static SOCKET: OnceLock<Option<OsString>> = OnceLock::new();
    SOCKET
        .get_or_init(|| std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()))
        .as_ref()
}

/// True when a service manager listens for notifications.
pub fn notify_enabled() -> bool {
    notify_socket().is_some()
}

/// Sends `state` (newline-separated assignments such as `READY=1`,
/// `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`) to `$NOTIFY_SOCKET`.
/// `Ok(false)`: no manager is listening (the variable is unset).
pub fn notify(state: &str) -> io::Result<bool> {
    match notify_socket() {
        None => Ok(false),
        Some(addr) => notify_to(addr, state).map(|()| true),
    }
}

/// `STATUS=<text>` (one line: newlines become spaces). Ignores errors: a
/// status line is informational.
pub fn status(text: &str) {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    let _ = notify(&format!("STATUS={line}"));
}

/// Sends `state` to the notification socket `addr`: a path, or an abstract
/// socket name written with a leading `@`.
pub fn notify_to(addr: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = addr.as_bytes();
    let target = match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(addr))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("NOTIFY_SOCKET={addr:?} is neither a path nor an abstract socket (@name)"),
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &target)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short notification datagram",
        ));
    }
    Ok(())
}

/// The watchdog timeout the manager enforces (`WatchdogSec=`), if it asked
/// this process for keep-alive pings. Ping with `WATCHDOG=1` at least every
/// half of it ([`watchdog_ping_period`]).
pub fn watchdog_interval() -> Option<Duration> {
    parse_watchdog(
        std::process::id(),
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
    )
}

/// Half the watchdog timeout, as sd_watchdog_enabled(3) recommends.
pub fn watchdog_ping_period(interval: Duration) -> Duration {
    interval / 2
}

fn parse_watchdog(our_pid: u32, usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Pings the watchdog every half `interval`, forever (spawn it). The pings
/// come from the async runtime, so a runtime that stops making progress
/// gets the service restarted.
pub async fn watchdog_loop(interval: Duration) {
    let mut tick = tokio::time::interval(watchdog_ping_period(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = notify("WATCHDOG=1") {
            tracing::warn!(error = %e, "watchdog ping to the service manager failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_vars_for_this_process_give_one_fd() {
        assert_eq!(passed_fd_count(42, Some("42"), Some("1")).unwrap(), Some(1));
    }

    #[test]
    fn listen_vars_for_another_process_are_ignored() {
        assert_eq!(passed_fd_count(42, Some("41"), Some("1")).unwrap(), None);
        assert_eq!(passed_fd_count(42, None, Some("1")).unwrap(), None);
        assert_eq!(passed_fd_count(42, Some("42"), None).unwrap(), None);
        assert_eq!(passed_fd_count(42, Some("42"), Some("0")).unwrap(), None);
    }

    #[test]
    fn more_than_one_fd_is_refused_with_the_unit_setting_to_fix() {
        let e = passed_fd_count(42, Some("42"), Some("2"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 file descriptors") && e.contains("ListenStream"),
            "{e}"
        );
    }

    #[test]
    fn garbage_variables_are_named() {
        let e = passed_fd_count(42, Some("x"), Some("1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("LISTEN_PID"), "{e}");
        let e = passed_fd_count(42, Some("42"), Some("one"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("LISTEN_FDS"), "{e}");
    }

    #[test]
    fn watchdog_needs_a_positive_interval_for_this_process() {
        assert_eq!(
            parse_watchdog(7, Some("2000000"), None),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_watchdog(7, Some("2000000"), Some("7")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_watchdog(7, Some("2000000"), Some("8")), None);
        assert_eq!(parse_watchdog(7, Some("0"), None), None);
        assert_eq!(parse_watchdog(7, Some("soon"), None), None);
        assert_eq!(parse_watchdog(7, None, Some("7")), None);
        assert_eq!(
            watchdog_ping_period(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn notification_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=accepting").unwrap();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=accepting");
    }

    #[test]
    fn notification_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kpld-test-notify-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn unsupported_notify_address_is_an_error_not_a_panic() {
        let e = notify_to(std::ffi::OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }
}
