//! Lose nothing at the edges: an edit someone else makes while a row waits for its write
//! slot survives; a resumed row keeps the before-value of its first write; a row that may
//! have been written stays in the rollback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use futures_util::FutureExt;

use sipgw_bulk::model::{Codec, GatewayFields};
use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::peer::{Peer, Seen, forward, json};
use crate::support::*;

/// A manifest that sets only `uri`: the other four fields are someone else's.
fn uri_manifest(path: &std::path::Path, ids: &[uuid::Uuid]) {
    let mut text = String::from("id,uri\n");
    for (i, id) in ids.iter().enumerate() {
        text.push_str(&format!("{id},sip:moved{i}.example.com\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// Starts `args`, waits until the sandbox has answered `gets` GETs more than it had (every
/// row read once, the rows now waiting for their write slots), renames every gateway out
/// of band, and waits for the run to end.
fn edit_names_while_rows_wait(sb: &Sandbox, ids: &[uuid::Uuid], args: &[&str]) -> i32 {
    let gets = sb.state().stats().gets + ids.len() as u64;
    let child = sb
        .cmd()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn_guarded();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.state().stats().gets < gets && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for id in ids {
        let mut fields = sb.state().snapshot()[id].clone();
        fields.name = format!("renamed-{id}");
        assert!(sb.state().edit(id, fields));
    }
    let out = child.wait_with_output();
    code(&out)
}

#[test]
fn an_edit_made_while_rows_wait_for_their_write_slot_survives_and_a_plan_s_row_is_a_conflict() {
    // 12 rows at 4 writes a second: the last waits about 3 s for its slot.
    let ids = ids(12, 120);
    let sb = Sandbox::seeded(&ids);
    uri_manifest(&sb.path("m.csv"), &ids);
    let args = [
        "apply",
        "m.csv",
        "--yes",
        "--rate",
        "4",
        "--concurrency",
        "12",
        "--read-mode",
        "get",
        "--report",
        "r.csv",
    ];
    assert_eq!(edit_names_while_rows_wait(&sb, &ids, &args), 0);
    let now = sb.state().snapshot();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(now[id].uri, format!("sip:moved{i}.example.com"));
    }
    // The window left is one round trip (the fresh read, then the PATCH): the first row's
    // slot comes at once, so it may have been read just before the edit. Every row that
    // waited keeps it; before the fix, every row written after the edit reverted it.
    assert!(
        kept_renames(&sb, &ids) >= 10,
        "{} of 12",
        kept_renames(&sb, &ids)
    );
    // The report's before is the gateway as it was just before its write.
    let renamed_before = sb
        .report("r.csv")
        .values()
        .filter(|r| {
            r.before
                .as_ref()
                .is_some_and(|b| b.name.starts_with("renamed-"))
        })
        .count();
    assert!(renamed_before >= 8, "{renamed_before} of 12");

    // A saved plan: the rows that waited find the gateway moved since the review.
    let ids2 = crate::support::ids(12, 121);
    let sb = Sandbox::seeded(&ids2);
    uri_manifest(&sb.path("m.csv"), &ids2);
    let out = sb
        .plan("m.csv")
        .args(["--out", "p.plan"])
        .report("p.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let args = [
        "apply",
        "--plan",
        "p.plan",
        "--yes",
        "--rate",
        "4",
        "--concurrency",
        "12",
        "--read-mode",
        "get",
        "--report",
        "r.csv",
    ];
    assert_eq!(edit_names_while_rows_wait(&sb, &ids2, &args), 1);
    let report = sb.report("r.csv");
    let conflicts = count(&report, Status::Conflict);
    assert!(conflicts >= 8, "{conflicts} of 12: {report:?}");
    assert!(
        kept_renames(&sb, &ids2) >= 10,
        "{} of 12",
        kept_renames(&sb, &ids2)
    );
}

fn kept_renames(sb: &Sandbox, ids: &[uuid::Uuid]) -> usize {
    let now = sb.state().snapshot();
    ids.iter()
        .filter(|id| now[*id].name == format!("renamed-{id}"))
        .count()
}

#[test]
fn a_resumed_mismatch_row_keeps_the_before_of_its_first_write_and_rolls_back() {
    let ids = ids(20, 122);
    let mismatching: Vec<uuid::Uuid> = ids.iter().step_by(7).copied().collect();
    let config = SandboxConfig {
        mismatch_ids: mismatching.clone(),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    let start = sb.state().snapshot();
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let args = ["apply", "m.csv", "--yes", "--resume", "--report", "r.csv"];
    for _ in 0..2 {
        let out = run(sb.cmd().args(args));
        assert_eq!(code(&out), 1, "{}", stderr(&out));
    }
    let report1 = sb.report("r.csv");
    assert_eq!(report1.len(), 20);
    for r in report1.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(r.before.as_ref(), Some(&start[&id]), "{r:?}");
        let want = if mismatching.contains(&id) {
            Status::Mismatch
        } else {
            Status::Updated
        };
        assert_eq!(r.status, want);
    }
    // The first run finished (exit 1): the second read every row into a report of its
    // own, and its mismatch rows (written again) have what it read as their before: the
    // first run's answer (a mismatch is settled in its own link, which undoes it).
    let report2 = sb.report("r.2.csv");
    assert_eq!(report2.len(), 20);
    for r in report2.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        if mismatching.contains(&id) {
            assert_eq!(r.status, Status::Mismatch, "{r:?}");
            let first = &report1[&r.row];
            assert_eq!(r.before, first.after, "{r:?}");
        } else {
            assert_eq!(r.status, Status::Unchanged, "{r:?}");
        }
    }
    let out = run(sb.cmd().args(["rollback", "r.csv", "-o", "undo.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb.apply("undo.csv").report("undo.report.csv").run();
    assert!([0, 1].contains(&code(&out)), "{}", stderr(&out));
    let now = sb.state().snapshot();
    for id in ids.iter().filter(|id| !mismatching.contains(id)) {
        assert_eq!(now[id], start[id]);
    }
    // The normalising server answers the undo of codecs with its own list again, but every
    // other field is back.
    for id in &mismatching {
        assert_eq!(now[id].uri, start[id].uri);
        assert_eq!(now[id].name, start[id].name);
    }
}

/// A proxy in front of the sandbox that lets each PATCH land in part (codecs replaced by
/// G729) and answers 502: the write may have landed, and the read-back shows neither the
/// old gateway nor the asked-for one.
fn half_landing_proxy(upstream: String) -> Peer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    Peer::start(Arc::new(move |mut seen: Seen| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            if seen.method != Method::PATCH {
                return forward(&client, &upstream, seen).await;
            }
            let mut body: GatewayFields = serde_json::from_slice(&seen.body).unwrap();
            body.codecs = vec![Codec::G729];
            seen.body = serde_json::to_vec(&body).unwrap().into();
            let _ = forward(&client, &upstream, seen).await;
            json(StatusCode::BAD_GATEWAY, serde_json::json!({"errors": []}))
        }
        .boxed()
    }))
}

#[test]
fn a_row_that_may_have_been_written_stays_in_the_rollback_with_its_before() {
    let ids = ids(4, 123);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    let proxy = half_landing_proxy(sb.base_url());
    write_csv(&sb.path("m.csv"), &ids, &[]);
    sb.write("c.yaml", "max_attempts: 3\n");
    let through_proxy = |args: &[&str]| {
        let mut cmd = sb.cmd();
        cmd.env("SIGNALWIRE_BASE_URL", proxy.base_url()).args(args);
        run(&mut cmd)
    };
    let out = through_proxy(&[
        "apply", "m.csv", "--yes", "--config", "c.yaml", "--report", "r.csv",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    for r in sb.report("r.csv").values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Failed, "write_unknown")
        );
        assert_eq!(r.before.as_ref(), Some(&start[&id]), "{r:?}");
        // Bounded: the policy's three attempts, no more.
        assert_eq!(sb.state().patch_count(&id), 3);
        // The first read, three of (fresh read, PATCH), and the read that settles it; the
        // first PATCH is built from the first read where its slot came within that read's
        // round trip, and a read that aged past its round trip before its write could
        // leave is read again (a loaded machine, now and then).
        assert!((7..=9).contains(&r.attempts), "{r:?}");
    }
    let out = run(sb.cmd().args(["rollback", "r.csv"]));
    assert_eq!(
        stdout(&out).lines().count(),
        5,
        "every row: {}",
        stdout(&out)
    );

    // A saved plan's row whose first attempt may have landed is not a conflict: it keeps
    // the plan's before and stays in the rollback.
    let ids = crate::support::ids(3, 124);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    let proxy = half_landing_proxy(sb.base_url());
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let mut cmd = sb.cmd();
    cmd.env("SIGNALWIRE_BASE_URL", proxy.base_url())
        .args(["plan", "m.csv", "--out", "p.plan", "--report", "p.csv"]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut cmd = sb.cmd();
    cmd.env("SIGNALWIRE_BASE_URL", proxy.base_url())
        .args(["apply", "--plan", "p.plan", "--yes", "--report", "r.csv"]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    for r in sb.report("r.csv").values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Failed, "write_unknown"),
            "{r:?}"
        );
        assert_eq!(r.before.as_ref(), Some(&start[&id]), "{r:?}");
        assert_eq!(sb.state().patch_count(&id), 1, "not written again");
    }
}

