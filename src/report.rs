//! The report: one line per finished row, the run's result, checkpoint and undo file.
//!
//! Lines are flushed to the OS in batches as rows finish (see the engine's recorder): a crash
//! loses at most the batch being written, and `--resume` re-reads those rows. CSV (default)
//! and JSONL carry the same fields; `before` and `after` hold the five fields as compact
//! JSON (a JSON string in CSV, an object in JSONL).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diff::FieldSet;
use crate::model::GatewayFields;
use crate::status::{ErrorCode, Status};

/// One finished row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRecord {
    /// The row's 0-based position in the manifest (not written; orders the plan display).
    pub seq: u64,
    /// The row's line in the manifest.
    pub row: u64,
    /// The id as written in the manifest.
    pub id: String,
    pub status: Status,
    pub changed_fields: FieldSet,
    /// The five fields as read before any write.
    pub before: Option<GatewayFields>,
    /// The five fields after: as the server answered a write, as a plan would leave them,
    /// or as read for an unchanged row.
    pub after: Option<GatewayFields>,
    pub http_status: Option<u16>,
    /// HTTP attempts for this row: reads and writes, retries included.
    pub attempts: u32,
    pub error_code: ErrorCode,
    pub error: String,
    pub duration_ms: u64,
    /// The row's project id, in a run with several projects (the report's last column).
    pub project: Option<String>,
}

impl RowRecord {
    /// A record for a row that got no further than `status` (invalid, skipped).
    pub fn bare(
        seq: u64,
        row: u64,
        id: String,
        status: Status,
        code: &str,
        error: String,
    ) -> RowRecord {
        RowRecord {
            seq,
            row,
            id,
            status,
            changed_fields: FieldSet::default(),
            before: None,
            after: None,
            http_status: None,
            attempts: 0,
            error_code: ErrorCode::from(code),
            error,
            duration_ms: 0,
            project: None,
        }
    }
}

/// The report's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    #[default]
    Csv,
    Jsonl,
}

/// The report's columns, in order.
pub const COLUMNS: [&str; 11] = [
    "row",
    "id",
    "status",
    "changed_fields",
    "before",
    "after",
    "http_status",
    "attempts",
    "error_code",
    "error",
    "duration_ms",
];

/// The column a run with several projects adds, last.
pub const PROJECT_COLUMN: &str = "project";

/// One line as CSV sees it: `before`/`after` as JSON text; text cells that a spreadsheet
/// would run as a formula carry a leading `'` ([`crate::inert::csv_cell`]).
#[derive(Serialize)]
struct CsvLine<'a> {
    row: u64,
    id: std::borrow::Cow<'a, str>,
    status: Status,
    changed_fields: String,
    before: String,
    after: String,
    http_status: Option<u16>,
    attempts: u32,
    error_code: std::borrow::Cow<'a, str>,
    error: std::borrow::Cow<'a, str>,
    duration_ms: u64,
    /// Only in a report with the `project` column (then always, empty or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<std::borrow::Cow<'a, str>>,
}

/// One line as JSONL sees it: `before`/`after` as objects.
#[derive(Serialize)]
struct JsonLine<'a> {
    row: u64,
    id: &'a str,
    status: Status,
    changed_fields: String,
    before: Option<&'a GatewayFields>,
    after: Option<&'a GatewayFields>,
    http_status: Option<u16>,
    attempts: u32,
    error_code: &'a str,
    error: &'a str,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<&'a str>,
}

fn compact_json(fields: &Option<GatewayFields>) -> String {
    fields
        .as_ref()
        .and_then(|f| serde_json::to_string(f).ok())
        .unwrap_or_default()
}

/// Writes report lines; [`ReportWriter::flush`] hands them to the OS.
pub struct ReportWriter {
    path: PathBuf,
    csv: Option<csv::Writer<Box<dyn Write + Send>>>,
    jsonl: Option<BufWriter<Box<dyn Write + Send>>>,
    held: Option<Held>,
    /// The report has the `project` column (a run with several projects).
    projects: bool,
}

