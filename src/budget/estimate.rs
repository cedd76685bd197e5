//! What the space accepts, estimated from its answers when it announces nothing.
//!
//! A refusal (429) is evidence about the budget only in proportion: a limit makes the
//! share of refused writes grow with the rate, while a proxy or a flaky edge refuses a
//! steady share whatever the rate. So the pace is cut only when the share of refusals
//! rises clearly above its own baseline (a CUSUM test, which finds a small lasting rise
//! as surely as a large sudden one), or when most of the latest writes are refused at
//! once; never on each 429. The baseline is learnt while the pace is at or under what the
//! space was last seen to accept, never while probing above it, and a cut takes back what
//! it learnt from the answers that led up to the cut (they were the rise). A cut sets the
//! pace under what the space was seen to accept once it refused (the delivered rate, as
//! BBR measures a link; from the first refusal on the space's budget is empty, so a full
//! bucket's burst is not counted); the pace climbs back to below that knee, holds there,
//! and then probes above it, slowly, so that a limit that has gone is found again. A
//! probe is cut on half the evidence, and one that meets the limit where it was makes the
//! next wait twice as long: every probe costs production a few refusals.
//!
//! Until the baseline has learnt 32 answers the CUSUM tests against an assumed share (the
//! prior). Noise louder than the prior would otherwise stop the learning for good (the
//! CUSUM half way to a rise) while it could not cut either; so a rise over the prior is
//! tried by one cut, the baseline then learns what it sees at the lower pace, and the cut
//! is lifted if the share did not fall there (noise), kept if it did (a limit).
//!
//! Every function takes the time as an argument: the tests drive it on a paused clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The latest answers judged for a sudden limit (most refused) or a spent budget.
const WINDOW: usize = 32;
/// Refusals that, being two thirds of the window or more, mean a limit whatever the
/// baseline (even 30% refused at random rarely looks like that).
const MOST_REFUSED: usize = 12;
/// The CUSUM's allowance above the baseline (a share of it, and at least this) and its
/// alarm level (so many refusals beyond the allowance, more on a noisier baseline).
const ALLOWANCE_SHARE: f64 = 0.5;
const ALLOWANCE_MIN: f64 = 0.01;
const ALARM_BASE: f64 = 4.0;
const ALARM_PER_SHARE: f64 = 80.0;
const PROBING_ALARM_DIVISOR: f64 = 2.0;
/// Answers the baseline needs before the CUSUM may cut (until then only most of the
/// window refused does), and the share assumed until then for what they may teach.
const BASELINE_MIN: u64 = 32;
const PRIOR_SHARE: f64 = 0.05;
/// After the prior was refuted by a cut: the share at the lower pace must be under the
/// refuting one divided by this for the cut to stand (a limit); else it is lifted.
const TRIAL_FELL_BY: f64 = 4.0;

/// The baseline's memory, in answers (an exponential average past this many).
const BASELINE_MEMORY: u64 = 512;
/// Answers learnt with no cut after which refusals are judged noise.
const NOISE_AFTER: u64 = BASELINE_MEMORY / 4;
/// After a cut: the pace as a share of the knee, then where it climbs back to (a knee
/// read at the start can be 20% high: the hold stays under the limit even then, since
/// a hold above it refuses production's writes until the CUSUM finds so).
const CUT_TO: f64 = 0.75;
const HOLD_AT: f64 = 0.8;
/// Seconds to climb from the cut back to the hold, and until probing above it starts.
const CLIMB_SECS: f64 = 5.0;
const PROBE_AFTER_SECS: f64 = 10.0;
/// A probe that meets the limit again under this multiple of the last knee found it where
/// it was: the next probe waits twice as long, up to the longest wait.
const SAME_KNEE: f64 = 1.25;
const PROBE_AFTER_MAX_SECS: f64 = 80.0;
/// While probing, the pace grows by this factor a second at first, faster as the probe
/// goes on without meeting a limit (the exponent gains a second every so many seconds).
const PROBE_GROWTH: f64 = 1.05;
const PROBE_ACCELERATION_SECS: f64 = 30.0;
/// The lowest pace as a share of the ceiling: a storm of refusals never stops the job.
const FLOOR_SHARE: f64 = 0.02;
/// The delivered rate is measured over the last second, in buckets of this length.
const BUCKET: Duration = Duration::from_millis(100);
const BUCKETS: usize = 10;
/// The ramp at the start: from the ceiling over this, doubling every step; only for a
/// ceiling of at least `RAMP_FROM_CEILING` (below it the first writes are few anyway).
const RAMP_DIVISOR: f64 = 16.0;
const RAMP_STEP_SECS: f64 = 0.1;
const RAMP_FROM_CEILING: f64 = 64.0;

/// Whether writes at this ceiling start with the ramp (the summary says so of a short run).
pub fn ramps_up_to(ceiling: f64) -> bool {
    ceiling >= RAMP_FROM_CEILING
}
/// A budget found spent again within this of the last time is one signal, not two.
const SPENT_AGAIN: Duration = Duration::from_secs(2);
/// The shortest span from the first refusal over which what the space accepts is taken
/// as what it takes (shorter, the measures below are used).
const REFUSING_SPAN: Duration = Duration::from_millis(250);
/// The shortest span a delivered rate is measured over.
const MIN_SPAN: Duration = Duration::from_millis(10);

/// The share of refused writes in normal times: a running mean, then an exponential one.
#[derive(Debug, Default, Clone, Copy)]
struct Baseline {
    share: f64,
    answers: u64,
}

impl Baseline {
    fn add(&mut self, refused: bool) {
        self.answers += 1;
        let weight = 1.0 / self.memory();
        self.share += weight * (f64::from(u8::from(refused)) - self.share);
    }

    /// The answers the share stands on (its memory once it is full).
    fn memory(&self) -> f64 {
        self.answers.clamp(1, BASELINE_MEMORY) as f64
    }

    /// The share the CUSUM tests against: smoothed (one refusal in two more answers), so
    /// that a baseline standing on few answers is not taken for no refusals at all.
    fn share_to_test(&self) -> f64 {
        let m = self.memory();
        (self.share * m + 1.0) / (m + 2.0)
    }
}

/// A one-sided CUSUM over answers: refusals beyond the baseline plus an allowance add up,
/// accepted answers drain it; past the alarm level the share has risen.
#[derive(Debug, Default, Clone, Copy)]
struct Cusum {
    sum: f64,
}

