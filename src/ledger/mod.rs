//! The report as a ledger: one run at a time, tied to one manifest, resumable.
//!
//! Beside `REPORT` sit:
//! - `REPORT.lock`: an advisory lock (released by the OS if the process dies) that keeps a
//!   second run off the same report. It exists only while a run holds it.
//! - `REPORT.run.json` ([`RunNote`]): what the run was made from (its format version, the
//!   space, project, shard, the manifest and its SHA-256, the `--only`/`--skip` selection's
//!   digest, the projects of a run of several and the digest of their rows) and, once the
//!   run went through every row, when it finished and the report's size and SHA-256 then.
//!   `--resume` of a run cut off continues that run and nothing else: it keeps the rows
//!   the run finished (`updated`, `unchanged`) and lets every other row run again, so the
//!   finished report holds exactly one line per manifest row. `--resume` of a finished run
//!   starts the next report of its chain (`chain`).
//! - `REPORT.journal`: a write-ahead journal of before-values, so a row whose report line
//!   a crash lost after its PATCH still comes back as `updated` with its true `before`.
//!
//! None of them is ever followed through a symbolic link. A [`GatewayLock`] in this user's
//! state directory keeps two runs that would write the same gateways of one project apart,
//! whatever their reports, spellings of the space, or environments.
//!
//! The parts: `claim` (a run's report in one call: locked, its chain's link, checked),
//! `chain` (the chain of reports one schedule writes, and the writes of unknown outcome
//! carried from one link to the next), `run_file` (the run file), `journal` (the
//! write-ahead journal), `gateway_lock` (the lock on the gateways, in the state directory)
//! and `side_file` (how every one of those files is opened, and how lock files are locked
//! and let go).

mod chain;
mod claim;
mod gateway_lock;
mod journal;
mod run_file;
mod side_file;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::report::{self, ReportFormat, ReportWriter};
use crate::status::Status;

pub use chain::{EarlierWrite, report_to_resume};
pub use claim::Claim;
pub use gateway_lock::{GatewayLock, IdsDigest, state_dir};
pub use journal::{Journal, settle_journal};
use run_file::LegacyLockNote;
pub use run_file::{RUN_FILE_VERSION, RunFile};
use side_file::{RemoveOnDrop, create_side, lock_file_at, open_side, release, remove_if_there};

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
    /// A plan's report is never continued: it names another or is removed first.
    #[error(
        "report {0} already exists (an earlier plan's record): choose another --report, or \
         remove it first; a plan is never continued"
    )]
    PlanExists(PathBuf),
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
        "another run on this machine is writing these gateways of {project} (its report: \
         {other}); nothing was done. Wait for it, or resume that report"
    )]
    SameRun { project: String, other: String },
    #[error(
        "cannot resume from report {0}: it has no run file (REPORT.run.json) saying what it \
         was made from; start a new report"
    )]
    NoFingerprint(PathBuf),
    #[error(
        "report {report} was made against {was}, but this run points at {now}: --resume \
         continues a run in the space it started in; start a new report for another space"
    )]
    OtherSpace {
        report: PathBuf,
        was: String,
        now: String,
    },
    /// A run of several projects resumed with projects that do not cover its rows as
    /// they were: exit 64, nothing sent.
    #[error(
        "report {report} was made by a run {why}: --resume continues a run for the same \
         projects (give it the projects file the run was made with); start a new report for \
         others"
    )]
    OtherProjects { report: PathBuf, why: String },
    #[error(
        "report {report} was made for shard {was}, but this run is for shard {now}: \
         --resume continues the same shard; start a new report for another"
    )]
    OtherShard {
        report: PathBuf,
        was: String,
        now: String,
    },
    #[error(
        "report {report} was made for {was}, but this run is for {now}: --resume continues \
         the same selection (--only/--skip); start a new report for another"
    )]
    OtherSelection {
        report: PathBuf,
        was: String,
        now: String,
    },
    #[error(
        "the chain of reports that starts at {first} is broken: {problem}. A link is never \
         skipped or reused (the undo values it holds would be lost, and the numbers would no \
         longer tell the order the runs happened in): put it back as it was, or start a new \
         chain with another --report"
    )]
    BrokenChain { first: PathBuf, problem: String },
    #[error("the lock directory {dir} cannot be used: {why}")]
    StateDir { dir: PathBuf, why: String },
    #[error("report {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Read(#[from] report::ReadError),
}

