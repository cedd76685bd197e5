//! Manifests: CSV or YAML files that say what each gateway should look like.
//!
//! Both formats are read as a stream and pushed row by row into a sink, so memory does not
//! grow with the manifest (duplicate ids are found with a first pass of 8-byte hashes, see
//! [`Manifest::first_pass`]).
//! Each row comes out checked: a typed [`Row`] or an [`InvalidRow`] with its line and a
//! message a person can act on. Only a manifest that cannot be read as a whole (unknown
//! column, not CSV/YAML, I/O error) is a [`ManifestError`].

mod check;
mod csv_format;
mod plan_format;
pub use plan_format::PlanLine;
mod write;
mod yaml_format;

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use check::{
    DuplicateCheck, KNOWN_COLUMNS, READ_COLUMNS, RawList, RawRow, RowChecker, check_defaults,
    check_project, id_hash,
};
pub use write::ManifestWriter;

use crate::model::Desired;

/// A checked row, ready to reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 0-based position among the manifest's rows (file order).
    pub seq: u64,
    /// 1-based line of the row in the manifest file.
    pub line: u64,
    pub id: Uuid,
    /// What the row asks for, with `defaults:` already applied.
    pub desired: Desired,
    /// From a saved plan: the gateway as the plan saw it. A gateway that no longer looks
    /// like this is a `conflict` and is not written.
    pub expected: Option<crate::model::GatewayFields>,
    /// The `project` cell (or `defaults: project:`): a project's id or name, its form
    /// checked; `None` is the default project.
    pub project: Option<String>,
}

/// A row that failed its checks. It is reported and skipped; the other rows still run.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    /// 0-based position among the manifest's rows (file order).
    pub seq: u64,
    pub line: u64,
    /// The id cell as written (may be empty or not a UUID).
    pub id: String,
    pub message: String,
}

impl fmt::Display for InvalidRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What the reader hands the sink for each row.
pub type CheckedRow = Result<Row, InvalidRow>;

/// The manifest's format, from its extension or `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Yaml,
    /// A saved plan (`plan --out`): its `would_update` rows, each with the state the
    /// gateway must still be in. Opened only by `apply --plan`.
    #[value(skip)]
    Plan,
}

impl Format {
    /// `.csv` -> CSV, `.yaml`/`.yml` -> YAML.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// A manifest that cannot be read as a whole: nothing is sent when this happens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot tell the format of manifest {0}: name it .csv, .yaml or .yml, or pass --format"
    )]
    UnknownFormat(PathBuf),
    #[error("manifest {path}: unknown column(s) {unknown}; known columns: {known}")]
    UnknownColumns {
        path: PathBuf,
        unknown: String,
        known: String,
    },
    #[error("manifest {path}: column `{column}` appears twice in the header")]
    RepeatedColumn { path: PathBuf, column: String },
    #[error("manifest {path}: the header has no `id` column (first line: {header:?}){hint}")]
    NoIdColumn {
        path: PathBuf,
        header: String,
        /// What the first line looks like instead (another delimiter), or nothing.
        hint: String,
    },
    #[error("manifest {path}: not valid CSV: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("manifest {path}: not a manifest: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error(
        "manifest {0} changed while the run was reading it: stopped (rows read before the \
         change ran; the report's fingerprint is the old file's, so --resume refuses the new \
         one: start a new report)"
    )]
    Changed(PathBuf),
    #[error("plan {path}: line {line}: {message}")]
    Plan {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("manifest {path}: `defaults` (line {line}): {message}")]
    Defaults {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

/// Counts from one pass over a manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub rows: u64,
    pub invalid: u64,
}

/// What [`Manifest::first_pass`] found.
#[derive(Debug, Clone)]
pub struct FirstPass {
    pub stats: ReadStats,
    /// Hashes ([`id_hash`]) of ids that more than one valid row uses.
    pub repeated: HashSet<u64>,
    /// SHA-256 of the manifest's bytes, hex: its fingerprint for `--resume`.
    pub sha256: String,
}