impl Cusum {
    /// Adds one answer; true when the share of refusals has clearly risen above `p`.
    /// While probing above the knee the alarm is halved: there a rise is expected (the
    /// limit met again), and each answer spent proving it is a refusal production shares.
    fn add(&mut self, refused: bool, p: f64, probing: bool) -> bool {
        let allowance = (p * ALLOWANCE_SHARE).max(ALLOWANCE_MIN);
        let x = f64::from(u8::from(refused));
        self.sum = (self.sum + x - p - allowance).max(0.0);
        let alarm = Self::alarm(p) / if probing { PROBING_ALARM_DIVISOR } else { 1.0 };
        self.sum > alarm
    }

    fn alarm(p: f64) -> f64 {
        ALARM_BASE + ALARM_PER_SHARE * p
    }
}

/// What the space accepted of the writes sent at one step of the start-up ramp, from the
/// step's first refused write on (before it, a full bucket's burst): the accepted ones
/// over the time the answered ones took to send. Unlike a measure over the last second or
/// since the first refusal, it is not diluted by the ramp's lower paces before it (nor by
/// a random refusal there); unlike one over the time since the step began, not by the
/// writes still on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct StepSample {
    step: u64,
    accepted: u64,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    /// The step before's rate: a rise its answers showed may be found only once the next
    /// step's first answers come.
    before: Option<f64>,
}

impl StepSample {
    /// Counts an answer to a write sent at ramp step `step` (an earlier step's answer is
    /// not counted once a later one's has come).
    fn add(&mut self, step: u64, sent: Instant, refused: bool) {
        if step < self.step {
            return;
        }
        if step > self.step {
            *self = StepSample {
                step,
                before: self.own_rate(),
                ..StepSample::default()
            };
        }
        if self.first_sent.is_none_or(|t| sent < t) {
            if !refused {
                return;
            }
            // Counted from the step's first refusal on.
            self.first_sent = Some(sent);
        }
        self.accepted += u64::from(!refused);
        self.last_sent = Some(self.last_sent.map_or(sent, |t| t.max(sent)));
    }

    /// Accepted writes a second at the latest step or the one before, the higher.
    fn rate(&self) -> Option<f64> {
        match (self.own_rate(), self.before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// At this step, if its answered writes span at least [`MIN_SPAN`].
    fn own_rate(&self) -> Option<f64> {
        let span = self.last_sent?.saturating_duration_since(self.first_sent?);
        (span >= MIN_SPAN).then(|| self.accepted as f64 / span.as_secs_f64())
    }
}

/// The last cut, from which the pace climbs back.
#[derive(Debug, Clone, Copy)]
struct Cut {
    at: Instant,
    /// What the space accepted while it refused: where the limit is believed to be.
    knee: f64,
    /// The pace just after the cut.
    after: f64,
    /// Seconds after the cut that probing above the hold starts: doubled each time a probe
    /// meets the limit where it was (it has not gone: probing costs production refusals),
    /// back to the first wait when a cut finds it elsewhere.
    probe_after: f64,
}

/// What an answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceChange {
    Steady,
    /// The share of refusals rose: the pace was cut (unless the budget was found spent a
    /// moment ago too). `spent`: nearly every write was refused, so the budget itself is
    /// spent and writes should wait for it.
    Cut {
        spent: bool,
    },
}

/// The estimate. See the module docs.
#[derive(Debug)]
pub struct Estimate {
    ceiling: f64,
    floor: f64,
    /// The latest answers to writes sent since the last cut: true = refused.
    recent: VecDeque<bool>,
    refused_recent: usize,
    /// Accepted answers to writes sent since the last cut (or the start), and when the
    /// first of those writes left.
    accepted_since_cut: u64,
    first_sent_since_cut: Option<Instant>,
    /// Since the last cut: when the first refusal came, and the writes accepted after it.
    /// Once the space refuses, its budget is empty, so what it accepts from then on is
    /// what it takes; before that, a full bucket's burst would read as a higher rate.
    refusing_since: Option<Instant>,
    accepted_while_refusing: u64,
    /// What is normal. A cut takes back what it learnt from the last window or two of
    /// answers (back to `checkpoints[0]`): those led up to the cut, so their refusals were
    /// the limit being met (a start-up ramp's overshoot, a hold above it), not noise.
    baseline: Baseline,
    /// The baseline as it was one and two windows of learnt answers ago, and the answers
    /// learnt since the later one.
    checkpoints: [Baseline; 2],
    learnt_since_checkpoint: usize,
    /// The CUSUM tests against the learnt baseline (not the prior) since then.
    baseline_in_use: bool,
    /// The share of refusals rose clearly above the prior before a baseline was learnt:
    /// a cut tried whether it falls at a lower pace (a limit) or not (noise louder than
    /// the prior), and from then on the baseline learns what it sees, quiet or not.
    prior_refuted: bool,
    /// The share of refusals that refuted the prior, until the baseline learnt at the
    /// lower pace after that cut says whether it fell ([`Estimate::judge_the_trial`]).
    trial_share: Option<f64>,
    cusum: Cusum,
    /// Accepted writes per bucket: (bucket number since `origin`, count).
    delivered: [(u64, u32); BUCKETS],
    origin: Option<Instant>,
    cut: Option<Cut>,
    cuts: u64,
    lowest: f64,
    /// When the budget was last found spent.
    last_spent: Option<Instant>,
    /// When the first write was paced: the ramp's start.
    started: Option<Instant>,
    /// Before the first cut: the writes sent at the ramp's latest pace that were answered
    /// (see [`StepSample`]).
    step: StepSample,
    /// The end of the job's last wait for a spent budget: what came before it (and the
    /// wait itself) is no sample of what the space accepts at the job's pace.
    measure_from: Option<Instant>,
}

impl Estimate {
    pub fn new(ceiling_per_second: f64) -> Estimate {
        let ceiling = ceiling_per_second.max(1.0);
        Estimate {
            ceiling,
            floor: (ceiling * FLOOR_SHARE).clamp(1.0, ceiling),
            recent: VecDeque::with_capacity(WINDOW + 1),
            refused_recent: 0,
            accepted_since_cut: 0,
            first_sent_since_cut: None,
            refusing_since: None,
            accepted_while_refusing: 0,
            baseline: Baseline::default(),
            checkpoints: [Baseline::default(); 2],
            learnt_since_checkpoint: 0,
            baseline_in_use: false,
            prior_refuted: false,
            trial_share: None,
            cusum: Cusum::default(),
            delivered: [(u64::MAX, 0); BUCKETS],
            origin: None,
            cut: None,
            cuts: 0,
            lowest: ceiling,
            last_spent: None,
            started: None,
            step: StepSample::default(),
            measure_from: None,
        }
    }

