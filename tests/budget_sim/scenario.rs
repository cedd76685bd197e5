//! One scenario: the space, production, and the job's processes (one, or shards), each
//! with the real limiter and budget, run on a paused clock until the job is done.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sipgw_bulk::budget::headers::{self, Parsed};
use sipgw_bulk::budget::{Answer, BudgetReport, WriteBudget};
use sipgw_bulk::limiter::Limiter;
use tokio::time::Instant;

use super::space::{Counted, Headers, Space};

/// A shape forced on a generated scenario (the hand-picked corners).
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Any,
    Concurrency(u32),
    Shards(u32),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub headers: Headers,
    pub window: Duration,
    pub phase: Duration,
    /// Writes a window allows.
    pub limit: u64,
    pub reserve_share: f64,
    /// Production's writes a second.
    pub production_rate: f64,
    pub shards: u32,
    pub concurrency: u32,
    /// `--rate` of each process.
    pub rate: u32,
    /// Rows of each process.
    pub rows: u64,
    pub latency: Duration,
    /// Up to this share of the latency added at random.
    pub jitter: f64,
    /// A fresh read between slot and send, for a share of the writes.
    pub fresh_read_share: f64,
    pub skew_secs: i64,
    pub stop_after: u64,
    /// The simulation stops here whatever is left.
    pub max_time: Duration,
}

/// One job write, as the process and the space saw it.
#[derive(Debug, Clone)]
pub struct JobWrite {
    pub shard: u32,
    /// Its send number in its process.
    pub number: u64,
    pub granted_at: Instant,
    /// Its grant's place among the process's events (grants and answers): events at one
    /// instant keep their order.
    pub granted_event: u64,
    pub under_announcement: bool,
    pub sent_at: Instant,
    pub counted: Counted,
    pub answered_at: Instant,
    pub answered_event: u64,
    /// Its answer carried the true count.
    pub honest_count: bool,
    /// Its answer carried any count (plausible or not).
    pub carried_count: bool,
    /// The remaining count its answer announced, as the tool reads it.
    pub announced_remaining: Option<u64>,
}

pub struct Outcome {
    pub seed: u64,
    pub writes: Vec<JobWrite>,
    pub reports: Vec<BudgetReport>,
    pub production_sent: u64,
    pub production_refused: u64,
    pub reserve: u64,
    pub rows_left: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn production_share(&self) -> f64 {
        if self.production_sent == 0 {
            0.0
        } else {
            self.production_refused as f64 / self.production_sent as f64
        }
    }

    pub fn summary(&self) -> String {
        let refused = self.writes.iter().filter(|w| !w.counted.admitted).count();
        format!(
            "{} job writes ({refused} refused), {} rows left, production {} sent {} refused \
             ({:.2}%), {:.1}s; budgets: {:?}",
            self.writes.len(),
            self.rows_left,
            self.production_sent,
            self.production_refused,
            self.production_share() * 100.0,
            self.elapsed.as_secs_f64(),
            self.reports
                .iter()
                .map(|r| r.believed())
                .collect::<Vec<_>>()
        )
    }
}

