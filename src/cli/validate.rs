//! `validate`: every row checked offline; bad rows listed on stdout, counts on stderr.

use std::io::Write;
use std::ops::ControlFlow;

use super::{Context, Exit, ExitContext, Failure, ManifestArgs, manifest_failure};
use std::sync::Arc;

use crate::manifest::{DuplicateCheck, InvalidRow, Manifest};

/// With `--projects`, a row whose project the file lacks is listed too.
pub async fn run(ctx: &Context, args: &ManifestArgs) -> Result<Exit, Failure> {
    let manifest = Manifest::open(&args.manifest, args.format).map_err(manifest_failure)?;
    let projects = ctx.projects()?;
    let (stats, unknown_project) = tokio::task::spawn_blocking(move || {
        let mut unknown_project = 0u64;
        // Two passes keep memory flat: the first finds the ids used twice, the second
        // checks and lists rows in file order, remembering only those ids.
        let repeated = manifest.first_pass(|_| {})?.repeated;
        let manifest = manifest.with_duplicates(DuplicateCheck::Only(Arc::new(repeated)));
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let stats = manifest.read(|row| {
            let bad = match (row, &projects) {
                (Err(bad), _) => bad,
                (Ok(row), Some(set)) => match set.resolve(row.project.as_deref()) {
                    Ok(_) => return ControlFlow::Continue(()),
                    Err(message) => {
                        unknown_project += 1;
                        InvalidRow {
                            seq: row.seq,
                            line: row.line,
                            id: row.id.hyphenated().to_string(),
                            message,
                        }
                    }
                },
                (Ok(_), None) => return ControlFlow::Continue(()),
            };
            // A closed stdout (`| head`) just ends the listing.
            if writeln!(out, "{bad}").is_err() {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        stats.map(|s| (s, unknown_project))
    })
    .await
    .exit_with(Exit::BadManifest)?
    .map_err(manifest_failure)?;
    let invalid = stats.invalid + unknown_project;
    tracing::info!(
        rows = stats.rows,
        valid = stats.rows - invalid,
        invalid,
        "validated"
    );
    Ok(if invalid > 0 {
        Exit::RowErrors
    } else {
        Exit::Ok
    })
}
