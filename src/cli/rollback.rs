//! `rollback REPORT`: a manifest of the `before` values of every `updated` and `mismatch`
//! row of an apply report, and of every `failed` row whose PATCH may have landed
//! (`write_unknown`). Applying it puts those gateways back as they were.

use std::io::Write;

use super::{Exit, ExitContext, Failure, RollbackArgs};
use crate::manifest::{Format, ManifestWriter};
use crate::report::{self, Status};

pub fn run(args: &RollbackArgs) -> Result<Exit, Failure> {
    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Csv);
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).exit_with(Exit::Usage)?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = ManifestWriter::new(out, format).exit_with(Exit::Usage)?;
    let mut rows = 0u64;
    let mut without_before = 0u64;
    report::for_each_record(&args.report, |r| {
        let written = matches!(r.status, Status::Updated | Status::Mismatch)
            || r.error_code == report::WRITE_UNKNOWN;
        if !written {
            return Ok(());
        }
        match &r.before {
            Some(before) => {
                rows += 1;
                writer.write(&r.id, before).map_err(|e| report::ReadError {
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
    writer.finish().exit_with(Exit::Usage)?;
    if without_before > 0 {
        tracing::warn!(
            rows = without_before,
            "written rows without a `before` value were left out"
        );
    }
    tracing::info!(rows, "rollback manifest written");
    Ok(Exit::Ok)
}
