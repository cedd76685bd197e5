//! Saved plans: review, then apply exactly that.
//!
//! `plan MANIFEST --out PLAN` writes what the plan saw: a header naming the space, the
//! manifest and its fingerprint, then one JSON line per row with its status, `before` (the
//! gateway as read) and `after` (what the plan would write). `apply --plan PLAN` reads it
//! back as the job's rows ([`crate::manifest::Format::Plan`]): only `would_update` rows, each
//! carrying its `before` as the state the gateway must still be in; one that moved since is
//! a `conflict` and is not written (Terraform's stale-plan check, per gateway).
//!
//! A plan is tamper-evident: its header holds the number of row lines and a SHA-256 over
//! them, and [`verify`] checks both, and every value a change would write against the
//! manifest's rules, before any request. That catches a plan cut short or edited by hand
//! (not a forger, who can recompute the digest; the plan is as trusted as its directory).
//!
//! The interactive `apply` uses the same path: it plans into `REPORT.plan`, shows that, asks,
//! then applies that file, so what is written is what was shown.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::Observer;
use crate::manifest::PlanLine;
use crate::model::GatewayFields;
use crate::report::RowRecord;
use crate::status::Status;

/// The plan file's format version, in its header. Version 2 added `rows` and
/// `rows_sha256`; a version 1 plan is refused (plan again).
pub const VERSION: u32 = 2;

/// The first line of a saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanHeader {
    /// Format version ([`VERSION`]).
    pub sipgw_bulk_plan: u32,
    /// The space's base URL the plan was read from.
    pub space: String,
    /// The manifest as the user named it (`-` for stdin).
    pub manifest: String,
    /// SHA-256 of the manifest's bytes.
    pub manifest_sha256: String,
    /// `K/N` when the plan covers one shard.
    pub shard: Option<String>,
    /// Rows the plan would write.
    pub changes: u64,
    /// Row lines after the header.
    pub rows: u64,
    /// SHA-256 (lowercase hex) of the row lines, each with its newline, in order.
    pub rows_sha256: String,
}

/// Just the version, read before the rest of a header.
#[derive(Deserialize)]
struct VersionOnly {
    sipgw_bulk_plan: u32,
}

/// A saved plan that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    // The cause is in the message, not the error's source: a chain printed whole would
    // say it twice.
    #[error("cannot read plan {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error(
        "{path} is not a saved plan (its first line is not a sipgw-bulk plan header); make one \
         with `sipgw-bulk plan MANIFEST --out PLAN`"
    )]
    NotAPlan { path: PathBuf },
    #[error(
        "plan {path} has format version {found}; this sipgw-bulk reads version {VERSION} \
         (plans now carry a digest that proves them whole): plan again to save a new one"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "plan {path} is not the plan that was saved ({why}): refused, nothing was sent; plan \
         again to review the changes"
    )]
    Tampered { path: PathBuf, why: String },
    #[error("plan {path} line {line}: {message}: refused, nothing was sent (plan again)")]
    BadValue {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "plan {path} was read from {planned}, but this run points at {now}: refused (plan \
         again against this space)"
    )]
    OtherSpace {
        path: PathBuf,
        planned: String,
        now: String,
    },
    #[error(
        "the manifest {manifest} has changed since plan {path} was made (or is gone): refused \
         (plan again to review the new rows)"
    )]
    ManifestChanged { path: PathBuf, manifest: String },
    #[error("plan {path} is incomplete (the plan stopped before every row was read): not saved")]
    Incomplete { path: PathBuf },
}

/// Reads a plan's header, without its rows.
pub fn read_header(path: &Path) -> Result<PlanHeader, PlanError> {
    let io_err = |cause| PlanError::Io {
        path: path.to_owned(),
        cause,
    };
    // A FIFO or a device is no plan: refused, never waited on.
    let file = crate::bounded::open_regular(path).map_err(io_err)?;
    let mut first = String::new();
    io::BufReader::new(io::Read::take(file, 64 * 1024))
        .read_line(&mut first)
        .map_err(io_err)?;
    parse_header(path, &first)
}

