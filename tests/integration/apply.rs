//! Applying manifests end to end: the sandbox ends in the desired state, the report holds
//! every row once, and a second run writes nothing.

use sipgw_bulk::status::Status;

use crate::support::*;

#[test]
fn csv_manifest_of_1000_rows_reaches_the_desired_state_and_a_rerun_writes_nothing() {
    let ids = ids(1000, 1);
    let sb = Sandbox::seeded(&ids);
    let manifest = sb.path("gateways.csv");
    write_csv(&manifest, &ids, &[]);

    let out = sb
        .apply("gateways.csv")
        .args(["--rate", "1200", "--read-mode", "get"])
        .report("run1.csv")
        .summary_json("run1.json")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let report = sb.report("run1.csv");
    assert_eq!(report.len(), 1000);
    assert_eq!(
        report.keys().copied().collect::<Vec<_>>(),
        (2..=1001).collect::<Vec<u64>>()
    );
    assert!(report.values().all(|r| r.status == Status::Updated));
    let first = &report[&2];
    assert_eq!(first.after.as_ref(), Some(&desired(0)));
    assert_eq!(
        first
            .before
            .as_ref()
            .map(|b| b.name.starts_with("sandbox-gw-")),
        Some(true)
    );
    let summary = sb.summary("run1.json");
    assert_eq!(summary["counts"]["updated"], 1000);
    assert_eq!(summary["writes"], 1000);
    // A GET that finds the difference and the PATCH; a fresh GET the PATCH is built from
    // between them where the write slot came later than that GET's round trip (and again,
    // counted as a retry, where that read aged before the write could leave).
    let stats = sb.state().stats();
    let fresh_reads = stats.gets - 1000;
    let again = summary["retries"].as_u64().unwrap();
    assert!(fresh_reads <= 1000 + again, "{stats:?}");
    assert_eq!(summary["requests"], 2000 + fresh_reads);

    assert_eq!(stats.patches_applied, 1000);
    assert_eq!(
        stats.partial_patches, 0,
        "a PATCH body lacked one of the five fields"
    );

    // The same manifest again (default read mode, auto: 1,000 rows are read in pages):
    // every row unchanged, not one PATCH, and not one GET: the whole check is one page.
    let out = sb.apply("gateways.csv").report("run2.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        report_statuses(&sb.path("run2.csv"))
            .iter()
            .all(|s| *s == Status::Unchanged)
    );
    let stats = sb.state().stats();
    assert_eq!(stats.patches, 1000);
    // Run 1's GETs and run 2's one page.
    assert_eq!(
        (stats.lists, stats.gets),
        (1, 1000 + fresh_reads),
        "run 2 read one page"
    );
}

fn report_statuses(path: &std::path::Path) -> Vec<Status> {
    report(path).values().map(|r| r.status).collect()
}

#[test]
fn yaml_manifest_with_defaults_of_1000_rows_reaches_the_desired_state() {
    let ids = ids(1000, 2);
    let sb = Sandbox::seeded(&ids);
    // Defaults give every row its ciphers and encryption; odd rows set their own codecs.
    let mut yaml = String::from(
        "defaults:\n  encryption: required\n  ciphers: [AEAD_AES_256_GCM_8]\n  codecs: [OPUS, PCMU]\ngateways:\n",
    );
    for (i, id) in ids.iter().enumerate() {
        yaml.push_str(&format!("  - id: {id}\n    uri: sip:pbx{i}.example.com\n"));
        if i % 2 == 1 {
            yaml.push_str("    codecs: [G722, PCMA]\n");
        }
    }
    sb.write("gateways.yaml", yaml);

    let out = sb
        .apply("gateways.yaml")
        .args(["--rate", "1200", "--report-format", "jsonl"])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let state = sb.state().snapshot();
    for (i, id) in ids.iter().enumerate() {
        let g = &state[id];
        assert_eq!(g.uri, format!("sip:pbx{i}.example.com"));
        assert_eq!(g.encryption.as_ref().map(|e| e.as_str()), Some("required"));
        let codecs: Vec<&str> = g.codecs.iter().map(|c| c.as_str()).collect();
        let want = if i % 2 == 1 {
            ["G722", "PCMA"]
        } else {
            ["OPUS", "PCMU"]
        };
        assert_eq!(codecs, want, "row {i}");
        // Fields the manifest leaves open keep the sandbox's values.
        assert!(g.name.starts_with("sandbox-gw-"));
    }
    // The default report name follows the manifest and the format.
    let report = sb.report("gateways.report.jsonl");
    assert_eq!(report.len(), 1000);
    assert!(report.values().all(|r| r.status == Status::Updated));
}

