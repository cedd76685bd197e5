//! The review before an apply writes: an interactive apply plans into `REPORT.plan`,
//! shows it, asks, and then applies exactly that file; an apply with `--max-changes`
//! counts the changes first. Either refuses before anything is written.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::passes::{self, Pass, Scan, plan_header_for};
use super::{Approval, AskFn, Finished, Mode, PreviewFn, RunError, RunOptions, reviewed_plan_path};
use crate::engine::{Observer, Outcome};
use crate::manifest::{Format, Manifest};
use crate::progress::Tee;
use crate::report::ReportWriter;
use crate::saved_plan::{self, PlanError, PlanWriter};
use crate::status::Status;

/// What the review needs to know of the run.
pub(super) struct Review<'a> {
    pub(super) options: &'a RunOptions,
    pub(super) report: &'a Path,
    /// The rows are a saved plan: that was the review.
    pub(super) saved_plan: bool,
    /// The space is read in pages (the read mode lists).
    pub(super) lists: bool,
}

/// Go on with these rows, or stop with nothing written.
pub(super) enum Reviewed {
    Go { scan: Box<Scan>, manifest: Manifest },
    Stop(Box<Finished>),
}

impl Review<'_> {
    pub(super) async fn decide(
        self,
        approval: Approval<'_>,
        manifest: Manifest,
        scan: Scan,
    ) -> Result<Reviewed, RunError> {
        let apply = self.options.mode == Mode::Apply;
        let continuing = self.options.resume && self.report.exists();
        match approval {
            Approval::Ask { preview, ask } if apply && !self.saved_plan && !continuing => {
                self.show_and_ask(preview, ask, &manifest, &scan).await
            }
            _ if apply && self.options.max_changes.is_some() => {
                self.count_changes(manifest, scan).await
            }
            _ => Ok(Reviewed::Go {
                scan: Box::new(scan),
                manifest,
            }),
        }
    }

    /// Plans into `REPORT.plan`, shows it, asks, then hands on exactly that file as the
    /// rows. Every planned gateway is read again just before its PATCH, and one that moved
    /// since is a `conflict`, not written.
    async fn show_and_ask(
        &self,
        preview: PreviewFn<'_>,
        ask: AskFn<'_>,
        manifest: &Manifest,
        scan: &Scan,
    ) -> Result<Reviewed, RunError> {
        let plan_path = reviewed_plan_path(self.report);
        let header = plan_header_for(self.options, manifest, scan);
        let writer = PlanWriter::create(&plan_path, header).map_err(|cause| PlanError::Io {
            path: plan_path.clone(),
            cause,
        })?;
        let (plan_obs, plan_handle) = crate::progress::Shared::new(writer);
        let observers: Vec<Box<dyn Observer>> = vec![Box::new(plan_obs), preview(&plan_path)];
        let outcome = self
            .plan(manifest, scan, Some(Box::new(Tee(observers))))
            .await?;
        let writer = crate::progress::reclaim(plan_handle);
        if let Some(stop) = self.refused(&outcome) {
            return Ok(Reviewed::Stop(Box::new(stop)));
        }
        if outcome.count(Status::WouldUpdate) == 0 {
            return Ok(Reviewed::Stop(Box::new(Finished::NothingToDo {
                preview: outcome,
            })));
        }
        let Some(writer) = writer else {
            return Err(RunError::Usage("the plan writer is still in use".into()));
        };
        let saved = writer.finish(true)?;
        if !ask(&outcome) {
            // Kept: the message may have pointed to it, and `apply --plan` of it later
            // writes exactly what was shown (or reports what moved since).
            return Ok(Reviewed::Stop(Box::new(Finished::Declined {
                preview: outcome,
                plan: saved,
            })));
        }
        // Whatever sat at the prompt with the file: apply it only as it was shown.
        saved_plan::verify(&saved)?;
        let reviewed = Manifest::open(&saved, Some(Format::Plan))?;
        // A plan holds only its shard's rows, and only the chosen ones.
        let (scan, manifest) = passes::scan(
            &reviewed,
            None,
            None,
            self.lists,
            passes::scan_projects(self.options),
        )
        .await?;
        Ok(Reviewed::Go {
            scan: Box::new(scan),
            manifest,
        })
    }

    /// A guard to check before anything is written: count the changes first.
    async fn count_changes(&self, manifest: Manifest, scan: Scan) -> Result<Reviewed, RunError> {
        let outcome = self.plan(&manifest, &scan, None).await?;
        match self.refused(&outcome) {
            Some(stop) => Ok(Reviewed::Stop(Box::new(stop))),
            None => Ok(Reviewed::Go {
                scan: Box::new(scan),
                manifest,
            }),
        }
    }

    /// A plan pass over the rows (the canary applies), into no report.
    async fn plan(
        &self,
        manifest: &Manifest,
        scan: &Scan,
        observer: Option<Box<dyn Observer>>,
    ) -> Result<Outcome, RunError> {
        let mut pass = Pass::new(self.options, manifest, scan);
        pass.limit = self.options.limit;
        pass.run_engine(
            ReportWriter::discard(),
            false,
            CancellationToken::new(),
            CancellationToken::new(),
            observer,
        )
        .await
    }

    /// The review saw too little (it stopped) or too much (over `--max-changes`).
    fn refused(&self, outcome: &Outcome) -> Option<Finished> {
        if outcome.stopped.is_some() {
            return Some(Finished::StoppedWhilePlanning {
                preview: outcome.clone(),
            });
        }
        let changes = outcome.count(Status::WouldUpdate);
        match self.options.max_changes {
            Some(max) if changes > max => Some(Finished::TooManyChanges { changes, max }),
            _ => None,
        }
    }
}