fn parse_header(path: &Path, first: &str) -> Result<PlanHeader, PlanError> {
    let not_a_plan = || PlanError::NotAPlan {
        path: path.to_owned(),
    };
    let version: VersionOnly = serde_json::from_str(first.trim()).map_err(|_| not_a_plan())?;
    if version.sipgw_bulk_plan != VERSION {
        return Err(PlanError::Version {
            path: path.to_owned(),
            found: version.sipgw_bulk_plan,
        });
    }
    serde_json::from_str(first.trim()).map_err(|_| not_a_plan())
}

/// Reads a whole plan before anything is sent: the header, then every row line against
/// the header's count and digest (a plan cut short or edited is refused), and every value
/// a change would write against the manifest's checks. Values the gateway already holds
/// (equal in `before` and `after`) pass as they are: the server's own values, even ones a
/// manifest could not name, are written back unchanged.
pub fn verify(path: &Path) -> Result<PlanHeader, PlanError> {
    let io_err = |cause| PlanError::Io {
        path: path.to_owned(),
        cause,
    };
    // Read twice (checked whole, then run): a FIFO or a device is refused, never waited on.
    let file = crate::bounded::open_regular(path).map_err(io_err)?;
    let mut input = io::BufReader::new(file);
    let mut first = String::new();
    io::Read::take(&mut input, 64 * 1024)
        .read_line(&mut first)
        .map_err(io_err)?;
    let header = parse_header(path, &first)?;
    let tampered = |why: String| PlanError::Tampered {
        path: path.to_owned(),
        why,
    };
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = io::Read::take(&mut input, MAX_PLAN_LINE)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        if n == 0 {
            break;
        }
        rows += 1;
        if line.last() != Some(&b'\n') {
            return Err(tampered(format!(
                "line {} is cut short or longer than {MAX_PLAN_LINE} bytes",
                rows + 1
            )));
        }
        hasher.update(&line);
        if rows > header.rows {
            continue; // Counted below; no need to check its values.
        }
        check_line(path, rows + 1, &line)?;
    }
    if rows != header.rows {
        return Err(tampered(format!(
            "its header says {} row lines, the file holds {rows}",
            header.rows
        )));
    }
    if crate::bounded::hex(&hasher.finalize()) != header.rows_sha256 {
        return Err(tampered(
            "its rows do not match the digest in its header".into(),
        ));
    }
    Ok(header)
}

/// The longest row line a plan may hold: five capped fields twice, with room to spare.
const MAX_PLAN_LINE: u64 = 64 * 1024;

/// One row line of a plan: readable, and a change only to values a manifest may ask for.
fn check_line(path: &Path, line_no: u64, text: &[u8]) -> Result<(), PlanError> {
    let bad = |message: String| PlanError::BadValue {
        path: path.to_owned(),
        line: line_no,
        message: crate::inert::text(&message, 500),
    };
    let line: PlanLine =
        serde_json::from_slice(text).map_err(|e| bad(format!("not a plan row: {e}")))?;
    if line.status != Status::WouldUpdate {
        return Ok(());
    }
    let (Some(before), Some(after)) = (&line.before, &line.after) else {
        return Err(bad("a change without its before or after value".into()));
    };
    if uuid::Uuid::try_parse(&line.id).is_err() {
        return Err(bad(format!("id `{}` is not a UUID", line.id)));
    }
    crate::manifest::check_defaults(&changed_values(before, after)).map_err(bad)?;
    Ok(())
}

/// The values a change would write that the gateway does not already hold, as a
/// manifest row would carry them.
fn changed_values(before: &GatewayFields, after: &GatewayFields) -> crate::manifest::RawRow {
    crate::manifest::RawRow::changes(before, after)
}

impl PlanHeader {
    /// Refuses a plan made against another space, or from a manifest that has changed
    /// since (`manifest_sha256_now` is `None` when the manifest cannot be read again).
    pub fn check(
        &self,
        plan: &Path,
        space_now: &str,
        manifest_sha256_now: Option<&str>,
    ) -> Result<(), PlanError> {
        let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
        if norm(&self.space) != norm(space_now) {
            return Err(PlanError::OtherSpace {
                path: plan.to_owned(),
                planned: self.space.clone(),
                now: space_now.to_owned(),
            });
        }
        if self.manifest != "-" && manifest_sha256_now != Some(self.manifest_sha256.as_str()) {
            return Err(PlanError::ManifestChanged {
                path: plan.to_owned(),
                manifest: self.manifest.clone(),
            });
        }
        Ok(())
    }
}

