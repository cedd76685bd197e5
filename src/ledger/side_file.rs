//! The files kept beside a report (journal, lock, run file, temporary copies) and in the
//! state directory: never opened through a symbolic link, only regular files, new ones
//! made with `O_EXCL`; and the lock files' locking, which re-checks the path it locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek};
use std::path::Path;

/// True when `file` is not empty and does not end with a newline.
pub(super) fn ends_torn(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.seek(io::SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Removes a temporary file when dropped, unless it was renamed away.
pub(super) struct RemoveOnDrop<'a>(pub(super) &'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Opens and locks the lock file at `path`, waiting up to `wait` (`None` once the wait
/// runs out). Once locked, checks that `path` still names the file it locked: a run that
/// ends removes its lock file, so a run that waited on it may hold a file no one else can
/// see any more; it then locks the file that is there now.
pub(super) fn lock_file_at(path: &Path, wait: std::time::Duration) -> io::Result<Option<File>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let file = open_lock_file(path)?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        if names(path, &file)? {
            return Ok(Some(file));
        }
    }
}

/// Whether `path` names this open file.
pub(super) fn names(path: &Path, file: &File) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(at_path) => Ok(crate::output::same_inode(&at_path, &file.metadata()?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a held lock file, then lets go of the lock: a run waiting on it finds the path
/// gone (or another file there) and locks afresh.
pub(super) fn release(path: &Path, file: File) {
    if names(path, &file).unwrap_or(false) {
        let _ = std::fs::remove_file(path);
    }
    drop(file);
}

/// A lock file, made if missing, never truncated (it may hold another run's note).
pub(super) fn open_lock_file(path: &Path) -> io::Result<File> {
    open_side(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
}

/// Opens one of the files this tool keeps beside a report (journal, lock, temporary
/// copies) or in its state directory, never through a symbolic link planted at its path
/// (`O_NOFOLLOW`), and only when it is a regular file: a link to another file must not
/// get that file truncated or written.
pub(super) fn open_side(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    let file = options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link: the files beside a report are never followed",
                    path.display()
                ),
            );
        }
        e
    })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// A new side file: whatever was at `path` is removed (a link itself, never its target),
/// then the file is made with `O_EXCL`.
pub(super) fn create_side(path: &Path) -> io::Result<File> {
    remove_if_there(path)?;
    open_side(path, OpenOptions::new().write(true).create_new(true))
}

pub(super) fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
