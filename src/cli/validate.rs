//! `validate`: every row checked offline; bad rows listed on stdout, counts on stderr.

use std::io::Write;
use std::ops::ControlFlow;

use super::{Exit, ExitContext, Failure, ManifestArgs, manifest_failure};
use std::sync::Arc;

use crate::manifest::{DuplicateCheck, Manifest};

pub async fn run(args: &ManifestArgs) -> Result<Exit, Failure> {
    let manifest = Manifest::open(&args.manifest, args.format).map_err(manifest_failure)?;
    let stats = tokio::task::spawn_blocking(move || {
        // Two passes keep memory flat: the first finds the ids used twice, the second
        // checks and lists rows in file order, remembering only those ids.
        let repeated = manifest.first_pass(|_| {})?.repeated;
        let manifest = manifest.with_duplicates(DuplicateCheck::Only(Arc::new(repeated)));
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        manifest.read(|row| {
            if let Err(bad) = row {
                // A closed stdout (`| head`) just ends the listing.
                if writeln!(out, "{bad}").is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
    })
    .await
    .exit_with(Exit::BadManifest)?
    .map_err(manifest_failure)?;
    tracing::info!(
        rows = stats.rows,
        valid = stats.rows - stats.invalid,
        invalid = stats.invalid,
        "validated"
    );
    Ok(if stats.invalid > 0 {
        Exit::RowErrors
    } else {
        Exit::Ok
    })
}
