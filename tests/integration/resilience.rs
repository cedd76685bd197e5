//! Retries, throttling, bad credentials and the write rate, against a sandbox that misbehaves
//! on purpose.

use std::time::Duration;

use sipgw_bulk::report::Status;
use sipgw_bulk::sandbox::{Faults, SandboxConfig};

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
    // Twelve rows under way for three requests on the wire.
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
fn a_row_waiting_out_a_retry_after_holds_no_request_slot() {
    // One request on the wire at a time, and the tenth row's first PATCH refused with
    // Retry-After: 2. A row that held its request slot through that wait would stop every
    // other row for two seconds: its write would land tenth. Holding none, the rows after
    // it go on, and it lands among the last.
    let ids = ids(60, 25);
    let config = SandboxConfig {
        faults: Faults {
            retry_after_secs: 2,
            ..Faults::default()
        },
        throttled_once_ids: vec![ids[9]],
        log_changes: true,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .apply("m.csv")
        .args(["--read-mode", "get", "--concurrency", "1"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let changes = sb.state().changes_from(0);
    assert_eq!(changes.len(), 60);
    let landed = changes.iter().position(|c| c.id == ids[9]).unwrap_or(0) + 1;
    assert!(
        landed > 40,
        "the refused row's write landed {landed}th of 60: the others waited for it"
    );
    assert!(sb.state().stats().max_requests_in_flight <= 1);
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
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    assert_eq!((stats.gets, stats.patches), (5, 3), "{stats:?}");
}
