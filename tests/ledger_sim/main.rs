//! The ledger under generated sequences: seeded random sequences of operations run with
//! the real binary against the real sandbox (applies whole, with `--limit`, `--only` or a
//! shard; `kill -9` at the sandbox's Nth PATCH; `--resume`; edits by someone else
//! between and during runs; a finished run's next link; a report deleted or cut short;
//! `rollback` of a report and its manifest applied; a chain rolled back whole), with a
//! model of what the space and the reports must be, checked after every step:
//!
//! - `rows_once`: every row at most once in a report after a kill, exactly once after a
//!   run ends;
//! - `lock`: a second apply of the same rows while the first runs is refused (exit 5)
//!   and writes nothing;
//! - `rollback_one`: rolling back any one report changes only the fields its runs
//!   changed, putting them back to what they were just before, and its manifest holds
//!   those fields' before values, every other cell empty;
//! - `rollback_chain`: a chain rolled back newest-first restores the state before its
//!   first run when nobody else wrote in between;
//! - `damaged_link`: a deleted link with a later one after it, or a finished link cut
//!   short, is refused with a message naming it (a damaged newest link that was cut off,
//!   or deleted beside its run file, may be refused or rebuilt);
//! - `chain_identity`: a `--resume` in another space, shard or selection (or with another
//!   manifest for a cut-off run) is refused, exit 64, nothing written;
//! - `chain_order`: each run writes the report its chain is at, and a finished report is
//!   never written again;
//! - `run_outcome`: runs end as they should (no lock file left, rows reported `updated`
//!   or `unchanged` as the manifest asks).
//!
//! `LEDGER_SEED=N` replays one sequence, printing each step; `LEDGER_SEQUENCES`,
//! `LEDGER_FIRST_SEED`, `LEDGER_SECS` (run new seeds until that many seconds pass) and
//! `LEDGER_STEPS` run more or longer ones; `LEDGER_ALLOW=inv,inv` (or `all`) reports
//! those invariants' failures without failing the test; `LEDGER_SKIP=kind,...` (see
//! `ops::KINDS`, and `mismatch`) leaves kinds of step out. `scripts/ledger-sim.sh` runs
//! it for longer.

#[path = "../integration/support.rs"]
#[allow(dead_code)]
mod support;

mod checks;
mod exec;
mod model;
mod ops;
mod steps;
mod world;

use std::time::{Duration, Instant};

use exec::{Seq, Violation};
use model::{ManifestModel, Model};
use world::World;

/// Sequences in `cargo test` (about 1 s each on 2 cores), and steps in each.
const SEQUENCES: u64 = 80;
const STEPS: usize = 14;

struct Settings {
    seeds: Seeds,
    steps: usize,
    allow: Vec<String>,
    skip: Vec<String>,
    verbose: bool,
}

enum Seeds {
    Count { first: u64, count: u64 },
    For { first: u64, secs: u64 },
}

/// Left out unless `LEDGER_SKIP` says otherwise: none (every kind of step runs).
const DEFAULT_SKIP: &[&str] = &[];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn list(name: &str) -> Vec<String> {
    env(name)
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default()
}

