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

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::{finish_with_one_line, note};

    fn claim<'a>(report: &Path, run: Option<&'a RunFile>, resume: bool) -> Claim<'a> {
        Claim {
            report: report.to_owned(),
            wait: Duration::ZERO,
            run,
            resume,
        }
    }

    fn no_clash(_: &Path) -> Result<(), LedgerError> {
        Ok(())
    }

    /// `--resume` of a finished run claims the next link, checked against the first's
    /// run file, and holds the named report's lock while it lives; every path it takes
    /// was offered to the path check first, and a refused path takes no lock.
    #[test]
    fn a_claim_picks_the_link_locks_both_and_checks_the_run_file() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id\n").unwrap();
        let report = dir.path().join("r.csv");
        let run = note(&manifest, "aaa");
        let mut first = Ledger::claim(&claim(&report, Some(&run), false), no_clash).unwrap();
        assert_eq!(first.report(), report);
        finish_with_one_line(&mut first, &run);
        drop(first);

        let asked = std::cell::RefCell::new(Vec::new());
        let check = |p: &Path| {
            asked.borrow_mut().push(p.to_owned());
            Ok::<(), LedgerError>(())
        };
        let next = Ledger::claim(&claim(&report, Some(&run), true), check).unwrap();
        let second = dir.path().join("r.2.csv");
        assert_eq!(next.report(), second);
        assert_eq!(*asked.borrow(), [report.clone(), second.clone()]);
        assert!(matches!(Ledger::lock(&report), Err(LedgerError::Locked(_))));
        assert!(matches!(Ledger::lock(&second), Err(LedgerError::Locked(_))));
        drop(next);
        drop(Ledger::lock(&report).unwrap());

        // Another space: the chain's first run file refuses it, and no lock stays.
        let elsewhere = RunFile {
            space: "https://other.signalwire.com".into(),
            ..run.clone()
        };
        let refused = Ledger::claim(&claim(&report, Some(&elsewhere), true), no_clash);
        assert!(matches!(refused, Err(LedgerError::OtherSpace { .. })));
        drop(Ledger::lock(&report).unwrap());
        drop(Ledger::lock(&second).unwrap());

        // Without --resume, the report that exists is refused; a plan is never continued.
        let exists = Ledger::claim(&claim(&report, Some(&run), false), no_clash);
        assert!(matches!(exists, Err(LedgerError::Exists(_))));
        let plan = Ledger::claim(&claim(&report, None, true), no_clash);
        assert!(matches!(plan, Err(LedgerError::PlanExists(_))));

        // A path the check refuses is never locked.
        let refuse = |p: &Path| match p == second {
            true => Err(LedgerError::Locked(p.to_owned())),
            false => Ok(()),
        };
        assert!(Ledger::claim(&claim(&report, Some(&run), true), refuse).is_err());
        assert!(!crate::ledger::lock_path(&second).exists());
    }
}