#[test]
fn a_plan_cut_short_or_edited_is_refused_with_nothing_sent() {
    let ids = ids(30, 125);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb
        .plan("m.csv")
        .args(["--out", "p.plan"])
        .report("p.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = sb.read("p.plan");
    let lines: Vec<&str> = text.lines().collect();
    let cut: String = lines[..12].iter().map(|l| format!("{l}\n")).collect();
    let edited = text.replacen("sip:pbx3.example.com", "sip:evil.example.com", 1);
    let bell = text.replacen("pbx-3", "pbx-\\u0007", 1);
    for (name, plan) in [("cut", cut), ("edited", edited), ("bell", bell)] {
        sb.write("p.plan", &plan);
        let before = sb.state().stats().requests;
        let out = run(sb.cmd().args([
            "apply",
            "--plan",
            "p.plan",
            "--yes",
            "--report",
            &format!("{name}.csv"),
        ]));
        assert_eq!(code(&out), 64, "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("plan again"),
            "{name}: {}",
            stderr(&out)
        );
        assert_eq!(sb.state().stats().requests, before, "{name}: nothing sent");
    }
}

#[test]
fn an_endless_or_device_input_is_refused_at_a_stated_cap() {
    let ids = ids(2, 127);
    let sb = Sandbox::seeded(&ids);
    // A device named as the manifest: refused before a byte is read into a row.
    let out = run(sb.cmd().args(["validate", "/dev/zero", "--format", "csv"]));
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    // A regular file with a line far longer than any row: refused while reading.
    let mut text = format!("id,name\n{},x\n{},", ids[0], ids[1]);
    text.push_str(&"n".repeat(400 * 1024));
    sb.write("long.csv", text);
    let out = sb.plan("long.csv").report("r.csv").run();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains("longer than"), "{}", stderr(&out));
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");
    // An endless config: refused at its cap.
    let out = sb.plan("long.csv").args(["--config", "/dev/zero"]).run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
}