/// The report's file as this run holds it. The report is the undo file: one deleted,
/// replaced or truncated by something else while the job runs is noticed at the next
/// flush, and what the open file still holds is copied beside it before the job stops.
struct Held {
    file: File,
    /// The length the file must have at least: its length when opened, plus every byte
    /// this run wrote (the writes append, so nothing else can shrink it but a truncation).
    expected: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Counts the bytes that reach the file.
struct Counting {
    file: File,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Held {
    /// Wraps `file` (opened for appending) so its writes are counted.
    fn watch(file: File) -> io::Result<(Held, Counting)> {
        let expected =
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(file.metadata()?.len()));
        let held = Held {
            file: file.try_clone()?,
            expected: std::sync::Arc::clone(&expected),
        };
        Ok((
            held,
            Counting {
                file,
                written: expected,
            },
        ))
    }

    /// Fails, after copying what the open file holds beside `path`, when `path` no longer
    /// names this file or the file is shorter than this run made it.
    fn check(&self, path: &Path) -> io::Result<()> {
        let ours = self.file.metadata()?;
        let expected = self.expected.load(std::sync::atomic::Ordering::Relaxed);
        let what = if !std::fs::metadata(path).is_ok_and(|m| crate::output::same_inode(&m, &ours)) {
            "deleted or replaced"
        } else if ours.len() < expected {
            "truncated"
        } else {
            return Ok(());
        };
        let saved = match self.rescue(path) {
            Ok(at) => format!(
                "what this run's open file still held is saved in {}",
                at.display()
            ),
            Err(e) => format!("its open file could not be saved anywhere: {e}"),
        };
        Err(io::Error::other(format!(
            "the report was {what} by something else during the run; {saved}"
        )))
    }

    /// Copies the open file to a new file beside `path`, else in the working directory,
    /// else in the temporary directory: the first that can be made.
    fn rescue(&self, path: &Path) -> io::Result<PathBuf> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let rescued = format!("{name}.rescued-{}", std::process::id());
        let candidates = [
            path.with_file_name(&rescued),
            PathBuf::from(&rescued),
            std::env::temp_dir().join(&rescued),
        ];
        let mut last = io::Error::other("nowhere to write");
        for at in candidates {
            let copied = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&at)
                .and_then(|mut out| {
                    let mut from = &self.file;
                    io::Seek::seek(&mut from, io::SeekFrom::Start(0))?;
                    io::copy(&mut from, &mut out)?;
                    out.sync_all()
                });
            match copied {
                Ok(()) => return Ok(at),
                Err(e) => {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        let _ = std::fs::remove_file(&at);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }
}

impl ReportWriter {
    /// Creates the report at `path` (it must not exist yet) and writes the CSV header.
    /// Every write appends.
    pub fn create(path: &Path, format: ReportFormat) -> io::Result<ReportWriter> {
        Self::create_with(path, format, false)
    }

    /// [`ReportWriter::create`], with the `project` column last when `projects` (a run
    /// with several projects).
    pub fn create_with(
        path: &Path,
        format: ReportFormat,
        projects: bool,
    ) -> io::Result<ReportWriter> {
        // Read too: a report damaged under the run is copied out of this open file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
        let (held, counting) = Held::watch(file)?;
        let mut writer = Self::from_writer(path, Box::new(counting), format, projects)?;
        writer.held = Some(held);
        Ok(writer)
    }

    /// The file this writer writes, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an existing report to add lines after the ones it has (no second header).
    pub fn append(path: &Path, format: ReportFormat) -> io::Result<ReportWriter> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)?;
        let (held, counting) = Held::watch(file)?;
        let out: Box<dyn Write + Send> = Box::new(counting);
        let path = path.to_owned();
        Ok(match format {
            ReportFormat::Csv => ReportWriter {
                path,
                csv: Some(
                    csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(out),
                ),
                jsonl: None,
                held: Some(held),
                projects: false,
            },
            ReportFormat::Jsonl => ReportWriter {
                path,
                csv: None,
                jsonl: Some(BufWriter::new(out)),
                held: Some(held),
                projects: false,
            },
        })
    }

    /// Rows written from now on carry the `project` column (a report that has it).
    pub fn with_project_column(mut self, projects: bool) -> ReportWriter {
        self.projects = projects;
        self
    }

    /// Flushes everything written and closes the file.
    pub fn close(self) -> io::Result<()> {
        if let Some(mut csv) = self.csv {
            csv.flush()?;
        }
        if let Some(mut out) = self.jsonl {
            out.flush()?;
        }
        Ok(())
    }