    /// The first write is about to leave: the start-up ramp begins.
    pub fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// Writes per second to pace at now. Before the first cut, a ramp from a sixteenth of
    /// the ceiling, doubling every 100 ms (the ceiling within 0.4 s), so that
    /// the share of refusals is first seen at a low rate: a limit then shows as a rise,
    /// not as the normal. After a cut, a climb back to just under the knee, a hold, then a
    /// slow probe above it.
    pub fn pace(&self, now: Instant) -> f64 {
        let Some(cut) = self.cut else {
            return self.ramp(now);
        };
        let s = now.saturating_duration_since(cut.at).as_secs_f64();
        let hold = (cut.knee * HOLD_AT).max(cut.after);
        let pace = if s < CLIMB_SECS {
            cut.after + (hold - cut.after) * s / CLIMB_SECS
        } else if s < cut.probe_after {
            hold
        } else {
            // Convex: slow while the limit may be near, faster the longer none is met.
            let t = s - cut.probe_after;
            hold * PROBE_GROWTH.powf(t + t * t / PROBE_ACCELERATION_SECS)
        };
        pace.clamp(self.floor, self.ceiling)
    }

    /// The job holds every write back until `until` (the budget is spent): the samples start
    /// again after it.
    pub fn paused_until(&mut self, until: Instant) {
        self.measure_from = Some(self.measure_from.map_or(until, |t| t.max(until)));
        self.forget_the_sample();
    }

    /// Drops the answers sampled since the last cut (a new cut or a wait starts another).
    fn forget_the_sample(&mut self) {
        self.recent.clear();
        self.refused_recent = 0;
        self.accepted_since_cut = 0;
        self.first_sent_since_cut = None;
        self.refusing_since = None;
        self.accepted_while_refusing = 0;
    }

    /// The ramp's step at `at` (the last step lasts from the ceiling on), while it ramps.
    fn ramp_step(&self, at: Instant) -> Option<u64> {
        let started = self.started.filter(|_| ramps_up_to(self.ceiling))?;
        let steps = at.saturating_duration_since(started).as_secs_f64() / RAMP_STEP_SECS;
        Some((steps.floor() as u64).min(RAMP_DIVISOR.log2() as u64))
    }

    fn ramp(&self, now: Instant) -> f64 {
        self.ramp_step(now).map_or(self.ceiling, |step| {
            (self.ceiling / RAMP_DIVISOR * 2f64.powf(step as f64)).min(self.ceiling)
        })
    }

    /// The estimate of what the space accepts, once a cut has found a limit.
    pub fn knee(&self) -> Option<f64> {
        self.cut.map(|c| c.knee)
    }

    /// Whether the refusals now are judged noise: no limit found, a baseline learnt over a
    /// quarter of its memory (the CUSUM has tested a few windows against it), and the
    /// share not rising (the CUSUM under half its alarm, as when the baseline learns).
    pub fn refusals_are_noise(&self) -> bool {
        let p = if self.baseline.answers >= BASELINE_MIN {
            self.baseline.share_to_test()
        } else {
            PRIOR_SHARE
        };
        self.cut.is_none()
            && self.baseline.answers >= NOISE_AFTER
            && self.cusum.sum < Cusum::alarm(p) / 2.0
    }

    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// The lowest pace a cut set.
    pub fn lowest(&self) -> f64 {
        self.lowest
    }

    /// The answer to a write sent at `sent`: accepted, or refused with 429.
    pub fn on_answer(&mut self, sent: Instant, refused: bool, now: Instant) -> PaceChange {
        let origin = *self.origin.get_or_insert(sent);
        if !refused {
            self.count_delivered(origin, now);
        }
        // A write paced before the last cut, or sent before the job's last wait ended,
        // says nothing about the pace after it.
        if self.cut.is_some_and(|c| sent <= c.at) || self.measure_from.is_some_and(|t| sent < t) {
            return PaceChange::Steady;
        }
        if self.cut.is_none()
            && let Some(step) = self.ramp_step(sent)
        {
            self.step.add(step, sent, refused);
        }
        self.recent.push_back(refused);
        self.refused_recent += usize::from(refused);
        self.accepted_since_cut += u64::from(!refused);
        match (refused, self.refusing_since) {
            (true, None) => self.refusing_since = Some(now),
            (false, Some(_)) => self.accepted_while_refusing += 1,
            _ => {}
        }
        let first_sent = *self.first_sent_since_cut.get_or_insert(sent);
        self.first_sent_since_cut = Some(first_sent.min(sent));
        if self.recent.len() > WINDOW
            && let Some(old) = self.recent.pop_front()
        {
            self.refused_recent -= usize::from(old);
        }
        let n = self.recent.len();
        let k = self.refused_recent;
        // Nearly every write refused: the budget itself is spent (a window used up).
        let spent = k >= MOST_REFUSED && 10 * k >= 9 * n;
        let most_refused = k >= MOST_REFUSED && 3 * k >= 2 * n;
        // The CUSUM runs on every answer (against a prior share until the baseline has
        // learnt one); it may cut once the pace since the last cut has had a few answers
        // to show itself.
        let p = if self.baseline.answers >= BASELINE_MIN {
            self.baseline.share_to_test()
        } else {
            PRIOR_SHARE
        };
        if self.baseline.answers >= BASELINE_MIN && !self.baseline_in_use {
            // The test starts afresh against the share now learnt, not the prior (which
            // only decides what the first answers may teach).
            self.baseline_in_use = true;
            self.cusum = Cusum::default();
        }
        self.judge_the_trial();
        // What the baseline learns is what is normal: not answers while the CUSUM is half
        // way to a rise (unless the prior it tests against was refuted), nor a window a
        // third or more refused (no noise is that loud).
        let quiet =
            self.cusum.sum < Cusum::alarm(p) / 2.0 || (self.prior_refuted && !self.baseline_in_use);
        let learning = self.learning(now);
        let probing = self.cut.is_some() && !learning;
        let alarmed = self.cusum.add(refused, p, probing) && n >= WINDOW / 2;
        // Against the prior, a rise is tried once by a cut: a limit's share falls at the
        // lower pace, noise's does not (and is learnt as the baseline). Only before any
        // cut: after one, its sample is too short to read a knee from (a fixed window's
        // count spent reads as a rate near nothing), and that cut already varied the pace.
        let refutes_prior =
            alarmed && !self.baseline_in_use && !self.prior_refuted && self.cut.is_none();
        let risen = alarmed && (self.baseline_in_use || refutes_prior);
        if learning && quiet && 3 * k < n {
            self.learn(refused);
        }
        if self.cut.is_some() && self.pace(now) >= self.ceiling {
            // A probe climbed back to the ceiling with no rise: no limit under it now.
            tracing::debug!("write pace cut lifted: a probe climbed back to the ceiling");
            self.cut = None;
        }
        if !(spent || most_refused || risen) {
            return PaceChange::Steady;
        }
        if refutes_prior {
            tracing::debug!("the share of refused writes rose above the prior: a trial cut");
            self.prior_refuted = true;
            self.trial_share = Some(k as f64 / n as f64);
        }
        self.cut_on_the_rise(now, origin, spent);
        PaceChange::Cut { spent }
    }

