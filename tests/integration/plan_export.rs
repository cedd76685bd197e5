//! Plan output, export, rollback, guards and read-back, against the sandbox.

use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::support::*;

/// Compares with a committed snapshot; `UPDATE_SNAPSHOTS=1` rewrites it.
fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
    );
}

#[test]
fn plan_prints_a_reviewable_diff_in_manifest_order_and_matches_the_snapshot() {
    let ids = ids(4, 30);
    let sb = Sandbox::seeded(&ids[..3]);
    let start = sb.state().snapshot();
    // Row 3 asks for what gateway 1 already has: unchanged. Row 4 only reorders codecs.
    let g1 = &start[&ids[1]];
    sb.write(
        "m.csv",
        format!(
            "id,name,uri,codecs\n\
             {},lobby,sip:lobby.example.com,OPUS;PCMU\n\
             {},{},{},PCMU;PCMA\n\
             {},,,PCMA;PCMU\n\
             {},,,\n\
             not-an-id,,,\n",
            ids[0], ids[1], g1.name, g1.uri, ids[2], ids[3]
        ),
    );
    let out = sb
        .plan("m.csv")
        .report("p.csv")
        .args(["--detailed-exitcode"])
        .run();
    assert_eq!(
        code(&out),
        1,
        "errors win over pending changes: {}",
        stderr(&out)
    );
    let shown = stdout(&out)
        .replace(&ids[0].to_string(), "ID0")
        .replace(&ids[1].to_string(), "ID1")
        .replace(&ids[2].to_string(), "ID2")
        .replace(&ids[3].to_string(), "ID3");
    assert_snapshot("plan.txt", &shown);
    assert_eq!(sb.state().stats().patches, 0);

    // The same plan for machines: one JSON object a line, the summary last.
    let out = sb
        .plan("m.csv")
        .report("p2.csv")
        .args(["--diff-format", "json", "--show-unchanged"])
        .run();
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["changes"]["uri"]["new"], "sip:lobby.example.com");
    assert_eq!(lines[1]["status"], "unchanged");
    assert_eq!(
        lines[2]["changes"]["codecs"]["old"],
        serde_json::json!(["PCMU", "PCMA"])
    );
    assert_eq!(lines[5]["plan"]["would_update"], 2);
    assert_eq!(lines[5]["plan"]["not_found"], 1);
}

