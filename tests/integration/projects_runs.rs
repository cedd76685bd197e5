//! Several projects across runs: what the run file and the run lock key on, `--resume`
//! and the chain, shards and selections, and the shared write budget beside production.

use std::path::Path;

use sipgw_bulk::sandbox::SandboxConfig;

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
    let note = std::fs::read_to_string(sb.path("r.csv.run.json")).unwrap();
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
        .cmd()
        .args(["apply", "m1.csv", "--yes", "--rate", "2"])
        .args(["--projects", "projects.yaml", "--report", "first.csv"])
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let started = std::time::Instant::now();
    while !sb.path("first.csv").exists() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = run(sb.cmd().args([
        "apply",
        "plain1.csv",
        "--yes",
        "--no-progress",
        "--report",
        "second.csv",
    ]));
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
