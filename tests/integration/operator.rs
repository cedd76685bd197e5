//! What an operator meets first: Ctrl-C stops writing at once, the space a run targets
//! is named, the usual mistakes get plain messages, and one spelling of each flag.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sipgw_bulk::report::Status;
use sipgw_bulk::sandbox::SandboxConfig;

use crate::support::*;

/// Polls `done` every 10 ms for up to a minute.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn interrupt(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// At `--rate 5 --concurrency 64`, 64 rows are read and wait for a write slot. After the
/// first SIGINT no new PATCH starts: the sandbox receives at most the one that may have
/// been leaving at the signal (writes are 200 ms apart at this rate), rows waiting for
/// their slot are `skipped`, the PATCH on the wire at the signal (held by the sandbox
/// until after it) finishes as `updated`, and `--resume` writes the rest.
#[test]
fn ctrl_c_stops_writing_at_once_and_resume_finishes() {
    let ids = ids(200, 3201);
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    // The third PATCH lands, and its answer waits until the test lets it go.
    sb.state().hold_patch(3, true);
    let child = sb
        .cmd()
        .args([
            "apply",
            "m.csv",
            "--yes",
            "--rate",
            "5",
            "--concurrency",
            "64",
            "--report",
            "r.csv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    wait_until("the held PATCH", || sb.state().patches_held() == 1);
    let at_signal = sb.state().stats().patches;
    interrupt(&child);
    // Before the change, the rows waiting for a slot went on at five a second.
    std::thread::sleep(Duration::from_millis(1500));
    sb.state().release_held();
    let out = child.wait_with_output();
    let after_signal = sb.state().stats().patches - at_signal;
    assert!(
        after_signal <= 1,
        "{after_signal} PATCHes arrived after the signal: {}",
        stderr(&out)
    );
    assert_eq!(code(&out), 4, "interrupted: {}", stderr(&out));

    let report = report(&sb.path("r.csv"));
    assert_eq!(report.len(), ids.len(), "every row exactly once");
    let held = sb.state().held_gateway().unwrap().to_string();
    let held_row = report.values().find(|r| r.id == held).unwrap();
    assert_eq!(
        held_row.status,
        Status::Updated,
        "the PATCH on the wire finished: {held_row:?}"
    );
    assert!(held_row.before.is_some());
    let updated = report
        .values()
        .filter(|r| r.status == Status::Updated)
        .count() as u64;
    assert_eq!(updated, sb.state().stats().patches_applied);
    assert!(
        report.values().all(|r| r.status == Status::Updated
            || (r.status == Status::Skipped && r.error_code == "interrupted")),
        "only updated and skipped rows"
    );

    let out = run(sb.cmd().args([
        "apply", "m.csv", "--yes", "--resume", "--rate", "1000", "--report", "r.csv",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = crate::support::report(&sb.path("r.csv"));
    assert_eq!(report.len(), ids.len());
    assert!(report.values().all(|r| r.status == Status::Updated));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert_eq!(sb.state().stats().patches_applied, ids.len() as u64);
}