fn env_u64(name: &str) -> Option<u64> {
    env(name).map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

impl Settings {
    fn from_env() -> Settings {
        let steps = env_u64("LEDGER_STEPS").map_or(STEPS, |s| s as usize);
        let first = env_u64("LEDGER_FIRST_SEED").unwrap_or(1);
        let seeds = match (env_u64("LEDGER_SEED"), env_u64("LEDGER_SECS")) {
            (Some(seed), _) => Seeds::Count {
                first: seed,
                count: 1,
            },
            (None, Some(secs)) => Seeds::For { first, secs },
            (None, None) => Seeds::Count {
                first,
                count: env_u64("LEDGER_SEQUENCES").unwrap_or(SEQUENCES),
            },
        };
        Settings {
            verbose: env("LEDGER_SEED").is_some() || env("LEDGER_VERBOSE").is_some(),
            seeds,
            steps,
            allow: list("LEDGER_ALLOW"),
            skip: match std::env::var("LEDGER_SKIP") {
                Ok(v) => v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
                Err(_) => DEFAULT_SKIP.iter().map(|s| (*s).to_owned()).collect(),
            },
        }
    }

    fn allowed(&self, invariant: &str) -> bool {
        self.allow.iter().any(|a| a == invariant || a == "all")
    }
}

/// A sequence that broke a promise.
struct Failure {
    seed: u64,
    step: usize,
    violation: Violation,
    steps: Vec<String>,
}

/// Runs the sequence of `seed`: its steps (with what each did), or where it failed.
fn sequence(seed: u64, settings: &Settings) -> Result<Vec<String>, Failure> {
    let (steps, verbose) = (settings.steps, settings.verbose);
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rng.u64(10..=30);
    let ids = sipgw_bulk::sandbox::generated_ids(n, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let profile = ops::Profile::draw(&mut rng, &settings.skip);
    let rows: Vec<_> = ids
        .iter()
        .map(|id| (*id, ops::desired(&mut rng, 0.6)))
        .collect();
    let mut seq = Seq {
        w: World::new(ids),
        m: Model::default(),
        counter: 0,
    };
    checks::write_csv(&seq.w.path("m.csv"), &rows);
    seq.m.manifests.push(ManifestModel {
        name: "m.csv".into(),
        rows,
        version: 0,
    });
    let mut done = vec![format!(
        "{n} gateways, {} edits, {} chains",
        profile.edits, profile.chains
    )];
    for i in 1..=steps {
        let now = seq.w.snapshot();
        let step = ops::next(&mut rng, &seq.m, &now, &profile);
        let result = seq
            .exec(&step)
            .and_then(|note| checks::sealed_untouched(&seq).map(|()| note));
        let line = match &result {
            Ok(note) if note.is_empty() => format!("{i}. {step}"),
            Ok(note) => format!("{i}. {step} => {note}"),
            Err(_) => format!("{i}. {step} => FAILED"),
        };
        if verbose {
            eprintln!("  {line}");
        }
        done.push(line);
        if let Err(violation) = result {
            return Err(Failure {
                seed,
                step: i,
                violation,
                steps: done,
            });
        }
    }
    Ok(done)
}

fn replay(seed: u64, steps: usize) -> String {
    let steps = match steps {
        STEPS => String::new(),
        s => format!("LEDGER_STEPS={s} "),
    };
    format!("LEDGER_SEED={seed} {steps}cargo test --release --test ledger_sim -- --nocapture")
}

#[test]
fn generated_sequences_keep_the_ledger_s_promises() {
    let settings = Settings::from_env();
    let started = Instant::now();
    let (first, more) = match settings.seeds {
        Seeds::Count { first, count } => (
            first,
            Box::new(move |s: u64, _| s < first + count) as Box<dyn Fn(u64, Duration) -> bool>,
        ),
        Seeds::For { first, secs } => (
            first,
            Box::new(move |_, t: Duration| t < Duration::from_secs(secs))
                as Box<dyn Fn(u64, Duration) -> bool>,
        ),
    };
    let mut seed = first;
    let (mut runs, mut steps) = (0u64, 0usize);
    let mut failures: Vec<Failure> = Vec::new();
    while more(seed, started.elapsed()) {
        if settings.verbose {
            eprintln!("sequence {seed}:");
        }
        runs += 1;
        match sequence(seed, &settings) {
            Ok(done) => steps += done.len() - 1,
            Err(f) => {
                steps += f.step;
                eprintln!(
                    "\nledger sequence {} broke `{}` at step {}:\n  {}\nsteps:\n  {}\nreplay: {}\n",
                    f.seed,
                    f.violation.invariant,
                    f.step,
                    f.violation.detail,
                    f.steps.join("\n  "),
                    replay(f.seed, settings.steps)
                );
                failures.push(f);
            }
        }
        seed += 1;
    }
    eprintln!(
        "ledger_sim: {runs} sequences, {steps} steps, {:.1}s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    let mut by_invariant: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for f in &failures {
        by_invariant
            .entry(f.violation.invariant)
            .or_default()
            .push(f.seed);
    }
    for (invariant, seeds) in &by_invariant {
        let allowed = if settings.allowed(invariant) {
            " (allowed)"
        } else {
            ""
        };
        let some: Vec<u64> = seeds.iter().take(12).copied().collect();
        let more = if seeds.len() > some.len() {
            ", ..."
        } else {
            ""
        };
        eprintln!(
            "  {invariant}{allowed}: {} sequences, seeds {some:?}{more}",
            seeds.len()
        );
    }
    let fatal: Vec<&Failure> = failures
        .iter()
        .filter(|f| !settings.allowed(f.violation.invariant))
        .collect();
    assert!(
        fatal.is_empty(),
        "{} of {runs} ledger sequences broke a promise (seeds {:?}); replay one with: {}",
        fatal.len(),
        fatal.iter().map(|f| f.seed).collect::<Vec<_>>(),
        replay(fatal[0].seed, settings.steps)
    );
}
