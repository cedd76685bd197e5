//! `rollback REPORT`: a manifest of the `before` values of every `updated` and `mismatch`
//! row of an apply report, and of every `failed` row whose PATCH may have landed
//! (`write_unknown`), for the fields the run changed; the other cells are empty (left as
//! they are). Applying it puts those fields back as they were, and an edit someone made
//! since to another field survives.
//!
//! The report is read twice: once to make sure it is an apply report (a manifest, a saved
//! plan or a plan's report is refused with what to pass instead, and nothing is written,
//! not even a header), then to write the manifest.

use std::io::BufRead;

use super::export::{finish_output, open_output};
use super::{Exit, ExitContext, Failure, RollbackArgs, usage};
use crate::diff::{FieldSet, differing, only};
use crate::report::{self, ReadRecord};
use crate::settings::named;
use crate::status::{ErrorCode, Status};

/// Flags and variables the messages cite, from their declarations.
const REPORT_FLAG: &str = named::report.long_flag();

/// A row whose gateway this run may have changed: its `before` undoes it.
fn written(r: &ReadRecord) -> bool {
    matches!(r.status, Status::Updated | Status::Mismatch)
        || r.error_code == ErrorCode::WriteUnknown
}

/// The fields a written row's run changed: those it asked to change (`changed_fields`) and
/// those its `after` shows changed from `before` (a `write_unknown`'s `after` is what it
/// asked for). A `mismatch`'s `after` is the server's answer, what the write did: only
/// the fields it shows changed (a field the server kept as it was is not the run's, and
/// writing it back could undo a later edit). Every field when neither says (a report made
/// before `after` was kept for such rows).
fn changed_by_the_run(r: &ReadRecord, before: &crate::model::GatewayFields) -> FieldSet {
    match (&r.after, r.status) {
        (Some(after), Status::Mismatch) => differing(before, after),
        (Some(after), _) => r.changed_fields.union(differing(before, after)),
        (None, _) if !r.changed_fields.is_empty() => r.changed_fields,
        (None, _) => FieldSet::all(),
    }
}

pub fn run(args: &RollbackArgs) -> Result<Exit, Failure> {
    let path = &args.report;
    refuse_what_is_not_an_apply_report(path)?;
    let mut rows = 0u64;
    let mut planned = 0u64;
    // A report of several projects: the undo goes to the same projects.
    let mut projects = false;
    report::for_each_record(path, |r| {
        projects |= r.project.is_some();
        rows += u64::from(written(&r));
        planned += u64::from(r.status == Status::WouldUpdate);
        Ok(())
    })
    .exit_with(Exit::Usage)?;
    if rows == 0 && planned > 0 {
        return Err(usage(format!(
            "{} is a plan's report: nothing was written, so there is nothing to roll back \
             (rollback takes the report of an apply)",
            path.display()
        )));
    }

    let report = [("the report", path.as_path())];
    let mut writer = open_output(&args.output, args.format, &report, projects)?;
    let mut without_before = 0u64;
    report::for_each_record(path, |r| {
        if !written(&r) {
            return Ok(());
        }
        match &r.before {
            Some(before) => {
                let fields = changed_by_the_run(&r, before);
                if fields.is_empty() {
                    // A mismatch whose answer kept every field: nothing of it to put back.
                    return Ok(());
                }
                let undo = only(before, fields);
                let project = r.project.as_deref();
                writer
                    .write_in(&r.id, &undo, project)
                    .map_err(|e| report::ReadError {
                        path: "output".into(),
                        message: e.to_string(),
                    })
            }
            None => {
                without_before += 1;
                Ok(())
            }
        }
    })
    .exit_with(Exit::Usage)?;
    finish_output(writer, &args.output)?;
    if without_before > 0 {
        tracing::warn!(
            rows = without_before,
            "written rows without a `before` value were left out"
        );
    }
    tracing::info!(rows = rows - without_before, "rollback manifest written");
    Ok(Exit::Ok)
}

/// A saved plan or a manifest given where a report goes: say what to pass instead.
fn refuse_what_is_not_an_apply_report(path: &std::path::Path) -> Result<(), Failure> {
    use crate::saved_plan::{PlanError, read_header};
    if matches!(read_header(path), Ok(_) | Err(PlanError::Version { .. })) {
        return Err(usage(format!(
            "{} is a saved plan, not a report: rollback takes the report an apply wrote \
             ({REPORT_FLAG}), after `apply --plan` ran",
            path.display()
        )));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read report {}: {e}", path.display()))
        .exit_with(Exit::Usage)?;
    let mut first = String::new();
    let _ = std::io::BufReader::new(std::io::Read::take(file, 64 * 1024)).read_line(&mut first);
    let columns: Vec<String> = first
        .trim()
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let has = |c: &str| columns.iter().any(|x| x == c);
    let looks_like_json_report =
        first.trim_start().starts_with('{') && first.contains("\"status\"");
    if !looks_like_json_report && has("id") && !has("status") {
        return Err(usage(format!(
            "{} is a manifest, not a report: rollback takes the report an apply wrote \
             (its {REPORT_FLAG}, e.g. gateways.report.csv)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::starting_fields;

    fn line(status: Status, code: &str, changed: &str, after: Option<u64>) -> ReadRecord {
        ReadRecord {
            row: 2,
            id: "id".into(),
            status,
            changed_fields: FieldSet::parse(changed),
            before: Some(starting_fields(1)),
            after: after.map(starting_fields),
            http_status: None,
            attempts: 1,
            error_code: code.into(),
            error: String::new(),
            duration_ms: 0,
            project: None,
        }
    }

    #[test]
    fn a_rollback_row_holds_the_fields_the_run_changed() {
        let before = starting_fields(1);
        let mut updated = line(Status::Updated, "", "codecs", Some(1));
        updated.after.as_mut().unwrap().codecs.reverse();
        assert_eq!(changed_by_the_run(&updated, &before).to_string(), "codecs");
        // A mismatch's answer is what the write did: more than it asked, or less.
        let mismatch = line(Status::Mismatch, "mismatch", "codecs", Some(2));
        assert_eq!(
            changed_by_the_run(&mismatch, &before).to_string(),
            "name;uri",
            "codecs asked for and kept as they were; name and uri not asked for and changed"
        );
        let kept = line(Status::Mismatch, "mismatch", "codecs", Some(1));
        assert!(
            changed_by_the_run(&kept, &before).is_empty(),
            "nothing landed"
        );
        // A write of unknown outcome: what it asked for.
        let unknown = line(Status::Failed, "write_unknown", "name", None);
        assert_eq!(changed_by_the_run(&unknown, &before).to_string(), "name");
        // Nothing says which fields: every one is put back.
        let old = line(Status::Failed, "write_unknown", "", None);
        assert_eq!(changed_by_the_run(&old, &before).len(), 5);
    }
}
