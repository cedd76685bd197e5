//! The chain one schedule writes: `REPORT`, then `STEM.2.EXT`, `STEM.3.EXT`, ..., one
//! report per finished run, numbered in the order the runs happened. A link is never
//! skipped, reused or taken when it was deleted or cut. Only a write whose outcome a link
//! never learnt (`write_unknown`) carries its undo value into the next link, and only
//! while the gateway is what that write asked for; a `mismatch` is settled in its own
//! link (its answer is the `after`), so the next link's `before` is its own read and its
//! rollback puts back what was there just before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{IdSet, LedgerError, read_run_file, run_path};
use crate::diff::{FieldSet, differing, with_fields_from};
use crate::model::GatewayFields;
use crate::report::{self, ReadRecord};
use crate::status::{ErrorCode, Status};

/// A write an earlier run may have made to a row's gateway (`mismatch`, `write_unknown`,
/// or a line a crash lost), and the row's undo value from before it.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierWrite {
    /// The gateway before that write.
    pub before: GatewayFields,
    /// What that write left the gateway as, when known: a `mismatch`'s answer, what a
    /// `write_unknown` asked for (or the gateway as it read it).
    pub after: Option<GatewayFields>,
    /// The fields that write asked to change (a `mismatch`: those its answer shows
    /// changed), when known; unknown, every field the gateway moved in counts.
    pub fields: Option<FieldSet>,
    /// Carried from the chain's previous report, not this report's own.
    pub carried: bool,
}

impl EarlierWrite {
    /// The row's undo value when this run reads its gateway as `now`: the earlier
    /// `before` where that write may have landed (the gateway moved from it). This
    /// report's own stands whatever moved it (kept across resumes); one carried from the
    /// chain's previous report stands only while the gateway is what that run left,
    /// otherwise this run's own read is the `before`.
    pub fn before_for(&self, now: &GatewayFields) -> Option<&GatewayFields> {
        let moved = *now != self.before;
        let as_left = !self.carried || self.after.as_ref() == Some(now);
        (moved && as_left).then_some(&self.before)
    }

    /// Where that write landed, read as `now`: the row's undo value (the earlier
    /// `before` of the fields it changed, `now`'s of the rest, which someone else may have
    /// moved since) and those fields. `None` when nothing of it shows.
    pub fn landed(&self, now: &GatewayFields) -> Option<(GatewayFields, FieldSet)> {
        let before = self.before_for(now)?;
        let ours = differing(before, now).intersection(self.fields.unwrap_or(FieldSet::all()));
        (!ours.is_empty()).then(|| (with_fields_from(now, before, ours), ours))
    }

    /// For a row this run could not read: this report's own earlier write, which stays
    /// possibly written; never one carried from the previous link (nothing says the
    /// gateway is still as that run left it, and this run wrote nothing to it).
    pub fn unread(&self) -> Option<&EarlierWrite> {
        (!self.carried).then_some(self)
    }
}

/// A row a report's run may have written (`mismatch`: written, but not as asked;
/// `write_unknown`: an answer lost), as an earlier write.
pub(super) fn possibly_written(r: &ReadRecord, carried: bool) -> Option<(u128, EarlierWrite)> {
    if r.status != Status::Mismatch && r.error_code != ErrorCode::WriteUnknown {
        return None;
    }
    let id = uuid::Uuid::try_parse(&r.id).ok()?;
    let before = r.before.clone()?;
    let fields = match (&r.after, r.status) {
        (Some(after), Status::Mismatch) => Some(differing(&before, after)),
        _ => (!r.changed_fields.is_empty()).then_some(r.changed_fields),
    };
    let write = EarlierWrite {
        before,
        after: r.after.clone(),
        fields,
        carried,
    };
    Some((id.as_u128(), write))
}