    /// A report that goes nowhere: the plan shown before `apply` asks to go ahead.
    pub fn discard() -> ReportWriter {
        ReportWriter {
            path: PathBuf::new(),
            csv: None,
            jsonl: None,
            held: None,
            projects: false,
        }
    }

    fn from_writer(
        path: &Path,
        file: Box<dyn Write + Send>,
        format: ReportFormat,
        projects: bool,
    ) -> io::Result<ReportWriter> {
        let path = path.to_owned();
        let mut writer = match format {
            ReportFormat::Csv => ReportWriter {
                path,
                // The header is written once below; `serialize` must not add its own.
                csv: Some(
                    csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(file),
                ),
                jsonl: None,
                held: None,
                projects,
            },
            ReportFormat::Jsonl => ReportWriter {
                path,
                csv: None,
                jsonl: Some(BufWriter::new(file)),
                held: None,
                projects,
            },
        };
        if let Some(csv) = writer.csv.as_mut() {
            let project = projects.then_some(PROJECT_COLUMN);
            csv.write_record(COLUMNS.iter().copied().chain(project))?;
            csv.flush()?;
        }
        Ok(writer)
    }

    /// Appends one row (buffered: call [`ReportWriter::flush`] to hand it to the OS).
    pub fn write(&mut self, r: &RowRecord) -> io::Result<()> {
        if let Some(csv) = self.csv.as_mut() {
            use crate::inert::csv_cell;
            csv.serialize(CsvLine {
                row: r.row,
                id: csv_cell(&r.id),
                status: r.status,
                changed_fields: r.changed_fields.to_string(),
                before: compact_json(&r.before),
                after: compact_json(&r.after),
                http_status: r.http_status,
                attempts: r.attempts,
                error_code: csv_cell(r.error_code.as_str()),
                error: csv_cell(&r.error),
                duration_ms: r.duration_ms,
                project: self
                    .projects
                    .then(|| csv_cell(r.project.as_deref().unwrap_or(""))),
            })?;
        }
        if let Some(out) = self.jsonl.as_mut() {
            serde_json::to_writer(
                &mut *out,
                &JsonLine {
                    row: r.row,
                    id: &r.id,
                    status: r.status,
                    changed_fields: r.changed_fields.to_string(),
                    before: r.before.as_ref(),
                    after: r.after.as_ref(),
                    http_status: r.http_status,
                    attempts: r.attempts,
                    error_code: r.error_code.as_str(),
                    error: &r.error,
                    duration_ms: r.duration_ms,
                    project: r.project.as_deref().filter(|_| self.projects),
                },
            )?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Hands everything written so far to the OS: a crash after this loses none of it.
    /// Fails when the report was deleted, replaced or truncated by something else (a copy
    /// of what this run holds is left beside it, and the error names it).
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(csv) = self.csv.as_mut() {
            csv.flush()?;
        }
        if let Some(out) = self.jsonl.as_mut() {
            out.flush()?;
        }
        match &self.held {
            Some(held) => held.check(&self.path),
            None => Ok(()),
        }
    }
}

/// A report line read back (resume, rollback, tests). Both formats parse into this.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReadRecord {
    pub row: u64,
    pub id: String,
    pub status: Status,
    #[serde(deserialize_with = "de_fields")]
    pub changed_fields: FieldSet,
    #[serde(deserialize_with = "de_json_fields")]
    pub before: Option<GatewayFields>,
    #[serde(deserialize_with = "de_json_fields")]
    pub after: Option<GatewayFields>,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub error_code: ErrorCode,
    pub error: String,
    #[serde(default)]
    pub duration_ms: u64,
    /// The `project` column (a run with several projects); `None` when absent or empty.
    #[serde(default, deserialize_with = "de_project")]
    pub project: Option<String>,
}

fn de_project<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.map(|s| crate::inert::csv_cell_back(&s).to_owned())
        .filter(|s| !s.is_empty()))
}

