//! The properties every scenario must keep, and the comparison across seeds.

use std::time::Duration;

use sipgw_bulk::budget::announced::Distrust;

use super::scenario::{JobWrite, Outcome, Scenario};
use super::space::Headers;

/// Every property of one scenario; the first broken, described.
pub fn properties(sc: &Scenario, out: &Outcome) -> Result<(), String> {
    for shard in 0..sc.shards {
        let mine: Vec<&JobWrite> = out.writes.iter().filter(|w| w.shard == shard).collect();
        rate_holds(sc, &mine)?;
        if sc.headers.counts_are_honest() {
            room_holds(sc, out, &mine)?;
        }
        refusals_refute(out, shard, &mine)?;
        untrusted_counts_unused(sc, &mine)?;
    }
    job_never_refused(sc, out)?;
    // Sized for a hundred writes or more; a job the budget slowed past the time allowed
    // (a count that outlives its window holds it back) ends with rows left.
    if out.writes.len() < 100 && out.rows_left == 0 {
        return Err(format!(
            "only {} job writes: the scenario tests too little",
            out.writes.len()
        ));
    }
    Ok(())
}

/// `--rate` in every one-second window of one process's sends, retries included.
fn rate_holds(sc: &Scenario, mine: &[&JobWrite]) -> Result<(), String> {
    let mut sent: Vec<_> = mine.iter().map(|w| w.sent_at).collect();
    sent.sort();
    let mut lo = 0;
    for hi in 0..sent.len() {
        while sent[hi] - sent[lo] >= Duration::from_secs(1) {
            lo += 1;
        }
        if hi - lo + 1 > sc.rate as usize {
            return Err(format!(
                "{} writes sent within one second, --rate {}",
                hi - lo + 1,
                sc.rate
            ));
        }
    }
    Ok(())
}

/// With honest counts: a write granted under a count was granted with room for it. For
/// some answer the process had when it granted the write, the process's writes sent
/// after that answer's write and granted by then (this one included) are within its
/// share of that answer's room above the reserve. So the count stays at or above the
/// reserve, less production's writes since that answer and the process's writes then on
/// the wire (sent before that answer's write, counted after it): the only slack.
fn room_holds(sc: &Scenario, out: &Outcome, mine: &[&JobWrite]) -> Result<(), String> {
    let share = |remaining: u64| remaining.saturating_sub(out.reserve) / u64::from(sc.shards);
    let mut by_number: Vec<&JobWrite> = mine.to_vec();
    by_number.sort_by_key(|w| w.number);
    by_number.dedup_by_key(|w| w.number);
    let mut answers: Vec<&JobWrite> = mine.iter().copied().filter(|a| a.honest_count).collect();
    answers.sort_by_key(|a| a.answered_event);
    let recent = sc.window + Duration::from_secs(2);
    // Not vacuous: a write granted when the process's newest answer carried an honest
    // count of this window with plenty of room (its share above the reserve at least
    // twice the writes granted since that write) goes under that count; a budget that
    // never says so would pass every check below. (Counted grant by grant: with counts on
    // half the answers, or production taking the room, whole runs pass with none.)
    let refuted = mine
        .first()
        .and_then(|w| out.reports.get(w.shard as usize))
        .is_some_and(|r| r.untrusted == Some(Distrust::Refuted));
    let owed = mine
        .iter()
        .filter(|g| {
            let Some(a) = mine
                .iter()
                .filter(|a| a.answered_event < g.granted_event)
                .max_by_key(|a| a.answered_event)
            else {
                return false;
            };
            let since = mine
                .iter()
                .filter(|w| w.number > a.number && w.granted_event <= g.granted_event)
                .count() as u64;
            a.honest_count
                && a.counted.window == g.counted.window
                && a.announced_remaining
                    .is_some_and(|r| share(r) >= 2 * since + 2)
        })
        .count();
    if !refuted && owed >= 3 && !mine.iter().any(|w| w.under_announcement) {
        return Err(format!(
            "{owed} writes were granted with room under an honest count the newest \
             known, none under it"
        ));
    }
    for w in mine.iter().filter(|w| w.under_announcement) {
        let known = answers
            .iter()
            .rev()
            .skip_while(|a| a.answered_event > w.granted_event)
            .take_while(|a| w.granted_at - a.answered_at <= recent);
        // The writes sent after `a`'s write that were granted by the time `w` was,
        // counted up to one past `a`'s share.
        let after = |a: &JobWrite| {
            let from = by_number.partition_point(|x| x.number <= a.number);
            by_number[from..]
                .iter()
                .filter(|x| x.granted_event <= w.granted_event)
                .take(share(a.counted.remaining) as usize + 1)
                .count() as u64
        };
        let mut freshest = None;
        let mut kept = true;
        for a in known {
            freshest.get_or_insert(*a);
            kept = after(a) <= share(a.counted.remaining);
            if kept {
                break;
            }
        }
        if let (false, Some(a)) = (kept, freshest) {
            return Err(format!(
                "process {}: write {} (counted in window {}) was granted {:?} after the freshest count it had (on the \
                 answer to write {}: {} left, {} kept, its share {}), with {} of its writes \
                 sent after that one granted by then",
                w.shard,
                w.number,
                w.counted.window,
                w.granted_at - a.answered_at,
                a.number,
                a.counted.remaining,
                out.reserve,
                share(a.counted.remaining),
                after(a)
            ));
        }
    }
    Ok(())
}