/// Adds the writes of unknown outcome of the finished report this one follows, unless
/// this report knows better (its own, or a row it finished). That run went through every
/// row: its report has a line for each, so its lines (not its journal) hold every write it
/// may have made. Its `mismatch` lines are not carried: that write's outcome is known and
/// that report undoes it; carried, rolling back this link alone would put back the
/// earlier link's values, not what was there just before this run.
pub(super) fn carry_over(
    finished: &Path,
    recovered: &mut HashMap<u128, EarlierWrite>,
    done: &IdSet,
) -> Result<(), LedgerError> {
    report::for_each_record(finished, |r| {
        if r.error_code == ErrorCode::WriteUnknown
            && let Some((id, write)) = possibly_written(&r, true)
            && !done.contains(&id)
        {
            recovered.entry(id).or_insert(write);
        }
        Ok(())
    })?;
    Ok(())
}

/// The report a `--resume` naming `report` writes, and the finished report it follows:
/// `report` itself unless its run finished; then the first of `STEM.2.EXT`, `STEM.3.EXT`,
/// ... that is not there yet or whose run did not finish (it was cut off: that run is
/// continued). A finished run is never continued, so every scheduled run reads every
/// gateway. A link that was deleted (a later one, or its run file, is there) or changed
/// since its run finished is refused: the numbers keep the order the runs happened in,
/// and no link's undo values are lost. Call it holding the lock on `report`, so that two
/// runs given one name never pick the same new one.
pub fn report_to_resume(report: &Path) -> Result<(PathBuf, Option<PathBuf>), LedgerError> {
    let mut path = report.to_owned();
    let mut follows = None;
    let mut n = 1u32;
    while whole_and_finished(report, &path)? {
        n += 1;
        follows = Some(std::mem::replace(&mut path, numbered(report, n)));
    }
    let broken = |problem: String| LedgerError::BrokenChain {
        first: report.to_owned(),
        problem,
    };
    if !path.exists() && run_path(&path).exists() {
        return Err(broken(format!(
            "{} is missing while its run file {} is there",
            path.display(),
            run_path(&path).display()
        )));
    }
    if let Some(later) = later_link(report, n)? {
        let problem = match path.exists() {
            true => format!(
                "{} comes before {}, but its run file does not say it finished",
                path.display(),
                later.display()
            ),
            false => format!(
                "{} is missing while {} exists",
                path.display(),
                later.display()
            ),
        };
        return Err(broken(problem));
    }
    Ok((path, follows))
}