impl Scenario {
    pub fn generate(seed: u64, headers: Headers) -> Scenario {
        let mut rng = fastrand::Rng::with_seed(seed);
        let window = Duration::from_secs(*rng.choice(&[1u64, 1, 2, 5, 10, 10]).unwrap_or(&10));
        let per_sec = rng.u64(20..=200);
        let limit = per_sec * window.as_secs();
        let reserve_share = if rng.bool() {
            0.5
        } else {
            f64::from(rng.u32(1..=8)) / 10.0
        };
        let reserve = (limit as f64 * reserve_share).ceil();
        // An honest count with production inside its reserve: the job is never refused.
        // Otherwise production may want more, and the limit binds.
        let production_rate = if headers.always_honest() {
            rng.f64() * 0.8 * reserve / window.as_secs_f64()
        } else {
            rng.f64() * 0.9 * per_sec as f64
        };
        let shards = if rng.u8(0..10) < 7 { 1 } else { rng.u32(2..=4) };
        let concurrency = *rng.choice(&[1u32, 2, 4, 8, 16, 32, 64]).unwrap_or(&8);
        let latency = Duration::from_millis(rng.u64(1..=100));
        let room = (limit as f64 - reserve).max(1.0) / window.as_secs_f64();
        let rate = rng.u32(5..=400);
        // What the job can write a second at most: the room, --rate, the round trips.
        let per_process =
            f64::from(rate).min(f64::from(concurrency) / (3.0 * latency.as_secs_f64()));
        let pace = room.min(per_process * f64::from(shards));
        // At least a hundred job writes, and at least three windows of them.
        let total = (100.0f64).max(3.5 * pace * window.as_secs_f64());
        let rows = ((total / f64::from(shards)).ceil() as u64).min(3000);
        let skew_secs = match headers {
            Headers::ResetPast => -(window.as_secs() as i64 + rng.i64(2..=30)),
            _ => rng.i64(-30..=30),
        };
        Scenario {
            seed,
            headers,
            window,
            phase: Duration::from_millis(rng.u64(0..window.as_millis() as u64)),
            limit,
            reserve_share,
            production_rate,
            shards,
            concurrency,
            rate,
            rows,
            latency,
            jitter: rng.f64(),
            fresh_read_share: rng.f64(),
            skew_secs: if headers == Headers::ResetAhead {
                rng.i64(1..=20)
            } else {
                skew_secs
            },
            stop_after: rng.u64(3..=60),
            max_time: window * 40 + Duration::from_secs(120),
        }
    }

    pub fn shaped(mut self, shape: Shape) -> Scenario {
        match shape {
            Shape::Any => {}
            Shape::Concurrency(c) => self.concurrency = c,
            Shape::Shards(n) => {
                self.rows = (self.rows * u64::from(self.shards)).div_ceil(u64::from(n));
                self.shards = n;
            }
        }
        self
    }

    pub fn reserve(&self) -> u64 {
        (self.limit as f64 * self.reserve_share).ceil() as u64
    }

    /// Runs it on a paused clock of its own.
    pub fn run(&self) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("a runtime: {e}"));
        rt.block_on(self.simulate())
    }

    async fn simulate(&self) -> Outcome {
        let space = Arc::new(Mutex::new(Space::new(
            self.window,
            self.phase,
            self.limit,
            self.headers,
            self.skew_secs,
            self.stop_after,
            self.seed,
        )));
        let start = Instant::now();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicU64::new(0));
        let production = tokio::spawn(production(
            Arc::clone(&space),
            self.production_rate,
            self.seed,
            Arc::clone(&done),
        ));
        let mut processes = Vec::new();
        for shard in 0..self.shards {
            processes.push(tokio::spawn(process(
                self.clone(),
                shard,
                Arc::clone(&space),
                Arc::clone(&writes),
            )));
        }
        let mut reports = Vec::new();
        let mut rows_left = 0;
        for p in processes {
            let (report, left) = p.await.unwrap_or_else(|e| panic!("a process: {e}"));
            reports.push(report);
            rows_left += left;
        }
        done.store(1, Ordering::Relaxed);
        let _ = production.await;
        let elapsed = start.elapsed();
        let space = space.lock().unwrap_or_else(|p| p.into_inner());
        let mut writes = std::mem::take(&mut *writes.lock().unwrap_or_else(|p| p.into_inner()));
        writes.sort_by_key(|w: &JobWrite| w.counted.at);
        Outcome {
            seed: self.seed,
            writes,
            reports,
            production_sent: space.production_sent,
            production_refused: space.production_refused,
            reserve: self.reserve(),
            rows_left,
            elapsed,
        }
    }
}

/// Production: evenly spaced writes with a little jitter, until the job is done.
async fn production(space: Arc<Mutex<Space>>, rate: f64, seed: u64, done: Arc<AtomicU64>) {
    if rate < 0.01 {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now() + gap.mul_f64(rng.f64());
    while done.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep_until(next).await;
        space
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .production(Instant::now());
        next += gap.mul_f64(0.5 + rng.f64());
    }
}

