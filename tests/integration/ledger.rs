//! The report as a ledger: kill -9 and resume, SIGINT, the report lock, the error limit,
//! and the manifest fingerprint.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sipgw_bulk::report::read_report;
use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::support::*;

fn wait_for(path: &std::path::Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the report holds more than `lines` lines (header included), or the run
/// ended, so a signal lands after real progress however slow the machine is.
fn wait_for_lines(child: &mut std::process::Child, path: &std::path::Path, lines: usize) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let n = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
        if n > lines || matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_9_at_several_moments_then_resume_loses_nothing_and_patches_nothing_twice() {
    let ids = ids(5000, 40);
    let config = SandboxConfig {
        write_limit: 0,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let args = [
        "apply", "m.csv", "--yes", "--resume", "--rate", "1500", "--report", "r.csv",
    ];
    let mut updated_before_a_kill = BTreeSet::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..3 {
        let before = std::fs::read_to_string(sb.path("r.csv")).map_or(0, |t| t.lines().count());
        let mut child = sb.cmd().args(args).stderr(Stdio::null()).spawn_guarded();
        wait_for_lines(&mut child, &sb.path("r.csv"), before + 50);
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        if sb.path("r.csv").exists() {
            for r in read_report(&sb.path("r.csv")).unwrap() {
                if r.status == Status::Updated {
                    updated_before_a_kill.insert(r.id);
                }
            }
        }
        eprintln!(
            "round {round}: {} rows updated so far",
            updated_before_a_kill.len()
        );
    }
    let out = run(sb.cmd().args(args));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let report = sb.report("r.csv");
    assert_eq!(report.len(), 5000, "every row exactly once");
    // Every row needed a change, so every row is `updated` with the sandbox's starting
    // values as `before`, even one whose report line a kill lost after its PATCH (its
    // before-value comes back from the journal): the report stays a complete undo file.
    let start = crate::support::starting_state(&ids);
    for r in report.values() {
        assert_eq!(r.status, Status::Updated, "line {}", r.row);
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(r.before.as_ref(), Some(&start[&id]), "line {}", r.row);
    }
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert!(
        !updated_before_a_kill.is_empty(),
        "the kills came after some progress"
    );
    // A row updated before a kill is never written again, and a row PATCHed while the kill
    // landed is read back as already right: every gateway got exactly one PATCH.
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1, "{id}");
    }
}

