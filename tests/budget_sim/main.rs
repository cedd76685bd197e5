//! The write budget under generated scenarios: a deterministic simulation of a space
//! (tokio's paused clock, one seed for everything random) that drives the real
//! [`Limiter`] and [`WriteBudget`] of one job, or of several shards spending one count,
//! against fixed windows as the platform counts them, production traffic, latency with
//! jitter, and every header behaviour in [`space::Headers`].
//!
//! What is checked, in every scenario ([`check`]):
//! - an honest count (on every answer or on some): no job write is refused, and no
//!   process's writes after an answer it had exceed that answer's room above the reserve
//!   (its share of it, for a shard), counting the writes it sent after the one the
//!   answer was for: so the count stays at or above the reserve less production's writes
//!   since and the writes then on the wire;
//! - a refusal of a write the count showed room for leaves the count untrusted;
//! - `--rate` holds in every one-second window of every process's sends;
//! - over at least 200 seeds per header behaviour, production's refused share with an
//!   untrustworthy count is no worse than with none at all (one point of margin).
//!
//! `BUDGET_SIM_SEEDS=N` runs N seeds per behaviour (200 by default), `BUDGET_SIM_SEED=S`
//! (with `BUDGET_SIM_HEADERS=name`) replays one scenario and prints it; a failure prints
//! the command that replays it.

mod check;
mod scenario;
mod space;

use std::time::Instant as WallInstant;

use scenario::{Outcome, Scenario};
use space::Headers;

fn seeds_per_behaviour() -> u64 {
    std::env::var("BUDGET_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 20 } else { 200 })
}

fn first_seed() -> u64 {
    std::env::var("BUDGET_SIM_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn replay(seed: u64, headers: Headers) -> String {
    format!(
        "BUDGET_SIM_SEED={seed} BUDGET_SIM_HEADERS={} cargo test --release --test budget_sim",
        headers.name()
    )
}

/// Runs `seeds` scenarios of one behaviour; panics on the first that breaks a property.
fn run_behaviour(headers: Headers, seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    seeds
        .map(|seed| {
            let scenario = Scenario::generate(seed, headers);
            let outcome = scenario.run();
            if let Err(broken) = check::properties(&scenario, &outcome) {
                panic!(
                    "seed {seed}, headers {}: {broken}\n{scenario:#?}\nreplay: {}",
                    headers.name(),
                    replay(seed, headers)
                );
            }
            outcome
        })
        .collect()
}

#[test]
fn the_write_budget_keeps_its_promises_in_generated_scenarios() {
    if let Ok(seed) = std::env::var("BUDGET_SIM_SEED") {
        let seed: u64 = seed.parse().expect("BUDGET_SIM_SEED is a number");
        let name = std::env::var("BUDGET_SIM_HEADERS").unwrap_or_else(|_| "honest".into());
        let headers = Headers::from_name(&name).expect("BUDGET_SIM_HEADERS names a behaviour");
        let scenario = Scenario::generate(seed, headers);
        let outcome = scenario.run();
        println!("{scenario:#?}\n{}", outcome.summary());
        if std::env::var("BUDGET_SIM_TRACE").is_ok() {
            for w in &outcome.writes {
                println!("{w:?}");
            }
        }
        if let Err(broken) = check::properties(&scenario, &outcome) {
            panic!("seed {seed}: {broken}");
        }
        let base = Scenario::generate(seed, Headers::Absent).run();
        println!("the same with no headers: {}", base.summary());
        return;
    }
    let started = WallInstant::now();
    let n = seeds_per_behaviour();
    let seeds = first_seed()..first_seed() + n;
    let baseline = run_behaviour(Headers::Absent, seeds.clone());
    let mut ran = n;
    let mut table = Vec::new();
    for headers in Headers::ALL {
        if headers == Headers::Absent {
            continue;
        }
        let outcomes = run_behaviour(headers, seeds.clone());
        ran += n;
        let compared = check::production_no_worse(headers, &outcomes, &baseline);
        table.push(compared.line());
        if let Err(broken) = compared.verdict() {
            panic!(
                "{broken}\nper-seed shares are printed by a replay, e.g.: {}",
                replay(compared.worst_seed, headers)
            );
        }
    }
    println!(
        "{ran} scenarios ({n} seeds x {} header behaviours) in {:.1}s; production's refused \
         share, averaged:\n{}",
        Headers::ALL.len(),
        started.elapsed().as_secs_f64(),
        table.join("\n")
    );
}

/// Hand-picked corners of the class, each as one scenario over many seeds: the findings
/// that broke the promise before (three shards on one count; concurrency 1 and 64; a
/// clock behind the space's; headers that stop) stay in the suite by name.
#[test]
fn the_findings_stay_fixed() {
    for (what, headers, shape) in [
        (
            "concurrency 1",
            Headers::Honest,
            scenario::Shape::Concurrency(1),
        ),
        (
            "concurrency 64",
            Headers::Honest,
            scenario::Shape::Concurrency(64),
        ),
        ("three shards", Headers::Honest, scenario::Shape::Shards(3)),
        (
            "a reset in the past",
            Headers::ResetPast,
            scenario::Shape::Any,
        ),
        ("headers that stop", Headers::Stopping, scenario::Shape::Any),
    ] {
        for seed in 1..=30 {
            let scenario = Scenario::generate(seed, headers).shaped(shape);
            let outcome = scenario.run();
            if let Err(broken) = check::properties(&scenario, &outcome) {
                panic!("{what}, seed {seed}: {broken}\n{scenario:#?}");
            }
        }
    }
}
