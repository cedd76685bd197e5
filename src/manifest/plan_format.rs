//! Saved plans read as the job's rows (`apply --plan`): the header line is skipped (the CLI
//! checks it first), each `would_update` line becomes a [`Row`] asking for every field
//! of its `after`, with its `before` as the state the gateway must still be in. Other lines
//! (unchanged, invalid, ...) are the plan's record, not changes: they yield no row. A plan
//! is written by this tool, so a line that does not read is a whole-file error.
//!
//! [`PlanLine`] is the line's shape, shared with `saved_plan`, which writes and verifies
//! plans: the format lives here, below the machinery that makes them.

use std::io::BufRead;
use std::ops::ControlFlow;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CheckedRow, ManifestError, Row};
use crate::model::GatewayFields;
use crate::status::Status;

/// One row of a saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLine {
    /// The row's line in the manifest.
    pub row: u64,
    pub id: String,
    pub status: Status,
    pub before: Option<GatewayFields>,
    pub after: Option<GatewayFields>,
    /// The row's project id, in a plan of several projects (never a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

pub(super) fn read(
    path: &Path,
    input: impl BufRead,
    sink: &mut dyn FnMut(CheckedRow) -> ControlFlow<()>,
) -> Result<(), ManifestError> {
    let bad = |line: u64, message: String| ManifestError::Plan {
        path: path.to_owned(),
        line,
        message,
    };
    for (i, text) in input.lines().enumerate() {
        let n = i as u64 + 1;
        let text = text.map_err(|e| bad(n, e.to_string()))?;
        if n == 1 || text.trim().is_empty() {
            continue;
        }
        let line: PlanLine = serde_json::from_str(&text)
            .map_err(|e| bad(n, crate::inert::text(&e.to_string(), 200)))?;
        if line.status != Status::WouldUpdate {
            continue;
        }
        let (Some(before), Some(after)) = (line.before, line.after) else {
            return Err(bad(n, "a change without its before or after value".into()));
        };
        let id = uuid::Uuid::try_parse(&line.id).map_err(|_| {
            bad(
                n,
                format!("id `{}` is not a UUID", crate::inert::text(&line.id, 64)),
            )
        })?;
        let desired = after.into_desired();
        let row = Row {
            seq: 0,
            line: line.row,
            id,
            desired,
            expected: Some(before),
            project: line.project,
        };
        if sink(Ok(row)).is_break() {
            return Ok(());
        }
    }
    Ok(())
}