/// A report this process holds the lock on. The lock file goes when the ledger is
/// dropped.
pub struct Ledger {
    report: PathBuf,
    lock: Option<File>,
    /// This report's place in a chain ([`report_to_resume`]): the chain's first report,
    /// whose space, project, shard and selection every link keeps, and the finished report
    /// this one follows, whose possible writes this one may carry.
    chain: Option<Chain>,
    /// The report has the `project` column (a run with several projects).
    projects: bool,
    /// The report the run was given, when this one is the next link of its chain: its
    /// lock is held while this ledger lives ([`Ledger::claim`]).
    named: Option<Box<Ledger>>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // A report made before run files keeps its lock file (this version's are empty):
        // it holds the fingerprint until a resume moves it to a run file.
        let Some(lock) = self.lock.take() else { return };
        let legacy = lock.metadata().is_ok_and(|m| m.len() > 0)
            && self.report.exists()
            && !run_path(&self.report).exists();
        if !legacy {
            release(&lock_path(&self.report), lock);
        }
    }
}

/// Where a report stands in its chain.
struct Chain {
    first: PathBuf,
    follows: PathBuf,
}

/// A report ready for rows, and what an earlier run already finished.
pub struct Opened {
    pub writer: ReportWriter,
    /// Where each `before` goes just before its PATCH is sent (an apply's).
    pub journal: Option<Journal>,
    /// Ids an earlier run finished: not to be read or written again.
    pub done: IdSet,
    /// Writes an earlier run may have made, with the rows' undo values: this report's own
    /// (journaled for rows its report lost, a crash between the PATCH and the report line,
    /// or its `mismatch`/`write_unknown` lines) and those carried from the finished report
    /// before it in the chain ([`EarlierWrite::before_for`] says when each stands).
    pub recovered: HashMap<u128, EarlierWrite>,
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
        match lock_file_at(&lock_path, wait) {
            Ok(Some(lock)) => Ok(Ledger {
                report: report.to_owned(),
                lock: Some(lock),
                chain: None,
                projects: false,
                named: None,
            }),
            Ok(None) => Err(LedgerError::Locked(report.to_owned())),
            Err(source) => Err(LedgerError::Io {
                path: lock_path,
                source,
            }),
        }
    }

    /// Checks, without touching anything, that `open` will accept this run: no report yet,
    /// or `resume` of the run the report was made from (same manifest, space, project and
    /// shard); in a chain, the first link's space, project, shard and selection.
    pub fn preflight(&mut self, run: &RunFile, resume: bool) -> Result<(), LedgerError> {
        if let Some(chain) = &self.chain
            && let Some(first) = read_run_file(&chain.first)?
            && let Some(refused) = first.refuses_link(run, &chain.first)
        {
            return Err(refused);
        }
        if !self.report.exists() {
            return Ok(());
        }
        if !resume {
            return Err(LedgerError::Exists(self.report.clone()));
        }
        match self.read_note()?.refuses(run, &self.report) {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// A plan writes a new report, never over an earlier one.
    pub fn refuse_an_existing_plan(&self) -> Result<(), LedgerError> {
        match self.report.exists() {
            true => Err(LedgerError::PlanExists(self.report.clone())),
            false => Ok(()),
        }
    }

    /// This run's report is a link of the chain that starts at `first`, after `finished`
    /// (a report whose run finished): it keeps `first`'s space, project, shard and
    /// selection, and a row whose write in `finished`'s run has an unknown outcome
    /// (`write_unknown`) keeps the before-value it had there while the gateway is what
    /// that write asked for.
    pub fn follow(&mut self, first: &Path, finished: &Path) {
        self.chain = Some(Chain {
            first: first.to_owned(),
            follows: finished.to_owned(),
        });
    }

    /// Opens the report for this run: a new one, or (with `resume`) the earlier run's,
    /// checked against the manifest's fingerprint and cleared of rows that must run again.
    /// The report this ledger opens has the `project` column, last (a run with several
    /// projects).
    pub fn set_project_column(&mut self, projects: bool) {
        self.projects = projects;
    }

    /// `run` is `None` for a plan's report, which is never resumed (no run file).
    pub fn open(
        &mut self,
        run: Option<&RunFile>,
        format: ReportFormat,
        resume: bool,
    ) -> Result<Opened, LedgerError> {
        match run {
            Some(run) => self.preflight(run, resume)?,
            None => self.refuse_an_existing_plan()?,
        }
        if self.report.exists() {
            let mut opened = self.reopen()?;
            self.carry_over(&mut opened.recovered, &opened.done)?;
            // A report made before run files: its fingerprint moves to one now.
            if let Some(run) = run
                && !run_path(&self.report).exists()
            {
                self.write_note(run)?;
            }
            return Ok(opened);
        }
        if let Some(run) = run {
            self.write_note(run)?;
        }
        let writer =
            ReportWriter::create_with(&self.report, format, self.projects).map_err(|source| {
                LedgerError::Io {
                    path: self.report.clone(),
                    source,
                }
            })?;
        // A plan writes nothing: it has no journal (and leaves none behind).
        let journal = match run {
            Some(_) => Some(journal::Journal::open(&self.report, true)?),
            None => None,
        };
        let mut recovered = HashMap::new();
        self.carry_over(&mut recovered, &IdSet::default())?;
        Ok(Opened {
            writer,
            journal,
            done: IdSet::default(),
            recovered,
            kept: HashMap::new(),
            resumed: false,
        })
    }

    /// Adds the writes the finished report before this one may have made, unless this
    /// report knows better (its own, or a row it finished).
    fn carry_over(
        &self,
        recovered: &mut HashMap<u128, EarlierWrite>,
        done: &IdSet,
    ) -> Result<(), LedgerError> {
        match &self.chain {
            Some(chain) => chain::carry_over(&chain.follows, recovered, done),
            None => Ok(()),
        }
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
        let mut writer =
            ReportWriter::create_with(&tmp, format, self.projects).map_err(io_err(&tmp))?;
        let mut done = Vec::new();
        let mut kept: HashMap<Status, u64> = HashMap::new();
        let mut possibly_written_rows = Vec::new();
        report::for_each_record(&self.report, |r| {
            // A row this report may have written keeps the before-value it had then: the
            // gateway as read now already carries that write.
            if let Some(written) = chain::possibly_written(&r, false) {
                possibly_written_rows.push(written);
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
        let writer = ReportWriter::append(&self.report, format)
            .map_err(io_err(&self.report))?
            .with_project_column(self.projects);
        // The journal's first entry is the before-value from before any write of this
        // report; a line says what that write may have left.
        let mut recovered: HashMap<u128, EarlierWrite> = journal::recovered(&self.report, &done)?
            .into_iter()
            .map(|(id, journaled)| {
                let write = EarlierWrite {
                    before: journaled.before,
                    after: None,
                    fields: journaled.fields,
                    carried: false,
                };
                (id, write)
            })
            .collect();
        for (id, line) in possibly_written_rows {
            let write = recovered.entry(id).or_insert_with(|| line.clone());
            if write.after.is_none() && write.before == line.before {
                write.after = line.after;
                write.fields = write.fields.or(line.fields);
            }
        }
        Ok(Opened {
            writer,
            journal: Some(journal::Journal::open(&self.report, false)?),
            recovered,
            done,
            kept,
            resumed: true,
        })
    }

    /// The run file, or for a report made before run files, the fingerprint its lock file
    /// kept (space, project and shard unknown: any matches).
    fn read_note(&mut self) -> Result<RunFile, LedgerError> {
        if let Some(note) = read_run_file(&self.report)? {
            return Ok(note);
        }
        let io_err = |path: PathBuf| move |source| LedgerError::Io { path, source };
        let mut text = String::new();
        if let Some(lock) = self.lock.as_mut() {
            lock.rewind()
                .and_then(|()| io::Read::take(&*lock, 64 * 1024).read_to_string(&mut text))
                .map_err(io_err(lock_path(&self.report)))?;
        }
        let legacy: LegacyLockNote = serde_json::from_str(&text)
            .map_err(|_| LedgerError::NoFingerprint(self.report.clone()))?;
        Ok(RunFile {
            sipgw_bulk_run: 0,
            space: String::new(),
            project_id: String::new(),
            shard: None,
            manifest: legacy.manifest,
            manifest_sha256: legacy.manifest_sha256,
            selection: None,
            projects: None,
            project_rows: None,
            finished: None,
            report_bytes: None,
            report_sha256: None,
        })
    }

    /// Records in the run file that the run went through every row: a later `--resume`
    /// of this report starts a new one ([`report_to_resume`]).
    pub fn record_finished(&mut self, run: &RunFile) -> Result<(), LedgerError> {
        // The report's size then: a link cut or edited since is refused, never followed.
        let report_bytes = std::fs::metadata(&self.report).ok().map(|m| m.len());
        let finished = RunFile {
            finished: Some(httpdate::fmt_http_date(std::time::SystemTime::now())),
            report_bytes,
            report_sha256: crate::bounded::file_sha256(&self.report),
            ..run.clone()
        };
        self.write_note(&finished)
    }

    /// Writes the run file, whole or not at all (a temporary file, then a rename).
    fn write_note(&mut self, run: &RunFile) -> Result<(), LedgerError> {
        let path = run_path(&self.report);
        let tmp = beside(&self.report, ".run.json.tmp");
        let _cleanup = RemoveOnDrop(&tmp);
        let text = serde_json::to_string_pretty(run).unwrap_or_default() + "\n";
        create_side(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| LedgerError::Io { path, source })
    }
}

/// The run file beside `report`, if there is one.
fn read_run_file(report: &Path) -> Result<Option<RunFile>, LedgerError> {
    let path = run_path(report);
    let file = match open_side(&path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LedgerError::Io { path, source }),
    };
    let mut text = String::new();
    io::Read::take(file, 64 * 1024)
        .read_to_string(&mut text)
        .map_err(|source| LedgerError::Io { path, source })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|_| LedgerError::NoFingerprint(report.to_owned()))
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

/// `REPORT.run.json`.
pub fn run_path(report: &Path) -> PathBuf {
    beside(report, ".run.json")
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::FieldSet;
    use crate::report::RowRecord;
    use std::time::Duration;

    /// A run file of `manifest` with digest `sha`, for the ledger's tests.
    pub(super) fn note(manifest: &Path, sha: &str) -> RunFile {
        RunFile::new("https://acme.signalwire.com/", "p-1", None, manifest, sha)
    }

    /// `ledger`'s report opened for `run`, one line written, and the run finished.
    pub(super) fn finish_with_one_line(ledger: &mut Ledger, run: &RunFile) {
        let mut opened = ledger.open(Some(run), ReportFormat::Csv, false).unwrap();
        let line = RowRecord::bare(0, 2, "x".into(), Status::Unchanged, "", String::new());
        opened.writer.write(&line).unwrap();
        opened.writer.close().unwrap();
        ledger.record_finished(run).unwrap();
    }

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
                .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, false)
                .unwrap();
            opened
                .journal
                .as_ref()
                .unwrap()
                .record(&ids[0], &before, FieldSet::parse("name"))
                .unwrap();
        }
        // A crash mid-append leaves half an entry with no newline.
        let path = journal_path(&report);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"0823a606-0aff-4c90-9eba-f8"#)
            .unwrap();
        drop(f);
        let mut ledger = Ledger::lock(&report).unwrap();
        let opened = ledger
            .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, true)
            .unwrap();
        opened
            .journal
            .as_ref()
            .unwrap()
            .record(&ids[1], &before, FieldSet::parse("codecs"))
            .unwrap();
        let again = journal::recovered(&ledger.report, &IdSet::default()).unwrap();
        assert_eq!(again.len(), 2, "both whole entries are read back");
        assert_eq!(
            again.get(&ids[1].as_u128()),
            Some(&journal::Journaled {
                before: before.clone(),
                fields: Some(FieldSet::parse("codecs"))
            })
        );
        // Settling keeps only what is still unsettled.
        settle_journal(&report, &[ids[1].as_u128()]).unwrap();
        let kept = journal::recovered(&ledger.report, &IdSet::default()).unwrap();
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
    fn no_lock_file_outlives_its_run_and_the_run_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        // Refused before it wrote a report: nothing stays.
        let refused = dir.path().join("refused.csv");
        drop(Ledger::lock(&refused).unwrap());
        assert!(!lock_path(&refused).exists());
        // An apply's report: the run file stays, the lock goes.
        let applied = dir.path().join("applied.csv");
        let mut ledger = Ledger::lock(&applied).unwrap();
        drop(
            ledger
                .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, false)
                .unwrap(),
        );
        drop(ledger);
        assert!(!lock_path(&applied).exists());
        let run: RunFile =
            serde_json::from_str(&std::fs::read_to_string(run_path(&applied)).unwrap()).unwrap();
        assert_eq!(run, note(&manifest, "aaa"));
        assert_eq!(run.space, "https://acme.signalwire.com", "recorded one way");
        // A plan's report: no run file, no lock.
        let planned = dir.path().join("planned.csv");
        let mut ledger = Ledger::lock(&planned).unwrap();
        drop(ledger.open(None, ReportFormat::Csv, false).unwrap());
        drop(ledger);
        assert!(planned.exists() && !lock_path(&planned).exists());
        assert!(!run_path(&planned).exists());
        assert!(!journal_path(&planned).exists(), "a plan has no journal");
        // A plan on an existing report is refused, and not told to resume.
        let mut ledger = Ledger::lock(&planned).unwrap();
        assert!(matches!(
            ledger.open(None, ReportFormat::Csv, false),
            Err(LedgerError::PlanExists(_))
        ));
    }

    #[test]
    fn a_run_that_waited_for_a_removed_lock_locks_the_file_that_is_there_now() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        let first = Ledger::lock(&report).unwrap();
        let waiter = {
            let report = report.clone();
            std::thread::spawn(move || Ledger::lock_within(&report, Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(300));
        // The first run ends: its lock file goes, and its lock with it.
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        // The waiter holds the file at the path, so a third run is refused, not let in
        // beside it on a new file.
        assert!(matches!(Ledger::lock(&report), Err(LedgerError::Locked(_))));
        assert!(lock_path(&report).exists());
        drop(second);
        assert!(!lock_path(&report).exists());
        assert!(Ledger::lock(&report).is_ok());
    }

    #[test]
    fn a_resume_continues_only_the_same_run() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let report = dir.path().join("r.csv");
        let run = note(&manifest, "aaa");
        drop(
            Ledger::lock(&report)
                .unwrap()
                .open(Some(&run), ReportFormat::Csv, false)
                .unwrap(),
        );
        let other_space = RunFile {
            space: "https://other.signalwire.com".into(),
            ..run.clone()
        };
        let other_project = RunFile {
            project_id: "p-2".into(),
            ..run.clone()
        };
        let other_shard = RunFile {
            shard: Some("0/1".into()),
            ..run.clone()
        };
        let other_manifest = note(&manifest, "bbb");
        let other_selection = RunFile {
            selection: Some("digest".into()),
            ..run.clone()
        };
        let mut ledger = Ledger::lock(&report).unwrap();
        for (now, want) in [
            (&other_space, "OtherSpace"),
            (&other_project, "OtherSpace"),
            (&other_shard, "OtherShard"),
            (&other_manifest, "ManifestChanged"),
            (&other_selection, "OtherSelection"),
        ] {
            let err = ledger.preflight(now, true).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{err:?}");
        }
        // Spelled differently, the same space.
        let same = RunFile::new("HTTPS://ACME.signalwire.com", "p-1", None, &manifest, "aaa");
        assert!(ledger.preflight(&same, true).is_ok());
        // A report made before run files: its lock file's fingerprint is read once.
        let old = dir.path().join("old.csv");
        std::fs::write(&old, "row,id,status\n").unwrap();
        std::fs::write(
            lock_path(&old),
            r#"{"manifest_sha256":"aaa","manifest":"m.csv","pid":1}"#,
        )
        .unwrap();
        // A run that only looks (a refused plan) leaves that fingerprint where it is.
        drop(Ledger::lock(&old).unwrap());
        assert!(lock_path(&old).exists(), "the old fingerprint is kept");
        let mut ledger = Ledger::lock(&old).unwrap();
        assert!(ledger.preflight(&other_shard, true).is_ok(), "unknown then");
        assert!(ledger.preflight(&other_manifest, true).is_err());
        drop(ledger.open(Some(&run), ReportFormat::Csv, true).unwrap());
        drop(ledger);
        assert!(run_path(&old).exists() && !lock_path(&old).exists());
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
                .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, resume)
                .unwrap();
            opened
                .journal
                .as_ref()
                .unwrap()
                .record(&ids[i], &before, FieldSet::all())
                .unwrap();
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
                    .open(Some(&note(&manifest, "aaa")), ReportFormat::Jsonl, false)
                    .unwrap(),
            );
        }
        std::fs::write(&report, "{not a report line\n").unwrap();
        let mut ledger = Ledger::lock(&report).unwrap();
        assert!(matches!(
            ledger.open(Some(&note(&manifest, "aaa")), ReportFormat::Jsonl, true),
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
                .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, false)
                .is_err()
        );
        // A directory where the journal goes is not a journal either.
        let report = dir.path().join("t.csv");
        std::fs::create_dir(journal_path(&report)).unwrap();
        let mut ledger = Ledger::lock(&report).unwrap();
        assert!(
            ledger
                .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, false)
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
    fn a_run_file_that_is_not_a_file_is_an_error_not_a_missing_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.csv");
        std::fs::write(&report, "row,id,status\n").unwrap();
        let victim = dir.path().join("victim.json");
        std::fs::write(&victim, "{}").unwrap();
        std::os::unix::fs::symlink(&victim, run_path(&report)).unwrap();
        let manifest = dir.path().join("m.csv");
        let mut ledger = Ledger::lock(&report).unwrap();
        let err = ledger.preflight(&note(&manifest, "aaa"), true).unwrap_err();
        assert!(matches!(err, LedgerError::Io { .. }), "{err:?}");
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
                .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, false)
                .unwrap();
            let rows = [
                (Status::Updated, ""),
                (Status::Failed, "http_500"),
                (Status::Unchanged, ""),
                (Status::Failed, "write_unknown"),
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
            ledger.open(Some(&note(&manifest, &other)), ReportFormat::Csv, true)
        else {
            panic!("another manifest was not refused");
        };
        // Both fingerprints shown, cut to 12 characters.
        assert_eq!((was.as_str(), now.as_str()), ("aaa", "bbbbbbbbbbbb"));
        assert!(matches!(
            ledger.open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, false),
            Err(LedgerError::Exists(_))
        ));
        let opened = ledger
            .open(Some(&note(&manifest, "aaa")), ReportFormat::Csv, true)
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
        for id in [ids[3], ids[5]] {
            let kept = &opened.recovered[&id.as_u128()];
            assert_eq!((&kept.before, kept.carried), (&before, false));
            // This report's own: it stands whatever the gateway looks like now.
            let elsewhere = crate::sandbox::starting_fields(9);
            assert_eq!(kept.before_for(&elsewhere), Some(&before));
        }
        drop(opened);
        let kept = report::read_report(&report).unwrap();
        assert_eq!(
            kept.iter().map(|r| r.row).collect::<Vec<_>>(),
            vec![2, 4, 6]
        );
    }
}
