//! Who may use the socket: the socket file's mode and group, and a per-
//! connection check of the peer's credentials (`SO_PEERCRED`) against
//! `allowed_uids` / `allowed_gids`.
//!
//! Two layers, both configured in the TOML file:
//! - the kernel's: the socket file gets `socket_mode` (default 0660) and,
//!   with `socket_group`, that group; a process that cannot write the file
//!   cannot connect at all;
//! - kpld's: with `allowed_uids` and/or `allowed_gids` set, a connection is
//!   accepted only if the peer's uid is listed, or its primary gid or one of
//!   its supplementary groups is. Both empty: anyone who can open the socket.
//!
//! Invariants:
//! - the socket file never exists under its final name with a mode or group
//!   other than the configured ones: it is bound in a private (0700)
//!   directory next to it, given its mode and group, then renamed into place
//!   ([`bind_with_perms`]);
//! - a denial names the uid (and gid, pid) in the log line and in the error
//!   the client gets;
//! - user and group names resolve through the C library (getpwnam_r /
//!   getgrnam_r), so NSS sources (LDAP, sssd, systemd-homed) count where
//!   the libc has them (glibc; the static musl binary reads the files and
//!   nscd only); numeric ids need no lookup;
//! - a peer's groups are the kernel's record of the connecting process
//!   (SO_PEERCRED, SO_PEERGROUPS), taken when it called `connect`: never
//!   read from /proc, where a pid can be reused by another process.

use serde::Deserialize;
use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Default mode of the socket file: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// The longest path a Unix socket address holds (sun_path minus the NUL).
const SUN_PATH_MAX: usize = 107;

// ---------------------------------------------------------------------------
// Config values

/// `socket_mode` as written: an integer (TOML `0o660` is 432) or an octal
/// string (`"0660"`, `"660"`, `"0o660"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ModeSetting {
    Int(i64),
    Str(String),
}

impl ModeSetting {
    /// The permission bits, or a message saying how to write the value.
    pub fn resolve(&self) -> Result<u32, String> {
        let v: i64 = match self {
            ModeSetting::Int(i) => *i,
            ModeSetting::Str(s) => {
                let t = s.trim();
                let digits = t.strip_prefix("0o").unwrap_or(t);
                i64::from_str_radix(digits, 8).map_err(|_| {
                    format!("{s:?} is not an octal mode; write it as a string such as \"0660\"")
                })?
            }
        };
        if !(0..=0o777).contains(&v) {
            return Err(format!(
                "{v} (octal {v:o}) is not a permission mode 0..=0777; write it as a string \
                 such as \"0660\" or as TOML octal 0o660 (a bare 660 is decimal)"
            ));
        }
        Ok(v as u32)
    }
}

/// The socket file's mode as `--check` prints it: `"0660"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl Default for SocketMode {
    fn default() -> Self {
        SocketMode(DEFAULT_SOCKET_MODE)
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl serde::Serialize for SocketMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mode = ModeSetting::deserialize(d)?;
        mode.resolve()
            .map(SocketMode)
            .map_err(serde::de::Error::custom)
    }
}

/// A user or group as written: a numeric id or a name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdSetting {
    Id(u32),
    Name(String),
}

/// A user or group name the system's lookup does not know (or could not
/// answer: `reason` says which).
#[derive(Debug, thiserror::Error)]
#[error("no {kind} named {name:?} in the system's {db} database{reason}; use a numeric id or create the {kind}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    pub db: &'static str,
    /// Empty when the name is simply absent; else ` (lookup failed: ...)`.
    pub reason: String,
}

impl IdSetting {
    /// The uid, looking a name up with getpwnam_r.
    pub fn resolve_user(&self) -> Result<u32, UnknownName> {
        self.resolve("user", "passwd", |n| {
            nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
        })
    }

    /// The gid, looking a name up with getgrnam_r.
    pub fn resolve_group(&self) -> Result<u32, UnknownName> {
        self.resolve("group", "group", |n| {
            nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
        })
    }

    fn resolve(
        &self,
        kind: &'static str,
        db: &'static str,
        lookup: impl FnOnce(&str) -> nix::Result<Option<u32>>,
    ) -> Result<u32, UnknownName> {
        let name = match self {
            IdSetting::Id(id) => return Ok(*id),
            IdSetting::Name(n) => n.trim(),
        };
        if let Ok(id) = name.parse::<u32>() {
            return Ok(id);
        }
        let unknown = |reason: String| UnknownName {
            kind,
            name: name.to_string(),
            db,
            reason,
        };
        match lookup(name) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(unknown(String::new())),
            Err(e) => Err(unknown(format!(" (lookup failed: {e})"))),
        }
    }
}