#[test]
fn no_output_clobbers_an_input_and_a_failed_export_keeps_yesterday_s_file() {
    let ids = ids(5, 128);
    let sb = Sandbox::with_manifest(&ids);
    let manifest = std::fs::read(sb.path("m.csv")).unwrap();
    let out = sb.apply("m.csv").report("r.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = std::fs::read(sb.path("r.csv")).unwrap();
    std::os::unix::fs::symlink(sb.path("r.csv"), sb.path("alias.csv")).unwrap();
    for args in [
        &["rollback", "r.csv", "-o", "r.csv"][..],
        &["rollback", "r.csv", "-o", "./alias.csv"],
        &["plan", "m.csv", "--out", "m.csv", "--report", "p.csv"],
        &[
            "plan",
            "m.csv",
            "--report",
            "p.csv",
            "--summary-json",
            "m.csv",
        ],
        &["plan", "m.csv", "--report", "p.csv", "--out", "p.csv"],
        &[
            "apply",
            "m.csv",
            "--yes",
            "--resume",
            "--report",
            "alias.csv",
            "--summary-json",
            "r.csv",
        ],
        &["apply", "m.csv", "--yes", "--report", "m.csv"],
    ] {
        let out = run(sb.cmd().args(args));
        assert_eq!(code(&out), 64, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("names the same file"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read(sb.path("m.csv")).unwrap(),
            manifest,
            "{args:?}"
        );
        assert_eq!(std::fs::read(sb.path("r.csv")).unwrap(), report, "{args:?}");
    }
    // An export refused by the server leaves the file it would have replaced as it was.
    sb.write("export.csv", "yesterday\n");
    let out =
        run(sb
            .cmd()
            .env("SIGNALWIRE_API_TOKEN", "wrong")
            .args(["export", "-o", "export.csv"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(sb.path("export.csv")).unwrap(),
        "yesterday\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sipgw-bulk"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let out = run(sb.cmd().args(["export", "-o", "export.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(sb.path("export.csv"))
            .unwrap()
            .lines()
            .count(),
        6
    );
}

#[test]
fn a_report_deleted_under_a_running_job_stops_it_with_exit_3_and_a_copy_is_left() {
    let ids = ids(40, 129);
    let sb = Sandbox::with_manifest(&ids);
    std::fs::create_dir(sb.path("out")).unwrap();
    let child = sb
        .apply("m.csv")
        .args(["--rate", "10"])
        .report("out/r.csv")
        .command()
        .stderr(std::process::Stdio::piped())
        .spawn_guarded();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.state().stats().patches_applied < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir_all(sb.path("out")).unwrap();
    let out = child.wait_with_output();
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(
        err.contains("out/r.csv") && err.contains("deleted or replaced"),
        "{err}"
    );
    // The directory is gone: the copy is in the working directory, and says so.
    let rescued: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("r.csv.rescued-")
        })
        .collect();
    assert_eq!(rescued.len(), 1, "{err}");
    let name = rescued[0].file_name().to_string_lossy().into_owned();
    assert!(err.contains(&name), "{err}");
    let copy = report(&rescued[0].path());
    let written = sb.state().stats().patches_applied;
    assert!(copy.len() >= 5, "{copy:?}");
    assert!(
        copy.values()
            .filter(|r| r.status == Status::Updated)
            .count() as u64
            <= written,
        "{copy:?}"
    );
}

#[test]
fn a_resume_against_another_space_or_shard_is_refused_with_nothing_sent() {
    let ids = ids(10, 130);
    let config = SandboxConfig {
        failing_ids: vec![ids[3]],
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    let other = Sandbox::seeded(&ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    sb.write("c.yaml", "max_attempts: 1\n");
    // Cut off by its error budget (exit 3): a run that finished would not be continued.
    let args = [
        "apply",
        "m.csv",
        "--yes",
        "--resume",
        "--config",
        "c.yaml",
        "--report",
        "r.csv",
        "--max-errors",
        "1",
    ];
    let out = run(sb.cmd().args(args));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let run_file: serde_json::Value = serde_json::from_str(&sb.read("r.csv.run.json")).unwrap();
    assert_eq!(run_file["manifest_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(run_file["space"], sb.base_url().trim_end_matches('/'));
    // The other space, with this space's credentials and the same report.
    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_BASE_URL", other.base_url())
        .args(args));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was made against"),
        "{}",
        stderr(&out)
    );
    assert_eq!(other.state().stats().requests, 0);
    // Another shard.
    let before = sb.state().stats().requests;
    let out = run(sb.cmd().args(args).args(["--shard", "0/1"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("shard"), "{}", stderr(&out));
    assert_eq!(sb.state().stats().requests, before);
    // The same run resumes, however the space is spelled.
    let out = run(sb
        .cmd()
        .env(
            "SIGNALWIRE_BASE_URL",
            sb.base_url().to_uppercase().replace("HTTP", "http"),
        )
        .args(args));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!sb.path("r.2.csv").exists(), "continued, not started anew");
}

/// A space that refuses every PATCH with 429 (Retry-After 0), and holds one gateway with
/// no `uri` (a PATCH to it cannot be built whole).
#[test]
fn a_row_counts_exactly_the_requests_it_made_when_its_writes_run_out() {
    use crate::peer::gateway_json;
    let ids = ids(2, 131);
    let refused = ids[0].to_string();
    let incomplete = ids[1].to_string();
    let peer = Peer::start(Arc::new(move |seen: Seen| {
        let refused = refused.clone();
        let incomplete = incomplete.clone();
        async move {
            if seen.method == Method::PATCH {
                let mut answer = json(StatusCode::TOO_MANY_REQUESTS, serde_json::json!({}));
                answer
                    .headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("0"));
                return answer;
            }
            let mut fields = sipgw_bulk::sandbox::starting_fields(1);
            let id = if seen.uri.ends_with(&refused) {
                refused
            } else {
                fields.uri = String::new();
                incomplete
            };
            json(StatusCode::OK, gateway_json(&id, &fields))
        }
        .boxed()
    }));
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,name\n");
    for id in &ids {
        text.push_str(&format!("{id},renamed\n"));
    }
    std::fs::write(dir.path().join("m.csv"), text).unwrap();
    std::fs::write(dir.path().join("c.yaml"), "max_attempts: 2\n").unwrap();
    let out = run(std::process::Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("SIGNALWIRE_SPACE")
        .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
        .env("SIGNALWIRE_BASE_URL", peer.base_url())
        .env("SIGNALWIRE_PROJECT_ID", "p-edges")
        .env("SIGNALWIRE_API_TOKEN", "PT-edges-token")
        .args([
            "apply", "m.csv", "--yes", "--config", "c.yaml", "--report", "r.csv",
        ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = report(&dir.path().join("r.csv"));
    let by_id = |id: &uuid::Uuid| report.values().find(|r| r.id == id.to_string()).unwrap();
    // The first read, then two attempts of a fresh read and a PATCH (the first one's fresh
    // read left out where its slot came within the first read's round trip); no read after
    // the last refusal (nothing may have landed: a 429 is not applied).
    let r = by_id(&ids[0]);
    assert_eq!(
        (r.status, r.error_code.as_str()),
        (Status::Failed, "http_429"),
        "{r:?}"
    );
    // (One more where a read aged past its round trip before its write could leave.)
    assert!((4..=6).contains(&r.attempts), "{r:?}");
    let refused_attempts = r.attempts;
    // Nothing sent for a body that cannot be whole: the reads only.
    let r = by_id(&ids[1]);
    assert_eq!(r.error_code.as_str(), "incomplete_body", "{r:?}");
    assert!((1..=2).contains(&r.attempts), "{r:?}");
    assert_eq!(peer.requests(), u64::from(refused_attempts + r.attempts));
}
