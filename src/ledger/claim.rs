//! A run's report, claimed in one call ([`Ledger::claim`]): the path checked, the lock
//! taken, the link of its chain chosen (and locked), and the report checked against its
//! run file, in that order, before any row runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Ledger, LedgerError, RunFile, report_to_resume};

/// What a run asks of its report.
pub struct Claim<'a> {
    /// The report as the run names it (`--report`, or the default name).
    pub report: PathBuf,
    /// How long to wait for another run's lock on it (`--lock-timeout`; zero: refuse at
    /// once).
    pub wait: Duration,
    /// What an apply is made from (its run file); `None` for a plan, whose report is
    /// never continued.
    pub run: Option<&'a RunFile>,
    /// `--resume`: continue the report's run, or (it finished) start the next link of its
    /// chain.
    pub resume: bool,
}

impl Ledger {
    /// The report this run writes, locked and checked: `claim.report`, or with `--resume`
    /// of a run that finished, the next link of its chain ([`report_to_resume`]), named
    /// in the log. The named report's lock is then held too, for as long as the returned
    /// ledger lives: two runs given one name never pick the same link, and an overlapping
    /// run is refused on the name it was given. `refuse_path` refuses a report path the
    /// run may not write (one of its inputs, or another of its outputs): asked of each
    /// path before its lock is taken. Last, [`Ledger::preflight`] (an apply) or
    /// [`Ledger::refuse_an_existing_plan`] (a plan).
    pub fn claim<E: From<LedgerError>>(
        claim: &Claim<'_>,
        refuse_path: impl Fn(&Path) -> Result<(), E>,
    ) -> Result<Ledger, E> {
        refuse_path(&claim.report)?;
        let named = Ledger::lock_within(&claim.report, claim.wait)?;
        let mut ledger = match (claim.run, claim.resume) {
            (Some(_), true) => named.next_link(claim.wait, &refuse_path)?,
            _ => named,
        };
        match claim.run {
            Some(run) => ledger.preflight(run, claim.resume)?,
            None => ledger.refuse_an_existing_plan()?,
        }
        Ok(ledger)
    }

    /// The report this `--resume` writes: this one, unless its run finished; then the
    /// next link of its chain, locked, holding this one's lock.
    fn next_link<E: From<LedgerError>>(
        self,
        wait: Duration,
        refuse_path: &impl Fn(&Path) -> Result<(), E>,
    ) -> Result<Ledger, E> {
        let (next, follows) = report_to_resume(&self.report)?;
        let Some(finished) = follows else {
            return Ok(self);
        };
        tracing::info!(
            finished = %finished.display(),
            report = %next.display(),
            "the run of that report finished; this run reads every gateway again into its \
             own report (a finished report is never continued)"
        );
        refuse_path(&next)?;
        let mut ledger = Ledger::lock_within(&next, wait)?;
        ledger.follow(&self.report, &finished);
        ledger.named = Some(Box::new(self));
        Ok(ledger)
    }

    /// The report this ledger writes.
    pub fn report(&self) -> &Path {
        &self.report
    }
}