// ---------------------------------------------------------------------------
// The per-connection check

/// Who is at the other end of a connection (`SO_PEERCRED`: the credentials
/// of the process that called `connect`, at that time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    /// The credentials of a connected tokio stream.
    pub fn of(stream: &tokio::net::UnixStream) -> io::Result<Peer> {
        let c = stream.peer_cred()?;
        Ok(Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} (gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, ", pid {pid}")?;
        }
        write!(f, ")")
    }
}

/// A refused connection. Its message is what the log line and the client's
/// `AccessDenied` error frame say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{peer} is not allowed to use this kpld: its uid is not in allowed_uids and none of its groups \
     is in allowed_gids; add one of them to the daemon's config"
)]
pub struct Denied {
    pub peer: Peer,
}

/// `allowed_uids` / `allowed_gids`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl AccessPolicy {
    pub fn new(uids: Vec<u32>, gids: Vec<u32>) -> AccessPolicy {
        AccessPolicy { uids, gids }
    }

    /// Both lists empty: the socket file's mode and group are the only check.
    pub fn is_open(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Allowed if the policy is open, the uid is listed, or the primary gid
    /// or one of `supplementary()` is listed. `supplementary` is called only
    /// when the answer depends on it.
    pub fn check(
        &self,
        peer: &Peer,
        supplementary: impl FnOnce() -> Vec<u32>,
    ) -> Result<(), Denied> {
        if self.is_open() || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid) {
            return Ok(());
        }
        if !self.gids.is_empty() && supplementary().iter().any(|g| self.gids.contains(g)) {
            return Ok(());
        }
        Err(Denied { peer: *peer })
    }

    /// Checks a freshly accepted connection: its credentials, and (only if
    /// needed) its supplementary groups (SO_PEERGROUPS). An error
    /// reading the credentials is a denial of an unknown peer (uid
    /// u32::MAX), unless the policy is open.
    pub fn check_stream(&self, stream: &tokio::net::UnixStream) -> Result<Peer, Denied> {
        let peer = match Peer::of(stream) {
            Ok(p) => p,
            Err(_) if self.is_open() => {
                return Ok(Peer {
                    uid: u32::MAX,
                    gid: u32::MAX,
                    pid: None,
                })
            }
            Err(_) => {
                return Err(Denied {
                    peer: Peer {
                        uid: u32::MAX,
                        gid: u32::MAX,
                        pid: None,
                    },
                })
            }
        };
        self.check(&peer, || peer_groups(stream).unwrap_or_default())?;
        Ok(peer)
    }
}

/// SO_PEERGROUPS: in asm-generic 59; libc does not export it for Linux
/// (0.2.191), so it is spelled out per architecture.
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 0x3d;
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary groups of the process at the other end of `sock`, as
/// the kernel recorded them when it connected (SO_PEERGROUPS, Linux 4.13+).
/// Unlike /proc/PID/status this cannot name another process that reused
/// the pid, and needs no /proc.
pub fn peer_groups(sock: &impl std::os::fd::AsFd) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_fd().as_raw_fd();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        match getsockopt_groups(fd, &mut groups, &mut len) {
            Ok(()) => {
                groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
                return Ok(groups);
            }
            // The kernel says how much room it needs in `len`.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let need = len as usize / std::mem::size_of::<libc::gid_t>();
                groups.resize(need.max(groups.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

#[allow(unsafe_code)]
fn getsockopt_groups(
    fd: std::os::fd::RawFd,
    groups: &mut [libc::gid_t],
    len: &mut libc::socklen_t,
) -> io::Result<()> {
    assert!(*len as usize <= std::mem::size_of_val(groups));
    // SAFETY: `groups` is a live, writable buffer of at least `*len` bytes
    // (asserted above) for the duration of the call, `len` a valid
    // socklen_t; the kernel writes at most `*len` bytes and updates `*len`.
    // An invalid `fd` is reported as EBADF, not undefined behaviour.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------
// The socket file

/// The mode and group the socket file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPerms {
    pub mode: u32,
    pub group: Option<u32>,
}

impl Default for SocketPerms {
    fn default() -> Self {
        SocketPerms {
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }
    }
}

/// The socket file this process created, to remove at shutdown only if it
/// is still the same file (a newer kpld may have replaced it).
#[derive(Debug, Clone)]
pub struct SocketFile {
    pub path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the file if it is still the one this process bound.
    pub fn remove_if_unchanged(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                std::fs::remove_file(&self.path)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Binds a Unix listening socket at `path` (which must not exist) whose file
/// has `perms` from the moment it appears under that name: it is bound in a
/// private directory next to `path`, given its group and mode, then renamed
/// into place. When that directory's path would be too long for a socket
/// address, binds in place and sets the mode and group right after (the
/// access policy still checks every connection).
///
/// The listener is in blocking mode; set it non-blocking before
/// `tokio::net::UnixListener::from_std`.
pub fn bind_with_perms(path: &Path, perms: &SocketPerms) -> io::Result<(UnixListener, SocketFile)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let staging = dir.join(format!(".kpld-bind.{}", std::process::id()));
    let staged = staging.join("s");
    let listener = if staged.as_os_str().len() <= SUN_PATH_MAX {
        // A directory of a dead process with our pid: ours to clear.
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&staging);
        std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
        let bound = (|| -> io::Result<UnixListener> {
            let l = UnixListener::bind(&staged)?;
            set_perms(&staged, perms)?;
            std::fs::rename(&staged, path)?;
            Ok(l)
        })();
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&staging);
        bound?
    } else {
        let l = UnixListener::bind(path)?;
        if let Err(e) = set_perms(path, perms) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        l
    };
    let m = std::fs::symlink_metadata(path)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
        },
    ))
}