    /// The share rose (or the budget is spent): the baseline forgets the rise, the pace is
    /// cut (unless the budget was found spent a moment ago too), and a new sample starts.
    fn cut_on_the_rise(&mut self, now: Instant, origin: Instant, spent: bool) {
        self.unlearn_the_rise();
        // A budget spent again within a moment of the last time is the same signal: the
        // second sample covers the job's own wait, which says nothing about the space.
        let again = spent
            && self
                .last_spent
                .is_some_and(|t| now.saturating_duration_since(t) < SPENT_AGAIN);
        if spent {
            self.last_spent = Some(now);
        }
        if !again {
            self.cut_at(now, origin, spent);
        }
        self.forget_the_sample();
        self.cusum = Cusum::default();
    }

    /// After the prior was refuted by a cut, once the baseline has learnt at the lower
    /// pace: if the share did not fall (to a quarter of the refuting one), it is noise
    /// louder than the prior, not a limit, and the cut is lifted. Judged on every answer
    /// from the baseline's first 32 to its first 128 (a short sample of loud noise can
    /// look quiet). (Lifting also when the share stays over the prior, to give the doubt
    /// to noise, broke 13 of 1,000 limit scenarios instead of 7: a limit's cut lifted on
    /// its noise was cut again by that noise while probing.)
    fn judge_the_trial(&mut self) {
        let Some(share) = self.trial_share else {
            return;
        };
        if self.baseline.answers < BASELINE_MIN {
            return;
        }
        if self.baseline.share * TRIAL_FELL_BY >= share {
            tracing::debug!(
                refused = share,
                at_lower_pace = self.baseline.share,
                "write pace cut lifted: the share of refused writes did not fall with the pace"
            );
            self.cut = None;
            self.trial_share = None;
        } else if self.baseline.answers >= NOISE_AFTER {
            self.trial_share = None;
        }
    }

    fn learn(&mut self, refused: bool) {
        self.baseline.add(refused);
        self.learnt_since_checkpoint += 1;
        if self.learnt_since_checkpoint == WINDOW {
            self.checkpoints = [self.checkpoints[1], self.baseline];
            self.learnt_since_checkpoint = 0;
        }
    }

    /// At a cut: the baseline goes back to what it was before the answers that led up to
    /// it (one to two windows of them); the CUSUM tests against the prior again until it
    /// has enough answers.
    fn unlearn_the_rise(&mut self) {
        self.baseline = self.checkpoints[0];
        self.checkpoints = [self.baseline; 2];
        self.learnt_since_checkpoint = 0;
        self.baseline_in_use = self.baseline.answers >= BASELINE_MIN;
    }

    /// Whether answers now teach the baseline: only while the pace is at or under what the
    /// space was seen to accept, never above it (the share there is the one being tested).
    fn learning(&self, now: Instant) -> bool {
        self.cut
            .is_none_or(|c| self.pace(now) <= (c.knee * HOLD_AT).max(c.after) + 1e-9)
    }

    /// Cuts the pace under what the space was seen to accept: since the last cut if that
    /// was within a second, else over the last second (and always so when the budget is
    /// spent: what it took before it ran out is what it takes, not the nothing since).
    fn cut_at(&mut self, now: Instant, origin: Instant, spent: bool) {
        let pace = self.pace(now);
        let knee = self.delivered_rate(now, origin, spent).min(pace);
        let after = (knee * CUT_TO).max(self.floor);
        let probe_after = match self.cut {
            Some(last) if !self.learning(now) && knee <= last.knee * SAME_KNEE => {
                (last.probe_after * 2.0).min(PROBE_AFTER_MAX_SECS)
            }
            _ => PROBE_AFTER_SECS,
        };
        self.cut = Some(Cut {
            at: now,
            knee,
            after,
            probe_after,
        });
        self.cuts += 1;
        self.lowest = self.lowest.min(after);
        tracing::debug!(
            pace = after,
            knee,
            baseline = self.baseline.share,
            "write pace cut: the share of refused writes rose"
        );
    }

    fn bucket(origin: Instant, now: Instant) -> u64 {
        (now.saturating_duration_since(origin).as_micros() / BUCKET.as_micros()) as u64
    }

    fn count_delivered(&mut self, origin: Instant, now: Instant) {
        let b = Self::bucket(origin, now);
        let slot = &mut self.delivered[(b % BUCKETS as u64) as usize];
        if slot.0 != b {
            *slot = (b, 0);
        }
        slot.1 += 1;
    }

    /// Writes accepted a second: the higher of two measures, as BBR keeps the highest
    /// delivery rate it saw, because a sample can only read low when the job offered
    /// little (rows waiting out their own Retry-After), never high for long:
    /// - over the writes sent since the last cut (or the start), from the first of them
    ///   (what the space takes at the new pace, and a pause after the cut is not counted
    ///   as a slow space), while those began less than a second ago;
    /// - over the last second (or since the start, within its first second).
    ///
    /// When the budget is spent only the last second counts: what the space took before
    /// it ran out is what it takes, not the nothing since.
    fn delivered_rate(&self, now: Instant, origin: Instant, spent: bool) -> f64 {
        // Before the first cut, also at the ramp's latest pace alone; not once the budget
        // is spent (a fixed window's count used up: the next window's first writes are a
        // burst, and only a whole second says what the space takes).
        let at_step = (self.cut.is_none() && !spent)
            .then(|| self.step.rate())
            .flatten();
        self.delivered_over_time(now, origin, spent)
            .max(at_step.unwrap_or(0.0))
    }

