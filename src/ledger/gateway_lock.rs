//! The run lock: one run at a time for these gateways of this project on this machine,
//! whatever the report, kept in this user's private state directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::LedgerError;
use super::side_file::{lock_file_at, open_side, release};

/// A lock for "these gateways of these projects", whatever the report: two runs that
/// would write the same gateways at once (each taking the other's writes for `unchanged`,
/// so neither report could undo the run) are refused. The key is what is written to, not
/// how it is spelled: an order-independent digest of the (project id, gateway id) pairs the
/// run may write (after `--shard`, each row's project resolved from its name or id, the id
/// in lower case), so another spelling of the space, the manifest's rows in another order
/// or format, a project named by its name or its id, a projects file in another order,
/// or `--shard 0/1` against none, all find the same lock. It lives in this user's state
/// directory ([`state_dir`]), the same for cron and a login shell, and goes when the run
/// ends. It protects one machine; runs on different machines are kept apart by `--shard`
/// or by their operators.
pub struct GatewayLock {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for GatewayLock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            release(&self.path, file);
        }
    }
}

impl GatewayLock {
    /// Takes the lock on the pairs `pairs_digest` ([`IdsDigest::add_pair`]), or says which
    /// report holds it. `projects` names them in that message.
    pub fn acquire(
        projects: &str,
        pairs_digest: &str,
        report: &Path,
    ) -> Result<GatewayLock, LedgerError> {
        use sha2::Digest;
        let dir = state_dir()?;
        let key = sha2::Sha256::digest(format!("project-gateway pairs\n{pairs_digest}"));
        let name: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{name}.lock"));
        let io_err = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let Some(mut file) = lock_file_at(&path, std::time::Duration::ZERO).map_err(io_err)? else {
            let mut other = String::new();
            let _ = open_side(&path, OpenOptions::new().read(true))
                .and_then(|f| io::Read::take(f, 4096).read_to_string(&mut other));
            return Err(LedgerError::SameRun {
                project: projects.to_owned(),
                other: crate::inert::text(other.trim(), 300),
            });
        };
        let shown = std::path::absolute(report).unwrap_or_else(|_| report.to_owned());
        file.set_len(0)
            .and_then(|()| file.write_all(shown.display().to_string().as_bytes()))
            .map_err(io_err)?;
        Ok(GatewayLock {
            path,
            file: Some(file),
        })
    }
}

/// An order-independent digest of a set of ids, or of (project, gateway) pairs: the same
/// set in any order (or format) gives the same digest. Feed it every id (or pair), then
/// [`IdsDigest::finish`].
#[derive(Debug, Clone, Default)]
pub struct IdsDigest {
    sum: u128,
    count: u64,
}

impl IdsDigest {
    pub fn add(&mut self, id: &uuid::Uuid) {
        use sha2::Digest;
        self.add_hash(&sha2::Sha256::digest(id.as_bytes()));
    }

    /// A gateway of a project: the project id as the space compares it (any case).
    pub fn add_pair(&mut self, project_id: &str, id: &uuid::Uuid) {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(project_id.to_ascii_lowercase().as_bytes());
        h.update(b"\n");
        h.update(id.as_bytes());
        self.add_hash(&h.finalize());
    }

