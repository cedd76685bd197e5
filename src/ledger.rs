//! The report as a ledger: one run at a time, tied to one manifest, resumable.
//!
//! Beside `REPORT` sits `REPORT.lock`: an advisory lock (released by the OS if the process
//! dies) that keeps a second run off the same report, holding the fingerprint (SHA-256) of
//! the manifest the report was made from. `--resume` checks that fingerprint, keeps the
//! rows an earlier run finished (`updated`, `unchanged`), and lets every other row run
//! again, so the finished report holds exactly one line per manifest row. `REPORT.journal`
//! is a write-ahead journal of before-values, so a row whose report line a crash lost
//! after its PATCH still comes back as `updated` with its true `before`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::model::GatewayFields;
use crate::report::{self, ReportFormat, ReportWriter, Status};

/// Why the ledger refuses to go on.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another run holds the lock: exit 5.
    #[error("another run is using report {0} (its lock file is held); nothing was done")]
    Locked(PathBuf),
    #[error(
        "report {0} already exists (an earlier run's record and undo file): pass --resume to \
         continue that run, or choose another --report"
    )]
    Exists(PathBuf),
    #[error(
        "report {report} was made from another manifest (fingerprint {was}, now {now}): \
         --resume needs the same manifest; start a new report for an edited one"
    )]
    ManifestChanged {
        report: PathBuf,
        was: String,
        now: String,
    },
    /// Another run on this machine applies the same manifest to the same space: exit 5.
    #[error(
        "another run on this machine is applying this manifest to {space} (its report: \
         {other}); nothing was done. Wait for it, or resume that report"
    )]
    SameRun { space: String, other: String },
    #[error("cannot resume from report {0}: its lock file holds no manifest fingerprint")]
    NoFingerprint(PathBuf),
    #[error("report {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Read(#[from] report::ReadError),
}

/// What the lock file records.
#[derive(Debug, Serialize, Deserialize)]
struct LockNote {
    manifest_sha256: String,
    manifest: String,
    pid: u32,
}

/// A report this process holds the lock on.
pub struct Ledger {
    report: PathBuf,
    lock: File,
    /// This run made the lock file: a run refused before it wrote a report leaves none.
    created: bool,
    /// Removed when the ledger is dropped (a plan's report is never resumed).
    drop_lock: bool,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.drop_lock || (self.created && !self.report.exists()) {
            let _ = std::fs::remove_file(lock_path(&self.report));
        }
    }
}

/// A report ready for rows, and what an earlier run already finished.
pub struct Opened {
    pub writer: ReportWriter,
    /// Where each `before` goes just before its PATCH is sent.
    pub journal: Journal,
    /// Ids an earlier run finished: not to be read or written again.
    pub done: IdSet,
    /// Before-values an earlier run journaled for rows its report lost (a crash between
    /// the PATCH and the report line): those rows are reported `updated` with them.
    pub recovered: HashMap<u128, GatewayFields>,
    /// Statuses of those kept rows, for the summary.
    pub kept: HashMap<Status, u64>,
    pub resumed: bool,
}

/// The ids an earlier run finished, as a sorted vector: 16 bytes an id, half of what a
/// hash set takes, so a resumed run of 10^6 rows stays small.
#[derive(Debug, Clone, Default)]
pub struct IdSet(Vec<u128>);

impl From<Vec<u128>> for IdSet {
    fn from(mut ids: Vec<u128>) -> IdSet {
        ids.sort_unstable();
        ids.dedup();
        ids.shrink_to_fit();
        IdSet(ids)
    }
}