impl ReadRecord {
    /// Back into a record, to copy it into a rewritten report.
    pub fn into_record(self) -> RowRecord {
        RowRecord {
            seq: 0,
            row: self.row,
            id: self.id,
            status: self.status,
            changed_fields: self.changed_fields,
            before: self.before,
            after: self.after,
            http_status: self.http_status,
            attempts: self.attempts,
            error_code: self.error_code,
            error: self.error,
            duration_ms: self.duration_ms,
            project: self.project,
        }
    }
}

fn de_fields<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FieldSet, D::Error> {
    let s = String::deserialize(d)?;
    Ok(FieldSet::parse(&s))
}

/// `before`/`after`: a JSON object (JSONL), JSON text (CSV), or empty.
fn de_json_fields<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<GatewayFields>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Object(GatewayFields),
        Text(String),
    }
    match Option::<Either>::deserialize(d)? {
        None => Ok(None),
        Some(Either::Object(f)) => Ok(Some(f)),
        Some(Either::Text(t)) if t.is_empty() => Ok(None),
        Some(Either::Text(t)) => serde_json::from_str(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A report that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("cannot read report {path}: {message}")]
pub struct ReadError {
    pub path: String,
    pub message: String,
}

/// The format of an existing report, from its first byte.
pub fn detect_format(path: &Path) -> io::Result<ReportFormat> {
    let mut first = [0u8; 1];
    let n = std::io::Read::read(&mut File::open(path)?, &mut first)?;
    Ok(if n == 1 && first[0] == b'{' {
        ReportFormat::Jsonl
    } else {
        ReportFormat::Csv
    })
}

/// Bytes of `file` up to and including its last newline: a torn last line (a crash
/// mid-write) is left out.
fn complete_len(file: &mut File) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            file.seek(SeekFrom::Start(0))?;
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(0)
}

/// Streams every complete line of a report to `each`, in file order, in constant memory.
pub fn for_each_record(
    path: &Path,
    each: impl FnMut(ReadRecord) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    use std::io::Read;
    let fail = |message: String| ReadError {
        path: path.display().to_string(),
        message,
    };
    let format = detect_format(path).map_err(|e| fail(e.to_string()))?;
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let len = complete_len(&mut file).map_err(|e| fail(e.to_string()))?;
    let input = io::BufReader::new(file.take(len));
    records_from(format, input, each).map_err(fail)
}

/// Reads report lines of `format` from `input` (complete lines only) and hands each to
/// `each`; the error is a message for [`ReadError`]. Split out so a fuzzer can feed it
/// bytes.
pub fn records_from(
    format: ReportFormat,
    input: impl io::BufRead,
    mut each: impl FnMut(ReadRecord) -> Result<(), ReadError>,
) -> Result<(), String> {
    let passed = |r: Result<(), ReadError>| r.map_err(|e| e.message);
    match format {
        ReportFormat::Jsonl => {
            for (i, line) in input.lines().enumerate() {
                let line = line.map_err(|e| e.to_string())?;
                if line.trim().is_empty() {
                    continue;
                }
                let record: ReadRecord = serde_json::from_str(&line).map_err(|e| {
                    format!(
                        "line {}: {}",
                        i + 1,
                        crate::inert::text(&e.to_string(), 200)
                    )
                })?;
                passed(each(record))?;
            }
        }
        ReportFormat::Csv => {
            let mut reader = csv::Reader::from_reader(input);
            for record in reader.deserialize::<ReadRecord>() {
                let mut record = record.map_err(|e| crate::inert::text(&e.to_string(), 200))?;
                for text in [&mut record.id, &mut record.error] {
                    let value = crate::inert::csv_cell_back(text);
                    if value.len() != text.len() {
                        *text = value.to_owned();
                    }
                }
                if let ErrorCode::Text(text) = &record.error_code {
                    let value = crate::inert::csv_cell_back(text);
                    if value.len() != text.len() {
                        record.error_code = ErrorCode::from(value);
                    }
                }
                passed(each(record))?;
            }
        }
    }
    Ok(())
}

