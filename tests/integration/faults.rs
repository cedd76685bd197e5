//! The undo file under real faults (issue "The undo file under real faults"): a proxy that
//! applies a PATCH and loses its answer, a report on a full filesystem, two runs of one
//! manifest, a manifest rewritten mid-run. After each, `rollback` restores the exact
//! starting state and no gateway is written twice.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use futures_util::FutureExt;

use crate::peer::{Peer, Seen, dropped, forward};
use crate::support::*;
use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

/// A proxy in front of `sb` that forwards everything, except that for each id in
/// `lose_patch` the first PATCH is applied and its answer lost, and for each id in
/// `lose_reads_after` every GET after that lost answer is lost too.
/// Also returns a switch that heals the proxy: once set, it forwards everything.
fn lossy_proxy(
    sb: &Sandbox,
    lose_patch: &[uuid::Uuid],
    lose_reads_after: bool,
) -> (Peer, Arc<std::sync::atomic::AtomicBool>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let upstream = sb.base_url();
    let targets: Arc<HashSet<String>> = Arc::new(
        lose_patch
            .iter()
            .map(|id| id.hyphenated().to_string())
            .collect(),
    );
    let lost: Arc<Mutex<HashSet<String>>> = Arc::default();
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heal = Arc::clone(&healed);
    let peer = Peer::start(Arc::new(move |seen: Seen| {
        let client = client.clone();
        let upstream = upstream.clone();
        let targets = Arc::clone(&targets);
        let lost = Arc::clone(&lost);
        let healed = healed.load(std::sync::atomic::Ordering::Relaxed);
        async move {
            if healed {
                return forward(&client, &upstream, seen).await;
            }
            let id = seen.uri.rsplit('/').next().unwrap_or("").to_owned();
            let method = seen.method.clone();
            if method == Method::GET && lose_reads_after && lost.lock().unwrap().contains(&id) {
                return dropped();
            }
            let answer = forward(&client, &upstream, seen).await;
            if method == Method::PATCH && targets.contains(&id) && lost.lock().unwrap().insert(id) {
                return dropped();
            }
            answer
        }
        .boxed()
    }));
    (peer, heal)
}

fn via(proxy: &Peer, sb: &Sandbox) -> std::process::Command {
    let mut cmd = sb.cmd();
    cmd.env("SIGNALWIRE_BASE_URL", proxy.base_url());
    cmd
}

