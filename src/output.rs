//! Files a command writes besides the report: each goes to a temporary file beside its
//! path and takes the path's place only once complete ([`AtomicFile`]), so a failed run
//! (a refused credential, a full disk) leaves yesterday's file as it was. And no output may
//! name an input or another output ([`refuse_clash`]): `rollback R -o R` would empty the
//! report it reads, `plan M --out M` would replace the manifest.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file named on the command line, with the flag or role that named it (for messages).
pub type Named<'a> = (&'a str, &'a Path);

/// Whether two paths name the same file: the same device and inode when both exist
/// (through links, `./`, `..` and symlinks), else the same absolute path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return same_inode(&x, &y);
    }
    resolved(a) == resolved(b)
}

/// Whether two metadata describe one file (the same device and inode).
#[cfg(unix)]
pub fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Without inodes: the same length, the nearest stand-in.
#[cfg(not(unix))]
pub fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len()
}

/// `path` made absolute, its directory resolved (symlinks, `..`) when it exists.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// Refuses when an output names an input, or two outputs name one file. `-` (stdin or
/// stdout) is never a file.
pub fn refuse_clash(outputs: &[Named], inputs: &[Named]) -> Result<(), String> {
    let is_file = |p: &Path| p != Path::new("-");
    for (i, (out_role, out)) in outputs.iter().enumerate() {
        if !is_file(out) {
            continue;
        }
        let others = inputs
            .iter()
            .map(|(role, path)| (role, path, "an input of this run"))
            .chain(
                outputs[i + 1..]
                    .iter()
                    .map(|(role, path)| (role, path, "another output of this run")),
            );
        for (role, path, what) in others {
            if is_file(path) && same_file(out, path) {
                return Err(format!(
                    "{out_role} {} names the same file as {role} {} ({what}): refused, \
                     nothing was written",
                    out.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// A file written whole or not at all: the bytes go to a temporary file beside `path`,
/// which takes `path`'s place on [`AtomicFile::commit`]. Dropped uncommitted, it leaves
/// nothing behind and `path` untouched. A path that names something other than a regular
/// file (`/dev/stdout`, a pipe, `/dev/full`) is written in place: a rename would replace
/// the device with a file.
pub struct AtomicFile {
    path: PathBuf,
    out: io::BufWriter<Target>,
}

enum Target {
    Temporary(tempfile::NamedTempFile),
    InPlace(std::fs::File),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Target::Temporary(f) => f.write(buf),
            Target::InPlace(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Target::Temporary(f) => f.flush(),
            Target::InPlace(f) => f.flush(),
        }
    }
}

impl AtomicFile {
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
        let target = if special {
            Target::InPlace(std::fs::OpenOptions::new().write(true).open(path)?)
        } else {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            Target::Temporary(
                tempfile::Builder::new()
                    .prefix(".sipgw-bulk-")
                    .tempfile_in(dir)?,
            )
        };
        Ok(AtomicFile {
            path: path.to_owned(),
            out: io::BufWriter::new(target),
        })
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> io::Result<()> {
        match self.out.into_inner().map_err(|e| e.into_error())? {
            Target::Temporary(tmp) => {
                tmp.as_file().sync_all()?;
                tmp.persist(&self.path).map_err(|e| e.error)?;
            }
            Target::InPlace(mut f) => f.flush()?,
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Where a command's output goes: a file named by `-o`, written whole or not at all, or
/// stdout.
pub enum Destination {
    File(AtomicFile),
    Stdout(io::StdoutLock<'static>),
}

impl Destination {
    /// `path`, or stdout when there is none (or it is `-`).
    pub fn open(path: Option<&Path>) -> io::Result<Destination> {
        match path {
            Some(p) if p != Path::new("-") => Ok(Destination::File(AtomicFile::create(p)?)),
            _ => Ok(Destination::Stdout(io::stdout().lock())),
        }
    }

    /// Puts a file in place; flushes stdout.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Destination::File(f) => f.commit(),
            Destination::Stdout(mut s) => s.flush(),
        }
    }
}

impl Write for Destination {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Destination::File(f) => f.write(buf),
            Destination::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Destination::File(f) => f.flush(),
            Destination::Stdout(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_is_found_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("r.csv");
        std::fs::write(&a, "x").unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(same_file(&a, &sub.join("../r.csv")));
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(same_file(&a, &link));
        let hard = dir.path().join("hard.csv");
        std::fs::hard_link(&a, &hard).unwrap();
        assert!(same_file(&hard, &a));
        // Not yet there: compared by path.
        assert!(same_file(&sub.join("new.csv"), &sub.join("../sub/new.csv")));
        assert!(!same_file(
            &sub.join("new.csv"),
            &dir.path().join("new.csv")
        ));
        assert!(!same_file(&a, &sub));

        let out = [("-o", a.as_path())];
        let err = refuse_clash(&out, &[("the report", link.as_path())]).unwrap_err();
        assert!(err.contains("-o") && err.contains("an input"), "{err}");
        let err =
            refuse_clash(&[("--out", a.as_path()), ("--report", hard.as_path())], &[]).unwrap_err();
        assert!(err.contains("another output"), "{err}");
        assert!(refuse_clash(&out, &[("the report", sub.as_path())]).is_ok());
        let dash = [("-o", Path::new("-"))];
        assert!(refuse_clash(&dash, &[("the manifest", Path::new("-"))]).is_ok());
    }

    #[test]
    fn a_destination_is_stdout_for_none_or_a_dash_and_a_whole_file_otherwise() {
        assert!(matches!(
            Destination::open(None),
            Ok(Destination::Stdout(_))
        ));
        assert!(matches!(
            Destination::open(Some(Path::new("-"))),
            Ok(Destination::Stdout(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut d = Destination::open(Some(&path)).unwrap();
        assert!(matches!(d, Destination::File(_)));
        d.write_all(b"a,b\n").unwrap();
        d.flush().unwrap();
        assert!(!path.exists(), "not before the commit");
        d.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n");
    }

    #[test]
    fn an_atomic_file_replaces_its_path_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.csv");
        std::fs::write(&path, "yesterday").unwrap();
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"today").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "yesterday");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no leftovers"
        );
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"today").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "today");
        // A device is written in place, never replaced by a file.
        let mut null = AtomicFile::create(Path::new("/dev/null")).unwrap();
        null.write_all(b"gone").unwrap();
        null.commit().unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        let mut full = AtomicFile::create(Path::new("/dev/full")).unwrap();
        full.write_all(b"no room").unwrap();
        assert!(full.commit().is_err());
        assert!(!std::fs::metadata("/dev/full").unwrap().is_file());
    }
}