/// The manifest's fingerprint (its SHA-256, lowercase hex), and the same of a file read
/// again whole: see [`crate::bounded::file_sha256`].
use crate::bounded::hex;

/// Hashes the bytes read through it.
struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A manifest on disk, with its format settled.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file read: the user's, or a spool of stdin.
    path: PathBuf,
    /// What the user named (`-` for stdin), for messages and the resume command.
    source: PathBuf,
    format: Format,
    duplicates: DuplicateCheck,
    /// Stdin copied to a temporary file (removed when the last clone is dropped), because a
    /// manifest is read more than once: the whole-file check, then the run.
    _spool: Option<std::sync::Arc<tempfile::TempPath>>,
    /// The file as opened once: every pass reads this open file, so a file replaced by a
    /// rename is never seen, and one changed in place is noticed (see [`Pinned`]).
    pinned: std::sync::Arc<Pinned>,
}

/// The manifest pinned for the run: one open file and its size and modification time when
/// opened. Every read checks them again after reading, so bytes written into the file
/// after it was opened never become rows: the read fails first. (The kernel stamps the new
/// time before it copies a write's bytes in.)
#[derive(Debug)]
struct Pinned {
    file: std::fs::File,
    stamp: (u64, Option<std::time::SystemTime>),
    changed: std::sync::atomic::AtomicBool,
}