/// One process of the job: `concurrency` workers over its rows, each write through the
/// real limiter and budget. Returns the budget's report and the rows not written.
async fn process(
    sc: Scenario,
    shard: u32,
    space: Arc<Mutex<Space>>,
    writes: Arc<Mutex<Vec<JobWrite>>>,
) -> (BudgetReport, u64) {
    let budget = Arc::new(
        WriteBudget::new(sc.rate, sc.reserve_share, Duration::from_secs(600))
            .shared_by(u64::from(sc.shards)),
    );
    let limiter =
        Arc::new(Limiter::new(NonZeroU32::new(sc.rate), None).with_budget(Arc::clone(&budget)));
    let next_row = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + sc.max_time;
    let mut workers = Vec::new();
    for worker in 0..sc.concurrency {
        let events = Arc::clone(&events);
        let (sc, space, writes, limiter, budget, next_row) = (
            sc.clone(),
            Arc::clone(&space),
            Arc::clone(&writes),
            Arc::clone(&limiter),
            Arc::clone(&budget),
            Arc::clone(&next_row),
        );
        let mut rng =
            fastrand::Rng::with_seed(sc.seed ^ (u64::from(shard) << 32) ^ u64::from(worker));
        workers.push(tokio::spawn(async move {
            while next_row.fetch_add(1, Ordering::Relaxed) < sc.rows {
                for _attempt in 0..8 {
                    if Instant::now() >= deadline {
                        return;
                    }
                    let one_way = |rng: &mut fastrand::Rng| {
                        sc.latency.mul_f64(0.5 * (1.0 + sc.jitter * rng.f64()))
                    };
                    // The budget's grant, then its time under the ceiling (as
                    // `Limiter::write`): what the budget knew is what it knew as it granted.
                    let Ok(grant) = limiter.write_grant().await else {
                        return;
                    };
                    let granted_event = events.fetch_add(1, Ordering::Relaxed);
                    let (granted_at, under) = (grant.granted_at(), grant.under_announcement());
                    let mut slot = limiter.time_for(grant, None).await;
                    if rng.f64() < sc.fresh_read_share {
                        let rtt = one_way(&mut rng) + one_way(&mut rng);
                        tokio::time::sleep(rtt).await;
                    }
                    limiter.send_gate(&mut slot, None).await;
                    let sent_at = Instant::now();
                    let Some(ticket) = slot.into_grant().send() else {
                        panic!("a paced grant gives a ticket");
                    };
                    tokio::time::sleep(one_way(&mut rng)).await;
                    let reply = space
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .job_write(Instant::now());
                    tokio::time::sleep(one_way(&mut rng)).await;
                    let wall = space
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .our_wall(Instant::now());
                    budget.headers(&ticket, &reply.headers, wall);
                    let answered_event = events.fetch_add(1, Ordering::Relaxed);
                    let announced_remaining = match headers::parse(&reply.headers, wall) {
                        Parsed::Seen(a) => Some(a.remaining),
                        _ => None,
                    };
                    let admitted = reply.counted.admitted;
                    budget.answered(
                        &ticket,
                        if admitted {
                            Answer::Accepted
                        } else {
                            Answer::Refused(Some(reply.retry_after))
                        },
                    );
                    writes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(JobWrite {
                            shard,
                            number: ticket.number(),
                            granted_at,
                            granted_event,
                            under_announcement: under,
                            sent_at,
                            counted: reply.counted,
                            answered_at: Instant::now(),
                            answered_event,
                            honest_count: reply.honest_count,
                            carried_count: !reply.headers.is_empty(),
                            announced_remaining,
                        });
                    if admitted {
                        break;
                    }
                    tokio::time::sleep(reply.retry_after).await;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let left = sc.rows.saturating_sub(
        writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.shard == shard && w.counted.admitted)
            .count() as u64,
    );
    (budget.report(), left)
}