fn set_perms(path: &Path, perms: &SocketPerms) -> io::Result<()> {
    if let Some(gid) = perms.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give the socket {} to group {gid} (socket_group): {e}; kpld must \
                     run as root or as a member of that group",
                    path.display()
                ),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(perms.mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: Some(99),
        }
    }

    #[test]
    fn open_policy_lets_everyone_in_without_looking_at_groups() {
        let p = AccessPolicy::default();
        assert!(p.is_open());
        p.check(&peer(1234, 1234), || panic!("groups not needed"))
            .unwrap();
    }

    #[test]
    fn listed_uid_or_primary_gid_is_enough() {
        let p = AccessPolicy::new(vec![1000], vec![2000]);
        p.check(&peer(1000, 1), || panic!("groups not needed"))
            .unwrap();
        p.check(&peer(5, 2000), || panic!("groups not needed"))
            .unwrap();
    }

    #[test]
    fn supplementary_group_is_enough() {
        let p = AccessPolicy::new(vec![], vec![2000]);
        p.check(&peer(5, 5), || vec![7, 2000]).unwrap();
    }

    #[test]
    fn others_are_denied_with_their_uid_named() {
        let p = AccessPolicy::new(vec![1000], vec![2000]);
        let e = p.check(&peer(4242, 4243), || vec![7]).unwrap_err();
        assert_eq!(e.peer.uid, 4242);
        let msg = e.to_string();
        assert!(
            msg.contains("uid 4242") && msg.contains("gid 4243") && msg.contains("pid 99"),
            "{msg}"
        );
    }

    #[test]
    fn uid_list_alone_does_not_read_groups() {
        let p = AccessPolicy::new(vec![1000], vec![]);
        assert!(p
            .check(&peer(5, 5), || panic!("groups not needed"))
            .is_err());
    }

    #[test]
    fn modes_parse_from_octal_strings_and_toml_octal() {
        assert_eq!(ModeSetting::Str("0660".into()).resolve(), Ok(0o660));
        assert_eq!(ModeSetting::Str("660".into()).resolve(), Ok(0o660));
        assert_eq!(ModeSetting::Str("0o600".into()).resolve(), Ok(0o600));
        assert_eq!(ModeSetting::Int(0o666).resolve(), Ok(0o666));
        let e = ModeSetting::Int(660).resolve().unwrap_err();
        assert!(e.contains("decimal"), "{e}");
        assert!(ModeSetting::Str("rw-rw----".into()).resolve().is_err());
        assert!(ModeSetting::Str("4755".into()).resolve().is_err());
        assert_eq!(SocketMode(0o660).to_string(), "0660");
        assert_eq!(SocketMode(0o7).to_string(), "0007");
    }

    #[test]
    fn config_values_deserialize_from_toml() {
        #[derive(Deserialize)]
        struct T {
            mode: ModeSetting,
            mode2: ModeSetting,
            ids: Vec<IdSetting>,
        }
        let t: T = toml::from_str("mode = 0o640\nmode2 = \"0600\"\nids = [0, \"root\"]").unwrap();
        assert_eq!(t.mode.resolve(), Ok(0o640));
        assert_eq!(t.mode2.resolve(), Ok(0o600));
        assert_eq!(
            t.ids,
            vec![IdSetting::Id(0), IdSetting::Name("root".into())]
        );
        assert_eq!(t.ids[1].resolve_user().unwrap(), 0);
        assert_eq!(t.ids[1].resolve_group().unwrap(), 0);
    }

    #[test]
    fn names_resolve_through_the_system_lookup_and_unknown_names_are_explained() {
        let me = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
        let my_uid = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(
            IdSetting::Name(me.clone()).resolve_user().unwrap(),
            my_uid,
            "{me}"
        );
        assert_eq!(IdSetting::Name("root".into()).resolve_user().unwrap(), 0);
        assert_eq!(IdSetting::Name("root".into()).resolve_group().unwrap(), 0);
        let e = IdSetting::Name("no-such-user-kpld".into())
            .resolve_user()
            .unwrap_err();
        assert!(e.to_string().contains("passwd database"), "{e}");
        assert_eq!(
            IdSetting::Name("4321".into()).resolve_group().unwrap(),
            4321
        );
        let e = IdSetting::Name("no-such-group-kpld".into())
            .resolve_group()
            .unwrap_err();
        assert!(e.to_string().contains("group database"), "{e}");
    }

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = peer_groups(&a).unwrap();
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        want.dedup();
        got.dedup();
        assert_eq!(got, want);
    }

    #[test]
    fn socket_file_has_its_mode_when_it_appears_and_is_removed_only_if_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpld.sock");
        let perms = SocketPerms {
            mode: 0o640,
            group: None,
        };
        let (listener, file) = bind_with_perms(&path, &perms).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        // The staging directory is gone; only the socket is left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kpld.sock")]);
        // It accepts connections under its final name.
        let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (_s, _) = listener.accept().unwrap();
        // Replaced by someone else: not removed.
        std::fs::remove_file(&path).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        assert!(!file.remove_if_unchanged().unwrap());
        assert!(path.exists());
    }

    #[test]
    fn socket_file_gets_its_group() {
        // Our own primary group: chown to it needs no privilege.
        let gid = std::fs::metadata("/proc/self").map(|m| m.gid()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (_l, file) = bind_with_perms(
            &path,
            &SocketPerms {
                mode: 0o660,
                group: Some(gid),
            },
        )
        .unwrap();
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().gid(), gid);
        assert!(file.remove_if_unchanged().unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn long_paths_fall_back_to_binding_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().as_os_str().len();
        // A directory so deep that the staging path no longer fits a socket
        // address, while the socket's own path does.
        let dir = tmp.path().join("d".repeat(95 - base));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("k.sock");
        assert!(path.as_os_str().len() <= SUN_PATH_MAX);
        assert!(dir.join(".kpld-bind.1/s").as_os_str().len() > SUN_PATH_MAX);
        let (_l, _f) = bind_with_perms(&path, &SocketPerms::default()).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
    }

    /// The groups come with the connection, not from /proc: a client that
    /// connected with a group and has exited since (its pid free for
    /// reuse) is still judged by the groups it connected with. Needs root
    /// (setpriv sets the groups); skipped with a message otherwise.
    #[tokio::test]
    async fn groups_of_a_peer_that_has_exited_are_still_its_own() {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        let setpriv = Path::new("/usr/bin/setpriv");
        if me != 0 || !setpriv.exists() {
            eprintln!("skipped: needs root and /usr/bin/setpriv to give a child other groups");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // The child connects with groups 4242 and 4243, then exits and is reaped.
        let st = std::process::Command::new(setpriv)
            .args(["--groups", "4242,4243", "--", "python3", "-c"])
            .arg("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        let (conn, _) = listener.accept().await.unwrap();
        let mut got = peer_groups(&conn).unwrap();
        got.sort_unstable();
        assert_eq!(got, vec![4242, 4243]);
        let policy = AccessPolicy::new(vec![], vec![4243]);
        assert_eq!(policy.check_stream(&conn).unwrap().uid, 0);
    }

    #[tokio::test]
    async fn peer_credentials_are_read_from_a_tokio_stream() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        // SAFETY-free way to know our ids: /proc/self is owned by them.
        let m = std::fs::metadata("/proc/self").unwrap();
        assert_eq!((p.uid, p.gid), (m.uid(), m.gid()));
        assert_eq!(p.pid, Some(std::process::id() as i32));
        let policy = AccessPolicy::new(vec![m.uid()], vec![]);
        assert_eq!(policy.check_stream(&a).unwrap().uid, m.uid());
        let policy = AccessPolicy::new(vec![m.uid().wrapping_add(1)], vec![]);
        assert_eq!(policy.check_stream(&a).unwrap_err().peer.uid, m.uid());
    }
}