/// Writes a plan as its rows arrive, into a temporary file beside `path` that becomes
/// `path` only when [`PlanWriter::finish`] is called on a complete plan: a half-made plan
/// can never be applied.
pub struct PlanWriter {
    path: PathBuf,
    out: Option<io::BufWriter<tempfile::NamedTempFile>>,
    error: Option<io::Error>,
    changes: u64,
    rows: u64,
    digest: Sha256,
    header: PlanHeader,
}

impl PlanWriter {
    pub fn create(path: &Path, header: PlanHeader) -> io::Result<PlanWriter> {
        // A plan takes its place by a rename: over a device (`/dev/null`) that would put a
        // file where the device was.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file: a plan is saved whole, by a rename over its path",
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".sipgw-bulk-plan-")
            .tempfile_in(&dir)?;
        Ok(PlanWriter {
            path: path.to_owned(),
            out: Some(io::BufWriter::new(tmp)),
            error: None,
            changes: 0,
            rows: 0,
            digest: Sha256::new(),
            header,
        })
    }

    /// Rows the plan would write so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Puts the plan in place (header first, with the final count). `complete` is false
    /// when the plan stopped early: then nothing is saved.
    pub fn finish(mut self, complete: bool) -> Result<PathBuf, PlanError> {
        let io_err = |cause| PlanError::Io {
            path: self.path.clone(),
            cause,
        };
        if let Some(e) = self.error.take() {
            return Err(io_err(e));
        }
        if !complete {
            return Err(PlanError::Incomplete { path: self.path });
        }
        let Some(out) = self.out.take() else {
            return Err(PlanError::Incomplete { path: self.path });
        };
        let rows = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        // The header goes first, with the count known only now: copy the rows after it.
        self.header.changes = self.changes;
        self.header.rows = self.rows;
        self.header.rows_sha256 = crate::bounded::hex(&self.digest.clone().finalize());
        let mut final_file = tempfile::Builder::new()
            .prefix(".sipgw-bulk-plan-")
            .tempfile_in(rows.path().parent().unwrap_or(Path::new(".")))
            .map_err(io_err)?;
        let written = (|| -> io::Result<()> {
            let mut w = io::BufWriter::new(final_file.as_file_mut());
            serde_json::to_writer(&mut w, &self.header)?;
            w.write_all(b"\n")?;
            io::copy(&mut io::BufReader::new(rows.reopen()?), &mut w)?;
            w.flush()?;
            drop(w);
            final_file.as_file().sync_all()
        })();
        written.map_err(io_err)?;
        final_file
            .persist(&self.path)
            .map_err(|e| io_err(e.error))?;
        Ok(self.path.clone())
    }
}