/// Whether the run that wrote `link` went through every row. A finished link whose
/// report is no longer the size it had then (cut, truncated, edited) is refused.
fn whole_and_finished(first: &Path, link: &Path) -> Result<bool, LedgerError> {
    if !link.exists() {
        return Ok(false);
    }
    let note = match read_run_file(link) {
        Ok(Some(note)) if note.finished.is_some() => note,
        Ok(_) => return Ok(false),
        // An unreadable run file is for the resume to refuse, with its reason.
        Err(LedgerError::NoFingerprint(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some(was) = note.report_bytes else {
        // Finished by a version that did not record the report's size.
        return Ok(true);
    };
    let now = std::fs::metadata(link)
        .map_err(|source| LedgerError::Io {
            path: link.to_owned(),
            source,
        })?
        .len();
    if now != was {
        return Err(LedgerError::BrokenChain {
            first: first.to_owned(),
            problem: format!(
                "{} held {was} bytes when its run finished and holds {now} now: it was cut \
                 or edited since",
                link.display()
            ),
        });
    }
    if let Some(digest) = &note.report_sha256
        && crate::bounded::file_sha256(link).as_ref() != Some(digest)
    {
        return Err(LedgerError::BrokenChain {
            first: first.to_owned(),
            problem: format!(
                "{} is not the report its run finished with (its SHA-256 differs): it was \
                 edited since",
                link.display()
            ),
        });
    }
    Ok(true)
}

/// The first link numbered after `n` that is there (its report or its run file), if any.
fn later_link(report: &Path, n: u32) -> Result<Option<PathBuf>, LedgerError> {
    let dir = match report.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let entries = std::fs::read_dir(dir).map_err(|source| LedgerError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let stem = report.file_stem().unwrap_or_default().to_string_lossy();
    let prefix = format!("{stem}.");
    let mut first_later: Option<u32> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(k) = digits.parse::<u32>() else {
            continue;
        };
        let link = numbered(report, k);
        let is_link = link.file_name().is_some_and(|f| *f == *entry.file_name())
            || run_path(&link).file_name() == Some(entry.file_name().as_os_str());
        if k > n && is_link {
            first_later = Some(first_later.map_or(k, |f| f.min(k)));
        }
    }
    Ok(first_later.map(|k| numbered(report, k)))
}

/// `dir/STEM.N.EXT` for `dir/STEM.EXT` (`dir/NAME.N` without an extension): the report
/// of the run after a finished one.
pub(super) fn numbered(report: &Path, n: u32) -> PathBuf {
    let mut name = report.file_stem().unwrap_or_default().to_owned();
    name.push(format!(".{n}"));
    if let Some(ext) = report.extension() {
        name.push(".");
        name.push(ext);
    }
    report.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, RunFile};
    use crate::report::{ReportFormat, RowRecord};

    use super::super::tests::{finish_with_one_line, note};

    /// A finished run of `run` into `report`, with one line.
    fn finished(report: &Path, run: &RunFile) {
        finish_with_one_line(&mut Ledger::lock(report).unwrap(), run);
    }

    #[test]
    fn a_finished_run_is_followed_by_the_next_report_of_its_chain() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let report = dir.path().join("r.csv");
        let run = note(&manifest, "aaa");
        assert_eq!(report_to_resume(&report).unwrap(), (report.clone(), None));
        let mut ledger = Ledger::lock(&report).unwrap();
        drop(ledger.open(Some(&run), ReportFormat::Csv, false).unwrap());
        assert_eq!(
            report_to_resume(&report).unwrap(),
            (report.clone(), None),
            "a run not (yet) finished is continued"
        );
        ledger.record_finished(&run).unwrap();
        drop(ledger);
        let text = std::fs::read_to_string(run_path(&report)).unwrap();
        assert!(text.contains("\"finished\": \""), "{text}");
        let second = dir.path().join("r.2.csv");
        assert_eq!(
            report_to_resume(&report).unwrap(),
            (second.clone(), Some(report.clone()))
        );
        let mut ledger = Ledger::lock(&second).unwrap();
        ledger.follow(&report, &report);
        drop(ledger.open(Some(&run), ReportFormat::Csv, true).unwrap());
        assert_eq!(
            report_to_resume(&report).unwrap(),
            (second.clone(), Some(report.clone())),
            "the second, cut off, is continued"
        );
        ledger.record_finished(&run).unwrap();
        assert_eq!(
            report_to_resume(&report).unwrap(),
            (dir.path().join("r.3.csv"), Some(second))
        );
        // A run file that cannot be read is not a finished run, and a link after it is
        // there: the chain is refused.
        std::fs::write(run_path(&report), "{").unwrap();
        let err = report_to_resume(&report).unwrap_err().to_string();
        assert!(
            err.contains("r.2.csv") && err.contains("does not say"),
            "{err}"
        );
        assert_eq!(
            numbered(Path::new("a/b.report.csv"), 2),
            Path::new("a/b.report.2.csv")
        );
        assert_eq!(numbered(Path::new("r"), 3), Path::new("r.3"));
    }

    #[test]
    fn a_report_after_a_finished_one_keeps_the_before_of_rows_that_run_may_have_written() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let ids = crate::sandbox::generated_ids(5, 9);
        let original = crate::sandbox::starting_fields(3);
        let run = note(&manifest, "aaa");
        // The finished run: two writes of unknown outcome, a mismatch, an update and a
        // plain failure, each with a before-value.
        let first = dir.path().join("r.csv");
        let mut ledger = Ledger::lock(&first).unwrap();
        let mut opened = ledger.open(Some(&run), ReportFormat::Csv, false).unwrap();
        let kinds = [
            (Status::Failed, "write_unknown"),
            (Status::Failed, "write_unknown"),
            (Status::Mismatch, ""),
            (Status::Updated, ""),
            (Status::Failed, "http_500"),
        ];
        for (i, (status, code)) in kinds.into_iter().enumerate() {
            let mut r = RowRecord::bare(
                i as u64,
                i as u64 + 2,
                ids[i].to_string(),
                status,
                code,
                String::new(),
            );
            r.before = Some(original.clone());
            opened.writer.write(&r).unwrap();
        }
        opened.writer.close().unwrap();
        ledger.record_finished(&run).unwrap();
        drop(ledger);
        let (next, follows) = report_to_resume(&first).unwrap();
        assert_eq!(follows.as_deref(), Some(first.as_path()));
        let mut ledger = Ledger::lock(&next).unwrap();
        ledger.follow(&first, &first);
        let opened = ledger.open(Some(&run), ReportFormat::Csv, true).unwrap();
        let mut carried: Vec<u128> = opened.recovered.keys().copied().collect();
        carried.sort_unstable();
        let mut want = vec![ids[0].as_u128(), ids[1].as_u128()];
        want.sort_unstable();
        assert_eq!(
            carried, want,
            "the unknown writes: not the mismatch (settled in its link), nothing else"
        );
        assert!(
            opened
                .recovered
                .values()
                .all(|w| w.before == original && w.carried)
        );
        // Resumed after a cut, the new report's own finished rows are not carried again.
        let mut opened = opened;
        let mut done =
            RowRecord::bare(0, 2, ids[0].to_string(), Status::Updated, "", String::new());
        done.before = Some(original.clone());
        opened.writer.write(&done).unwrap();
        opened.writer.close().unwrap();
        drop(ledger);
        let mut ledger = Ledger::lock(&next).unwrap();
        ledger.follow(&first, &first);
        let opened = ledger.open(Some(&run), ReportFormat::Csv, true).unwrap();
        let carried: Vec<u128> = opened.recovered.keys().copied().collect();
        assert_eq!(carried, vec![ids[1].as_u128()]);
    }

    #[test]
    fn an_earlier_write_stands_only_where_the_gateway_is_as_that_run_left_it() {
        let [before, left, edited] = [1, 2, 3].map(crate::sandbox::starting_fields);
        let own = EarlierWrite {
            before: before.clone(),
            after: None,
            fields: None,
            carried: false,
        };
        assert_eq!(own.before_for(&before), None, "nothing landed");
        assert_eq!(
            own.before_for(&edited),
            Some(&before),
            "kept across resumes"
        );
        assert!(own.unread().is_some());
        let carried = EarlierWrite {
            after: Some(left.clone()),
            carried: true,
            ..own.clone()
        };
        assert_eq!(
            carried.before_for(&left),
            Some(&before),
            "as that run left it"
        );
        assert_eq!(
            carried.before_for(&edited),
            None,
            "moved on: this run's read"
        );
        assert_eq!(carried.before_for(&before), None);
        assert!(carried.unread().is_none(), "this run wrote nothing to it");
        let unknown = EarlierWrite {
            after: None,
            ..carried
        };
        assert_eq!(unknown.before_for(&left), None, "what it left is not known");
    }

    #[test]
    fn what_an_earlier_write_landed_is_its_fields_only_never_someone_else_s_edit() {
        let before = crate::sandbox::starting_fields(1);
        let mut now = before.clone();
        now.codecs.reverse();
        now.name = "edited-by-someone".into();
        let write = EarlierWrite {
            before: before.clone(),
            after: None,
            fields: Some(FieldSet::parse("codecs")),
            carried: false,
        };
        let (undo, ours) = write.landed(&now).unwrap();
        assert_eq!(ours.to_string(), "codecs");
        assert_eq!(undo.codecs, before.codecs, "its before");
        assert_eq!(
            undo.name, "edited-by-someone",
            "the edit is not ours to undo"
        );
        let unknown = EarlierWrite {
            fields: None,
            ..write.clone()
        };
        assert_eq!(
            unknown.landed(&now),
            Some((before.clone(), differing(&before, &now)))
        );
        let mut only_edited = before.clone();
        only_edited.name = "edited-by-someone".into();
        assert_eq!(write.landed(&only_edited), None, "nothing of it shows");
        assert_eq!(write.landed(&before), None);
    }

    #[test]
    fn a_link_belongs_to_the_first_link_s_space_project_shard_and_selection() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let first = dir.path().join("r.csv");
        let run = note(&manifest, "aaa");
        finished(&first, &run);
        let (next, follows) = report_to_resume(&first).unwrap();
        let follows = follows.unwrap();
        let others = [
            RunFile {
                space: "https://other.signalwire.com".into(),
                ..run.clone()
            },
            RunFile {
                project_id: "p-2".into(),
                ..run.clone()
            },
            RunFile {
                shard: Some("1/2".into()),
                ..run.clone()
            },
            RunFile {
                selection: Some("digest".into()),
                ..run.clone()
            },
        ];
        let mut ledger = Ledger::lock(&next).unwrap();
        ledger.follow(&first, &follows);
        for other in &others {
            let err = ledger.preflight(other, true).unwrap_err();
            assert!(err.to_string().contains("r.csv"), "{err}");
        }
        // The manifest's content may change between links.
        assert!(ledger.preflight(&note(&manifest, "bbb"), true).is_ok());
        assert!(!next.exists(), "nothing made");
    }

    #[test]
    fn a_missing_cut_or_unfinished_link_before_a_later_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let first = dir.path().join("r.csv");
        let run = note(&manifest, "aaa");
        for n in 1..=3 {
            let link = if n == 1 {
                first.clone()
            } else {
                numbered(&first, n)
            };
            finished(&link, &run);
        }
        let refused = |names: &str| {
            let err = report_to_resume(&first).unwrap_err();
            assert!(matches!(err, LedgerError::BrokenChain { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(names) && text.contains("--report"), "{text}");
        };
        let second = numbered(&first, 2);
        let kept = std::fs::read(&second).unwrap();
        std::fs::write(&second, &kept[..kept.len() - 1]).unwrap();
        refused("r.2.csv held");
        std::fs::write(&second, &kept).unwrap();
        assert_eq!(report_to_resume(&first).unwrap().0, numbered(&first, 4));
        // A cut-off link after the last finished one is continued; one before another
        // link is not.
        std::fs::remove_file(run_path(&second)).unwrap();
        refused("r.2.csv comes before");
        std::fs::remove_file(&second).unwrap();
        refused("r.2.csv is missing while");
        // Names that are not links do not count.
        let third = numbered(&first, 3);
        std::fs::remove_file(&third).unwrap();
        std::fs::remove_file(run_path(&third)).unwrap();
        for other in ["r.3.csv.bak", "r.30x.csv", "r.3.csvx", "q.3.csv", "r.1.csv"] {
            std::fs::write(dir.path().join(other), "").unwrap();
        }
        assert_eq!(report_to_resume(&first).unwrap().0, second);
        assert_eq!(later_link(&first, 1).unwrap(), None);
        std::fs::write(run_path(&numbered(&first, 12)), "{}").unwrap();
        assert_eq!(later_link(&first, 1).unwrap(), Some(numbered(&first, 12)));
        assert_eq!(later_link(&first, 12).unwrap(), None);
    }
}
