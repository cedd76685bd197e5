//! Running unattended and by hand: logs and stats off a terminal, JSON logs, a bar on a
//! terminal, shards across processes, and the generated docs.

use std::process::Stdio;
use std::time::Duration;

use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::support::*;

#[test]
fn off_a_terminal_stderr_has_stats_lines_and_no_bar_or_ansi_codes() {
    let ids = ids(200, 50);
    let sb = Sandbox::with_manifest(&ids);
    // 200 writes at 80/s: about 2.5 s, with a stats line every second.
    let out = sb
        .apply("m.csv")
        .args(["--rate", "80", "--stats-interval", "1"])
        .report("r.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\x1b'),
        "ANSI codes in a non-terminal stderr: {err}"
    );
    let stats_lines = err
        .lines()
        .filter(|l| l.contains("progress") && l.contains("done="))
        .count();
    assert!(stats_lines >= 2, "{err}");
    assert!(err.contains("Apply finished"), "{err}");
}

#[test]
fn with_json_logs_every_stderr_line_is_one_json_object() {
    let ids = ids(50, 51);
    let sb = Sandbox::seeded(&ids);
    write_csv(&sb.path("m.csv"), &ids, &["not-a-uuid,,,,,".into()]);
    for args in [
        vec![
            "apply",
            "m.csv",
            "--yes",
            "--log-format",
            "json",
            "--report",
            "a.csv",
            "-v",
        ],
        vec!["plan", "m.csv", "--log-format", "json", "--report", "p.csv"],
        vec![
            "apply",
            "m.csv",
            "--yes",
            "--log-format",
            "json",
            "--report",
            "a.csv",
        ],
        // A usage error (clap's own), a config error, a manifest that cannot be read.
        vec!["plna", "m.csv", "--log-format", "json"],
        vec!["plan", "m.csv", "--log-format=json", "--shard", "3/3"],
        vec![
            "plan",
            "m.csv",
            "--log-format",
            "json",
            "--config",
            "bad.yaml",
        ],
        vec![
            "plan",
            "bad.csv",
            "--log-format",
            "json",
            "--report",
            "b.csv",
        ],
    ] {
        sb.write("bad.yaml", "concurrency: [\n");
        sb.write("bad.csv", "nope,columns\n1,2\n");
        let out = run(sb.cmd().args(&args));
        let err = stderr(&out);
        assert!(!err.is_empty());
        if args[0] == "plna" || args.contains(&"--shard") || args.contains(&"bad.yaml") {
            assert_eq!(code(&out), 64, "{args:?}: {err}");
        }
        if args.contains(&"bad.csv") {
            assert_eq!(code(&out), 65, "{args:?}: {err}");
        }
        let mut summaries = 0;
        for line in err.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert!(v.get("level").is_some(), "{line}");
            if let Some(summary) = v.get("summary") {
                summaries += 1;
                // An object a JSON parser reads as one, not a string holding JSON.
                assert!(summary.is_object(), "{line}");
                assert_eq!(summary["version"], 1, "{line}");
                assert!(summary["counts"]["unchanged"].is_u64(), "{line}");
                assert!(
                    v["timestamp"].is_string() && v["message"].is_string(),
                    "{line}"
                );
            }
        }
        let ran = code(&out) < 3 && args[0] != "plna";
        assert_eq!(summaries, usize::from(ran), "{args:?}: {err}");
    }
    // The refusal to overwrite a report is a JSON line too (the third run above).
}

