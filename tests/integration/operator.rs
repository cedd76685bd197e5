//! What an operator meets first: Ctrl-C stops writing at once, the space a run targets
//! is named, the usual mistakes get plain messages, and one spelling of each flag.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

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
    let sb = Sandbox::with_manifest(&ids);
    // The third PATCH lands, and its answer waits until the test lets it go.
    sb.state().hold_patch(3, true);
    let child = sb
        .apply("m.csv")
        .args(["--rate", "5", "--concurrency", "64"])
        .report("r.csv")
        .command()
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

    let report = sb.report("r.csv");
    assert_eq!(report.len(), ids.len(), "every row exactly once");
    let held = sb.state().held_gateway().unwrap().to_string();
    let held_row = report.values().find(|r| r.id == held).unwrap();
    assert_eq!(
        held_row.status,
        Status::Updated,
        "the PATCH on the wire finished: {held_row:?}"
    );
    assert!(held_row.before.is_some());
    let updated = count(&report, Status::Updated) as u64;
    assert_eq!(updated, sb.state().stats().patches_applied);
    assert!(
        report.values().all(|r| r.status == Status::Updated
            || (r.status == Status::Skipped && r.error_code.as_str() == "interrupted")),
        "only updated and skipped rows"
    );

    let out = sb
        .apply("m.csv")
        .args(["--resume", "--rate", "1000"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = crate::support::report(&sb.path("r.csv"));
    assert_eq!(report.len(), ids.len());
    assert!(report.values().all(|r| r.status == Status::Updated));
    assert_eq!(sb.state().snapshot(), expected(&ids));
    assert_eq!(sb.state().stats().patches_applied, ids.len() as u64);
}

/// A read waiting out a 429's `Retry-After` when the signal comes is not sent again: no
/// GET reaches the space after the signal, and the rows waiting are `skipped` for the
/// interrupt (resumable). Before, each read slept out its wait and went again, up to the
/// interrupt's grace (30 s).
#[test]
fn ctrl_c_ends_the_reads_waiting_out_a_retry_after() {
    let ids = ids(40, 3203);
    let config = SandboxConfig {
        faults: sipgw_bulk::sandbox::Faults {
            status_rates: vec![(429, 1.0)],
            retry_after_secs: 8,
            ..Default::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let child = sb
        .apply("m.csv")
        .args(["--concurrency", "4"])
        .report("r.csv")
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    // The first read is refused; its wait holds every read (the space said when to come
    // back).
    wait_until("a refused read", || sb.state().stats().requests >= 1);
    std::thread::sleep(Duration::from_millis(300));
    let at_signal = sb.state().stats().requests;
    interrupt(&child);
    let out = child.wait_with_output();
    let after_signal = sb.state().stats().requests - at_signal;
    assert_eq!(
        after_signal,
        0,
        "requests after the signal: {}",
        stderr(&out)
    );
    assert_eq!(code(&out), 4, "interrupted: {}", stderr(&out));
    let report = sb.report("r.csv");
    assert_eq!(report.len(), ids.len(), "every row exactly once");
    assert!(
        report
            .values()
            .all(|r| r.status == Status::Skipped && r.error_code.as_str() == "interrupted"),
        "every row skipped for the interrupt: {report:?}"
    );
    assert_eq!(sb.state().stats().patches, 0);
}

/// Every command that talks to a space names it, and its project, on its first stderr
/// line and in its summary, with the setting each came from; the token never.
#[test]
fn every_command_names_its_space_and_where_it_came_from() {
    let ids = ids(3, 3202);
    let sb = Sandbox::with_manifest(&ids);
    let host = sb.base_url().trim_start_matches("http://").to_owned();
    let project = sb.state().config().project_id.clone();
    let token = sb.state().config().api_token.clone();
    let named = format!(
        "space {host} (from SIGNALWIRE_BASE_URL), project {project} (from SIGNALWIRE_PROJECT_ID)"
    );
    let id = ids[0].to_string();
    let runs: [&[&str]; 3] = [
        &["plan", "m.csv", "--summary-json", "s.json"],
        &["export", "-o", "e.csv"],
        &["show", &id],
    ];
    for args in runs {
        let out = run(sb.cmd().args(args));
        let err = stderr(&out);
        assert!(matches!(code(&out), 0 | 2), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains(&named), "{args:?}: first line {first:?}");
        assert!(!err.contains(&token) && !stdout(&out).contains(&token));
        if args[0] != "show" {
            assert_eq!(
                err.lines().filter(|l| l.contains(&named)).count(),
                2,
                "{args:?}: the summary names it too: {err}"
            );
        }
    }
    let summary = sb.summary("s.json");
    assert_eq!(summary["space"]["host"], host.as_str());
    assert_eq!(summary["space"]["host_from"], "SIGNALWIRE_BASE_URL");
    assert_eq!(summary["space"]["project_from"], "SIGNALWIRE_PROJECT_ID");

    // From the config file: the file and its key are named.
    sb.write("token", &token);
    sb.write(
        "c.yaml",
        format!(
            "base_url: {}\nproject_id: {project}\napi_token_file: token\n",
            sb.base_url()
        ),
    );
    let out = run(sb
        .cmd()
        .env_remove("SIGNALWIRE_BASE_URL")
        .env_remove("SIGNALWIRE_PROJECT_ID")
        .env_remove("SIGNALWIRE_API_TOKEN")
        .args(["--config", "c.yaml", "show", &id]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first = stderr(&out).lines().next().unwrap_or("").to_owned();
    assert!(
        first.contains(&format!(
            "space {host} (from base_url in c.yaml), project {project} (from project_id in \
             c.yaml)"
        )),
        "{first}"
    );
}

/// A sandbox's base URL left in the environment never wins quietly over the space asked
/// for: the two settings are named, with where each came from, exit 64, nothing sent.
#[test]
fn a_space_and_a_base_url_that_disagree_are_refused() {
    let ids = ids(3, 3203);
    let sb = Sandbox::with_manifest(&ids);
    let host = sb.base_url().trim_start_matches("http://").to_owned();
    let token = sb.state().config().api_token.clone();
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["export"],
            "SIGNALWIRE_SPACE",
            "SIGNALWIRE_SPACE names other.signalwire.com",
        ),
        (
            &["--space", "other", "plan", "m.csv"],
            "",
            "--space names other.signalwire.com",
        ),
        (
            &["apply", "m.csv", "--yes"],
            "SIGNALWIRE_SPACE",
            "SIGNALWIRE_SPACE names other",
        ),
    ];
    for (args, env, says) in cases {
        let mut cmd = sb.cmd();
        if !env.is_empty() {
            cmd.env(env, "other");
        }
        let out = run(cmd.args(args));
        let err = stderr(&out);
        assert_eq!(code(&out), 64, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.contains(&format!("SIGNALWIRE_BASE_URL names {host}")),
            "{args:?}: {err}"
        );
        assert!(!err.contains(&token));
    }
    assert_eq!(sb.state().stats().requests, 0, "nothing was sent");
}

/// A wrong token: one plain line naming the settings to check, exit 3, no line per row;
/// the rows are `skipped` (`credentials_refused`) for `--resume` once it is fixed.
#[test]
fn a_refused_token_says_which_settings_to_check_once() {
    let ids = ids(40, 3204);
    let sb = Sandbox::with_manifest(&ids);
    let out = run(sb.cmd().env("SIGNALWIRE_API_TOKEN", "PTwrong-token").args([
        "apply",
        "m.csv",
        "--yes",
        "--concurrency",
        "16",
        "--report",
        "r.csv",
    ]));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(
        !err.contains("http_401") && !err.contains("row failed"),
        "{err}"
    );
    let says: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("refused the credentials"))
        .collect();
    assert_eq!(says.len(), 1, "{err}");
    assert!(
        says[0].contains(
            "check SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN (or the config's project_id \
             and api_token_file); this run's project id came from SIGNALWIRE_PROJECT_ID, its \
             token from SIGNALWIRE_API_TOKEN"
        ),
        "{err}"
    );
    assert!(!err.contains("PTwrong-token"));
    let report = sb.report("r.csv");
    assert_eq!(report.len(), ids.len());
    assert!(
        report
            .values()
            .all(|r| r.status == Status::Skipped && r.error_code.as_str() == "credentials_refused"),
        "{report:?}"
    );

    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_API_TOKEN", "PTwrong-token")
        .args(["export", "-o", "e.csv"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(
        err.contains("the space refused the credentials: check SIGNALWIRE_PROJECT_ID"),
        "{err}"
    );
    assert!(!sb.path("e.csv").exists(), "no file for a refused export");

    // To stdout (a pipe): nothing that reads as an export of no gateways, not even a header.
    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_API_TOKEN", "PTwrong-token")
        .args(["export"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "stdout of a refused export"
    );
}

/// `export` against a space whose name does not resolve: exit 3 (the space cannot be
/// reached), as for a run, not 1 (rows that need attention).
#[test]
fn export_from_a_space_that_does_not_resolve_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    // The retries run out before the outage limit (60 s) does: the answer is the last
    // connection error's, not the job's abort.
    let out = run(std::process::Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("SIGNALWIRE_SPACE")
        .env("SIGNALWIRE_BASE_URL", "https://sipgw-bulk-test.invalid")
        .env("SIGNALWIRE_PROJECT_ID", "p")
        .env("SIGNALWIRE_API_TOKEN", "PTsecret")
        .args(["export", "-o", "e.csv"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(
        err.contains("the space (sipgw-bulk-test.invalid) cannot be reached"),
        "{err}"
    );
    assert!(!dir.path().join("e.csv").exists());
}

/// The two CSV mistakes a spreadsheet makes: a list written with commas in a cell that
/// is not quoted, and a file written with `;` between cells.
#[test]
fn csv_cells_split_by_commas_and_semicolon_files_get_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let id = ids(1, 3205)[0];
    std::fs::write(
        dir.path().join("commas.csv"),
        format!("id,codecs\n{id},OPUS,PCMU\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("semi.csv"),
        format!("id;codecs\n{id};OPUS\n"),
    )
    .unwrap();
    let validate = |file: &str| {
        run(std::process::Command::new(BIN)
            .current_dir(dir.path())
            .args(["validate", file]))
    };
    let out = validate("commas.csv");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "line 2: the row has 3 cells but the header has 2: a list cell separates its \
             values with `;` (OPUS;PCMU), or quote a cell that holds a comma (\"OPUS,PCMU\")"
        ),
        "{}",
        stdout(&out)
    );
    let out = validate("semi.csv");
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the header has no `id` column (first line: \"id;codecs\"); the file looks \
             `;`-delimited: the delimiter is `,`"
        ),
        "{}",
        stderr(&out)
    );
}

/// `-o/--output FILE` saves the plan, as it names the file in `export` and `rollback`
/// (`--out` kept); `--output text|json`, the flag's old meaning, is refused with the
/// `--diff-format` hint, nothing sent.
#[test]
fn plan_saves_to_output_as_export_and_rollback_do() {
    let ids = ids(2, 3206);
    let sb = Sandbox::with_manifest(&ids);
    for format in ["text", "json"] {
        let out = sb.plan("m.csv").args(["--output", format]).run();
        assert_eq!(code(&out), 64, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("use --diff-format {format}")),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(sb.state().stats().requests, 0);
    for (flag, plan, report) in [
        ("--output", "x.plan", "x.csv"),
        ("-o", "y.plan", "y.csv"),
        ("--out", "z.plan", "z.csv"),
    ] {
        let out = sb.plan("m.csv").args([flag, plan]).report(report).run();
        assert_eq!(code(&out), 0, "{flag}: {}", stderr(&out));
        assert!(sb.path(plan).exists(), "{flag} saved the plan");
    }
    let out = run(sb.cmd().args(["apply", "--plan", "x.plan"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), expected(&ids));
}

/// A flag a command has no use for is refused, exit 64, naming it; the same setting from
/// the environment is ignored there.
#[test]
fn a_flag_a_command_does_not_use_is_refused_and_its_environment_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("m.csv"), &ids(2, 3207), &[]);
    let cases: [&[&str]; 4] = [
        &["validate", "m.csv", "--rate", "5"],
        &["--concurrency", "4", "validate", "m.csv"],
        &["validate", "m.csv", "--space", "acme"],
        &["export", "--rate", "5"],
    ];
    for args in cases {
        let out = run(std::process::Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("SIGNALWIRE_BASE_URL")
            .args(args));
        assert_eq!(code(&out), 64, "{args:?}: {}", stderr(&out));
        let flag = args.iter().find(|a| a.starts_with("--")).unwrap();
        assert!(
            stderr(&out).contains(&format!("does not use {flag}")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // From the environment: ignored by a command that talks to no space.
    let out = run(std::process::Command::new(BIN)
        .current_dir(dir.path())
        .env("SIGNALWIRE_SPACE", "not a space")
        .env("SIGNALWIRE_BASE_URL", "ftp://nowhere")
        .args(["validate", "m.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// A config key for a setting a command does not take is ignored there, as its flag is
/// refused: a run's pace (`concurrency: 0`, out of range) does not stop an `export` or a
/// `doctor`, and still stops a `plan`.
#[test]
fn a_config_key_a_command_does_not_take_is_ignored_there() {
    let sb = Sandbox::with_manifest(&ids(2, 3209));
    sb.write("c.yaml", "concurrency: 0\n");
    for args in [&["export", "-o", "e.csv"][..], &["doctor"][..]] {
        let out = run(sb.cmd().args(["--config", "c.yaml"]).args(args));
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    }
    let out = sb.plan("m.csv").args(["--config", "c.yaml"]).run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("concurrency 0 is out of range"),
        "{}",
        stderr(&out)
    );
}

/// `show --plan PLAN` prints a saved plan as the diff `plan` printed, text or JSON, with
/// no request; a plan edited since is refused as `apply --plan` refuses it (exit 64).
#[test]
fn show_plan_prints_a_saved_plan_as_its_diff_and_refuses_an_edited_one() {
    let ids = ids(40, 3208);
    let sb = Sandbox::seeded(&ids);
    write_csv(&sb.path("m.csv"), &ids[..30], &[]);
    for (format, plan) in [("text", "t.plan"), ("json", "j.plan")] {
        let planned = sb
            .plan("m.csv")
            .args(["-o", plan, "--diff-format", format])
            .report(&format!("{format}.csv"))
            .run();
        assert_eq!(code(&planned), 0, "{}", stderr(&planned));
        let before = sb.state().stats().requests;
        let shown = run(sb
            .cmd()
            .args(["show", "--plan", plan, "--diff-format", format]));
        assert_eq!(code(&shown), 0, "{}", stderr(&shown));
        assert_eq!(stdout(&shown), stdout(&planned), "{format}");
        assert!(stdout(&shown).contains("would_update") || format == "text");
        assert_eq!(sb.state().stats().requests, before, "no request");
    }
    let text = sb.read("t.plan");
    sb.write("e.plan", text.replacen("pbx-1", "pbx-X", 1));
    let out = run(sb.cmd().args(["show", "--plan", "e.plan"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "nothing of an edited plan is shown");
}

/// From a black-box tester: a SIGINT whose `--grace` runs out with a PATCH still on the
/// wire exited 4 with that row (whose write landed) and the rows after it missing from
/// the report: the undo file was not whole until a `--resume`. Now the request is given
/// up, the row is `write_unknown` with its `before`, every row is in the report, and the
/// rollback undoes the landed write.
#[test]
fn an_interrupt_whose_grace_runs_out_still_leaves_a_whole_report_that_undoes_every_write() {
    let ids = ids(6, 3301);
    let sb = Sandbox::seeded(&ids);
    let start = sb.state().snapshot();
    write_csv(&sb.path("m.csv"), &ids, &[]);
    // The third PATCH lands, and its answer never comes while the run lives.
    sb.state().hold_patch(3, true);
    let child = sb
        .apply("m.csv")
        .args(["--concurrency", "1", "--grace", "1"])
        .report("r.csv")
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    wait_until("the held PATCH", || sb.state().patches_held() == 1);
    interrupt(&child);
    let out = child.wait_with_output();
    sb.state().release_held();
    assert_eq!(code(&out), 4, "interrupted: {}", stderr(&out));

    let report = sb.report("r.csv");
    assert_eq!(
        report.len(),
        ids.len(),
        "every row exactly once: {}",
        stderr(&out)
    );
    let held = sb.state().held_gateway().unwrap();
    let held_row = report.values().find(|r| r.id == held.to_string()).unwrap();
    assert_eq!(
        (held_row.status, held_row.error_code.as_str()),
        (Status::Failed, "write_unknown"),
        "{held_row:?}"
    );
    assert_eq!(held_row.before.as_ref(), Some(&start[&held]));
    // Its requests counted as an updated row's are: the read and the PATCH, and the fresh
    // read between them where the write slot came later than the read's round trip (again
    // when that read aged before the write could leave, on a busy machine). Every request
    // the space saw is some row's.
    assert!(held_row.attempts >= 2, "{held_row:?}");
    assert!(
        report
            .values()
            .filter(|r| r.status == Status::Updated)
            .all(|r| r.attempts >= 2),
        "{report:?}"
    );
    let stats = sb.state().stats();
    let counted: u64 = report.values().map(|r| u64::from(r.attempts)).sum();
    assert_eq!(counted, stats.gets + stats.patches, "{stats:?} {report:?}");
    assert!(
        report.values().all(|r| r.id == held.to_string()
            || r.status == Status::Updated
            || (r.status == Status::Skipped && r.error_code.as_str() == "interrupted")),
        "{report:?}"
    );

    // The report alone undoes every write, the landed one included.
    let out = run(sb.cmd().args(["rollback", "r.csv", "-o", "undo.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb.apply("undo.csv").report("undo.report.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot(), start, "back to the start");
}

/// The summary says what held the write rate where it was: `--rate` when rows queued for
/// their write slot, the requests in flight when one row at a time waited on round trips;
/// rows `--only` did not choose are said on the `skipped` line, not on a second line of
/// the same rows; one request is "1 request".
#[test]
fn the_summary_says_what_held_the_write_rate_and_counts_each_row_once() {
    let ids = ids(80, 3206);
    let slow = SandboxConfig {
        faults: sipgw_bulk::sandbox::Faults {
            latency: Duration::from_millis(20),
            ..Default::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(slow, &ids);
    let apply = |extra: &[&str], report: &str| {
        let out = sb
            .apply("m.csv")
            .report(report)
            .args(["--summary-json", &format!("{report}.json")])
            .args(extra)
            .run();
        assert!([0, 2].contains(&code(&out)), "{}", stderr(&out));
        (
            stderr(&out),
            summary_json(&sb.path(&format!("{report}.json"))),
        )
    };
    // One request at a time, of 20 ms; a row a read and a PATCH (a fresh read too when its
    // slot came late): about 20 writes a second against --rate 1000.
    let only: Vec<String> = ids[..60].iter().map(|id| id.to_string()).collect();
    sb.write("only.txt", only.join("\n"));
    let (err, s) = apply(
        &[
            "--rate",
            "1000",
            "--concurrency",
            "1",
            "--only",
            "@only.txt",
        ],
        "r1.csv",
    );
    let bound = s["write_bound"].as_str().unwrap_or_else(|| panic!("{s}"));
    assert!(
        bound.starts_with("--concurrency 1 and the round trips"),
        "{s}"
    );
    assert!(err.contains(&format!("held there by {bound}")), "{err}");
    assert!(
        err.contains("skipped             20  (not chosen by --only/--skip)"),
        "{err}"
    );
    assert!(!err.contains("not selected"), "{err}");

    // Everything again, at 40 writes a second: rows queue for their slot.
    let names = |ids: &[uuid::Uuid], name: &str| {
        let rows: Vec<String> = ids.iter().map(|id| format!("{id},{name}\n")).collect();
        sb.write("m.csv", format!("id,name\n{}", rows.concat()));
    };
    names(&ids, "renamed");
    let (err, s) = apply(&["--rate", "40", "--concurrency", "16"], "r2.csv");
    assert_eq!(s["write_bound"], "--rate", "{s}");
    assert!(err.contains("(--rate 40), held there by --rate\n"), "{err}");

    // One row: one request of each kind, no rate, no pace.
    names(&ids[..1], "once-more");
    let (err, s) = apply(&[], "r3.csv");
    assert!(
        s["write_rate"].is_null() && s["write_bound"].is_null(),
        "{s}"
    );
    assert!(err.contains("(1 request)"), "{err}");
    let summary = &err[err
        .find("Apply finished")
        .unwrap_or_else(|| panic!("{err}"))..];
    assert!(!summary.contains(", pace "), "{summary}");
}