    fn delivered_over_time(&self, now: Instant, origin: Instant, spent: bool) -> f64 {
        // Refusals for longer than the last second: a steady share of them (noise) since
        // the cut, not the budget running out; the last second says what the space takes.
        if let Some(since) = self.refusing_since
            && !spent
            && (REFUSING_SPAN..=BUCKET * BUCKETS as u32)
                .contains(&now.saturating_duration_since(since))
        {
            let span = now.saturating_duration_since(since).as_secs_f64();
            return self.accepted_while_refusing as f64 / span;
        }
        let last_second = self.delivered_last_second(now, origin);
        let since = self.first_sent_since_cut.unwrap_or(now);
        let span = now.saturating_duration_since(since);
        if spent || span >= BUCKET * BUCKETS as u32 {
            return last_second;
        }
        let since_cut = self.accepted_since_cut as f64 / span.max(MIN_SPAN).as_secs_f64();
        since_cut.max(last_second)
    }

    fn delivered_last_second(&self, now: Instant, origin: Instant) -> f64 {
        let start = self.measure_from.map_or(origin, |t| t.max(origin));
        let (first, b) = (Self::bucket(origin, start), Self::bucket(origin, now));
        let accepted: u32 = self
            .delivered
            .iter()
            .filter(|(n, _)| *n >= first && *n <= b && b - *n < BUCKETS as u64)
            .map(|(_, c)| *c)
            .sum();
        let covered = now
            .saturating_duration_since(start)
            .clamp(MIN_SPAN, BUCKET * BUCKETS as u32);
        f64::from(accepted) / covered.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives an estimate on a paused clock: writes at the pace it sets, each answered
    /// after `rtt`, refused by `refuse(rate the space sees, rng)`. Returns the paces seen.
    async fn drive(
        e: &mut Estimate,
        secs: f64,
        rtt: Duration,
        mut refuse: impl FnMut(f64, &mut fastrand::Rng) -> bool,
        seed: u64,
    ) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let start = Instant::now();
        let mut in_flight: VecDeque<(Instant, Instant, bool)> = VecDeque::new();
        let mut paces = Vec::new();
        let mut next = start;
        e.start(start);
        while Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64()
            < secs
        {
            let now = Instant::now();
            while in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
                let (at, sent, refused) = in_flight.pop_front().unwrap();
                e.on_answer(sent, refused, at);
            }
            let pace = e.pace(now);
            paces.push(pace);
            if next <= now {
                let refused = refuse(pace, &mut rng);
                in_flight.push_back((now + rtt, now, refused));
                next = now + Duration::from_secs_f64(1.0 / pace);
            }
            tokio::time::advance(Duration::from_micros(250)).await;
        }
        paces
    }