#[test]
fn the_summary_tells_latencies_the_slowest_row_throttling_and_the_rate_against_its_cap() {
    let ids = ids(60, 52);
    let config = SandboxConfig {
        faults: sipgw_bulk::sandbox::Faults {
            latency: Duration::from_millis(30),
            status_rates: vec![(429, 0.1)],
            retry_after_secs: 0,
            ..Default::default()
        },
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let out = sb
        .apply("m.csv")
        .args(["--rate", "200"])
        .report("r.csv")
        .summary_json("s.json")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = sb.summary("s.json");
    assert_eq!(s["rate_limit"], 200);
    for kind in ["get", "patch"] {
        let l = &s["latency_ms"][kind];
        let p50 = l["p50_ms"].as_f64().unwrap();
        let p99 = l["p99_ms"].as_f64().unwrap();
        // Every answer waits the sandbox's 30 ms; loopback adds little.
        assert!((29.0..300.0).contains(&p50), "{kind}: {l}");
        assert!(
            p50 <= p99 && p99 <= l["max_ms"].as_f64().unwrap(),
            "{kind}: {l}"
        );
        assert!(l["count"].as_u64().unwrap() >= 60, "{kind}: {l}");
    }
    assert!(
        s["latency_ms"].get("list").is_none(),
        "no list request was sent"
    );
    let slowest = &s["slowest_row"];
    assert!(
        slowest["duration_ms"].as_u64().unwrap() >= 60,
        "a GET and a PATCH: {slowest}"
    );
    assert!(
        ids.iter().any(|id| slowest["id"] == id.to_string()),
        "{slowest}"
    );
    let throttled = s["throttled"]["answers_429"].as_u64().unwrap();
    assert_eq!(throttled, sb.state().stats().faults_injected);
    assert!(throttled > 0);
    // Every retry waits at least the first backoff step (200 ms): Retry-After 0 is raised.
    assert!(s["throttled"]["retry_wait_secs"].as_f64().unwrap() >= 0.2 * throttled as f64 - 1e-6);
    let err = stderr(&out);
    assert!(
        err.contains("GET    p50") && err.contains("PATCH  p50"),
        "{err}"
    );
    assert!(
        err.contains("(--rate 200)") && err.contains("slowest row: line"),
        "{err}"
    );
    assert!(err.contains("throttled: "), "{err}");
}

#[test]
fn three_shard_processes_at_once_reconcile_every_row_exactly_once() {
    let ids = ids(1500, 52);
    let sb = Sandbox::with_manifest(&ids);
    // Each shard takes a third of the space's budget.
    let children: Vec<_> = (0..3)
        .map(|k| {
            sb.cmd()
                .args(["apply", "m.csv", "--yes", "--rate", "400", "--shard"])
                .arg(format!("{k}/3"))
                .args(["--report", &format!("shard{k}.csv")])
                .stderr(Stdio::null())
                .spawn_guarded()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut rows = std::collections::BTreeMap::new();
    for k in 0..3 {
        let r = report(&sb.path(&format!("shard{k}.csv")));
        assert!(
            r.len() > 400 && r.len() < 600,
            "shard {k}: {} rows",
            r.len()
        );
        for (line, rec) in r {
            assert_eq!(rec.status, Status::Updated);
            assert!(rows.insert(line, k).is_none(), "line {line} in two shards");
        }
    }
    assert_eq!(rows.len(), 1500);
    assert_eq!(sb.state().snapshot(), expected(&ids));

    // The same ids, reversed and in YAML: shard 1 holds the same gateways.
    let mut yaml = String::new();
    for id in ids.iter().rev() {
        yaml.push_str(&format!("- id: {id}\n"));
    }
    sb.write("rev.yaml", yaml);
    let out = sb
        .plan("rev.yaml")
        .args(["--shard", "1/3"])
        .report("rev1.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ids_of = |file: &str| -> std::collections::BTreeSet<String> {
        sb.report(file).into_values().map(|r| r.id).collect()
    };
    assert_eq!(ids_of("rev1.csv"), ids_of("shard1.csv"));
}

#[test]
fn a_terminal_run_shows_the_bar_then_the_summary() {
    let ids = ids(120, 53);
    let sb = Sandbox::with_manifest(&ids);
    // `script` gives the binary a pseudo-terminal, as a person's shell would.
    let command = format!("{BIN} apply m.csv --yes --rate 60 --report r.csv");
    let out = run(sb
        .cmd()
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .program_is("script", &["-qefc", &command, "/dev/null"]));
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let screen = stdout(&out);
    assert!(screen.contains("/120 rows"), "no progress bar: {screen}");
    let summary = screen
        .find("Apply finished")
        .expect("a summary after the bar");
    assert!(screen[..summary].contains("rows"), "the bar comes first");
    assert_eq!(sb.report("r.csv").len(), 120);
}

#[test]
fn on_a_terminal_apply_shows_the_diff_asks_and_writes_only_what_it_showed() {
    use std::io::{Read, Write};
    let ids = ids(20, 54);
    // `no`: nothing written, and declining is not success.
    // `yes`: between the showing and the answer another client edits one gateway: that row
    // is a conflict; the other 19, exactly as shown, are written.
    // `--limit 5`: the plan shown and asked about holds 5 changes.
    for (answer, report_name, extra) in [
        ("no", "r-no.csv", ""),
        ("yes", "r-yes.csv", ""),
        ("yes", "r-limit.csv", "--limit 5"),
    ] {
        let sb = Sandbox::with_manifest(&ids);
        let command =
            format!("NO_COLOR=1 {BIN} apply m.csv --no-progress --report {report_name} {extra}");
        let mut child = sb
            .cmd()
            .program_is("script", &["-qefc", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn_guarded();
        let mut stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        // Read the screen until the question shows.
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&screen).contains("to go ahead") {
            let n = out.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "ended before asking: {}",
                String::from_utf8_lossy(&screen)
            );
            screen.extend_from_slice(&buf[..n]);
        }
        let shown = String::from_utf8_lossy(&screen).into_owned();
        let patches_before = sb.state().stats().patches_applied;
        if report_name == "r-yes.csv" {
            let mut edited = sipgw_bulk::sandbox::starting_fields(99);
            edited.name = "edited-elsewhere".into();
            assert!(sb.state().edit(&ids[3], edited));
        }
        writeln!(stdin, "{answer}").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        let screen = format!("{shown}{rest}");
        // The diff itself, not just counts.
        assert!(screen.contains("~ update"), "{screen}");
        assert!(
            screen.contains("name") && screen.contains("-> \"pbx-"),
            "{screen}"
        );
        let written = sb.state().stats().patches_applied - patches_before;
        match report_name {
            "r-no.csv" => {
                assert!(
                    screen.contains("Apply changes to 20 gateway(s)?"),
                    "{screen}"
                );
                assert_eq!(written, 0);
                assert_eq!(status.code(), Some(3), "declining is not success");
                // The plan shown is kept, and named.
                assert!(sb.path("r-no.csv.plan").exists(), "{screen}");
                assert!(screen.contains("kept in r-no.csv.plan"), "{screen}");
            }
            "r-yes.csv" => {
                assert_eq!(written, 19, "{screen}");
                let r = sb.report(report_name);
                let conflicts: Vec<_> = r
                    .values()
                    .filter(|r| r.status == Status::Conflict)
                    .collect();
                assert_eq!(conflicts.len(), 1, "{r:?}");
                assert_eq!(conflicts[0].id, ids[3].to_string());
                assert_eq!(status.code(), Some(1));
                assert!(screen.contains("conflict"), "{screen}");
            }
            _ => {
                assert!(
                    screen.contains("Apply changes to 5 gateway(s)?"),
                    "{screen}"
                );
                assert_eq!(written, 5, "{screen}");
            }
        }
    }
}

/// Runs another program with this command's environment and directory.
trait ProgramIs {
    fn program_is(&mut self, program: &str, args: &[&str]) -> &mut std::process::Command;
}

impl ProgramIs for std::process::Command {
    fn program_is(&mut self, program: &str, args: &[&str]) -> &mut std::process::Command {
        let mut other = std::process::Command::new(program);
        other.args(args);
        if let Some(dir) = self.get_current_dir() {
            other.current_dir(dir);
        }
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => other.env(k, v),
                None => other.env_remove(k),
            };
        }
        *self = other;
        self
    }
}

#[test]
fn completions_and_a_man_page_are_generated_from_the_cli() {
    let out = run(std::process::Command::new(BIN).args(["completions", "bash"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("sipgw-bulk") && stdout(&out).contains("--max-errors"));
    let out = run(std::process::Command::new(BIN).arg("man"));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with(".ie"), "{}", &stdout(&out)[..40]);
    assert!(stdout(&out).contains("sipgw\\-bulk"));
}

#[test]
fn the_documented_usage_block_is_the_real_help() {
    let out = run(std::process::Command::new(BIN)
        .arg("--help")
        .env_remove("SIGNALWIRE_SPACE")
        .env_remove("SIGNALWIRE_BASE_URL"));
    let (_, readme) = crate::docs::page_holding("<!-- help:start -->");
    let start = readme
        .find("<!-- help:start -->")
        .expect("a page has a help block");
    let end = readme.find("<!-- help:end -->").unwrap();
    let block = &readme[start..end];
    let block = block
        .trim_start_matches("<!-- help:start -->")
        .trim()
        .trim_start_matches("```text")
        .trim_end_matches("```")
        .trim();
    assert_eq!(
        block,
        stdout(&out).trim(),
        "the documented usage differs from --help"
    );
    // Every command's help carries a worked example.
    for cmd in [
        "validate",
        "plan",
        "apply",
        "export",
        "rollback",
        "sandbox",
        "completions",
        "man",
    ] {
        let out = run(std::process::Command::new(BIN).args([cmd, "--help"]));
        assert!(
            stdout(&out).contains("Example: sipgw-bulk"),
            "{cmd} --help has no example"
        );
    }
}

/// Every command that takes an argument describes it in its help (rollback's was left
/// out: its id clashed with the global --report).
#[test]
fn every_positional_argument_is_described_in_its_command_s_help() {
    for command in ["validate", "plan", "apply", "show", "rollback"] {
        let help = stdout(&run(
            std::process::Command::new(BIN).args([command, "--help"])
        ));
        let usage = help
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_else(|| panic!("{command}: no usage line in\n{help}"));
        for arg in usage.split_whitespace().filter(|w| w.starts_with('<')) {
            let name = arg.trim_matches(['[', ']', '.']);
            let section = help.split("Arguments:").nth(1).unwrap_or("");
            assert!(
                section.contains(&format!("  {name}\n")),
                "{command}: {name} is not described:\n{help}"
            );
        }
    }
}

/// A rate over less than a second reads as a broken limit (2 writes in 7 ms "at 290/s"
/// with --rate 250): a short run shows its writes and their time, and no rate.
#[test]
fn a_run_shorter_than_a_second_shows_no_write_rate() {
    let ids = ids(2, 77);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb.apply("m.csv").summary_json("s.json").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = sb.summary("s.json");
    assert!(
        s["elapsed_secs"].as_f64().unwrap() < 1.0,
        "a short run: {s}"
    );
    assert_eq!(s["writes"], 2);
    assert!(s["write_rate"].is_null(), "{s}");
    assert_eq!(s["version"], 1, "the summary's format version");
    assert_eq!(s["sipgw_bulk"], env!("CARGO_PKG_VERSION"));
    let err = stderr(&out);
    assert!(err.contains("writes 2 in "), "{err}");
    assert!(!err.contains("writes 2 at "), "{err}");
}

/// The README's rehearsal snippet, run as a user would paste it into bash: the sandbox's
/// lines are read only once it has written them.
#[test]
fn the_readme_rehearsal_snippet_runs_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, readme) = crate::docs::page_holding("Rehearse first against the sandbox");
    let after = readme
        .split("Rehearse first against the sandbox")
        .nth(1)
        .expect("the README's rehearsal section");
    let snippet = after
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its code block");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("examples/gateways.csv"),
        dir.path().join("gateways.csv"),
    )
    .unwrap();
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The sandbox was started in the background: stopped when the script ends.
    let script = format!("set -e\n{snippet}\nkill %1\n");
    let out = run(std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("SIPGW_BULK_STATE_DIR", dir.path().join("state"))
        .env_remove("SIGNALWIRE_SPACE")
        .env_remove("SIGNALWIRE_BASE_URL"));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report = report(&dir.path().join("rehearsal.csv"));
    assert!(!report.is_empty());
    assert!(
        report.values().all(|r| r.status == Status::Updated),
        "{report:?}"
    );
}