/// A refusal of a write the count showed room for, whose own answer did not say nothing
/// was left, leaves the count untrusted.
fn refusals_refute(out: &Outcome, shard: u32, mine: &[&JobWrite]) -> Result<(), String> {
    let refuting = mine
        .iter()
        .find(|w| w.under_announcement && !w.counted.admitted && w.announced_remaining != Some(0));
    let report = &out.reports[shard as usize];
    match refuting {
        Some(w) if report.untrusted != Some(Distrust::Refuted) => Err(format!(
            "process {shard}: write {} was refused under a count that showed room, and the \
             count is still {:?}",
            w.number, report.untrusted
        )),
        _ => Ok(()),
    }
}

/// A count that cannot be believed paces nothing; one that stopped coming paces nothing
/// once its window has passed.
fn untrusted_counts_unused(sc: &Scenario, mine: &[&JobWrite]) -> Result<(), String> {
    let used = mine.iter().filter(|w| w.under_announcement);
    if sc.headers.never_believable()
        && let Some(w) = used.clone().next()
    {
        return Err(format!(
            "write {} was granted under a count that cannot be believed",
            w.number
        ));
    }
    if sc.headers == Headers::Stopping {
        let last_count = mine
            .iter()
            .filter(|w| w.carried_count)
            .map(|w| w.answered_at)
            .max();
        if let Some(last) = last_count {
            let stale = last + sc.window + Duration::from_secs(1);
            if let Some(w) = used.clone().find(|w| w.granted_at > stale) {
                return Err(format!(
                    "write {} was granted under a count {:?} after the last count came",
                    w.number,
                    w.granted_at - last
                ));
            }
        }
    }
    Ok(())
}

/// With honest counts on every answer and production inside its reserve, the job is
/// never refused (when the reserve left over is more than the writes that can be on the
/// wire).
fn job_never_refused(sc: &Scenario, out: &Outcome) -> Result<(), String> {
    let on_the_wire = u64::from(sc.concurrency * sc.shards);
    if !sc.headers.always_honest() || (out.reserve as f64 * 0.2) < on_the_wire as f64 {
        return Ok(());
    }
    match out.writes.iter().find(|w| !w.counted.admitted) {
        Some(w) => Err(format!(
            "process {} write {} was refused with an honest count",
            w.shard, w.number
        )),
        None => Ok(()),
    }
}

/// Production's refused share with one behaviour against none at all, same seeds.
pub struct Compared {
    pub headers: Headers,
    pub with: f64,
    pub without: f64,
    pub seeds: usize,
    pub worst_seed: u64,
}

/// The margin production's share may be worse by, averaged over the seeds.
const MARGIN: f64 = 0.01;

pub fn production_no_worse(headers: Headers, with: &[Outcome], without: &[Outcome]) -> Compared {
    let mean = |o: &[Outcome]| {
        o.iter().map(Outcome::production_share).sum::<f64>() / o.len().max(1) as f64
    };
    let worst = with
        .iter()
        .zip(without)
        .max_by(|a, b| {
            let d = |p: &(&Outcome, &Outcome)| p.0.production_share() - p.1.production_share();
            d(a).total_cmp(&d(b))
        })
        .map_or(0, |(o, _)| o.seed);
    Compared {
        headers,
        with: mean(with),
        without: mean(without),
        seeds: with.len(),
        worst_seed: worst,
    }
}

impl Compared {
    pub fn line(&self) -> String {
        format!(
            "  {:<20} {:>6.2}% (none at all: {:.2}%)",
            self.headers.name(),
            self.with * 100.0,
            self.without * 100.0
        )
    }

    pub fn verdict(&self) -> Result<(), String> {
        if self.headers.counts_are_honest() && self.headers.always_honest() {
            return Ok(());
        }
        if self.with > self.without + MARGIN {
            return Err(format!(
                "{}: production refused {:.2}% on average over {} seeds, {:.2}% with no \
                 headers at all (margin {:.0} point)",
                self.headers.name(),
                self.with * 100.0,
                self.seeds,
                self.without * 100.0,
                MARGIN * 100.0
            ));
        }
        Ok(())
    }
}