    #[tokio::test(start_paused = true)]
    async fn random_refusals_the_prior_explains_never_cut() {
        // 5% and 10% of writes refused at random, at 200 and 1000 a second: the 5% prior
        // explains them.
        for (share, ceiling, seed) in [
            (0.1, 200.0, 1),
            (0.05, 200.0, 2),
            (0.1, 1000.0, 3),
            (0.05, 1000.0, 4),
        ] {
            let mut e = Estimate::new(ceiling);
            let paces = drive(
                &mut e,
                20.0,
                Duration::from_millis(2),
                |_, r| r.f64() < share,
                seed,
            )
            .await;
            assert_eq!(e.cuts(), 0, "share {share} at {ceiling}");
            // After the start-up ramp (0.4 s), always the ceiling.
            assert!(
                paces[..8].iter().all(|p| *p < ceiling),
                "the ramp starts low"
            );
            assert!(paces[2000..].iter().all(|p| *p == ceiling));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn noise_louder_than_the_prior_is_tried_by_one_cut_then_lifted() {
        // 25% refused at random: the prior (5%) is refuted; the share at the lower pace
        // is the same, so the cut is lifted once the baseline has learnt it.
        let mut e = Estimate::new(200.0);
        let paces = drive(
            &mut e,
            10.0,
            Duration::from_millis(2),
            |_, r| r.f64() < 0.25,
            9,
        )
        .await;
        assert_eq!(e.cuts(), 1);
        assert!(e.prior_refuted && e.cut.is_none());
        assert!(paces.iter().any(|p| *p < 200.0 * 0.8), "the trial cut");
        assert_eq!(paces.last().copied(), Some(200.0));
    }

    #[test]
    fn a_ramp_step_counts_what_was_accepted_from_its_first_refused_write_on() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = StepSample::default();
        // Accepted before any refusal: a full bucket's burst, not counted.
        s.add(1, at(0), false);
        assert_eq!(s.rate(), None);
        s.add(1, at(10), true);
        // Sent before the first refusal but answered after it: not counted either.
        s.add(1, at(5), false);
        s.add(1, at(20), false);
        s.add(1, at(30), false);
        // Two accepted over the 20 ms from the first refused write to the last answered.
        assert_eq!(s.rate(), Some(100.0));
        // An earlier step's answer changes nothing; the next step keeps this one's rate
        // until its own spans 10 ms.
        s.add(0, at(31), true);
        assert_eq!(s.rate(), Some(100.0));
        s.add(2, at(40), true);
        s.add(2, at(45), false);
        assert_eq!(s.rate(), Some(100.0), "under 10 ms: the step before's");
        s.add(2, at(60), false);
        assert_eq!(s.rate(), Some(100.0), "the higher of the two");
        for ms in 61..=69 {
            s.add(2, at(ms), false);
        }
        assert!(s.rate().is_some_and(|r| r > 300.0), "{:?}", s.rate());
    }

    /// Seeds for the generated estimate scenarios: `ESTIMATE_SEEDS=N` (200 by default),
    /// or `ESTIMATE_SEED=S` to replay one (a failure prints it).
    fn estimate_seeds() -> Vec<u64> {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        match var("ESTIMATE_SEED") {
            Some(seed) => vec![seed],
            None => (1..=var("ESTIMATE_SEEDS").unwrap_or(200)).collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn any_steady_share_of_random_refusals_is_judged_noise_and_keeps_the_ceiling() {
        // Up to 25% refused at random (no limit), at any ceiling and round trip, for 30 s:
        // at most two cuts (a share louder than the 5% prior is tried by one; a quiet
        // stretch of noise can read as a rise), and by the end the pace is back at the
        // ceiling with no limit believed and the baseline learnt over the answers that
        // judge refusals noise (it never stops learning for good).
        let mut broken = Vec::new();
        for seed in estimate_seeds() {
            let mut g = fastrand::Rng::with_seed(seed.wrapping_mul(7919));
            let share = 0.25 * g.f64();
            let ceiling = [20.0, 50.0, 64.0, 200.0, 1000.0][g.usize(..5)];
            let rtt = Duration::from_millis(g.u64(2..50));
            let mut e = Estimate::new(ceiling);
            let paces = drive(&mut e, 30.0, rtt, |_, r| r.f64() < share, seed).await;
            let end = paces.last().copied().unwrap_or(0.0);
            let learnt = e.baseline.answers >= NOISE_AFTER && e.knee().is_none();
            if e.cuts() > 2 || end < ceiling || !learnt {
                broken.push(format!(
                    "ESTIMATE_SEED={seed}: share {share:.3}, ceiling {ceiling}, rtt {rtt:?}: \
                     {} cuts, pace at the end {end:.0}, baseline {:?}, knee {:?}",
                    e.cuts(),
                    e.baseline,
                    e.knee()
                ));
            }
        }
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn any_limit_under_six_tenths_of_the_ceiling_is_found_and_the_pace_settles_near_it() {
        // A limit from a twelfth to six tenths of the ceiling, with up to 10% random
        // refusals on top, for 40 s: at least one cut, and after the first 10 s the mean
        // pace between 0.4 of the limit and 10% above it. (Above six tenths the ramp's last
        // step gives the baseline too few answers under the limit to see the rise from:
        // a known gap, in docs/reconciliation.md.)
        let mut broken = Vec::new();
        for seed in estimate_seeds() {
            let mut g = fastrand::Rng::with_seed(seed.wrapping_mul(7919) + 1);
            let ceiling = [64.0, 200.0, 1000.0][g.usize(..3)];
            let limit = ceiling * (1.0 / 12.0 + (0.6 - 1.0 / 12.0) * g.f64());
            let noise = if g.bool() { 0.0 } else { 0.1 * g.f64() };
            let rtt = Duration::from_millis(g.u64(2..50));
            let mut e = Estimate::new(ceiling);
            let refuse = |rate: f64, r: &mut fastrand::Rng| {
                r.f64() < noise || (rate > limit && r.f64() < 1.0 - limit / rate)
            };
            let paces = drive(&mut e, 40.0, rtt, refuse, seed).await;
            let late = &paces[paces.len() / 4..];
            let mean = late.iter().sum::<f64>() / late.len() as f64;
            if e.cuts() == 0 || mean > 1.1 * limit || mean < 0.4 * limit {
                broken.push(format!(
                    "ESTIMATE_SEED={seed}: limit {limit:.0}, ceiling {ceiling}, noise {noise:.3}, \
                     rtt {rtt:?}: {} cuts, mean pace {mean:.0}",
                    e.cuts()
                ));
            }
        }
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_judged_noise_after_a_quarter_of_the_memory_and_never_under_a_limit() {
        let now = Instant::now();
        let mut e = Estimate::new(200.0);
        e.start(now);
        assert!(!e.refusals_are_noise(), "nothing learnt yet");
        // One in ten refused, spread out: learnt as the normal share.
        for i in 0..NOISE_AFTER {
            assert!(!e.refusals_are_noise(), "{i} answers learnt");
            assert_eq!(e.on_answer(now, i % 10 == 9, now), PaceChange::Steady);
        }
        assert!(e.refusals_are_noise());
        // A limit found: refusals may be its from then on.
        let mut cut = false;
        for _ in 0..64 {
            cut |= e.on_answer(now, true, now) != PaceChange::Steady;
        }
        assert!(cut && e.knee().is_some());
        assert!(!e.refusals_are_noise());
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_is_found_and_the_pace_settles_under_it() {
        // The space takes 100 a second; refusals grow with the rate beyond it.
        for (ceiling, seed) in [(1000.0, 5), (200.0, 6)] {
            let mut e = Estimate::new(ceiling);
            let limit =
                |rate: f64, r: &mut fastrand::Rng| rate > 100.0 && r.f64() < 1.0 - 100.0 / rate;
            let paces = drive(&mut e, 30.0, Duration::from_millis(2), limit, seed).await;
            assert!(e.cuts() >= 1, "{ceiling}");
            let knee = e.knee().unwrap();
            assert!((60.0..=130.0).contains(&knee), "{ceiling}: knee {knee}");
            // After the first seconds the pace stays near the limit: under it mostly,
            // never far above it, never collapsed.
            let late = &paces[paces.len() / 4..];
            let mean = late.iter().sum::<f64>() / late.len() as f64;
            assert!(
                (60.0..=110.0).contains(&mean),
                "{ceiling}: mean pace {mean}"
            );
            assert!(late.iter().all(|p| *p >= 40.0), "{ceiling}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_under_noise_is_still_found() {
        // 10% refused at random, plus a limit at 300 a second.
        let mut e = Estimate::new(1000.0);
        let both = |rate: f64, r: &mut fastrand::Rng| {
            r.f64() < 0.1 || (rate > 300.0 && r.f64() < 1.0 - 300.0 / rate)
        };
        let paces = drive(&mut e, 20.0, Duration::from_millis(2), both, 7).await;
        assert!(e.cuts() >= 1);
        let late = &paces[paces.len() / 2..];
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!((150.0..=330.0).contains(&mean), "mean pace {mean}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rising_share_cuts_once_and_answers_sent_before_the_cut_are_not_counted() {
        let mut e = Estimate::new(100.0);
        let t0 = Instant::now();
        // A thousand accepted answers: a baseline of no refusals.
        for i in 0..1000u64 {
            let at = t0 + Duration::from_millis(i);
            e.on_answer(at, false, at);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(e.pace(now), 100.0);
        // Refusals over that baseline add up (and, adding up, no longer teach it): four
        // are not yet clear, the fifth is.
        let changes: Vec<PaceChange> = (0..5)
            .map(|_| {
                e.on_answer(now, false, now);
                e.on_answer(now, true, now)
            })
            .collect();
        assert_eq!(changes[..4], [PaceChange::Steady; 4]);
        assert_eq!(changes[4], PaceChange::Cut { spent: false });
        let after = e.pace(now);
        assert!((50.0..100.0).contains(&after), "{after}");
        assert_eq!(e.cuts(), 1);
        // Answers to writes sent before the cut change nothing, however many.
        for _ in 0..100 {
            let sent = now - Duration::from_millis(1);
            assert_eq!(e.on_answer(sent, true, now), PaceChange::Steady);
        }
        assert_eq!(e.cuts(), 1);
        // Nearly every write after it refused: the budget is spent.
        tokio::time::advance(Duration::from_millis(10)).await;
        let later = Instant::now();
        let changes: Vec<PaceChange> = (0..12).map(|_| e.on_answer(later, true, later)).collect();
        assert_eq!(changes[..11], [PaceChange::Steady; 11]);
        assert_eq!(changes[11], PaceChange::Cut { spent: true });
        // Spent again at once: the writes wait again, the pace is not cut again.
        let pace = e.pace(later);
        let soon = later + Duration::from_micros(500);
        let again: Vec<PaceChange> = (0..12).map(|_| e.on_answer(soon, true, soon)).collect();
        assert_eq!(again[11], PaceChange::Cut { spent: true });
        assert_eq!((e.cuts(), e.pace(later)), (2, pace));
        // Two thirds refused, but not nearly all: a limit, the budget not spent.
        let t = later + Duration::from_millis(1);
        let mut changes = Vec::new();
        for _ in 0..6 {
            changes.push(e.on_answer(t, false, t));
            changes.push(e.on_answer(t, true, t));
            changes.push(e.on_answer(t, true, t));
        }
        // The CUSUM finds it (two in three refused, over a baseline of almost none) before
        // the window is most refused.
        assert_eq!(changes[..15], [PaceChange::Steady; 15]);
        assert_eq!(changes[15], PaceChange::Cut { spent: false });
        assert_eq!(e.cuts(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_cut_the_pace_climbs_holds_then_probes_and_never_leaves_its_bounds() {
        let mut e = Estimate::new(500.0);
        let t0 = Instant::now();
        // A second of writes accepted at 500/s, then refusals.
        for i in 0..500u64 {
            let at = t0 + Duration::from_millis(2 * i);
            e.on_answer(at, false, at);
        }
        let at = t0 + Duration::from_secs(1);
        let changes: Vec<PaceChange> = (0..5).map(|_| e.on_answer(at, true, at)).collect();
        assert_eq!(changes[..4], [PaceChange::Steady; 4]);
        assert_eq!(changes[4], PaceChange::Cut { spent: false });
        // Delivered over the last second (its first bucket has slid out): 450/s; the cut
        // goes to 75% of that, and the pace climbs back to 80% of it.
        assert!((e.knee().unwrap() - 450.0).abs() < 1e-6, "{:?}", e.knee());
        let pace = |s: f64| e.pace(at + Duration::from_secs_f64(s));
        assert!((pace(0.0) - 337.5).abs() < 1e-6, "{}", pace(0.0));
        assert!((pace(2.5) - 348.75).abs() < 1e-6, "halfway up");
        assert!((pace(5.0) - 360.0).abs() < 1e-6);
        assert!((pace(9.9) - 360.0).abs() < 1e-6, "holds");
        assert!(
            (pace(11.0) - 360.0 * 1.05f64.powf(1.0 + 1.0 / 30.0)).abs() < 1e-6,
            "probes"
        );
        assert!(
            (pace(12.0) - 360.0 * 1.05f64.powf(2.0 + 4.0 / 30.0)).abs() < 1e-6,
            "faster"
        );
        assert_eq!(pace(1000.0), 500.0, "never above the ceiling");
        assert_eq!(e.lowest(), 337.5);
    }

    /// `n` writes accepted, evenly over the second before `until` (each sent as answered).
    fn accept_for_a_second(e: &mut Estimate, until: Instant, n: u32) {
        for i in 0..n {
            let at = until - Duration::from_secs(1)
                + Duration::from_secs_f64(f64::from(i) / f64::from(n));
            e.on_answer(at, false, at);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_meets_the_limit_where_it_was_waits_twice_as_long_next_time() {
        let mut e = Estimate::new(1000.0);
        let t0 = Instant::now();
        let origin = t0 - Duration::from_secs(1);
        e.origin = Some(origin);
        e.cut = Some(Cut {
            at: t0,
            knee: 100.0,
            after: 75.0,
            probe_after: PROBE_AFTER_SECS,
        });
        // 20 s on, probing above the hold (80), the limit is met at 100 again.
        let first = t0 + Duration::from_secs(20);
        assert!(!e.learning(first), "probing");
        accept_for_a_second(&mut e, first, 100);
        e.cut_at(first, origin, false);
        // (The last second's first bucket has slid out: 90 of the 100.)
        assert_eq!(
            e.cut.map(|c| (c.knee.round(), c.probe_after)),
            Some((90.0, 20.0))
        );
        // The next probe starts 20 s after that cut, not 10.
        assert!(
            e.learning(first + Duration::from_secs(15)),
            "still holding at 15 s"
        );
        let second = first + Duration::from_secs(30);
        assert!(!e.learning(second));
        accept_for_a_second(&mut e, second, 110);
        e.cut_at(second, origin, false);
        assert_eq!(e.cut.map(|c| c.probe_after), Some(40.0), "doubled again");
        // A cut while holding (the limit came down): probing waits the first wait again.
        let holding = second + Duration::from_secs(7);
        assert!(e.learning(holding));
        accept_for_a_second(&mut e, holding, 80);
        e.cut_at(holding, origin, false);
        assert_eq!(e.cut.map(|c| c.probe_after), Some(PROBE_AFTER_SECS));
        // A probe that finds the limit well above where it was (it moved): the same.
        e.cut = Some(Cut {
            probe_after: 40.0,
            ..e.cut.unwrap()
        });
        let moved = holding + Duration::from_secs(60);
        assert!(!e.learning(moved));
        accept_for_a_second(&mut e, moved, 200);
        e.cut_at(moved, origin, false);
        assert_eq!(e.cut.map(|c| c.probe_after), Some(PROBE_AFTER_SECS));
        // Never more than the longest wait.
        e.cut = Some(Cut {
            probe_after: PROBE_AFTER_MAX_SECS,
            knee: 200.0,
            ..e.cut.unwrap()
        });
        // (Just after probing starts: a probe that reached the ceiling would have lifted
        // the cut.)
        let late = moved + Duration::from_secs(81);
        accept_for_a_second(&mut e, late, 200);
        e.cut_at(late, origin, false);
        assert_eq!(e.cut.map(|c| c.probe_after), Some(PROBE_AFTER_MAX_SECS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_takes_back_what_the_baseline_learnt_from_the_rise_that_led_to_it() {
        let mut e = Estimate::new(1000.0);
        let t0 = Instant::now();
        // 200 answers, none refused: the normal.
        for i in 0..200u64 {
            let at = t0 + Duration::from_millis(i);
            e.on_answer(at, false, at);
        }
        assert_eq!(e.baseline.answers, 200);
        // Then one in four refused, until the CUSUM cuts: the first of those answers were
        // quiet enough to be learnt, but they were the rise.
        let mut cut = false;
        for i in 0..200u64 {
            let at = t0 + Duration::from_millis(200 + i);
            if e.on_answer(at, i % 4 == 3, at) != PaceChange::Steady {
                cut = true;
                break;
            }
        }
        assert!(cut);
        // Back to the window boundary before the last one (160 answers, none refused).
        assert_eq!((e.baseline.answers, e.baseline.share), (160, 0.0));
        assert!(e.baseline_in_use);
    }

    #[tokio::test(start_paused = true)]
    async fn the_knee_is_what_the_space_accepted_once_it_refused_not_a_full_bucket_s_burst() {
        let mut e = Estimate::new(1000.0);
        let t0 = Instant::now();
        // A full bucket: 200 accepted in the first second.
        for i in 0..200u64 {
            let at = t0 + Duration::from_millis(5 * i);
            e.on_answer(at, false, at);
        }
        // Then the space refuses now and then, and takes 60 a second.
        let start = t0 + Duration::from_secs(1);
        let mut change = PaceChange::Steady;
        let mut n = 0u64;
        while change == PaceChange::Steady && n < 600 {
            let at = start + Duration::from_micros(1_000_000 / 70 * n);
            // Seven answers in 100 ms: six accepted, one refused.
            change = e.on_answer(at, n % 7 == 6, at);
            n += 1;
        }
        assert_eq!(change, PaceChange::Cut { spent: false });
        let knee = e.knee().unwrap();
        assert!((50.0..=75.0).contains(&knee), "knee {knee}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_soon_after_another_measures_what_was_accepted_since_that_cut() {
        let mut e = Estimate::new(1000.0);
        let t0 = Instant::now();
        // A second at 500/s, then a rise: the first cut (knee 450, as above).
        for i in 0..500u64 {
            let at = t0 + Duration::from_millis(2 * i);
            e.on_answer(at, false, at);
        }
        let cut = t0 + Duration::from_secs(1);
        while e.on_answer(cut, true, cut) == PaceChange::Steady {}
        // 1.2 s later: 100 accepted over the last 0.4 s (250/s since the cut's writes
        // began; 100 over the last second), then refusals at once.
        let t1 = cut + Duration::from_millis(1200);
        for i in 0..100u64 {
            let at = t1 - Duration::from_millis(400) + Duration::from_millis(4 * i);
            e.on_answer(at, false, at);
        }
        while e.on_answer(t1, true, t1) == PaceChange::Steady {}
        assert_eq!(e.cuts(), 2);
        let knee = e.knee().unwrap();
        assert!((knee - 250.0).abs() < 1.0, "knee {knee}");
    }

    #[tokio::test(start_paused = true)]
    async fn while_probing_a_rise_is_believed_on_half_the_evidence() {
        let mut c = Cusum::default();
        let p = 0.005;
        let steps =
            |c: &mut Cusum, probing: bool| (1..=20).find(|_| c.add(true, p, probing)).unwrap_or(0);
        let holding = steps(&mut c, false);
        let mut c = Cusum::default();
        let probing = steps(&mut c, true);
        assert_eq!(
            (holding, probing),
            (5, 3),
            "refusals in a row before the alarm"
        );
        // Over a noisy baseline (10%), the allowance is half of it, and the alarm higher.
        let steps = |probing: bool| {
            let mut c = Cusum::default();
            (1..=40).find(|_| c.add(true, 0.1, probing)).unwrap_or(0)
        };
        assert_eq!((steps(false), steps(true)), (15, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_goes_under_the_knee_never_above_the_pace_and_the_floor_holds() {
        let t0 = Instant::now();
        // Nothing delivered: the knee is 0, the pace goes to the floor.
        let mut e = Estimate::new(1000.0);
        for _ in 0..MOST_REFUSED {
            e.on_answer(t0, true, t0);
        }
        assert_eq!(e.pace(t0), 20.0);
        // Delivered above the pace: the knee is the pace.
        let mut e = Estimate::new(100.0);
        for i in 0..200u64 {
            let at = t0 + Duration::from_micros(500 * i);
            e.on_answer(at, false, at);
        }
        let at = t0 + Duration::from_millis(100);
        for _ in 0..MOST_REFUSED * 3 {
            e.on_answer(at, true, at);
        }
        assert_eq!(e.cuts(), 1);
        assert!((e.pace(at) - 75.0).abs() < 1e-6, "{}", e.pace(at));
        // However many cuts, never under 2% of the ceiling (and never under 1/s).
        let mut e = Estimate::new(1000.0);
        for i in 0..40u64 {
            let at = t0 + Duration::from_secs(3 * i);
            for _ in 0..MOST_REFUSED {
                e.on_answer(at, true, at);
            }
        }
        assert_eq!(e.pace(t0 + Duration::from_secs(117)), 20.0);
        assert_eq!(Estimate::new(1.0).floor, 1.0);
    }

    #[test]
    fn the_baseline_is_a_running_mean_then_forgets() {
        let mut b = Baseline::default();
        for i in 0..10 {
            b.add(i < 3);
        }
        assert!((b.share - 0.3).abs() < 1e-9);
        let mut b = Baseline::default();
        for _ in 0..2000 {
            b.add(true);
        }
        for _ in 0..512 {
            b.add(false);
        }
        // After one memory of accepted answers, about e^-1 of the old share is left.
        assert!((0.3..0.4).contains(&b.share), "{}", b.share);
    }
}