/// Bash completion in a real bash: the function `complete -p` names completes the
/// subcommand and then its flags (the hyphen in the name once broke everything after the
/// subcommand).
#[test]
fn bash_completion_completes_subcommands_and_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sipgw-bulk.bash");
    let out = run(std::process::Command::new(BIN).args(["completions", "bash"]));
    assert_eq!(code(&out), 0);
    std::fs::write(&script, &out.stdout).unwrap();
    let probe = format!(
        r#"source {script}
fn=$(complete -p sipgw-bulk | sed -E 's/.*-F ([^ ]+) .*/\1/')
complete_words() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
    "$fn" sipgw-bulk "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    echo "${{COMPREPLY[*]}}"
}}
complete_words sipgw-bulk pl
complete_words sipgw-bulk apply --detailed
complete_words sipgw-bulk plan m.csv --rep
"#,
        script = script.display()
    );
    let out = run(std::process::Command::new("bash").args(["-c", &probe]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "plan");
    assert_eq!(lines[1], "--detailed-exitcode");
    assert!(lines[2].split(' ').any(|w| w == "--report"), "{lines:?}");
}

/// `man --out-dir` writes a page per command, each with that command's own flags, not
/// only the top level's.
#[test]
fn every_command_has_its_own_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(std::process::Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(dir.path()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (command, flag) in [
        ("", "\\-\\-concurrency"),
        ("-validate", "MANIFEST"),
        ("-plan", "\\-\\-out"),
        ("-apply", "\\-\\-detailed\\-exitcode"),
        ("-export", "\\-\\-output"),
        ("-show", "\\-\\-json"),
        ("-rollback", "REPORT"),
        ("-sandbox", "\\-\\-seed\\-values"),
    ] {
        let page = std::fs::read_to_string(dir.path().join(format!("sipgw-bulk{command}.1")))
            .unwrap_or_else(|e| panic!("sipgw-bulk{command}.1: {e}"));
        assert!(page.starts_with(".ie"), "sipgw-bulk{command}.1 is roff");
        assert!(page.contains(flag), "sipgw-bulk{command}.1 lacks {flag}");
    }
}
