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
    let sb = Sandbox::start(config, &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    // 22% of attempts fail; ten attempts make a row's failure a one-in-a-million event.
    std::fs::write(sb.path("c.yaml"), "max_attempts: 10\n").unwrap();
    let out = run(sb.cmd().args([
        "apply",
        "m.csv",
        "--yes",
        "--config",
        "c.yaml",
        "--report",
        "r.csv",
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let report = report(&sb.path("r.csv"));
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
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path("s.json")).unwrap()).unwrap();
    assert_eq!(summary["requests"], stats.requests);
    // First tries: each row's GET, then its first write's fresh GET and PATCH.
    assert_eq!(summary["retries"].as_u64(), Some(stats.requests - 900));
    assert_eq!(summary["counts"]["updated"], 300);
}

#[test]
fn the_servers_429_with_retry_after_slows_the_job_and_every_row_still_lands() {
    let ids = ids(60, 21);
    let config = SandboxConfig {
        write_limit: 20,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let out = run(sb.cmd().args([
        "apply", "m.csv", "--yes", "--rate", "200", "--report", "r.csv",
    ]));
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
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
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
    let report = report(&sb.path("r.csv"));
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
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    // 500 writes at 50/s: about ten seconds.
    let out = run(sb.cmd().args([
        "apply",
        "m.csv",
        "--yes",
        "--rate",
        "50",
        "--concurrency",
        "64",
        "--report",
        "r.csv",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats = sb.state().stats();
    assert_eq!(stats.patches_applied, 500);
    assert!(
        stats.max_writes_in_any_second <= 50,
        "{} writes in one second",
        stats.max_writes_in_any_second
    );
}