    fn add_hash(&mut self, h: &[u8]) {
        let mut top = [0u8; 16];
        top.copy_from_slice(&h[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(top));
        self.count += 1;
    }

    pub fn finish(&self) -> String {
        format!("{}:{:032x}", self.count, self.sum)
    }
}

/// This user's state directory, for run locks: `~/.local/state/sipgw-bulk`, the home
/// directory taken from the user database (not `$HOME`, which cron and a login shell may
/// set differently), or `$SIPGW_BULK_STATE_DIR` when that is set. Made 0700 if missing;
/// refused unless it is a directory this user owns that no one else can enter.
pub fn state_dir() -> Result<PathBuf, LedgerError> {
    let dir = match std::env::var_os("SIPGW_BULK_STATE_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => home_dir()
            .ok_or_else(|| LedgerError::StateDir {
                dir: PathBuf::from("~/.local/state/sipgw-bulk"),
                why: "this user has no home directory in the user database; set \
                      SIPGW_BULK_STATE_DIR"
                    .into(),
            })?
            .join(".local/state/sipgw-bulk"),
    };
    private_dir(dir)
}

/// `dir`, made 0700 if missing; refused unless it is a directory of this user's that no
/// one else can enter.
fn private_dir(dir: PathBuf) -> Result<PathBuf, LedgerError> {
    let refused = |why: String| LedgerError::StateDir {
        dir: dir.clone(),
        why,
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| refused(e.to_string()))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(refused(e.to_string())),
        _ => {}
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| refused(e.to_string()))?;
    if !meta.is_dir() {
        return Err(refused(
            "it is not a directory (a symbolic link or a file)".into(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(refused(format!(
                "it belongs to user id {}, not to this user ({me}): another user could hold \
                 every lock in it",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(refused(format!(
                "its mode is {:o}; it must be 700 (chmod 700 {})",
                meta.mode() & 0o777,
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// The home directory of the effective user, from the user database.
#[cfg(unix)]
fn home_dir() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is plain data; zeroed is a valid value for getpwuid_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own, `buf.len()` is its true size, and
    // getpwuid_r writes only within it and `entry`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_dir.is_null() {
        return None;
    }
    // SAFETY: on success pw_dir points at a NUL-terminated string inside `buf`.
    let dir = unsafe { std::ffi::CStr::from_ptr(entry.pw_dir) };
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
}

#[cfg(not(unix))]
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("USERPROFILE").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_digest_is_the_set_whatever_its_order() {
        let ids = crate::sandbox::generated_ids(50, 3);
        let digest = |ids: &mut dyn Iterator<Item = &uuid::Uuid>| {
            let mut d = IdsDigest::default();
            ids.for_each(|id| d.add(id));
            d.finish()
        };
        let forward = digest(&mut ids.iter());
        assert_eq!(forward, digest(&mut ids.iter().rev()));
        assert_ne!(forward, digest(&mut ids[1..].iter()), "one id fewer");
        assert_ne!(
            forward,
            digest(&mut ids.iter().chain(&ids[..1])),
            "one twice"
        );
        let other = crate::sandbox::generated_ids(50, 4);
        assert_ne!(forward, digest(&mut other.iter()));
        assert!(forward.starts_with("50:"), "{forward}");
        assert_ne!(digest(&mut ids[..1].iter()), digest(&mut ids[1..2].iter()));
    }

    #[test]
    fn the_pairs_digest_knows_the_project_in_any_case() {
        let ids = crate::sandbox::generated_ids(3, 5);
        let pairs = |projects: [&str; 3]| {
            let mut d = IdsDigest::default();
            ids.iter()
                .zip(projects)
                .for_each(|(id, p)| d.add_pair(p, id));
            d.finish()
        };
        let one = pairs(["p-a", "p-b", "p-a"]);
        assert_eq!(one, pairs(["P-A", "p-B", "p-a"]));
        assert_ne!(
            one,
            pairs(["p-a", "p-a", "p-a"]),
            "a row of another project"
        );
    }

    #[test]
    fn the_state_directory_must_be_private_and_this_user_s() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Made when missing, with its parents, 0700.
        let made = private_dir(dir.path().join("a/b/state")).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(private_dir(made.clone()).is_ok(), "again, as it is");
        // Others can enter: refused, with the fix named.
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o750)).unwrap();
        let err = private_dir(made.clone()).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o701)).unwrap();
        assert!(private_dir(made.clone()).is_err());
        // A file, or a link to a good directory, in its place.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(
            private_dir(file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        let good = private_dir(dir.path().join("good")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(private_dir(link).is_err());
        // Another user's (root can make one).
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let theirs = private_dir(dir.path().join("theirs")).unwrap();
            std::os::unix::fs::chown(&theirs, Some(12345), None).unwrap();
            let err = private_dir(theirs).unwrap_err().to_string();
            assert!(err.contains("belongs to user id 12345"), "{err}");
        }
    }
}