#[test]
fn plan_of_1000_rows_sends_no_patch_and_its_exit_code_tells_pending_from_done() {
    let ids = ids(1000, 31);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb
        .plan("m.csv")
        .report("p1.csv")
        .args(["--detailed-exitcode"])
        .run();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("Plan: 1000 to update, 0 unchanged.\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(sb.state().stats().patches, 0);
    let out = sb
        .apply("m.csv")
        .args(["--rate", "1200"])
        .report("a.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb
        .plan("m.csv")
        .report("p2.csv")
        .args(["--detailed-exitcode"])
        .run();
    assert_eq!(code(&out), 0, "nothing to do: {}", stderr(&out));
    assert_eq!(sb.state().stats().patches, 1000);
}

#[test]
fn export_gives_the_same_set_at_any_page_size_and_plans_as_unchanged() {
    let ids = ids(2500, 32);
    let sb = Sandbox::seeded(&ids);
    let out = run(sb
        .cmd()
        .args(["export", "--page-size", "50", "-o", "small.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(sb
        .cmd()
        .args(["export", "--page-size", "1000", "-o", "big.yaml"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().stats().lists, 50 + 3);

    let small = sb.read("small.csv");
    assert_eq!(small.lines().count(), 2501);
    // Both files plan as "nothing to change", so both hold every gateway as it is.
    for file in ["small.csv", "big.yaml"] {
        let report = format!("{file}.plan.csv");
        let out = sb
            .plan(file)
            .report(&report)
            .args(["--detailed-exitcode"])
            .run();
        assert_eq!(code(&out), 0, "{file}: {}", stderr(&out));
        let r = sb.report(&report);
        assert_eq!(r.len(), 2500);
        assert!(r.values().all(|row| row.status == Status::Unchanged));
        let mut seen: Vec<String> = r.values().map(|row| row.id.clone()).collect();
        seen.sort();
        let mut want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        want.sort();
        assert_eq!(seen, want, "{file}");
    }
}

#[test]
fn a_next_link_to_another_host_is_refused_and_that_host_hears_nothing() {
    let foreign = Sandbox::seeded(&ids(5, 33));
    let config = SandboxConfig {
        next_link_origin: Some(foreign.base_url()),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids(30, 34));
    let out = run(sb
        .cmd()
        .args(["export", "--page-size", "10", "-o", "x.csv"]));
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
    assert_eq!(foreign.state().stats().requests, 0);
}

#[test]
fn apply_then_rollback_then_apply_returns_the_sandbox_to_its_start() {
    let ids = ids(200, 35);
    let sb = Sandbox::with_manifest(&ids);
    let start = sb.state().snapshot();
    let out = sb.apply("m.csv").report("run.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_ne!(sb.state().snapshot(), start);
    for (format, file) in [("csv", "undo.csv"), ("yaml", "undo.yaml")] {
        let out = run(sb
            .cmd()
            .args(["rollback", "run.csv", "-o", file, "--format", format]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let out = sb.apply("undo.yaml").report("undo-run.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), start);
    // The CSV form asks for the same: nothing left to change.
    let out = sb
        .plan("undo.csv")
        .report("check.csv")
        .args(["--detailed-exitcode"])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn max_changes_below_the_plan_writes_nothing_and_limit_writes_exactly_n() {
    let ids = ids(60, 36);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb
        .apply("m.csv")
        .args(["--max-changes", "59"])
        .report("r1.csv")
        .run();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than --max-changes 59"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.state().stats().patches, 0);

    let out = sb
        .apply("m.csv")
        .args(["--limit", "10"])
        .report("r2.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().stats().patches_applied, 10);
    let report = sb.report("r2.csv");
    assert_eq!(count(&report, Status::Updated), 10);
    assert_eq!(count(&report, Status::Skipped), 50);
    assert!(report.values().all(|r| r.status != Status::Skipped
        || (r.error_code.as_str() == "limit" && r.error.contains("--limit 10 reached"))));
    // The first ten rows in the manifest's order (every row needs a change), whichever
    // reads came back first (a black-box tester saw rows 5 and 6 of 2-6 written).
    let updated: Vec<u64> = report
        .values()
        .filter(|r| r.status == Status::Updated)
        .map(|r| r.row)
        .collect();
    let first: Vec<u64> = report.keys().copied().take(10).collect();
    assert_eq!(updated, first);

    let out = sb
        .apply("m.csv")
        .args(["--max-changes", "50"])
        .report("r3.csv")
        .run();
    assert_eq!(code(&out), 0, "50 changes are within 50: {}", stderr(&out));
    assert_eq!(sb.state().stats().patches_applied, 60);
}

#[test]
fn a_patch_answer_that_differs_from_the_request_is_a_mismatch() {
    let ids = ids(10, 37);
    let config = SandboxConfig {
        mismatch_ids: ids[..3].to_vec(),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb.apply("m.csv").report("r.csv").run();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = sb.report("r.csv");
    let mismatched: Vec<_> = report
        .values()
        .filter(|r| r.status == Status::Mismatch)
        .collect();
    assert_eq!(mismatched.len(), 3);
    for r in mismatched {
        assert!(r.error.contains("codecs"), "{}", r.error);
        assert_ne!(
            r.after.as_ref().map(|a| &a.codecs),
            Some(&desired(0).codecs)
        );
    }
    assert_eq!(count(&report, Status::Updated), 7);
}

#[test]
fn an_export_that_cannot_be_written_fails_even_when_it_is_small() {
    // Five gateways fit in the write buffer: only the final flush meets the full disk.
    let ids = ids(5, 140);
    let sb = Sandbox::seeded(&ids);
    let out = run(sb.cmd().args(["export", "-o", "/dev/full"]));
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
}

/// A plan leaves only its report beside it (no journal: it writes nothing; no lock), and
/// a second plan on the same report is refused with advice a plan can take.
#[test]
fn a_plan_leaves_no_side_file_and_a_second_plan_is_told_to_name_another_report() {
    let ids = ids(4, 61);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb.plan("m.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut beside: Vec<String> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("m.plan.csv"))
        .collect();
    beside.sort();
    assert_eq!(beside, ["m.plan.csv"]);

    let again = sb.plan("m.csv").run();
    assert_eq!(code(&again), 64, "{}", stderr(&again));
    let err = stderr(&again);
    assert!(err.contains("choose another --report"), "{err}");
    assert!(!err.contains("--resume"), "plan has no --resume: {err}");
    let beside = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("m.plan.csv.")
        })
        .count();
    assert_eq!(beside, 0, "a refused plan leaves nothing beside the report");
}
