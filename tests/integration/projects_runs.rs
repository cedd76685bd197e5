//! Several projects across runs: what the run file and the run lock key on, `--resume`
//! and the chain, shards and selections, and the shared write budget beside production.

use std::path::Path;

use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::projects::{projects_file, three_project_run};
use crate::support::*;

/// The rows of a manifest whose index (0-based) passes `keep`, its header kept, at `to`.
fn rows_of(path: &Path, to: &Path, keep: impl Fn(usize) -> bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for (i, line) in lines.enumerate() {
        if keep(i) {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(to, out).unwrap();
}

/// The sandbox's projects as owned (id, token) pairs.
fn projects(sb: &Sandbox) -> Vec<(String, String)> {
    sb.state()
        .config()
        .projects()
        .iter()
        .map(|(id, token)| ((*id).to_owned(), (*token).to_owned()))
        .collect()
}

#[test]
fn a_resume_needs_the_projects_its_run_acted_for_with_each_row_in_the_same_one() {
    let (sb, ids) = three_project_run(12, SandboxConfig::default());
    let p = projects(&sb);
    let entries = |names: [&str; 3], tokens: [&str; 3]| -> Vec<(String, Option<String>, String)> {
        (0..3)
            .map(|i| {
                (
                    p[i].0.clone(),
                    Some(names[i].to_owned()),
                    tokens[i].to_owned(),
                )
            })
            .collect()
    };
    let write = |file: &str, entries: &[(String, Option<String>, String)]| {
        let borrowed: Vec<(&str, Option<&str>, &str)> = entries
            .iter()
            .map(|(id, name, token)| (id.as_str(), name.as_deref(), token.as_str()))
            .collect();
        projects_file(&sb.path(file), &borrowed, 0o600);
    };
    let tokens = [p[0].1.as_str(), p[1].1.as_str(), p[2].1.as_str()];
    // The second project's token refused: the run is cut off for its rows.
    let revoked = [tokens[0], "PTrevoked0000000000", tokens[2]];
    write("revoked.yaml", &entries(["p1", "p2", "p3"], revoked));
    let apply = |file: &str, resume: bool| {
        let mut cmd = sb.cmd();
        cmd.args([
            "apply",
            "m.csv",
            "--yes",
            "--no-progress",
            "--report",
            "r.csv",
        ])
        .args(["--projects", file]);
        if resume {
            cmd.arg("--resume");
        }
        run(&mut cmd)
    };
    let out = apply("revoked.yaml", false);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // The run file names the projects the run acted for (ids, never a token).
    let note = sb.read("r.csv.run.json");
    let note: serde_json::Value = serde_json::from_str(&note).unwrap();
    let mut acted: Vec<String> = p.iter().map(|(id, _)| id.to_ascii_lowercase()).collect();
    acted.sort();
    assert_eq!(note["projects"], serde_json::json!(acted), "{note}");
    assert!(note["project_rows"].is_string(), "{note}");
    for token in tokens {
        assert!(!note.to_string().contains(token));
    }
    let sent = sb.state().stats().requests;

    // A projects file without the third project: refused, that project named, nothing sent.
    write("two.yaml", &entries(["p1", "p2", "p3"], tokens)[..2]);
    let out = apply("two.yaml", true);
    let err = stderr(&out);
    assert_eq!(code(&out), 64, "{err}");
    assert!(
        err.contains(&p[2].0.to_ascii_lowercase()) && err.contains("no credentials for"),
        "{err}"
    );
    assert_eq!(sb.state().stats().requests, sent, "a request was sent");

    // Every project, but the names `p1` and `p2` swapped: rows would change project.
    write("swapped.yaml", &entries(["p2", "p1", "p3"], tokens));
    let out = apply("swapped.yaml", true);
    let err = stderr(&out);
    assert_eq!(code(&out), 64, "{err}");
    assert!(err.contains("belonged to another project"), "{err}");
    assert_eq!(sb.state().stats().requests, sent, "a request was sent");

    // The same projects in another order: the run goes on and writes only the second
    // project's rows.
    let mut reordered = entries(["p1", "p2", "p3"], tokens);
    reordered.reverse();
    write("reordered.yaml", &reordered);
    let out = apply("reordered.yaml", true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1, "each gateway written once");
    }
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

#[test]
fn the_lock_holds_one_projects_gateways_with_a_projects_file_or_without() {
    let (sb, _) = three_project_run(30, SandboxConfig::default());
    // The first project's rows (named `p1`, or by the empty cell), run with the projects
    // file of three; the same gateways as a plain manifest, run with the environment's
    // project alone (the first).
    rows_of(&sb.path("m.csv"), &sb.path("m1.csv"), |i| i % 3 == 0);
    rows_of(&sb.path("plain.csv"), &sb.path("plain1.csv"), |i| {
        i % 3 == 0
    });
    let mut first = sb
        .apply("m1.csv")
        .args(["--rate", "2"])
        .args(["--projects", "projects.yaml", "--report", "first.csv"])
        .command()
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let started = std::time::Instant::now();
    while !sb.path("first.csv").exists() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = sb
        .apply("plain1.csv")
        .args(["--no-progress"])
        .report("second.csv")
        .run();
    let err = stderr(&second);
    assert_eq!(code(&second), 5, "{err}");
    let main_project = sb.state().config().project_id.to_ascii_lowercase();
    assert!(
        err.contains("another run on this machine")
            && err.contains(&format!("of project {main_project}"))
            && err.contains("first.csv"),
        "{err}"
    );
    let _ = first.kill();
}

/// `named.csv`: `plain.csv` with every row naming its project by name (`p1`, `p2`, `p3`).
fn named_manifest(sb: &Sandbox) {
    let text = sb.read("plain.csv");
    let mut lines = text.lines();
    let mut out = format!("{},project\n", lines.next().unwrap());
    for (i, line) in lines.enumerate() {
        out.push_str(&format!("{line},p{}\n", i % 3 + 1));
    }
    sb.write("named.csv", out);
}

#[test]
fn a_chain_of_several_projects_follows_a_reordered_projects_file_and_may_drop_a_project() {
    let (sb, ids) = three_project_run(12, SandboxConfig::default());
    named_manifest(&sb);
    // The same projects listed the other way round.
    let p = projects(&sb);
    let names = ["p1", "p2", "p3"];
    let reversed: Vec<(&str, Option<&str>, &str)> = (0..3)
        .rev()
        .map(|i| (p[i].0.as_str(), Some(names[i]), p[i].1.as_str()))
        .collect();
    projects_file(&sb.path("reversed.yaml"), &reversed, 0o600);
    // No environment project: the projects file alone names them.
    let apply = |manifest: &str, file: &str, resume: bool| {
        let mut cmd = sb.cmd();
        cmd.env_remove("SIGNALWIRE_PROJECT_ID")
            .env_remove("SIGNALWIRE_API_TOKEN")
            .args([
                "apply",
                manifest,
                "--yes",
                "--no-progress",
                "--report",
                "r.csv",
            ])
            .args(["--projects", file]);
        if resume {
            cmd.arg("--resume");
        }
        run(&mut cmd)
    };
    let out = apply("named.csv", "projects.yaml", false);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));

    // The next scheduled run, with the file reordered: the chain's next link reads every
    // gateway of every project again; nothing to change.
    let out = apply("named.csv", "reversed.yaml", true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let second = sb.report("r.2.csv");
    assert_eq!(second.len(), 12);
    for (row, record) in &second {
        let i = (*row - 2) as usize;
        assert_eq!(record.status, Status::Unchanged, "row {row}");
        assert_eq!(record.project.as_deref(), Some(p[i % 3].0.as_str()));
    }

    // A link whose manifest dropped the third project's rows: a new link, its two projects.
    rows_of(&sb.path("named.csv"), &sb.path("two.csv"), |i| i % 3 != 2);
    let out = apply("two.csv", "projects.yaml", true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let third = sb.report("r.3.csv");
    assert_eq!(third.len(), 8);
    assert!(third.values().all(|r| r.status == Status::Unchanged));
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1, "each gateway written once");
    }
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

#[test]
fn a_shard_of_several_projects_with_a_skip_across_them_resumes_only_its_refused_rows() {
    let (sb, ids) = three_project_run(30, SandboxConfig::default());
    let p = projects(&sb);
    let good = sb.state().config().projects_yaml();
    let revoked = good.replace(&p[1].1, "PTrevoked0000000000");
    sb.write("revoked.yaml", revoked);
    std::fs::set_permissions(
        sb.path("revoked.yaml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // One gateway of each project skipped.
    let skipped = [ids[0], ids[1], ids[5]];
    let apply = |file: &str, shard: &str, resume: bool| {
        let mut cmd = sb.cmd();
        cmd.args([
            "apply",
            "m.csv",
            "--yes",
            "--no-progress",
            "--report",
            "s.csv",
        ])
        .args(["--projects", file, "--shard", shard]);
        for id in skipped {
            cmd.args(["--skip", &id.to_string()]);
        }
        if resume {
            cmd.arg("--resume");
        }
        run(&mut cmd)
    };
    let out = apply("revoked.yaml", "1/2", false);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let shard = sb.report("s.csv");
    assert!(!shard.is_empty() && shard.len() < 30, "{}", shard.len());
    let in_shard = |i: usize| shard.contains_key(&(i as u64 + 2));
    for (row, record) in &shard {
        let i = (*row - 2) as usize;
        assert_eq!(record.project.as_deref(), Some(p[i % 3].0.as_str()));
        let want = if skipped.contains(&ids[i]) || i % 3 == 1 {
            Status::Skipped
        } else {
            Status::Updated
        };
        assert_eq!(record.status, want, "row {row}");
    }

    // Resumed as another shard: refused, nothing sent.
    let sent = sb.state().stats().requests;
    let out = apply("projects.yaml", "0/2", true);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(sb.state().stats().requests, sent);
    // The token fixed, the same shard: only that project's rows of the shard are written.
    let out = apply("projects.yaml", "1/2", true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (i, id) in ids.iter().enumerate() {
        let want = u32::from(in_shard(i) && !skipped.contains(id));
        assert_eq!(sb.state().patch_count(id), want, "row {}", i + 2);
    }
    assert_eq!(sb.state().stats().foreign_requests, 0);
}

#[test]
fn three_projects_on_one_announced_budget_beside_production_leave_it_its_share() {
    // 1,000 writes per 10 s window for the whole space, 500 kept; production spends 450
    // of them a window while three projects' rows are written.
    const CONCURRENCY: u64 = 64;
    let config = SandboxConfig {
        write_limit: 100,
        limit_window: Some(std::time::Duration::from_secs(10)),
        announce_limit: true,
        background_writes: 45,
        ..SandboxConfig::default()
    };
    let (sb, ids) = three_project_run(300, config);
    let out = sb
        .apply("m.csv")
        .args(["-q", "--projects", "projects.yaml"])
        .args(["--rate", "1000", "--concurrency", &CONCURRENCY.to_string()])
        .args(["--report", "r.csv", "--summary-json", "s.json"])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let stats = sb.state().stats();
    let b = &sb.summary("s.json")["write_budget"];
    assert_eq!(b["source"], "announced", "{b}");
    assert_eq!(b["reserve"], 500, "{b}");
    // No write refused, the job's or production's.
    assert_eq!(stats.writes_throttled, 0, "{stats:?}");
    assert!(stats.production_writes > 0, "{stats:?}");
    assert_eq!(stats.production_refused, 0, "{stats:?}");
    // The remaining count never below the reserve, but for production's writes since the
    // count a write acted on (as for one project).
    let lowest = stats.lowest_remaining_after_client_write.unwrap();
    eprintln!("lowest remaining {lowest}, production {stats:?}, budget {b}");
    assert!(lowest + 5 >= 500, "{lowest} left at the lowest: {b}");
    assert_eq!(stats.foreign_requests, 0);
}

#[test]
fn doctor_says_an_unreachable_space_is_exit_3_and_a_failing_list_is_exit_1() {
    // Nothing listens on the port: the space cannot be reached, exit 3, nothing claimed
    // about the credentials.
    let (sb, _) = three_project_run(3, SandboxConfig::default());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_BASE_URL", format!("http://127.0.0.1:{port}"))
        .arg("doctor"));
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}{}", stderr(&out));
    assert!(
        text.contains(": NOT USABLE: the space cannot be reached: ")
            && text.contains("  credentials: not checked\n"),
        "{text}"
    );

    // Every request answered 500, past the retries: the space answered, the project
    // cannot list its gateways: not usable, exit 1 (as a row failed so ends a run); the
    // credentials were never accepted.
    let failing = SandboxConfig {
        faults: sipgw_bulk::sandbox::Faults {
            status_rates: vec![(500, 1.0)],
            ..Default::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(failing, &ids(2, 347));
    let out = run(sb.cmd().arg("doctor"));
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}{}", stderr(&out));
    assert!(
        text.contains(": NOT USABLE: listing gateways failed: ")
            && text.contains("(500)")
            && text.contains("  credentials: not checked\n"),
        "{text}"
    );
    assert_eq!(sb.state().stats().patches, 0);
}

/// The value of the first sample of `name` whose line holds every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_carry_a_project_label_only_in_a_run_of_several_projects() {
    let (sb, _) = three_project_run(12, SandboxConfig::default());
    let out = sb
        .apply("m.csv")
        .args([
            "--no-progress",
            "--projects",
            "projects.yaml",
            "--metrics-file",
            "several.prom",
        ])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = sb.read("several.prom");
    for (id, _) in projects(&sb) {
        let project = format!("project=\"{id}\"");
        let rows = ["status=\"updated\"", project.as_str()];
        assert_eq!(sample(&text, "sipgw_bulk_rows", &rows), Some(4.0), "{text}");
        let patches = ["kind=\"patch\"", "code=\"200\"", project.as_str()];
        let n = sample(&text, "sipgw_bulk_requests_total", &patches);
        assert_eq!(n, Some(4.0), "{text}");
    }
    // Prometheus' own checker finds nothing wrong with the labelled series.
    let check = std::process::Command::new(crate::monitoring::installed("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(sb.path("several.prom")).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for name in ["sipgw_bulk_rows{", "sipgw_bulk_requests_total{"] {
        assert!(
            text.lines()
                .filter(|l| l.starts_with(name))
                .all(|l| l.contains("project=\"")),
            "{text}"
        );
    }

    // A single-project run (the first project's gateways, no projects file): no label.
    rows_of(&sb.path("plain.csv"), &sb.path("one.csv"), |i| i % 3 == 0);
    let out = sb
        .apply("one.csv")
        .args(["--no-progress", "--metrics-file", "one.prom"])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = sb.read("one.prom");
    assert!(!text.contains("project="), "{text}");
    let rows = sample(&text, "sipgw_bulk_rows", &["status=\"unchanged\""]);
    assert_eq!(rows, Some(4.0), "{text}");
}