#[test]
fn plan_and_dry_run_send_no_write() {
    let ids = ids(50, 3);
    let sb = Sandbox::with_manifest(&ids);
    let before = sb.state().snapshot();

    let out = sb.plan("m.csv").report("plan.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb
        .plan("m.csv")
        .report("plan2.csv")
        .args(["--detailed-exitcode"])
        .run();
    assert_eq!(code(&out), 2, "changes pending: {}", stderr(&out));
    let out = run(sb
        .cmd()
        .args(["apply", "m.csv", "--dry-run", "--report", "dry.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    assert_eq!(sb.state().stats().patches, 0);
    assert_eq!(sb.state().snapshot(), before);
    let plan = sb.report("plan.csv");
    assert!(plan.values().all(|r| r.status == Status::WouldUpdate));
    assert_eq!(plan[&2].after.as_ref(), Some(&desired(0)));
}

#[test]
fn apply_without_a_terminal_needs_yes_and_sends_nothing() {
    let ids = ids(5, 4);
    let sb = Sandbox::with_manifest(&ids);
    let out = run(sb
        .cmd()
        .args(["apply", "m.csv"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(sb.state().stats().requests, 0);
    assert!(!sb.path("m.report.csv").exists());
}

#[test]
fn the_sandbox_binary_prints_its_env_and_serves_the_shipped_example() {
    use std::io::BufRead;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateways.csv");
    let mut server = std::process::Command::new(BIN)
        .args(["sandbox", "--port", "0", "--seed-from", example])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let mut env = Vec::new();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let (k, v) = line.split_once('=').unwrap();
        env.push((k.to_owned(), v.to_owned()));
    }
    assert_eq!(
        env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [
            "SIGNALWIRE_BASE_URL",
            "SIGNALWIRE_PROJECT_ID",
            "SIGNALWIRE_API_TOKEN"
        ]
    );
    let token = env[2].1.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = run(std::process::Command::new(BIN)
        .current_dir(dir.path())
        .envs(env)
        .args(["apply", example, "--yes", "--report", "r.csv"]));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = report(&dir.path().join("r.csv"));
    assert_eq!(report.len(), 25);
    assert!(report.values().all(|r| r.status == Status::Updated));
    // The token never reaches the log or the report.
    let text = std::fs::read_to_string(dir.path().join("r.csv")).unwrap();
    assert!(!text.contains(&token) && !stderr(&out).contains(&token));
}

#[test]
fn a_manifest_on_stdin_applies_with_an_explicit_format() {
    use std::io::Write;
    let ids = ids(30, 5);
    let sb = Sandbox::with_manifest(&ids);
    let text = std::fs::read(sb.path("m.csv")).unwrap();
    let mut child = sb
        .cmd()
        .args([
            "apply", "-", "--format", "csv", "--yes", "--report", "r.csv",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_guarded();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert_eq!(report(&sb.path("r.csv")).len(), 30);
    // Without a format, stdin cannot be read.
    let out = run(sb
        .cmd()
        .args(["validate", "-"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
}

#[test]
fn plan_then_apply_write_the_default_plan_and_report_beside_the_manifest() {
    let ids = ids(40, 60);
    let sb = Sandbox::seeded(&ids);
    write_csv(&sb.path("gateways.csv"), &ids, &[]);
    let out = sb.plan("gateways.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(sb.path("gateways.plan.csv").exists());
    let out = sb.apply("gateways.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(sb.path("gateways.report.csv").exists());
    assert_eq!(sb.state().snapshot(), expected(&ids));
}

#[test]
fn a_stopped_plan_suggests_the_plan_again_never_an_apply() {
    let ids = ids(20, 61);
    let sb = Sandbox::with_manifest(&ids);
    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_API_TOKEN", "wrong")
        .args(["plan", "m.csv"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sipgw-bulk plan m.csv"), "{err}");
    assert!(!err.contains("sipgw-bulk apply"), "{err}");
}

#[test]
fn the_sandbox_binary_announces_its_budget_and_spends_some_as_production() {
    use std::io::{BufRead, Read, Write};
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateways.csv");
    let mut server = std::process::Command::new(BIN)
        .args(["sandbox", "--port", "0", "--seed-from", example])
        .args([
            "--write-limit",
            "20",
            "--announce-limit",
            "--background-writes",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let env: Vec<(String, String)> = (0..3)
        .map(|_| {
            let line = lines.next().unwrap().unwrap();
            let (k, v) = line.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let base = env[0].1.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = run(std::process::Command::new(BIN)
        .current_dir(dir.path())
        .envs(env)
        .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
        .args([
            "apply",
            example,
            "--yes",
            "--report",
            "r.csv",
            "--summary-json",
            "s.json",
        ]));
    let stats = {
        let addr = base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /__sandbox/stats HTTP/1.0\r\nHost: {addr}\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = summary_json(&dir.path().join("s.json"));
    let b = &s["write_budget"];
    // --announce-limit: a 10 s window of 20 x 10 writes, half kept for others.
    assert_eq!(b["source"], "announced", "{b}");
    assert_eq!(
        (b["limit"].as_u64(), b["reserve"].as_u64()),
        (Some(200), Some(100)),
        "{b}"
    );
    assert_eq!(b["window_secs"], 10.0, "{b}");
    assert!(stats["production_writes"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["writes_throttled"], 0, "{stats}");
    assert!(
        stderr(&out).contains("write budget: the space announces 200 per"),
        "{}",
        stderr(&out)
    );
}

/// A scheduled apply that fixed drift says so to its wrapper with --detailed-exitcode:
/// 2 when it made changes, 0 when there was nothing to do; without the flag both are 0.
#[test]
fn apply_detailed_exitcode_is_2_when_changes_were_made_and_0_when_none() {
    let ids = ids(6, 41);
    let sb = Sandbox::with_manifest(&ids);
    let apply = |report: &str, detailed: bool| {
        let mut cmd = sb.cmd();
        cmd.args(["apply", "m.csv", "--yes", "--report", report]);
        if detailed {
            cmd.arg("--detailed-exitcode");
        }
        let out = run(&mut cmd);
        (code(&out), stderr(&out))
    };
    let (first, err) = apply("r1.csv", true);
    assert_eq!(first, 2, "changes made: {err}");
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let (again, err) = apply("r2.csv", true);
    assert_eq!(again, 0, "nothing left to change: {err}");
    // Drift, fixed by a run without the flag: 0.
    assert!(
        sb.state()
            .edit(&ids[0], sipgw_bulk::sandbox::starting_fields(1))
    );
    let (plain, err) = apply("r3.csv", false);
    assert_eq!(plain, 0, "{err}");
    assert_eq!(sb.state().snapshot(), expected(&ids));
}