impl Observer for PlanWriter {
    fn record(&mut self, r: &RowRecord) {
        if self.error.is_some() {
            return;
        }
        let Some(out) = self.out.as_mut() else {
            return;
        };
        if r.status == Status::WouldUpdate {
            self.changes += 1;
        }
        let line = PlanLine {
            row: r.row,
            id: r.id.clone(),
            status: r.status,
            before: r.before.clone(),
            after: r.after.clone(),
            project: r.project.clone(),
        };
        let written = serde_json::to_vec(&line)
            .map_err(io::Error::from)
            .and_then(|mut text| {
                text.push(b'\n');
                self.digest.update(&text);
                self.rows += 1;
                out.write_all(&text)
            });
        if let Err(e) = written {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PlanHeader {
        PlanHeader {
            sipgw_bulk_plan: VERSION,
            space: "https://acme.signalwire.com".into(),
            manifest: "m.csv".into(),
            manifest_sha256: "aaa".into(),
            shard: None,
            changes: 0,
            rows: 0,
            rows_sha256: String::new(),
        }
    }

    #[test]
    fn a_plan_is_saved_only_when_complete_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.plan");
        let mut w = PlanWriter::create(&path, header()).unwrap();
        let mut r = RowRecord::bare(0, 2, "x".into(), Status::WouldUpdate, "", String::new());
        r.before = Some(crate::sandbox::starting_fields(1));
        r.after = Some(crate::sandbox::starting_fields(2));
        w.record(&r);
        w.record(&RowRecord::bare(
            1,
            3,
            "y".into(),
            Status::Unchanged,
            "",
            String::new(),
        ));
        w.record(&RowRecord {
            row: 4,
            ..r.clone()
        });
        assert_eq!(w.changes(), 2);
        w.finish(true).unwrap();
        let h = read_header(&path).unwrap();
        assert_eq!(h.changes, 2);
        // A long manifest path still reads (the header is read up to 64 KiB).
        let long = dir.path().join("long.plan");
        let mut far = header();
        far.manifest = "m".repeat(20_000);
        PlanWriter::create(&long, far.clone())
            .unwrap()
            .finish(true)
            .unwrap();
        assert_eq!(read_header(&long).unwrap().manifest, far.manifest);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        let line: PlanLine = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(line.after, r.after);

        let other = dir.path().join("q.plan");
        let w = PlanWriter::create(&other, header()).unwrap();
        // The unfinished plan is written beside --out (so the rename never crosses a
        // filesystem), not in the working directory.
        let beside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(".sipgw-bulk-plan-")
            })
            .count();
        assert_eq!(beside, 1);
        assert!(matches!(w.finish(false), Err(PlanError::Incomplete { .. })));
        assert!(!other.exists());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(
            leftovers, 2,
            "no temporary file left behind (p.plan, long.plan)"
        );
    }

    /// A saved plan of three changes and one unchanged row, its lines as text.
    fn saved(dir: &Path) -> (PathBuf, Vec<String>) {
        let path = dir.join("p.plan");
        let mut w = PlanWriter::create(&path, header()).unwrap();
        let ids = crate::sandbox::generated_ids(4, 9);
        for (i, id) in ids.iter().enumerate() {
            let status = if i == 3 {
                Status::Unchanged
            } else {
                Status::WouldUpdate
            };
            let mut r = RowRecord::bare(0, i as u64 + 2, id.to_string(), status, "", String::new());
            r.before = Some(crate::sandbox::starting_fields(1));
            let mut after = crate::sandbox::starting_fields(1);
            after.name = format!("pbx-{i}");
            r.after = Some(after);
            w.record(&r);
        }
        w.finish(true).unwrap();
        let lines = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        (path, lines)
    }

    fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn a_plan_is_never_saved_over_a_device_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        for path in [Path::new("/dev/null"), dir.path()] {
            assert!(
                PlanWriter::create(path, header()).is_err(),
                "{}",
                path.display()
            );
        }
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    }

    #[test]
    fn a_plan_cut_or_edited_is_refused_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (path, lines) = saved(dir.path());
        let h = verify(&path).unwrap();
        assert_eq!((h.rows, h.changes), (4, 3));
        // Cut at a line boundary, anywhere.
        for cut in 1..lines.len() {
            rewrite(&path, &lines[..cut]);
            let err = verify(&path).unwrap_err();
            assert!(matches!(err, PlanError::Tampered { .. }), "{err}");
        }
        // Cut mid-line.
        let mut whole = lines.join("\n");
        whole.truncate(whole.len() - 5);
        std::fs::write(&path, &whole).unwrap();
        assert!(matches!(verify(&path), Err(PlanError::Tampered { .. })));
        // One value edited by hand (still a valid manifest value).
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("pbx-1", "pbx-9");
        rewrite(&path, &edited);
        let err = verify(&path).unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
        // A row added at the end.
        let mut longer = lines.clone();
        longer.push(lines[1].clone());
        rewrite(&path, &longer);
        assert!(matches!(verify(&path), Err(PlanError::Tampered { .. })));
        rewrite(&path, &lines);
        assert!(verify(&path).is_ok());
    }

    #[test]
    fn a_plan_s_new_values_pass_the_manifest_checks_and_held_ones_pass_as_they_are() {
        use crate::model::Codec;
        let before = crate::sandbox::starting_fields(1);
        let mut after = before.clone();
        after.codecs = vec![Codec::Other("opus".into())];
        let err = crate::manifest::check_defaults(&changed_values(&before, &after)).unwrap_err();
        assert!(err.contains("OPUS"), "{err}");
        after.codecs = vec![Codec::Opus];
        after.uri = "not a uri".into();
        assert!(crate::manifest::check_defaults(&changed_values(&before, &after)).is_err());
        // A value only the server uses, held before and after: written back as it is.
        let mut held = before.clone();
        held.codecs = vec![Codec::Other("X-VENDOR".into())];
        let mut after = held.clone();
        after.name = "pbx-new".into();
        let raw = changed_values(&held, &after);
        assert_eq!(raw.codecs, None);
        assert_eq!(raw.name.as_deref(), Some("pbx-new"));
        assert!(crate::manifest::check_defaults(&raw).is_ok());
        // Each field that differs is checked, and only those.
        let mut all = before.clone();
        all.name = "n".into();
        all.uri = "sip:u.example.com".into();
        all.encryption = Some(crate::model::Encryption::Forbidden);
        all.ciphers = vec![crate::model::Cipher::AeadAes256Gcm8];
        all.codecs = vec![Codec::G722];
        let raw = changed_values(&before, &all);
        assert_eq!(raw.encryption.as_deref(), Some("forbidden"));
        assert!(raw.name.is_some() && raw.uri.is_some());
        assert!(raw.ciphers.is_some() && raw.codecs.is_some());
    }

    #[test]
    fn a_plan_with_a_refused_value_or_of_the_previous_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.plan");
        let mut w = PlanWriter::create(&path, header()).unwrap();
        let id = crate::sandbox::generated_ids(1, 9)[0];
        let mut r = RowRecord::bare(0, 2, id.to_string(), Status::WouldUpdate, "", String::new());
        r.before = Some(crate::sandbox::starting_fields(1));
        let mut after = crate::sandbox::starting_fields(1);
        after.name = "bell\u{7}".into();
        r.after = Some(after);
        w.record(&r);
        // More rows after it: every row is checked, not only the last.
        for n in 0..3 {
            let mut ok = r.clone();
            ok.row = 3 + n;
            ok.after.as_mut().unwrap().name = format!("pbx-{n}");
            w.record(&ok);
        }
        w.finish(true).unwrap();
        let err = verify(&path).unwrap_err();
        assert!(matches!(err, PlanError::BadValue { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("control character"), "{err}");
        // A header with a long manifest path (it is read up to 64 KiB) verifies.
        let long = dir.path().join("long.plan");
        let mut far = header();
        far.manifest = "m".repeat(20_000);
        PlanWriter::create(&long, far)
            .unwrap()
            .finish(true)
            .unwrap();
        assert!(verify(&long).is_ok());
        // The refused value in the last row, after good ones.
        let last = dir.path().join("last.plan");
        let mut w = PlanWriter::create(&last, header()).unwrap();
        for n in 0..3 {
            let mut ok = r.clone();
            ok.row = 2 + n;
            ok.after.as_mut().unwrap().name = format!("pbx-{n}");
            w.record(&ok);
        }
        let mut bad = r.clone();
        bad.row = 5;
        w.record(&bad);
        w.finish(true).unwrap();
        let err = verify(&last).unwrap_err();
        assert!(matches!(err, PlanError::BadValue { line: 5, .. }), "{err}");
        let v1 = dir.path().join("v1.plan");
        std::fs::write(&v1, "{\"sipgw_bulk_plan\":1,\"space\":\"x\"}\n").unwrap();
        let err = verify(&v1).unwrap_err();
        assert!(matches!(err, PlanError::Version { found: 1, .. }));
        assert!(err.to_string().contains("plan again"), "{err}");
    }

    #[test]
    fn another_space_or_a_changed_manifest_is_refused() {
        let h = header();
        let p = Path::new("p.plan");
        assert!(
            h.check(p, "https://ACME.signalwire.com/", Some("aaa"))
                .is_ok()
        );
        assert!(matches!(
            h.check(p, "https://other.signalwire.com", Some("aaa")),
            Err(PlanError::OtherSpace { .. })
        ));
        assert!(matches!(
            h.check(p, "https://acme.signalwire.com", Some("bbb")),
            Err(PlanError::ManifestChanged { .. })
        ));
        assert!(matches!(
            h.check(p, "https://acme.signalwire.com", None),
            Err(PlanError::ManifestChanged { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let not = dir.path().join("m.csv");
        std::fs::write(&not, "id\n").unwrap();
        assert!(matches!(read_header(&not), Err(PlanError::NotAPlan { .. })));
    }
}
