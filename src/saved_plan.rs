//! Saved plans: review, then apply exactly that.
//!
//! `plan MANIFEST --out PLAN` writes what the plan saw: a header naming the space, the
//! manifest and its fingerprint, then one JSON line per row with its status, `before` (the
//! gateway as read) and `after` (what the plan would write). `apply --plan PLAN` reads it
//! back as the job's rows ([`crate::manifest::Format::Plan`]): only `would_update` rows, each
//! carrying its `before` as the state the gateway must still be in; one that moved since is
//! a `conflict` and is not written (Terraform's stale-plan check, per gateway).
//!
//! The interactive `apply` uses the same path: it plans into `REPORT.plan`, shows that, asks,
//! then applies that file, so what is written is what was shown.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::Observer;
use crate::model::GatewayFields;
use crate::report::{RowRecord, Status};

/// The plan file's format version, in its header.
pub const VERSION: u32 = 1;

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
}

/// One row of a saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLine {
    /// The row's line in the manifest.
    pub row: u64,
    pub id: String,
    pub status: Status,
    pub before: Option<GatewayFields>,
    pub after: Option<GatewayFields>,
}

/// A saved plan that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a saved plan (its first line is not a sipgw-bulk plan header); make one \
         with `sipgw-bulk plan MANIFEST --out PLAN`"
    )]
    NotAPlan { path: PathBuf },
    #[error("plan {path} has format version {found}; this sipgw-bulk reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
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
    let io_err = |source| PlanError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut first = String::new();
    io::BufReader::new(io::Read::take(file, 64 * 1024))
        .read_line(&mut first)
        .map_err(io_err)?;
    let header: PlanHeader =
        serde_json::from_str(first.trim()).map_err(|_| PlanError::NotAPlan {
            path: path.to_owned(),
        })?;
    if header.sipgw_bulk_plan != VERSION {
        return Err(PlanError::Version {
            path: path.to_owned(),
            found: header.sipgw_bulk_plan,
        });
    }
    Ok(header)
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
    header: PlanHeader,
}

impl PlanWriter {
    pub fn create(path: &Path, header: PlanHeader) -> io::Result<PlanWriter> {
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
        let io_err = |source| PlanError::Io {
            path: self.path.clone(),
            source,
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
        };
        let written = serde_json::to_writer(&mut *out, &line)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
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