/// rollback REPORT, then apply it: the sandbox must be back at `start`.
fn roll_back_and_check(
    sb: &Sandbox,
    report: &str,
    start: &std::collections::BTreeMap<uuid::Uuid, sipgw_bulk::model::GatewayFields>,
) {
    let out = run(sb.cmd().args(["rollback", report, "-o", "undo.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb.apply("undo.csv").report("undo-run.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        &sb.state().snapshot(),
        start,
        "rollback restores the exact start"
    );
}

#[test]
fn a_lost_patch_answer_is_read_back_not_resent_and_the_row_is_updated() {
    let ids = ids(60, 70);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    let (proxy, _) = lossy_proxy(&sb, &ids[..10], false);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let out = run(via(&proxy, &sb).args(["apply", "m.csv", "--yes", "--report", "r.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    // Each gateway written exactly once: the lost answers were read back, not re-sent.
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1, "{id}");
    }
    let report = sb.report("r.csv");
    let starting = starting_state(&ids);
    for r in report.values() {
        assert_eq!(r.status, Status::Updated);
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(r.before.as_ref(), starting.get(&id), "true before-value");
    }
    assert!(!sb.path("r.csv.journal").exists(), "nothing left unsettled");
    roll_back_and_check(&sb, "r.csv", &start);
}

#[test]
fn a_write_of_unknown_outcome_keeps_its_before_through_resume_and_rollback() {
    let ids = ids(30, 71);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    let unknown = &ids[..3];
    let (proxy, heal) = lossy_proxy(&sb, unknown, true);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    sb.write("c.yaml", "max_attempts: 2\n");
    let out = run(via(&proxy, &sb).args([
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
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary_json(&sb.path("s.json"))["possibly_written"], 3);
    let report1 = sb.report("r.csv");
    let starting = starting_state(&ids);
    for r in report1.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        if unknown.contains(&id) {
            assert_eq!(
                (r.status, r.error_code.as_str()),
                (Status::Failed, "write_unknown")
            );
            assert_eq!(r.before.as_ref(), starting.get(&id));
            // The first read, a fresh read (none where the slot came within the first
            // read's round trip; one more for each read that aged past its round trip
            // before its write could leave, as the breaker's pauses after the drops make
            // happen now and then) and the lost PATCH, then the next fresh read's two
            // attempts, both dropped. One PATCH only.
            assert!((4..=7).contains(&r.attempts), "{r:?}");
            assert_eq!(sb.state().patch_count(&id), 1, "{r:?}");
        } else {
            assert_eq!(r.status, Status::Updated);
        }
    }
    // Those writes did land: the journal keeps their before-values for the next run.
    assert!(sb.path("r.csv.journal").exists());
    // The report alone already undoes everything, the unknown writes included.
    let out = run(sb.cmd().args(["rollback", "r.csv"]));
    assert_eq!(stdout(&out).lines().count(), 31, "{}", stdout(&out));

    // Run again with nothing lost any more. That run finished (exit 1), so `--resume`
    // starts a new report, r.2.csv, reading every row: the three are found as desired
    // and become `updated` with their original before-values (carried over from r.csv),
    // not `unchanged`; the rest are `unchanged`.
    let first = std::fs::read(sb.path("r.csv")).unwrap();
    heal.store(true, std::sync::atomic::Ordering::Relaxed);
    let out =
        run(via(&proxy, &sb).args(["apply", "m.csv", "--yes", "--resume", "--report", "r.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(sb.path("r.csv")).unwrap(),
        first,
        "r.csv is left as it was"
    );
    let report2 = sb.report("r.2.csv");
    assert_eq!(report2.len(), 30);
    for r in report2.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        if unknown.contains(&id) {
            assert_eq!(r.status, Status::Updated, "{r:?}");
            assert_eq!(r.before.as_ref(), starting.get(&id));
        } else {
            assert_eq!(r.status, Status::Unchanged, "{r:?}");
        }
    }
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1, "one effective PATCH: {id}");
    }
    assert!(
        !sb.path("r.2.csv.journal").exists(),
        "settled, so the new report's journal is gone"
    );
    roll_back_and_check(&sb, "r.csv", &start);
}

/// One step aside: of two writes of unknown outcome that landed, one gateway is edited by
/// hand before the next run. The next link's `before` for it is its own read (the gateway
/// is no longer what r.csv left); for the untouched one r.csv's `before` is carried.
/// Rolled back alone, r.2.csv puts the hand edit back; then r.csv restores the start.
#[test]
fn a_write_of_unknown_outcome_edited_since_is_not_carried_into_the_next_link() {
    let ids = ids(6, 76);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    let (proxy, heal) = lossy_proxy(&sb, &ids[..2], true);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    sb.write("c.yaml", "max_attempts: 2\n");
    let args = [
        "apply", "m.csv", "--yes", "--resume", "--config", "c.yaml", "--report", "r.csv",
    ];
    let out = run(via(&proxy, &sb).args(args));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let by_id = |path: &str| -> std::collections::BTreeMap<uuid::Uuid, _> {
        sb.report(path)
            .into_values()
            .map(|r| (r.id.parse().unwrap(), r))
            .collect()
    };
    for id in &ids[..2] {
        assert_eq!(by_id("r.csv")[id].error_code.as_str(), "write_unknown");
    }
    let mut hand = sb.state().snapshot()[&ids[0]].clone();
    hand.name = "fixed-by-hand".into();
    assert!(sb.state().edit(&ids[0], hand.clone()));
    heal.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = run(via(&proxy, &sb).args(args));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let next = by_id("r.2.csv");
    let edited = &next[&ids[0]];
    assert_eq!(edited.status, Status::Updated, "{edited:?}");
    assert_eq!(
        edited.before.as_ref(),
        Some(&hand),
        "its own read: {edited:?}"
    );
    assert_eq!(edited.changed_fields.to_string(), "name");
    let untouched = &next[&ids[1]];
    assert_eq!(untouched.status, Status::Updated, "{untouched:?}");
    assert_eq!(untouched.before.as_ref(), Some(&start[&ids[1]]), "carried");

    let out = run(sb.cmd().args(["rollback", "r.2.csv", "-o", "undo2.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb.apply("undo2.csv").report("undo2-run.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        sb.state().snapshot()[&ids[0]],
        hand,
        "the hand edit is back"
    );
    assert_eq!(sb.state().snapshot()[&ids[1]], start[&ids[1]]);
    roll_back_and_check(&sb, "r.csv", &start);
}

#[test]
fn a_full_disk_stops_the_run_within_seconds_naming_the_path_and_resume_recovers() {
    let ids = ids(400, 72);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    write_csv(&sb.path("m.csv"), &ids, &[]);
    // A file-size limit of 64 blocks (32 KiB under dash, 64 KiB under bash) makes every
    // file of the run hit "File too large" partway: the report, or the journal.
    let started = Instant::now();
    let out = run(std::process::Command::new("sh")
        .current_dir(sb.dir.path())
        .envs(sb.cmd().get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .args(["-c", "ulimit -f 64 && exec \"$0\" \"$@\"", BIN])
        .args([
            "apply", "m.csv", "--yes", "--report", "r.csv", "--rate", "400",
        ]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = stderr(&out);
    assert!(
        err.contains("r.csv") && err.contains("too large"),
        "names the path and the cause: {err}"
    );
    assert!(!err.contains("holds every finished row"), "{err}");

    // With room again, resume finishes it; every gateway written once, undo exact.
    let out = sb.apply("m.csv").args(["--resume"]).report("r.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!sb.path("r.rewrite.tmp").exists());
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 400);
    let starting = starting_state(&ids);
    for r in report.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(r.status, Status::Updated, "{r:?}");
        assert_eq!(r.before.as_ref(), starting.get(&id), "{r:?}");
    }
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1);
    }
    roll_back_and_check(&sb, "r.csv", &start);
}

#[test]
fn a_second_run_of_the_same_manifest_on_another_report_is_refused() {
    let ids = ids(100, 73);
    let sb = Sandbox::with_manifest(&ids);
    let mut first = sb
        .apply("m.csv")
        .args(["--rate", "10"])
        .report("one.csv")
        .command()
        .stderr(Stdio::null())
        .spawn_guarded();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.state().stats().patches == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let patches = sb.state().stats().patches;
    let out = sb.apply("m.csv").report("two.csv").run();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("one.csv"),
        "names the first run's report: {}",
        stderr(&out)
    );
    assert!(
        sb.state().stats().patches <= patches + 15,
        "the second run wrote nothing"
    );
    assert!(!sb.path("two.csv").exists());
}

#[test]
fn a_manifest_rewritten_during_the_run_stops_it_and_its_new_values_are_never_applied() {
    // Far more than the reader buffers ahead (64 KiB and 256 queued rows).
    let ids = ids(3000, 74);
    let sb = Sandbox::seeded(&ids);
    let m = sb.path("m.csv");
    write_csv(&m, &ids, &[]);
    let child = sb
        .apply("m.csv")
        .args(["--rate", "100", "--concurrency", "2"])
        .report("r.csv")
        .command()
        .stderr(Stdio::piped())
        .spawn_guarded();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.state().stats().patches < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Rewrite in place (same inode): every row now asks for another name.
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace(",pbx-", ",EDITED-");
    std::fs::write(&m, text).unwrap();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed while the run"),
        "{}",
        stderr(&out)
    );
    let names_edited = sb
        .state()
        .snapshot()
        .values()
        .filter(|f| f.name.starts_with("EDITED"))
        .count();
    assert_eq!(
        names_edited, 0,
        "no value from the rewritten file was applied"
    );
    assert!(
        sb.state().stats().patches < 1000,
        "it stopped, not ran to the end"
    );
    // And --resume with the rewritten file is refused: its rows are not the report's.
    let out = sb.apply("m.csv").args(["--resume"]).report("r.csv").run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
}

#[test]
fn kill_9_at_a_dozen_moments_in_a_chain_keeps_the_undo_file_exact() {
    // Kills land anywhere: before the report exists, mid-journal-append, between a PATCH
    // and its report line, mid-rewrite on resume. After the chain, the report holds every
    // row once, `updated` with its true `before`, and each gateway got one PATCH. Five
    // gateways refuse every PATCH (500): journaled before each try, they must still end
    // plain `failed` (the read shows they never moved), not "possibly written".
    let ids = ids(3000, 75);
    let refusing: Vec<uuid::Uuid> = ids.iter().step_by(600).copied().collect();
    let config = SandboxConfig {
        write_limit: 0,
        failing_ids: refusing.clone(),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    let start = sb.state().snapshot();
    write_csv(&sb.path("m.csv"), &ids, &[]);
    sb.write("c.yaml", "max_attempts: 2\n");
    let args = [
        "apply", "m.csv", "--yes", "--resume", "--rate", "1000", "--config", "c.yaml", "--report",
        "r.csv",
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..12 {
        let mut child = sb.cmd().args(args).stderr(Stdio::null()).spawn_guarded();
        std::thread::sleep(Duration::from_millis(rng.u64(20..400)));
        let _ = child.kill();
        child.wait().unwrap();
    }
    let out = run(sb.cmd().args(args));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 3000);
    let starting = starting_state(&ids);
    for r in report.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(r.before.as_ref(), starting.get(&id), "{r:?}");
        if refusing.contains(&id) {
            assert_eq!(r.status, Status::Failed, "{r:?}");
            assert_eq!(r.error_code.as_str(), "http_500", "{r:?}");
        } else {
            assert_eq!(r.status, Status::Updated, "{r:?}");
        }
    }
    for id in &ids {
        let want = u32::from(!refusing.contains(id));
        assert_eq!(sb.state().patch_count(id), want, "{id}");
    }
    assert!(!sb.path("r.csv.journal").exists(), "every write settled");
    roll_back_and_check(&sb, "r.csv", &start);
}

#[test]
fn a_lost_answer_on_the_last_attempt_is_read_once_more_and_counted() {
    // One attempt a request: the PATCH lands but its answer is lost, and the read that
    // would settle it fails too. The row is `write_unknown`, and counts every request.
    let ids = ids(3, 72);
    let sb = Sandbox::seeded(&ids);
    let (proxy, _) = lossy_proxy(&sb, &ids[..1], true);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    sb.write("c.yaml", "max_attempts: 1\n");
    let out = run(via(&proxy, &sb).args([
        "apply", "m.csv", "--yes", "--config", "c.yaml", "--report", "r.csv",
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = sb.report("r.csv");
    let lost = report
        .values()
        .find(|r| r.id == ids[0].to_string())
        .unwrap();
    assert_eq!(lost.error_code.as_str(), "write_unknown", "{lost:?}");
    assert!(
        lost.error.contains("reading the gateway back failed too"),
        "{lost:?}"
    );
    // The first read, the fresh read (none where the slot came within the first read's
    // round trip), the PATCH, the settling read.
    assert!((3..=4).contains(&lost.attempts), "{lost:?}");
    assert_eq!(sb.state().patch_count(&ids[0]), 1);
}
