//! `rollback REPORT`: a manifest of the `before` values of every `updated` and `mismatch`
//! row of an apply report, and of every `failed` row whose PATCH may have landed
//! (`write_unknown`). Applying it puts those gateways back as they were.
//!
//! The report is read twice: once to make sure it is an apply report (a manifest, a saved
//! plan or a plan's report is refused with what to pass instead, and nothing is written,
//! not even a header), then to write the manifest.

use std::io::BufRead;

use super::export::{manifest_out, shown};
use super::{Exit, ExitContext, Failure, RollbackArgs, usage};
use crate::manifest::Format;
use crate::output::Destination;
use crate::report::{self, ReadRecord};
use crate::status::Status;

/// A row whose gateway this run may have changed: its `before` undoes it.
fn written(r: &ReadRecord) -> bool {
    matches!(r.status, Status::Updated | Status::Mismatch) || r.error_code == report::WRITE_UNKNOWN
}

pub fn run(args: &RollbackArgs) -> Result<Exit, Failure> {
    let path = &args.report;
    refuse_what_is_not_an_apply_report(path)?;
    let mut rows = 0u64;
    let mut planned = 0u64;
    report::for_each_record(path, |r| {
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

    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Csv);
    if let Some(out) = &args.output {
        crate::output::refuse_clash(&[("-o", out)], &[("the report", path)]).map_err(usage)?;
    }
    let mut writer = manifest_out(&args.output, format)?;
    let mut without_before = 0u64;
    report::for_each_record(path, |r| {
        if !written(&r) {
            return Ok(());
        }
        match &r.before {
            Some(before) => writer.write(&r.id, before).map_err(|e| report::ReadError {
                path: "output".into(),
                message: e.to_string(),
            }),
            None => {
                without_before += 1;
                Ok(())
            }
        }
    })
    .exit_with(Exit::Usage)?;
    writer
        .finish()
        .and_then(Destination::commit)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", shown(&args.output)))
        .exit_with(Exit::Usage)?;
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
             (--report), after `apply --plan` ran",
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
             (its --report, e.g. gateways.report.csv)",
            path.display()
        )));
    }
    Ok(())
}