#[test]
fn sigint_mid_run_exits_4_with_a_complete_report_and_resume_finishes() {
    let ids = ids(600, 41);
    let sb = Sandbox::with_manifest(&ids);
    // 600 writes at 100/s take six seconds; the signal comes once ten rows are done.
    let mut child = sb
        .apply("m.csv")
        .args(["--rate", "100"])
        .report("r.csv")
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    wait_for_lines(&mut child, &sb.path("r.csv"), 10);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--resume"),
        "prints the resume command: {}",
        stderr(&out)
    );

    let report = sb.report("r.csv");
    assert_eq!(report.len(), 600, "the report is complete");
    let skipped = count(&report, Status::Skipped);
    let updated = count(&report, Status::Updated);
    assert!(
        skipped > 0 && updated > 0,
        "updated {updated}, skipped {skipped}"
    );
    assert_eq!(updated + skipped, 600);
    assert!(
        report
            .values()
            .all(|r| r.status != Status::Skipped || r.error_code.as_str() == "interrupted")
    );

    let out = sb
        .apply("m.csv")
        .args(["--resume", "--rate", "1000"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = crate::support::report(&sb.path("r.csv"));
    assert_eq!(report.len(), 600);
    assert!(report.values().all(|r| r.status == Status::Updated));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert_eq!(sb.state().stats().patches_applied, 600);
}

#[test]
fn a_second_run_on_the_same_report_exits_5_and_sends_nothing() {
    let ids = ids(100, 42);
    let busy = Sandbox::seeded(&ids);
    let idle = Sandbox::seeded(&ids);
    write_csv(&busy.path("m.csv"), &ids, &[]);
    let report = busy.path("shared.csv");
    let mut first = busy
        .cmd()
        .args(["apply", "m.csv", "--yes", "--rate", "10", "--report"])
        .arg(&report)
        .stderr(Stdio::null())
        .spawn_guarded();
    wait_for(&report, Duration::from_secs(10));
    let started = Instant::now();
    let out = run(idle
        .cmd()
        .args(["apply", "--yes", "--resume", "--report"])
        .arg(&report)
        .arg(busy.path("m.csv")));
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("another run"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it fails at once"
    );
    assert_eq!(idle.state().stats().requests, 0);
}

#[test]
fn max_errors_stops_the_job_with_exit_3_and_skips_the_rest() {
    let ids = ids(200, 43);
    let config = SandboxConfig {
        failing_ids: ids.iter().step_by(4).copied().collect(),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    sb.write("c.yaml", "max_attempts: 2\n");
    let out = sb
        .apply("m.csv")
        .args([
            "--config",
            "c.yaml",
            "--max-errors",
            "5",
            "--concurrency",
            "4",
        ])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 200);
    let failed = count(&report, Status::Failed);
    let skipped = count(&report, Status::Skipped);
    // Five failures stop it; the rows already under way (at most --concurrency, 4) may
    // add to them.
    assert!((5..=8).contains(&failed), "failed {failed}");
    assert!(skipped > 100, "skipped {skipped}");
    assert!(
        report
            .values()
            .all(|r| r.status != Status::Skipped || r.error_code.as_str() == "max_errors")
    );
}

#[test]
fn resume_with_an_edited_manifest_is_refused() {
    let ids = ids(20, 44);
    let config = SandboxConfig {
        failing_ids: vec![ids[0]],
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    write_csv(&sb.path("m.csv"), &ids[..10], &[]);
    sb.write("c.yaml", "max_attempts: 1\n");
    // Cut off by its error budget (exit 3): a run that finished is never continued.
    let out = sb
        .apply("m.csv")
        .args(["--config", "c.yaml", "--max-errors", "1"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let requests = sb.state().stats().requests;

    write_csv(&sb.path("m.csv"), &ids, &[]);
    let out = sb.apply("m.csv").args(["--resume"]).report("r.csv").run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another manifest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.state().stats().requests, requests, "nothing sent");
    // Without --resume, an existing report is never overwritten.
    let out = sb.apply("m.csv").report("r.csv").run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(report(&sb.path("r.csv")).len(), 10);
    assert!(!sb.path("r.2.csv").exists());
}

#[test]
fn with_a_lock_timeout_a_second_run_waits_for_the_first_then_finds_it_done() {
    let ids = ids(30, 45);
    let sb = Sandbox::with_manifest(&ids);
    let mut first = sb
        .apply("m.csv")
        .args(["--rate", "15"])
        .report("r.csv")
        .command()
        .stderr(Stdio::null())
        .spawn_guarded();
    wait_for(&sb.path("r.csv"), Duration::from_secs(10));
    let out = sb
        .apply("m.csv")
        .args(["--resume", "--lock-timeout", "60"])
        .report("r.csv")
        .run();
    assert!(first.wait().unwrap().success());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(report(&sb.path("r.csv")).len(), 30);
    // The first run finished: the second read every gateway into a report of its own.
    let second = sb.report("r.2.csv");
    assert_eq!(second.len(), 30);
    assert!(second.values().all(|r| r.status == Status::Unchanged));
    for id in &ids {
        assert_eq!(
            sb.state().patch_count(id),
            1,
            "the second run wrote nothing again"
        );
    }
}

/// The run lock keys on what is written to (the project and the set of ids), not on how
/// the space, the manifest or the shard is spelled: a second run of the same gateways
/// under another report is refused naming the first run's report. It lives in this user's
/// state directory (here `$SIPGW_BULK_STATE_DIR`), which must be a 0700 directory of this
/// user's, and no lock file outlives its run.
#[test]
fn a_second_run_of_the_same_gateways_is_refused_however_it_is_spelled() {
    use std::os::unix::fs::PermissionsExt;
    let ids = ids(60, 46);
    let sb = Sandbox::with_manifest(&ids);
    // The same rows, in another order, as YAML.
    let mut yaml = String::from("gateways:\n");
    for id in ids.iter().rev() {
        yaml.push_str(&format!("  - id: {id}\n    name: other\n"));
    }
    sb.write("m.yaml", yaml);
    let mut first = sb
        .apply("m.csv")
        .args(["--rate", "5"])
        .report("first.csv")
        .command()
        .stderr(Stdio::null())
        .spawn_guarded();
    wait_for(&sb.path("first.csv"), Duration::from_secs(10));
    let localhost = sb.base_url().replace("127.0.0.1", "localhost") + "/";
    let spellings: [&[&str]; 3] = [
        &["apply", "m.yaml", "--yes", "--report", "second.csv"],
        &[
            "apply",
            "m.csv",
            "--yes",
            "--shard",
            "0/1",
            "--report",
            "third.csv",
        ],
        &["apply", "m.csv", "--yes", "--report", "fourth.csv"],
    ];
    for (i, args) in spellings.iter().enumerate() {
        let mut cmd = sb.cmd();
        if i == 2 {
            cmd.env("SIGNALWIRE_BASE_URL", &localhost);
        }
        let second = run(cmd.args(*args));
        let err = stderr(&second);
        assert_eq!(code(&second), 5, "{args:?}: {err}");
        assert!(
            err.contains("another run on this machine") && err.contains("first.csv"),
            "{err}"
        );
    }
    let state = sb.path("state");
    let locks = || {
        std::fs::read_dir(&state)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("lock".as_ref()))
            .count()
    };
    assert_eq!(locks(), 1, "the lock is in the state directory");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let _ = first.kill();
    let _ = first.wait();
    // A run that ends takes its lock file with it.
    let out = sb
        .apply("m.csv")
        .args(["--rate", "1000"])
        .report("fifth.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(locks(), 0, "no lock file outlives its run");
    let leftovers: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    // Only the run killed with SIGKILL left one (the next run on that report removes it).
    assert_eq!(leftovers, ["first.csv.lock"]);

    // A lock directory others can enter, or a file in its place: refused, nothing sent.
    for shared in ["dir", "file"] {
        let place = sb.path(&format!("shared-{shared}"));
        if shared == "dir" {
            std::fs::create_dir(&place).unwrap();
            std::fs::set_permissions(&place, std::fs::Permissions::from_mode(0o770)).unwrap();
        } else {
            std::fs::write(&place, "").unwrap();
        }
        let before = sb.state().stats().patches;
        let out = run(sb.cmd().env("SIPGW_BULK_STATE_DIR", &place).args([
            "apply",
            "m.csv",
            "--yes",
            "--report",
            &format!("{shared}.csv"),
        ]));
        assert_eq!(code(&out), 64, "{shared}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("lock directory"),
            "{shared}: {}",
            stderr(&out)
        );
        assert_eq!(sb.state().stats().patches, before);
    }

    // By default: the home directory of the user database, not $HOME.
    let home = tempfile::tempdir().unwrap();
    let out = run(sb
        .cmd()
        .env_remove("SIPGW_BULK_STATE_DIR")
        .env("HOME", home.path())
        .args(["apply", "m.csv", "--yes", "--report", "sixth.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!home.path().join(".local").exists(), "$HOME was not used");
}