impl IdSet {
    pub fn contains(&self, id: &u128) -> bool {
        self.0.binary_search(id).is_ok()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The write-ahead journal beside the report (`REPORT.journal`): the `before` of every
/// gateway, on disk before its PATCH leaves. A crash can lose a report line, never the
/// before-value that `rollback` needs.
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    id: String,
    before: GatewayFields,
}

impl Journal {
    /// The journal's file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one before-value and hands it to the OS before returning.
    pub fn record(&self, id: &uuid::Uuid, before: &GatewayFields) -> io::Result<()> {
        let mut line = serde_json::to_vec(&JournalLine {
            id: id.hyphenated().to_string(),
            before: before.clone(),
        })?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
    }
}

impl Ledger {
    /// Takes the lock beside `report`, at once or not at all.
    pub fn lock(report: &Path) -> Result<Ledger, LedgerError> {
        Self::lock_within(report, std::time::Duration::ZERO)
    }

    /// Takes the lock beside `report`, waiting up to `wait` for another run to release it
    /// (`--lock-timeout`): a cron job can queue behind the previous night's run.
    pub fn lock_within(report: &Path, wait: std::time::Duration) -> Result<Ledger, LedgerError> {
        // Name the report the user gave, not the lock file beside it.
        if let Some(dir) = report.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(LedgerError::Io {
                path: report.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("its directory {} does not exist", dir.display()),
                ),
            });
        }
        let lock_path = lock_path(report);
        let io_err = |source| LedgerError::Io {
            path: lock_path.clone(),
            source,
        };
        let created = !lock_path.exists();
        let lock = open_lock_file(&lock_path).map_err(io_err)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LedgerError::Locked(report.to_owned()));
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        Ok(Ledger {
            report: report.to_owned(),
            lock,
            created,
            drop_lock: false,
        })
    }

    /// The lock file goes when this run ends: for a plan, whose report is never resumed
    /// (an apply's lock file keeps the manifest's fingerprint for `--resume`).
    pub fn remove_lock_when_done(&mut self) {
        self.drop_lock = true;
    }

    /// Checks, without touching anything, that `open` will accept this run: no report yet,
    /// or `resume` with the manifest the report was made from.
    pub fn preflight(&mut self, manifest_sha256: &str, resume: bool) -> Result<(), LedgerError> {
        if !self.report.exists() {
            return Ok(());
        }
        if !resume {
            return Err(LedgerError::Exists(self.report.clone()));
        }
        let note = self.read_note()?;
        if note.manifest_sha256 != manifest_sha256 {
            return Err(LedgerError::ManifestChanged {
                report: self.report.clone(),
                was: short(&note.manifest_sha256),
                now: short(manifest_sha256),
            });
        }
        Ok(())
    }

    /// Opens the report for this run: a new one, or (with `resume`) the earlier run's,
    /// checked against the manifest's fingerprint and cleared of rows that must run again.
    pub fn open(
        &mut self,
        manifest: &Path,
        manifest_sha256: &str,
        format: ReportFormat,
        resume: bool,
    ) -> Result<Opened, LedgerError> {
        self.preflight(manifest_sha256, resume)?;
        if self.report.exists() {
            return self.reopen();
        }
        self.write_note(manifest, manifest_sha256)?;
        let writer =
            ReportWriter::create(&self.report, format).map_err(|source| LedgerError::Io {
                path: self.report.clone(),
                source,
            })?;
        Ok(Opened {
            writer,
            journal: self.journal(true)?,
            done: IdSet::default(),
            recovered: HashMap::new(),
            kept: HashMap::new(),
            resumed: false,
        })
    }

    /// Rewrites the report with only its finished rows (through a temporary file and a
    /// rename, so a crash here leaves the old report whole), then opens it for appending.
    fn reopen(&mut self) -> Result<Opened, LedgerError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LedgerError::Io { path, source }
        };
        let format = report::detect_format(&self.report).map_err(io_err(&self.report))?;
        let tmp = self.report.with_extension("rewrite.tmp");
        // A copy a crash left (or anything planted there) goes; the new one is made with
        // O_EXCL, so nothing at that path is ever followed or written through.
        remove_if_there(&tmp).map_err(io_err(&tmp))?;
        // Whatever fails below (a full disk), the half-written copy does not stay behind.
        let _cleanup = RemoveOnDrop(&tmp);
        let mut writer = ReportWriter::create(&tmp, format).map_err(io_err(&tmp))?;
        let mut done = Vec::new();
        let mut kept: HashMap<Status, u64> = HashMap::new();
        let mut possibly_written = Vec::new();
        report::for_each_record(&self.report, |r| {
            // A row this report may have written (`mismatch`: written, but not as asked;
            // `write_unknown`: an answer lost) keeps the before-value it had then: the
            // gateway as read now already carries that write.
            if (r.status == Status::Mismatch || r.error_code == report::WRITE_UNKNOWN)
                && let (Some(before), Ok(id)) = (&r.before, uuid::Uuid::try_parse(&r.id))
            {
                possibly_written.push((id.as_u128(), before.clone()));
            }
            let finished = matches!(r.status, Status::Updated | Status::Unchanged);
            // One line per id by construction: a manifest's duplicate ids are invalid rows.
            if let (true, Ok(id)) = (finished, uuid::Uuid::try_parse(&r.id)) {
                done.push(id.as_u128());
                *kept.entry(r.status).or_default() += 1;
                writer
                    .write(&r.into_record())
                    .map_err(|e| report::ReadError {
                        path: tmp.display().to_string(),
                        message: e.to_string(),
                    })?;
            }
            Ok(())
        })?;
        writer.close().map_err(io_err(&tmp))?;
        let done = IdSet::from(done);
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &self.report).map_err(io_err(&self.report))?;
        let writer = ReportWriter::append(&self.report, format).map_err(io_err(&self.report))?;
        let mut recovered = self.recovered(&done)?;
        for (id, before) in possibly_written {
            recovered.entry(id).or_insert(before);
        }
        Ok(Opened {
            writer,
            journal: self.journal(false)?,
            recovered,
            done,
            kept,
            resumed: true,
        })
    }

    /// The journal, emptied for a new run or kept for a resumed one. A kept journal whose
    /// last entry was torn by a crash gets a newline first, so the next entry is never
    /// glued onto the fragment.
    fn journal(&self, fresh: bool) -> Result<Journal, LedgerError> {
        let path = journal_path(&self.report);
        let file = open_side(
            &path,
            OpenOptions::new().create(true).read(true).append(true),
        )
        .and_then(|mut f| {
            if fresh {
                f.set_len(0)?;
            } else if ends_torn(&mut f)? {
                f.write_all(b"\n")?;
            }
            Ok(f)
        })
        .map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Journal {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Journaled before-values of rows the report does not hold as finished.
    fn recovered(&self, done: &IdSet) -> Result<HashMap<u128, GatewayFields>, LedgerError> {
        let path = journal_path(&self.report);
        let file = match open_side(&path, OpenOptions::new().read(true)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(source) => return Err(LedgerError::Io { path, source }),
        };
        let mut out = HashMap::new();
        for line in io::BufReader::new(file).lines() {
            let line = line.map_err(|source| LedgerError::Io {
                path: path.clone(),
                source,
            })?;
            // A torn entry (a crash mid-write) is skipped, never merged with the next one.
            let Ok(entry) = serde_json::from_str::<JournalLine>(&line) else {
                if !line.trim().is_empty() {
                    tracing::warn!(
                        journal = %path.display(),
                        "skipped a torn journal entry (a crash mid-write)"
                    );
                }
                continue;
            };
            if let Ok(id) = uuid::Uuid::try_parse(&entry.id)
                && !done.contains(&id.as_u128())
            {
                // The first before-value is the one from before any write of this run.
                out.entry(id.as_u128()).or_insert(entry.before);
            }
        }
        Ok(out)
    }

    fn read_note(&mut self) -> Result<LockNote, LedgerError> {
        let mut text = String::new();
        self.lock
            .rewind()
            .and_then(|()| self.lock.read_to_string(&mut text))
            .map_err(|source| LedgerError::Io {
                path: lock_path(&self.report),
                source,
            })?;
        serde_json::from_str(&text).map_err(|_| LedgerError::NoFingerprint(self.report.clone()))
    }

    fn write_note(&mut self, manifest: &Path, sha: &str) -> Result<(), LedgerError> {
        let note = LockNote {
            manifest_sha256: sha.to_owned(),
            manifest: manifest.display().to_string(),
            pid: std::process::id(),
        };
        let text = serde_json::to_string(&note).unwrap_or_default();
        self.lock
            .set_len(0)
            .and_then(|()| self.lock.rewind())
            .and_then(|()| self.lock.write_all(text.as_bytes()))
            .and_then(|()| self.lock.write_all(b"\n"))
            .and_then(|()| self.lock.sync_all())
            .map_err(|source| LedgerError::Io {
                path: lock_path(&self.report),
                source,
            })
    }
}

/// Ends a run's journal: removed when every before-value it holds is settled in the
/// report, else rewritten (through a temporary file and a rename) to hold only the entries
/// of `unsettled` rows, whose writes may have landed without an answer: a later
/// `--resume` needs them.
pub fn settle_journal(report: &Path, unsettled: &[u128]) -> io::Result<()> {
    let path = journal_path(report);
    if unsettled.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let keep: std::collections::HashSet<u128> = unsettled.iter().copied().collect();
    let tmp = path.with_extension("journal.tmp");
    let _cleanup = RemoveOnDrop(&tmp);
    let mut out = io::BufWriter::new(create_side(&tmp)?);
    let mut kept = std::collections::HashSet::new();
    let journal = open_side(&path, OpenOptions::new().read(true))?;
    for line in io::BufReader::new(journal).lines() {
        let line = line?;
        if let Ok(entry) = serde_json::from_str::<JournalLine>(&line)
            && let Ok(id) = uuid::Uuid::try_parse(&entry.id)
            && keep.contains(&id.as_u128())
            && kept.insert(id.as_u128())
        {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// True when `file` is not empty and does not end with a newline.
fn ends_torn(file: &mut File) -> io::Result<bool> {
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
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// A lock for "this manifest, applied to this space", whatever the report: two runs that
/// would write the same gateways at once (each taking the other's writes for `unchanged`,
/// so neither report could undo the run) are refused. It lives in a directory only this
/// user can write (`$XDG_RUNTIME_DIR/sipgw-bulk`, else `TMPDIR/sipgw-bulk-$USER`), under a
/// name hashed from the space, the manifest's fingerprint and the shard. It protects one
/// machine; runs on different machines are kept apart by `--shard` or by their operators.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock, or says which report holds it. `None` when the lock directory is
    /// unusable (not ours, open to others): the run goes on with a warning.
    pub fn acquire(
        space: &str,
        manifest_sha256: &str,
        shard: Option<crate::shard::Shard>,
        report: &Path,
    ) -> Result<Option<RunLock>, LedgerError> {
        use sha2::Digest;
        let Some(dir) = run_lock_dir() else {
            return Ok(None);
        };
        let shard = shard.map(|s| s.to_string()).unwrap_or_default();
        let key = sha2::Sha256::digest(format!("{space}\n{manifest_sha256}\n{shard}"));
        let name: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{name}.lock"));
        let io_err = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open_lock_file(&path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut other = String::new();
                let _ = file.read_to_string(&mut other);
                return Err(LedgerError::SameRun {
                    space: space.to_owned(),
                    other: crate::inert::text(other.trim(), 300),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let shown = std::path::absolute(report).unwrap_or_else(|_| report.to_owned());
        file.set_len(0)
            .and_then(|()| file.write_all(shown.display().to_string().as_bytes()))
            .map_err(io_err)?;
        Ok(Some(RunLock { _file: file }))
    }
}

/// This user's private directory for run locks, made if missing; `None` (with a warning)
/// when it exists but is not a private directory.
fn run_lock_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("sipgw-bulk"),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            let user: String = user
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
                .collect();
            std::env::temp_dir().join(format!("sipgw-bulk-{user}"))
        }
    };
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let _ = builder.create(&dir);
    let private = std::fs::symlink_metadata(&dir).is_ok_and(|m| {
        #[cfg(unix)]
        let closed = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o077 == 0;
        #[cfg(not(unix))]
        let closed = true;
        m.is_dir() && closed
    });
    if !private {
        tracing::warn!(
            dir = %dir.display(),
            "not a private directory: the guard against two runs of one manifest is off"
        );
        return None;
    }
    Some(dir)
}

/// A lock file, made if missing, never truncated (it may hold another run's note).
fn open_lock_file(path: &Path) -> io::Result<File> {
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
fn open_side(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
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
fn create_side(path: &Path) -> io::Result<File> {
    remove_if_there(path)?;
    open_side(path, OpenOptions::new().write(true).create_new(true))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `REPORT` + `suffix`: the files that sit beside a report.
pub fn beside(report: &Path, suffix: &str) -> PathBuf {
    let mut name = report.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `REPORT.journal`.
pub fn journal_path(report: &Path) -> PathBuf {
    beside(report, ".journal")
}

/// `REPORT.lock`.
pub fn lock_path(report: &Path) -> PathBuf {
    beside(report, ".lock")
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RowRecord;

    #[test]
    fn a_torn_journal_entry_is_skipped_and_never_swallows_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let ids = crate::sandbox::generated_ids(2, 9);
        let before = crate::sandbox::starting_fields(1);
        {
            let mut ledger = Ledger::lock(&report).unwrap();
            let opened = ledger
                .open(&manifest, "aaa", ReportFormat::Csv, false)
                .unwrap();
            opened.journal.record(&ids[0], &before).unwrap();
        }
        // A crash mid-append leaves half an entry with no newline.
        let path = journal_path(&report);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"0823a606-0aff-4c90-9eba-f8"#)
            .unwrap();
        drop(f);
        let mut ledger = Ledger::lock(&report).unwrap();
        let opened = ledger
            .open(&manifest, "aaa", ReportFormat::Csv, true)
            .unwrap();
        opened.journal.record(&ids[1], &before).unwrap();
        let again = ledger.recovered(&IdSet::default()).unwrap();
        assert_eq!(again.len(), 2, "both whole entries are read back");
        assert_eq!(again.get(&ids[1].as_u128()), Some(&before));
        // Settling keeps only what is still unsettled.
        settle_journal(&report, &[ids[1].as_u128()]).unwrap();
        let kept = ledger.recovered(&IdSet::default()).unwrap();
        assert_eq!(
            kept.keys().copied().collect::<Vec<_>>(),
            vec![ids[1].as_u128()]
        );
        settle_journal(&report, &[]).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_is_waited_for_until_it_is_released_or_the_wait_runs_out() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        let held = Ledger::lock(&report).unwrap();
        let started = Instant::now();
        assert!(matches!(
            Ledger::lock_within(&report, Duration::from_millis(300)),
            Err(LedgerError::Locked(_))
        ));
        assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let waited = Ledger::lock_within(&report, Duration::from_secs(30));
        release.join().unwrap();
        assert!(waited.is_ok(), "taken once the other run let go");
    }

    #[test]
    fn the_lock_file_stays_only_beside_an_apply_report() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        // Refused before it wrote a report: the lock file it made goes.
        let refused = dir.path().join("refused.csv");
        drop(Ledger::lock(&refused).unwrap());
        assert!(!lock_path(&refused).exists());
        // An apply's report keeps its lock file (the fingerprint for --resume).
        let applied = dir.path().join("applied.csv");
        let mut ledger = Ledger::lock(&applied).unwrap();
        drop(
            ledger
                .open(&manifest, "aaa", ReportFormat::Csv, false)
                .unwrap(),
        );
        drop(ledger);
        assert!(lock_path(&applied).exists());
        // A lock file this run did not make is left alone, report or not.
        std::fs::remove_file(&applied).unwrap();
        drop(Ledger::lock(&applied).unwrap());
        assert!(lock_path(&applied).exists());
        // A plan's report: its lock file goes although the report stays.
        let planned = dir.path().join("planned.csv");
        let mut ledger = Ledger::lock(&planned).unwrap();
        ledger.remove_lock_when_done();
        drop(
            ledger
                .open(&manifest, "aaa", ReportFormat::Csv, false)
                .unwrap(),
        );
        drop(ledger);
        assert!(planned.exists() && !lock_path(&planned).exists());
    }

    #[test]
    fn a_report_in_a_missing_directory_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("gone").join("r.csv");
        let err = Ledger::lock(&report).err().unwrap().to_string();
        assert!(err.contains("r.csv") && !err.contains(".lock"), "{err}");
        let LedgerError::Io { source, .. } = Ledger::lock(&report).err().unwrap() else {
            panic!("not an I/O error");
        };
        assert!(source.to_string().contains("does not exist"), "{source}");
    }

    #[test]
    fn finished_ids_are_found_and_others_are_not() {
        let ids = crate::sandbox::generated_ids(3, 7);
        let set = IdSet::from(vec![ids[2].as_u128(), ids[0].as_u128(), ids[2].as_u128()]);
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty() && IdSet::default().is_empty());
        assert!(set.contains(&ids[0].as_u128()) && set.contains(&ids[2].as_u128()));
        assert!(!set.contains(&ids[1].as_u128()));
    }

    #[test]
    fn a_whole_journal_is_resumed_without_a_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let ids = crate::sandbox::generated_ids(2, 4);
        let before = crate::sandbox::starting_fields(2);
        for (i, resume) in [false, true].into_iter().enumerate() {
            let mut ledger = Ledger::lock(&report).unwrap();
            let opened = ledger
                .open(&manifest, "aaa", ReportFormat::Csv, resume)
                .unwrap();
            opened.journal.record(&ids[i], &before).unwrap();
        }
        let text = std::fs::read_to_string(journal_path(&report)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().all(|l| !l.is_empty()), "{text}");
    }

    #[test]
    fn settling_a_journal_that_is_gone_is_fine_one_that_cannot_go_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        settle_journal(&report, &[]).unwrap();
        // A directory where the journal should be cannot be removed as a file.
        std::fs::create_dir(journal_path(&report)).unwrap();
        assert!(settle_journal(&report, &[]).is_err());
    }

    #[test]
    fn a_resume_that_fails_leaves_no_half_written_copy() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.jsonl");
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        {
            let mut ledger = Ledger::lock(&report).unwrap();
            drop(
                ledger
                    .open(&manifest, "aaa", ReportFormat::Jsonl, false)
                    .unwrap(),
            );
        }
        std::fs::write(&report, "{not a report line\n").unwrap();
        let mut ledger = Ledger::lock(&report).unwrap();
        assert!(matches!(
            ledger.open(&manifest, "aaa", ReportFormat::Jsonl, true),
            Err(LedgerError::Read(_))
        ));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_symlink_planted_beside_the_report_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious\n").unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        // At the lock's path: the lock is refused, the victim untouched.
        let report = dir.path().join("r.csv");
        std::os::unix::fs::symlink(&victim, lock_path(&report)).unwrap();
        let Err(err) = Ledger::lock(&report) else {
            panic!("a symlinked lock was followed");
        };
        assert!(format!("{:#}", anyhow::Error::new(err)).contains("symbolic link"));
        // At the journal's path: the run is refused before anything is written there.
        let report = dir.path().join("s.csv");
        std::os::unix::fs::symlink(&victim, journal_path(&report)).unwrap();
        let mut ledger = Ledger::lock(&report).unwrap();
        assert!(
            ledger
                .open(&manifest, "aaa", ReportFormat::Csv, false)
                .is_err()
        );
        // A directory where the journal goes is not a journal either.
        let report = dir.path().join("t.csv");
        std::fs::create_dir(journal_path(&report)).unwrap();
        let mut ledger = Ledger::lock(&report).unwrap();
        assert!(
            ledger
                .open(&manifest, "aaa", ReportFormat::Csv, false)
                .is_err()
        );
        // A planted temporary file is removed, not written through.
        let tmp = dir.path().join("u.csv.journal.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        std::fs::write(dir.path().join("u.csv.journal"), "").unwrap();
        settle_journal(&dir.path().join("u.csv"), &[1]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn a_second_lock_on_the_same_report_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        let _held = Ledger::lock(&report).unwrap();
        assert!(matches!(Ledger::lock(&report), Err(LedgerError::Locked(_))));
    }

    #[test]
    fn resume_keeps_finished_rows_and_refuses_another_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let ids = crate::sandbox::generated_ids(6, 5);
        let before = crate::sandbox::starting_fields(3);
        {
            let mut ledger = Ledger::lock(&report).unwrap();
            let mut opened = ledger
                .open(&manifest, "aaa", ReportFormat::Csv, false)
                .unwrap();
            let rows = [
                (Status::Updated, ""),
                (Status::Failed, "http_500"),
                (Status::Unchanged, ""),
                (Status::Failed, report::WRITE_UNKNOWN),
                (Status::Updated, ""),
                (Status::Mismatch, "mismatch"),
            ];
            for (i, (status, code)) in rows.into_iter().enumerate() {
                let mut r = RowRecord::bare(
                    0,
                    i as u64 + 2,
                    ids[i].to_string(),
                    status,
                    code,
                    String::new(),
                );
                // Every row but the unchanged one read its gateway before the write.
                if status != Status::Unchanged {
                    r.before = Some(before.clone());
                }
                opened.writer.write(&r).unwrap();
            }
        }
        let mut ledger = Ledger::lock(&report).unwrap();
        let other = "b".repeat(64);
        let Err(LedgerError::ManifestChanged { was, now, .. }) =
            ledger.open(&manifest, &other, ReportFormat::Csv, true)
        else {
            panic!("another manifest was not refused");
        };
        // Both fingerprints shown, cut to 12 characters.
        assert_eq!((was.as_str(), now.as_str()), ("aaa", "bbbbbbbbbbbb"));
        assert!(matches!(
            ledger.open(&manifest, "aaa", ReportFormat::Csv, false),
            Err(LedgerError::Exists(_))
        ));
        let opened = ledger
            .open(&manifest, "aaa", ReportFormat::Csv, true)
            .unwrap();
        assert!(opened.resumed);
        assert_eq!(opened.done.len(), 3);
        assert!(!opened.done.contains(&ids[1].as_u128()));
        assert_eq!(opened.kept.get(&Status::Updated), Some(&2));
        assert_eq!(opened.kept.get(&Status::Unchanged), Some(&1));
        // The write whose answer was lost may have landed, and the mismatched one did:
        // their befores are kept for the rows that run again.
        let mut recovered = opened.recovered.keys().copied().collect::<Vec<_>>();
        recovered.sort_unstable();
        let mut want = vec![ids[3].as_u128(), ids[5].as_u128()];
        want.sort_unstable();
        assert_eq!(recovered, want);
        assert_eq!(opened.recovered.get(&ids[3].as_u128()), Some(&before));
        assert_eq!(opened.recovered.get(&ids[5].as_u128()), Some(&before));
        drop(opened);
        let kept = report::read_report(&report).unwrap();
        assert_eq!(
            kept.iter().map(|r| r.row).collect::<Vec<_>>(),
            vec![2, 4, 6]
        );
    }
}
