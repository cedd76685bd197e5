//! Retries, throttling, bad credentials and the write rate, against a sandbox that misbehaves
//! on purpose.

use std::time::Duration;

use sipgw_bulk::sandbox::{Faults, SandboxConfig};
use sipgw_bulk::status::Status;

use crate::support::*;

#[test]
fn injected_500s_503s_429s_and_drops_are_retried_until_every_row_ends_right() {
    let ids = ids(300, 20);
    let config = SandboxConfig {
        faults: Faults {
            status_rates: vec![(500, 0.10), (503, 0.05), (429, 0.05)],
            retry_after_secs: 0,
            latency: Duration::ZERO,
            drop_rate: 0.02,
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    // 22% of attempts fail; ten attempts make a row's failure a one-in-a-million event.
    sb.write("c.yaml", "max_attempts: 10\n");
    let out = sb
        .apply("m.csv")
        .args(["--config", "c.yaml"])
        .report("r.csv")
        .summary_json("s.json")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let report = sb.report("r.csv");
    assert!(report.values().all(|r| r.status == Status::Updated));
    let attempts: u32 = report.values().map(|r| r.attempts).sum();
    assert!(
        report.values().any(|r| r.attempts > 2),
        "some row needed a retry"
    );
    let stats = sb.state().stats();
    assert!(stats.faults_injected > 0);
    assert_eq!(
        u64::from(attempts),
        stats.requests,
        "attempts count every request sent"
    );
    let summary: serde_json::Value = serde_json::from_str(&sb.read("s.json")).unwrap();
    assert_eq!(summary["requests"], stats.requests);
    // First tries: each row's GET and its first PATCH, and a fresh GET before that PATCH
    // where the row's slot did not come within its first read's round trip.
    let retries = summary["retries"].as_u64().unwrap_or(0);
    assert!(
        (stats.requests - 900..=stats.requests - 600).contains(&retries),
        "{retries} retries of {} requests for 300 rows",
        stats.requests
    );
    assert_eq!(summary["counts"]["updated"], 300);
}

#[test]
fn the_servers_429_with_retry_after_slows_the_job_and_every_row_still_lands() {
    let ids = ids(60, 21);
    let config = SandboxConfig {
        write_limit: 20,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .apply("m.csv")
        .args(["--rate", "200"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    assert!(stats.writes_throttled > 0, "the limit was hit: {stats:?}");
    // The pace comes down to what the space takes once the refusals rise, so far fewer
    // writes are refused than rows (60 rows at 200/s against 20/s).
    assert!(stats.writes_throttled < 60, "{stats:?}");
}

#[test]
fn bad_credentials_stop_the_job_with_exit_3_and_little_traffic() {
    let ids = ids(200, 22);
    let sb = Sandbox::with_manifest(&ids);
    let out = run(sb.cmd().env("SIGNALWIRE_API_TOKEN", "PTwrong-token").args([
        "apply",
        "m.csv",
        "--yes",
        "--concurrency",
        "8",
        "--report",
        "r.csv",
    ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let stats = sb.state().stats();
    assert!(stats.unauthorized >= 1);
    assert!(
        stats.requests_after_first_unauthorized <= 8,
        "kept sending after a 401: {stats:?}"
    );
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 200, "every row is in the report");
    assert!(
        report
            .values()
            .all(|r| matches!(r.status, Status::Skipped | Status::Failed))
    );
    assert!(
        report
            .values()
            .filter(|r| r.status == Status::Skipped)
            .count()
            >= 190
    );
    assert!(!stderr(&out).contains("PTwrong-token"));
    assert!(
        !std::fs::read_to_string(sb.path("r.csv"))
            .unwrap()
            .contains("PTwrong-token")
    );
}

#[test]
fn at_rate_50_no_one_second_window_holds_more_than_50_writes() {
    let ids = ids(500, 23);
    let sb = Sandbox::with_manifest(&ids);
    // 500 writes at 50/s: about ten seconds.
    let out = sb
        .apply("m.csv")
        .args(["--rate", "50", "--concurrency", "64"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats = sb.state().stats();
    assert_eq!(stats.patches_applied, 500);
    assert!(
        stats.max_writes_in_any_second <= 50,
        "{} writes in one second",
        stats.max_writes_in_any_second
    );
}

#[test]
fn a_row_waiting_out_a_retry_after_lets_later_rows_pass_it() {
    // One row at work, and one read in ten refused with `Retry-After: 1`. A plan has no
    // write budget to judge the refusals first: a waiting row gives its place at once.
    let ids = ids(200, 25);
    let config = SandboxConfig {
        faults: Faults {
            status_rates: vec![(429, 0.1)],
            retry_after_secs: 1,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .plan("m.csv")
        .args(["--read-mode", "get", "--concurrency", "1"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats = sb.state().stats();
    assert!(stats.faults_injected >= 5, "{stats:?}");
    assert!(stats.max_requests_in_flight <= 1, "{stats:?}");
    // The report is in the order rows ended: rows read while another waited out its
    // refusal end before it (with its place kept, rows would end in manifest order).
    let text = sb.read("r.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let at = header
        .iter()
        .position(|c| *c == "row")
        .expect("a row column");
    let ended: Vec<u64> = lines
        .map(|l| {
            l.split(',')
                .nth(at)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(ended.len(), 200);
    let overtaken = ended.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        overtaken >= 3,
        "{overtaken} rows ended after a later one: {ended:?}"
    );
}

#[test]
fn a_dropped_connection_now_and_then_is_retried_alone_and_pauses_nothing() {
    // One connection in twenty dropped. Each used to pause the whole job and send requests
    // one at a time: fresh reads then aged before their writes could leave and were sent
    // again, up to 13 times a row (7-8 requests a row, 14-20 writes/s at --rate 200).
    let ids = ids(600, 26);
    let config = SandboxConfig {
        faults: Faults {
            drop_rate: 0.05,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .apply("m.csv")
        .args(["--rate", "200"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    assert!(stats.faults_injected >= 30, "{stats:?}");
    // A read and a fresh read and a PATCH a row, the drops' own retries, and now and
    // then a read again (3.4-3.5 a row measured; 7.4-8.4 when every drop paused the job).
    assert!(
        stats.requests * 2 <= 9 * 600,
        "{} requests for 600 rows",
        stats.requests
    );
}

#[test]
fn concurrency_bounds_the_requests_on_the_wire_not_the_rows_under_way() {
    let ids = ids(120, 24);
    let config = SandboxConfig {
        faults: Faults {
            latency: Duration::from_millis(20),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    // Three requests on the wire at most, whatever the rows and the fresh reads do.
    let out = sb
        .apply("m.csv")
        .args(["--read-mode", "get", "--rate", "1000", "--concurrency", "3"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats = sb.state().stats();
    assert_eq!(stats.patches_applied, 120);
    assert!(
        stats.max_requests_in_flight <= 3,
        "{} requests on the wire at once with --concurrency 3",
        stats.max_requests_in_flight
    );
}

#[test]
fn a_write_whose_slot_comes_within_its_read_s_round_trip_is_built_from_that_read() {
    // Three rows read at once (50 ms round trips); --rate 5 grants one write slot at once
    // and the next two 200 ms and 400 ms later. The row granted at once writes from its
    // own read; the two that waited read again first: 3 + 2 GETs, 3 PATCHes.
    let ids = ids(3, 26);
    let config = SandboxConfig {
        faults: Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .apply("m.csv")
        .args(["--read-mode", "get", "--rate", "5", "--concurrency", "4"])
        .report("r.csv")
        .summary_json("s.json")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    // On a busy machine a read may age past its round trip before its write's time comes
    // (a timer woken late): it is read again, and that read is counted as a retry.
    let again = sb.summary("s.json")["retries"].as_u64().unwrap();
    assert_eq!((stats.gets, stats.patches), (5 + again, 3), "{stats:?}");
}

#[test]
fn a_write_leaves_within_about_a_round_trip_of_its_read_while_the_rate_binds() {
    // 20 ms round trips, --rate 200 binding over 1,200 rows: with the ceiling as two gates
    // (one before the read, one as the write left) a queue grew at the second and reads
    // were 630 ms old when their write reached the sandbox. The sandbox measures from the
    // GET to the PATCH, its own 20 ms included; a few tens of ms is what is expected, and
    // 300 ms allows for a loaded machine.
    let ids = ids(1200, 77);
    let config = SandboxConfig {
        faults: Faults {
            latency: Duration::from_millis(20),
            ..Faults::default()
        },
        write_limit: 0,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .apply("m.csv")
        .args(["--rate", "200", "--concurrency", "16"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    assert!(
        stats.read_to_write_max_us <= 300_000,
        "a write left {} ms after its read: {stats:?}",
        stats.read_to_write_max_us / 1000
    );
}

/// One generated scenario of `requests_on_the_wire_and_writes_a_second_hold_in_generated_scenarios`.
#[derive(Debug)]
struct WireScenario {
    seed: u64,
    rows: u64,
    concurrency: u64,
    rate: u64,
    latency_ms: u64,
    refused: f64,
    failing: f64,
    retry_after_secs: u64,
    read_mode: &'static str,
}

impl WireScenario {
    fn generate(seed: u64) -> WireScenario {
        let mut rng = fastrand::Rng::with_seed(seed);
        WireScenario {
            seed,
            rows: rng.u64(20..=80),
            concurrency: rng.u64(1..=8),
            rate: [20, 60, 200, 1000][rng.usize(0..4)],
            latency_ms: rng.u64(0..=15),
            refused: rng.f64() * 0.2,
            failing: rng.f64() * 0.1,
            retry_after_secs: rng.u64(0..=1),
            read_mode: ["get", "list", "auto"][rng.usize(0..3)],
        }
    }

    /// Runs it; the first promise broken, described.
    fn check(&self) -> Result<(), String> {
        let ids = ids(self.rows, self.seed);
        let config = SandboxConfig {
            faults: Faults {
                status_rates: vec![(429, self.refused), (503, self.failing)],
                retry_after_secs: self.retry_after_secs,
                latency: Duration::from_millis(self.latency_ms),
                drop_rate: 0.0,
            },
            write_limit: 0,
            ..SandboxConfig::default()
        };
        let sb = Sandbox::start(config, &ids);
        write_csv(&sb.path("m.csv"), &ids, &[]);
        std::fs::write(sb.path("c.yaml"), "max_attempts: 12\n").unwrap();
        let out = run(sb
            .cmd()
            .args(["apply", "m.csv", "--yes", "--config", "c.yaml"])
            .args([
                "--read-mode",
                self.read_mode,
                "--rate",
                &self.rate.to_string(),
                "--concurrency",
                &self.concurrency.to_string(),
                "--report",
                "r.csv",
            ]));
        let stats = sb.state().stats();
        if code(&out) != 0 {
            return Err(format!("exit {}: {}", code(&out), stderr(&out)));
        }
        if sb.state().snapshot() != expected(&ids) {
            return Err("a gateway did not reach its declared state".into());
        }
        if stats.max_requests_in_flight > self.concurrency {
            return Err(format!(
                "{} requests on the wire at once",
                stats.max_requests_in_flight
            ));
        }
        if stats.max_writes_in_any_second > self.rate {
            return Err(format!(
                "{} writes in one second",
                stats.max_writes_in_any_second
            ));
        }
        Ok(())
    }
}

/// `--concurrency` and `--rate` over generated scenarios (rows, concurrency 1-8, rates,
/// latency, random 429s and 503s with and without Retry-After, each read mode): never more
/// requests on the wire than `--concurrency`, never more writes in a second than `--rate`,
/// and every row reaches its state. `WIRE_SIM_SEEDS=N` runs more, `WIRE_SIM_SEED=S` one.
#[test]
fn requests_on_the_wire_and_writes_a_second_hold_in_generated_scenarios() {
    let seeds: Vec<u64> = match std::env::var("WIRE_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("WIRE_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("WIRE_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(4);
            (9100..9100 + n).collect()
        }
    };
    for seed in seeds {
        let scenario = WireScenario::generate(seed);
        if let Err(broken) = scenario.check() {
            panic!(
                "{broken}\n{scenario:#?}\nreplay: WIRE_SIM_SEED={seed} cargo test --release \
                 --test integration requests_on_the_wire"
            );
        }
    }
}