/// Reads every complete line of a report into memory (tests, small reports).
pub fn read_report(path: &Path) -> Result<Vec<ReadRecord>, ReadError> {
    let mut out = Vec::new();
    for_each_record(path, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Field;
    use crate::model::{Codec, Encryption};

    fn record() -> RowRecord {
        let mut changed = FieldSet::default();
        changed.insert(Field::Codecs);
        let before = GatewayFields {
            name: "gw, \"one\"".into(),
            uri: "sip:a.example.com".into(),
            encryption: Some(Encryption::Optional),
            ciphers: vec![],
            codecs: vec![Codec::Pcmu],
        };
        let after = GatewayFields {
            codecs: vec![Codec::Opus, Codec::Other("LYRA".into())],
            ..before.clone()
        };
        RowRecord {
            seq: 5,
            row: 7,
            id: "0823a606-0aff-4c90-9eba-f88ba118fe05".into(),
            status: Status::Updated,
            changed_fields: changed,
            before: Some(before),
            after: Some(after),
            http_status: Some(200),
            attempts: 3,
            error_code: ErrorCode::Empty,
            error: String::new(),
            duration_ms: 12,
            project: None,
        }
    }

    #[test]
    fn both_formats_round_trip_and_drop_a_torn_line() {
        for format in [ReportFormat::Csv, ReportFormat::Jsonl] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let mut w = ReportWriter::create(&path, format).unwrap();
            let r = record();
            w.write(&r).unwrap();
            w.write(&RowRecord::bare(
                1,
                9,
                "=cmd|' /C calc'!A0".into(),
                Status::Invalid,
                "@SUM(1)",
                "-bad".into(),
            ))
            .unwrap();
            drop(w);
            // A crash mid-line leaves a torn tail.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"10,0823a606").unwrap();
            let back = read_report(&path).unwrap();
            assert_eq!(back.len(), 2, "{format:?}");
            assert_eq!(back[0].before, r.before);
            assert_eq!(back[0].after, r.after);
            assert_eq!(back[0].changed_fields, r.changed_fields);
            assert_eq!(back[1].status, Status::Invalid);
            assert_eq!(back[1].id, "=cmd|' /C calc'!A0");
            assert_eq!(back[1].error_code.as_str(), "@SUM(1)");
            assert_eq!(back[1].error, "-bad");
            if format == ReportFormat::Csv {
                let text = std::fs::read_to_string(&path).unwrap();
                let cells = csv::ReaderBuilder::new()
                    .flexible(true)
                    .from_reader(text.as_bytes())
                    .into_records()
                    .flatten()
                    .flat_map(|r| r.iter().map(str::to_owned).collect::<Vec<_>>())
                    .collect::<Vec<_>>();
                assert!(
                    cells.iter().all(|c| !c.starts_with(['=', '+', '-', '@'])),
                    "{cells:?}"
                );
            }
        }
    }

    #[test]
    fn flush_and_close_hand_every_line_to_the_file() {
        for format in [ReportFormat::Csv, ReportFormat::Jsonl] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let mut w = ReportWriter::create(&path, format).unwrap();
            w.write(&record()).unwrap();
            w.flush().unwrap();
            // Read by another handle while the writer is still open: the line is there.
            assert_eq!(
                read_report(&path).unwrap().len(),
                1,
                "{format:?} after flush"
            );
            w.write(&record()).unwrap();
            w.close().unwrap();
            assert_eq!(
                read_report(&path).unwrap().len(),
                2,
                "{format:?} after close"
            );
        }
    }

    #[test]
    fn an_empty_report_or_one_without_a_final_newline_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(read_report(&empty).unwrap().is_empty());
        let header_only = dir.path().join("header");
        std::fs::write(&header_only, COLUMNS.join(",")).unwrap();
        assert!(read_report(&header_only).unwrap().is_empty());
        // A last line without its newline is a torn line: left out.
        let torn = dir.path().join("torn.jsonl");
        let mut w = ReportWriter::create(&torn, ReportFormat::Jsonl).unwrap();
        w.write(&record()).unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(&torn).unwrap();
        std::fs::write(&torn, format!("{text}{}", text.trim_end())).unwrap();
        assert_eq!(read_report(&torn).unwrap().len(), 1);
    }

    #[test]
    fn the_complete_part_ends_after_the_last_newline_however_far_back_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        // The last newline 5,000 bytes before the end: the scan crosses a 4 KiB block.
        let mut text = "x".repeat(4_999);
        text.push('\n');
        text.push_str(&"y".repeat(5_000));
        for (body, want) in [
            ("a\nb", 2),
            ("a\n", 2),
            ("ab", 0),
            ("", 0),
            (&text[..], 5_000),
        ] {
            std::fs::write(&path, body).unwrap();
            let mut file = File::open(&path).unwrap();
            assert_eq!(
                complete_len(&mut file).unwrap(),
                want,
                "{:?}",
                &body[..body.len().min(8)]
            );
        }
    }

    #[test]
    fn a_report_deleted_replaced_or_truncated_under_the_run_is_noticed_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let rescued = dir
            .path()
            .join(format!("r.csv.rescued-{}", std::process::id()));
        let what = |damage: &dyn Fn(&Path)| {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&rescued);
            let mut w = ReportWriter::create(&path, ReportFormat::Csv).unwrap();
            w.write(&record()).unwrap();
            w.flush().unwrap();
            damage(&path);
            w.write(&record()).unwrap();
            let err = w.flush().unwrap_err().to_string();
            assert!(err.contains(&rescued.display().to_string()), "{err}");
            let saved = std::fs::read_to_string(&rescued).unwrap();
            (err, saved)
        };
        let (err, saved) = what(&|p| std::fs::remove_file(p).unwrap());
        assert!(err.contains("deleted or replaced"), "{err}");
        assert_eq!(saved.lines().count(), 3, "header and both rows: {saved}");
        let (err, _) = what(&|p| {
            let other = p.with_extension("other");
            std::fs::write(&other, "x").unwrap();
            std::fs::rename(&other, p).unwrap();
        });
        assert!(err.contains("deleted or replaced"), "{err}");
        let (err, saved) = what(&|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(10)
                .unwrap()
        });
        assert!(err.contains("truncated"), "{err}");
        // Appending: the row written after the cut follows it, with no hole of NULs.
        assert!(!saved.contains('\0'), "{saved:?}");
        // A file already at the first place a copy would go is someone else's: left as it
        // is, and the copy goes to the next place (the working directory).
        let _ = std::fs::remove_file(&path);
        std::fs::write(&rescued, "theirs").unwrap();
        let mut w = ReportWriter::create(&path, ReportFormat::Csv).unwrap();
        w.write(&record()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = w.flush().unwrap_err().to_string();
        assert_eq!(std::fs::read_to_string(&rescued).unwrap(), "theirs");
        let here = PathBuf::from(rescued.file_name().unwrap());
        assert!(err.contains(&here.display().to_string()), "{err}");
        assert!(std::fs::read_to_string(&here).unwrap().contains("row,id"));
        std::fs::remove_file(&here).unwrap();
        std::fs::remove_file(&rescued).unwrap();
        // An untouched report flushes, appended to or not.
        let _ = std::fs::remove_file(&path);
        let mut w = ReportWriter::create(&path, ReportFormat::Csv).unwrap();
        w.write(&record()).unwrap();
        w.flush().unwrap();
        w.close().unwrap();
        let mut w = ReportWriter::append(&path, ReportFormat::Csv).unwrap();
        w.write(&record()).unwrap();
        w.flush().unwrap();
        // A report that exists already is never created over.
        assert!(ReportWriter::create(&path, ReportFormat::Csv).is_err());
    }

    #[test]
    fn an_empty_json_cell_reads_as_no_fields() {
        // A hand-edited JSONL report may carry "" where the writer leaves the key out.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut w = ReportWriter::create(&path, ReportFormat::Jsonl).unwrap();
        w.write(&record()).unwrap();
        w.close().unwrap();
        let line = std::fs::read_to_string(&path).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        value["before"] = serde_json::Value::String(String::new());
        std::fs::write(&path, format!("{value}\n")).unwrap();
        let back = read_report(&path).unwrap();
        assert_eq!(back[0].before, None);
        assert_eq!(back[0].after, record().after);
    }

    #[test]
    fn statuses_print_as_they_are_written() {
        for s in Status::ALL {
            assert_eq!(s.to_string(), s.as_str());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        let errors: Vec<_> = Status::ALL.iter().filter(|s| s.is_error()).collect();
        assert_eq!(
            errors,
            [
                &Status::Invalid,
                &Status::NotFound,
                &Status::Failed,
                &Status::Mismatch,
                &Status::Conflict
            ]
        );
    }
}