impl Pinned {
    fn open(path: &Path) -> std::io::Result<Pinned> {
        // A FIFO no process writes to opens at once, and is refused for what it is.
        let file = crate::bounded::open_at_once(path)?;
        let stamp = Self::stamp_of(&file)?;
        Ok(Pinned {
            file,
            stamp,
            changed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn stamp_of(file: &std::fs::File) -> std::io::Result<(u64, Option<std::time::SystemTime>)> {
        let meta = file.metadata()?;
        Ok((meta.len(), meta.modified().ok()))
    }

    fn reader(self: &std::sync::Arc<Self>) -> PinnedReader {
        PinnedReader {
            pinned: std::sync::Arc::clone(self),
            pos: 0,
        }
    }

    fn has_changed(&self) -> bool {
        self.changed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reads a [`Pinned`] file from the start, with its own position.
struct PinnedReader {
    pinned: std::sync::Arc<Pinned>,
    pos: u64,
}

impl Read for PinnedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = read_at(&self.pinned.file, buf, self.pos)?;
        if Pinned::stamp_of(&self.pinned.file)? != self.pinned.stamp {
            self.pinned
                .changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other(
                "the manifest changed while it was read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

impl Manifest {
    /// Settles the format (explicit, else by extension) and checks the file can be opened.
    /// `-` reads stdin (with an explicit format), spooled to a temporary file.
    pub fn open(path: &Path, format: Option<Format>) -> Result<Manifest, ManifestError> {
        let format = format
            .or_else(|| Format::from_path(path))
            .ok_or_else(|| ManifestError::UnknownFormat(path.to_owned()))?;
        let io = |source| ManifestError::Io {
            path: path.to_owned(),
            source,
        };
        if path == Path::new("-") {
            let mut spool = tempfile::Builder::new()
                .prefix("sipgw-bulk-stdin-")
                .tempfile()
                .map_err(io)?;
            let cap = crate::bounded::MAX_STDIN_MANIFEST;
            let copied = std::io::copy(
                &mut Read::take(std::io::stdin().lock(), cap + 1),
                &mut spool,
            )
            .map_err(io)?;
            if copied > cap {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("stdin holds more than {cap} bytes, the most read from a pipe"),
                )));
            }
            let spool = spool.into_temp_path();
            return Ok(Manifest {
                path: spool.to_path_buf(),
                source: path.to_owned(),
                format,
                duplicates: DuplicateCheck::All,
                pinned: std::sync::Arc::new(Pinned::open(&spool).map_err(io)?),
                _spool: Some(std::sync::Arc::new(spool)),
            });
        }
        let pinned = Pinned::open(path).map_err(io)?;
        if !pinned.file.metadata().map_err(io)?.is_file() {
            // A device, a directory or a pipe: not re-readable, maybe endless.
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is not a regular file (to read from a pipe, pass `-` with --format)",
            )));
        }
        Ok(Manifest {
            path: path.to_owned(),
            source: path.to_owned(),
            format,
            duplicates: DuplicateCheck::All,
            _spool: None,
            pinned: std::sync::Arc::new(pinned),
        })
    }

    /// The manifest as the user named it (`-` for stdin).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The same manifest, read with another duplicate check.
    pub fn with_duplicates(mut self, duplicates: DuplicateCheck) -> Manifest {
        self.duplicates = duplicates;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// A first pass for [`DuplicateCheck::Only`]: reads every row without a duplicate
    /// check (handing each to `each`), hashes the file's bytes (SHA-256, the manifest's
    /// fingerprint) on the way, and finds the hashes of ids that more than one valid row
    /// uses. Transient memory: 8 bytes a row, freed when it returns.
    pub fn first_pass(
        &self,
        mut each: impl FnMut(&CheckedRow),
    ) -> Result<FirstPass, ManifestError> {
        let mut hashing = Sha256Reader {
            inner: self.pinned.reader(),
            hasher: Sha256::new(),
        };
        let mut hashes = Vec::new();
        let stats = self
            .clone()
            .with_duplicates(DuplicateCheck::Off)
            .read_from(&mut hashing, |row| {
                if let Ok(r) = &row {
                    hashes.push(id_hash(&r.id));
                }
                each(&row);
                ControlFlow::Continue(())
            })?;
        // The parsers may stop before the last bytes (trailing blank lines): hash them too.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|source| self.io(source))?;
        if self.pinned.has_changed() {
            return Err(ManifestError::Changed(self.source.clone()));
        }
        hashes.sort_unstable();
        let repeated = hashes
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        let sha256 = hex(&hashing.hasher.finalize());
        Ok(FirstPass {
            stats,
            repeated,
            sha256,
        })
    }

    /// Reads every row, checks it and hands it to `sink`, in file order. The sink may stop
    /// the read early with `ControlFlow::Break`. Blocking: run it off the async runtime.
    pub fn read(
        &self,
        sink: impl FnMut(CheckedRow) -> ControlFlow<()>,
    ) -> Result<ReadStats, ManifestError> {
        self.read_from(self.pinned.reader(), sink)
    }

    /// Reads a manifest held in memory, every row checked (duplicates included), as
    /// [`Manifest::read`] does a file. For tests and the fuzzer.
    pub fn read_slice(
        format: Format,
        bytes: &[u8],
        sink: impl FnMut(CheckedRow) -> ControlFlow<()>,
    ) -> Result<ReadStats, ManifestError> {
        let (stats, read) = read_rows(
            format,
            Path::new("(memory)"),
            std::io::BufReader::new(crate::bounded::LineCap::new(
                bytes,
                crate::bounded::MAX_MANIFEST_LINE,
            )),
            DuplicateCheck::All,
            sink,
        );
        read.map(|()| stats)
    }

    fn io(&self, source: std::io::Error) -> ManifestError {
        ManifestError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read_from(
        &self,
        input: impl Read,
        sink: impl FnMut(CheckedRow) -> ControlFlow<()>,
    ) -> Result<ReadStats, ManifestError> {
        let capped = crate::bounded::LineCap::new(input, crate::bounded::MAX_MANIFEST_LINE);
        let reader = std::io::BufReader::with_capacity(64 * 1024, capped);
        let (stats, read) = read_rows(
            self.format,
            &self.path,
            reader,
            self.duplicates.clone(),
            sink,
        );
        // Whatever the parser made of it, a file that changed under it is the error.
        if self.pinned.has_changed() {
            return Err(ManifestError::Changed(self.source.clone()));
        }
        read.map(|()| stats)
    }
}

/// Reads rows of `format` from `input`, numbering each (`seq`) and counting them, into
/// `sink`. The counts come back even when the read fails part way.
fn read_rows(
    format: Format,
    path: &Path,
    input: impl std::io::BufRead,
    duplicates: DuplicateCheck,
    mut sink: impl FnMut(CheckedRow) -> ControlFlow<()>,
) -> (ReadStats, Result<(), ManifestError>) {
    let mut stats = ReadStats::default();
    let mut counted = |mut row: CheckedRow| {
        match &mut row {
            Ok(r) => r.seq = stats.rows,
            Err(bad) => bad.seq = stats.rows,
        }
        stats.rows += 1;
        stats.invalid += u64::from(row.is_err());
        sink(row)
    };
    let read = match format {
        Format::Csv => csv_format::read(path, input, duplicates, &mut counted),
        Format::Yaml => yaml_format::read(path, input, duplicates, &mut counted),
        Format::Plan => plan_format::read(path, input, &mut counted),
    };
    (stats, read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::file_sha256;
    use crate::model::Codec;
    use std::io::Write;

    /// A manifest file named `*{ext}` holding `bytes`.
    fn temp_manifest(ext: &str, bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    fn read_all(ext: &str, text: &str) -> Result<Vec<CheckedRow>, ManifestError> {
        let file = temp_manifest(ext, text.as_bytes());
        let manifest = Manifest::open(file.path(), None)?;
        let mut rows = Vec::new();
        let stats = manifest.read(|row| {
            rows.push(row);
            ControlFlow::Continue(())
        })?;
        assert_eq!(stats.rows as usize, rows.len());
        Ok(rows)
    }

    const A: &str = "0823a606-0aff-4c90-9eba-f88ba118fe05";
    const B: &str = "1823a606-0aff-4c90-9eba-f88ba118fe05";

    #[test]
    fn csv_rows_carry_their_line_and_empty_cells_leave_fields_alone() {
        let rows = read_all(
            ".csv",
            &format!("id,uri,codecs\n{A},sip:a.example.com,OPUS;PCMU\n\n{B},,\n"),
        )
        .unwrap();
        let a = rows[0].as_ref().unwrap();
        assert_eq!(a.line, 2);
        assert_eq!(a.desired.codecs, Some(vec![Codec::Opus, Codec::Pcmu]));
        let b = rows[1].as_ref().unwrap();
        assert_eq!(b.line, 4);
        assert_eq!(b.desired, Desired::default());
    }

    #[test]
    fn csv_unknown_column_is_refused_with_the_known_ones() {
        let err = read_all(".csv", &format!("id,codec\n{A},OPUS\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`codec` (did you mean `codecs`?)"), "{msg}");
        assert!(msg.contains("known columns: id, name, uri"), "{msg}");
    }

    #[test]
    fn csv_unknown_columns_past_ten_are_counted_not_listed() {
        let header = |n: usize| (0..n).map(|i| format!("extra{i}")).collect::<Vec<_>>();
        let ten = read_all(".csv", &format!("id,{}\n", header(10).join(","))).unwrap_err();
        let msg = ten.to_string();
        assert!(msg.contains("`extra9`") && !msg.contains("more"), "{msg}");
        let twelve = read_all(".csv", &format!("id,{}\n", header(12).join(","))).unwrap_err();
        let msg = twelve.to_string();
        assert!(
            msg.contains("`extra9`, and 2 more") && !msg.contains("`extra10`"),
            "{msg}"
        );
    }

    #[test]
    fn csv_row_that_is_not_utf8_is_one_bad_row_not_a_bad_file() {
        let mut file = temp_manifest(".csv", format!("id,name\n{A},caf").as_bytes());
        file.write_all(b"\xe9\n").unwrap();
        file.write_all(format!("{B},ok\n").as_bytes()).unwrap();
        let manifest = Manifest::open(file.path(), None).unwrap();
        let mut rows = Vec::new();
        manifest
            .read(|row| {
                rows.push(row);
                ControlFlow::Continue(())
            })
            .unwrap();
        let bad = rows[0].as_ref().unwrap_err();
        assert_eq!(
            (bad.line, bad.message.as_str()),
            (2, "the row is not valid UTF-8")
        );
        assert_eq!(rows[1].as_ref().unwrap().line, 3);
    }

    #[test]
    fn yaml_defaults_apply_and_rows_have_lines() {
        let text = format!(
            "defaults:\n  codecs: [OPUS, PCMU]\ngateways:\n  - id: {A}\n    uri: sip:a.example.com\n  - id: {B}\n    codecs: PCMA\n    colour: red\n"
        );
        let rows = read_all(".yaml", &text).unwrap();
        let a = rows[0].as_ref().unwrap();
        assert_eq!(a.line, 4);
        assert_eq!(a.desired.codecs, Some(vec![Codec::Opus, Codec::Pcmu]));
        let b = rows[1].as_ref().unwrap_err();
        assert_eq!(b.line, 6);
        assert!(b.message.contains("unknown key `colour`"), "{}", b.message);
    }

    /// The message of a manifest YAML refuses as a whole.
    fn yaml_refused(text: &str) -> String {
        match read_all(".yaml", text) {
            Err(ManifestError::Yaml { message, .. }) => message,
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn yaml_of_the_wrong_shape_says_what_was_expected() {
        let cases = [
            (
                "5\n",
                "a list of gateways, or a mapping with `defaults` and `gateways`",
            ),
            // serde_saphyr names what it expected itself, with the place.
            ("- 5\n", "line 1 column 3: expected mapping start"),
            ("gateways: 5\n", "line 1 column 11: expected sequence start"),
            (
                &format!("- id: [{A}]\n"),
                "line 1 column 7: expected string scalar",
            ),
            (
                &format!("- id: {A}\n  codecs: {{a: 1}}\n"),
                "a list of values, like [OPUS, PCMU]",
            ),
            ("defaults: {}\n", "no `gateways` list"),
            ("gateway: []\n", "unknown top-level key `gateway`"),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            let message = yaml_refused(text);
            if !message.contains(expected) {
                wrong.push(format!("{text:?}: {message}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let late = yaml_refused(&format!(
            "gateways:\n  - id: {A}\ndefaults:\n  codecs: PCMU\n"
        ));
        assert!(late.contains("must come before"), "{late}");
        // Defaults first are fine, and apply.
        let rows = read_all(
            ".yaml",
            &format!("defaults: {{}}\ngateways:\n  - id: {A}\n"),
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn yaml_scalars_of_any_type_are_their_text_and_lists_may_be_one_string() {
        let text = format!(
            "- id: {A}\n  name: true\n  uri: ''\n  codecs: ' OPUS; PCMU '\n- id: {B}\n  name: 12\n  codecs: ''\n  ciphers: ~\n- id: {A}\n  name: 1.5\n- id: {B}\n  name: -7\n"
        );
        let rows = read_all(".yaml", &text).unwrap();
        let names: Vec<_> = rows
            .iter()
            .map(|r| match r {
                Ok(r) => r.desired.name.clone(),
                Err(bad) => Some(format!("invalid: {}", bad.message)),
            })
            .collect();
        assert_eq!(
            names[..2],
            [Some("true".to_owned()), Some("12".to_owned())],
            "{names:?}"
        );
        let a = rows[0].as_ref().unwrap();
        assert_eq!(a.desired.uri, None, "an empty value leaves the field alone");
        assert_eq!(a.desired.codecs, Some(vec![Codec::Opus, Codec::Pcmu]));
        let b = rows[1].as_ref().unwrap();
        assert_eq!(
            (b.desired.codecs.as_ref(), b.desired.ciphers.as_ref()),
            (None, None)
        );
    }

    #[test]
    fn rows_are_counted_with_the_invalid_ones_and_shown_with_their_line() {
        let file = temp_manifest(
            ".csv",
            format!("id\n{A}\nnot-an-id\n{B}\nalso-bad\n").as_bytes(),
        );
        let manifest = Manifest::open(file.path(), None).unwrap();
        let mut shown = Vec::new();
        let stats = manifest
            .read(|row| {
                if let Err(bad) = &row {
                    shown.push(bad.to_string());
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(
            stats,
            ReadStats {
                rows: 4,
                invalid: 2
            }
        );
        assert!(shown[0].starts_with("line 3: "), "{shown:?}");
        assert!(shown[1].starts_with("line 5: "), "{shown:?}");
    }

    #[test]
    fn a_manifest_in_memory_is_read_like_a_file() {
        let text = format!("id\n{A}\nnope\n{A}\n");
        let mut rows = Vec::new();
        let stats = Manifest::read_slice(Format::Csv, text.as_bytes(), |row| {
            rows.push(row);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            stats,
            ReadStats {
                rows: 3,
                invalid: 2
            }
        );
        // Duplicates are checked too: the second use of A is invalid.
        assert!(rows[0].is_ok() && rows[2].is_err(), "{rows:?}");
    }

    #[test]
    fn a_manifest_written_to_after_it_was_opened_is_refused() {
        let mut file = temp_manifest(".csv", format!("id,name\n{A},x\n").as_bytes());
        let manifest = Manifest::open(file.path(), None).unwrap();
        assert_eq!(manifest.format(), Format::Csv);
        assert_eq!(manifest.source(), file.path());
        // The mtime's granularity may be coarse: the size changes too.
        file.write_all(format!("{B},y\n").as_bytes()).unwrap();
        file.flush().unwrap();
        let read = manifest.read(|_| ControlFlow::Continue(()));
        assert!(matches!(read, Err(ManifestError::Changed(_))), "{read:?}");
        assert!(matches!(
            manifest.first_pass(|_| ()),
            Err(ManifestError::Changed(_))
        ));
    }

    #[test]
    fn yaml_plain_list_and_strings_stay_strings() {
        let text = format!("- id: {A}\n  name: NO\n- id: {B}\n  name: 05060\n");
        let rows = read_all(".yml", &text).unwrap();
        assert_eq!(
            rows[0].as_ref().unwrap().desired.name.as_deref(),
            Some("NO")
        );
        assert_eq!(
            rows[1].as_ref().unwrap().desired.name.as_deref(),
            Some("05060")
        );
    }

    #[test]
    fn the_first_pass_fingerprints_the_whole_file_and_finds_repeated_ids() {
        let text = format!("id,name\n{A},x\n{B},y\n{A},z\n\n\n");
        let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let manifest = Manifest::open(file.path(), None).unwrap();
        let mut seen = 0;
        let first = manifest.first_pass(|_| seen += 1).unwrap();
        assert_eq!((seen, first.stats.rows), (3, 3));
        let want: String = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(first.sha256, want, "trailing blank lines are hashed too");
        let a = Uuid::try_parse(A).unwrap();
        assert_eq!(first.repeated, [id_hash(&a)].into_iter().collect());
    }

    #[test]
    fn text_that_is_not_a_manifest_is_refused() {
        assert!(matches!(
            read_all(".yaml", "just some words\n"),
            Err(ManifestError::Yaml { .. })
        ));
        assert!(matches!(
            read_all(".csv", "hello world\nfoo bar\n"),
            Err(ManifestError::NoIdColumn { .. })
        ));
    }
    #[test]
    fn a_file_is_fingerprinted_by_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            file_sha256(&path).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(file_sha256(&dir.path().join("gone.csv")), None);
    }
}
