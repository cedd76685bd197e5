//! `--only` and `--skip`: a few rows of a manifest run, the others are reported `skipped`
//! (`not_selected`) and cost nothing: no request, no exit code, no `--max-changes` count.

use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::support::*;

#[test]
fn only_and_skip_run_the_chosen_rows_and_report_the_rest_skipped() {
    let ids = ids(20, 950);
    let config = SandboxConfig {
        failing_ids: vec![ids[5]],
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    let start = sb.state().snapshot();
    // An invalid row too: not chosen, so not `invalid` (and no exit 1).
    write_csv(&sb.path("m.csv"), &ids, &["not-a-uuid,x,,,,".to_owned()]);
    sb.write(
        "ids.txt",
        format!(
            "id\n# the ones to redo\n{}\n\n{}\n{}\n",
            ids[0], ids[1], ids[2]
        ),
    );
    let out = sb
        .apply("m.csv")
        .args([
            "--only",
            "@ids.txt",
            "--only",
            &ids[3].to_string().to_uppercase(),
            "--skip",
            &ids[1].to_string(),
            // Counts the chosen rows only: 3 changes, not 19.
            "--max-changes",
            "3",
        ])
        .report("r.csv")
        .summary_json("s.json")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let chosen = [ids[0], ids[2], ids[3]];
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 21, "one line a row, chosen or not");
    for r in report.values() {
        match r.id.parse::<uuid::Uuid>() {
            Ok(id) if chosen.contains(&id) => assert_eq!(r.status, Status::Updated, "{r:?}"),
            _ => {
                assert_eq!(r.status, Status::Skipped, "{r:?}");
                assert_eq!(r.error_code.as_str(), "not_selected", "{r:?}");
                let why = if r.id == ids[1].to_string() {
                    "--skip"
                } else {
                    "--only"
                };
                assert!(r.error.contains(why), "{r:?}");
            }
        }
    }
    let now = sb.state().snapshot();
    let wanted = expected(&ids);
    for id in &ids {
        let want = if chosen.contains(id) {
            &wanted[id]
        } else {
            &start[id]
        };
        assert_eq!(&now[id], want, "{id}");
    }
    for id in ids.iter().filter(|id| !chosen.contains(id)) {
        assert_eq!(sb.state().patch_count(id), 0);
    }
    // Per chosen row: the review's GET (--max-changes), the GET, the fresh GET before the
    // PATCH, the PATCH. Nothing for the 17 others (one GET each would make 29).
    assert!(
        sb.state().stats().requests <= 12,
        "{:?}",
        sb.state().stats()
    );
    let summary = sb.summary("s.json");
    assert_eq!(summary["not_selected"], 18);
    assert_eq!(summary["counts"]["updated"], 3);
    assert!(
        stderr(&out).contains("skipped             18  (not chosen by --only/--skip)"),
        "{}",
        stderr(&out)
    );

    // The same choice, one more row than --max-changes allows: refused, nothing written.
    let out = sb
        .apply("m.csv")
        .args(["--skip", &ids[0].to_string(), "--max-changes", "15"])
        .report("r2.csv")
        .run();
    assert_eq!(code(&out), 3, "16 rows still differ: {}", stderr(&out));
}

#[test]
fn a_saved_plan_holds_only_the_chosen_rows_and_resume_keeps_the_selection() {
    let ids = ids(12, 951);
    let config = SandboxConfig {
        failing_ids: vec![ids[2]],
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start_with_manifest(config, &ids);
    let start = sb.state().snapshot();
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let out = sb
        .plan("m.csv")
        .args(["--only", &a, "--only", &b, "-o", "p.plan"])
        .report("p.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(sb
        .cmd()
        .args(["apply", "--plan", "p.plan", "--report", "applied.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let now = sb.state().snapshot();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(now[id] != start[id], i < 2, "row {i}");
    }

    // A run cut off by its error budget, then resumed: with the same selection (spelled
    // otherwise) it continues; with another it is refused, nothing sent.
    sb.write("c.yaml", "max_attempts: 1\n");
    let (c, d) = (ids[2].to_string(), ids[3].to_string());
    let apply = |only: &[&str]| {
        let mut cmd = sb.cmd();
        cmd.args(["apply", "m.csv", "--yes", "--resume", "--config", "c.yaml"])
            .args(["--max-errors", "1", "--report", "r.csv"]);
        for id in only {
            cmd.args(["--only", id]);
        }
        run(&mut cmd)
    };
    let out = apply(&[&c, &d]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let continued = format!("--resume --yes --only {c} --only {d}");
    assert!(
        stderr(&out).contains(&continued),
        "the resume command keeps the selection: {}",
        stderr(&out)
    );
    let before = sb.state().stats().requests;
    let out = apply(&[&d]);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("--only/--skip"), "{}", stderr(&out));
    assert_eq!(sb.state().stats().requests, before, "nothing sent");
    let out = apply(&[&d.to_uppercase(), &c]);
    assert_eq!(code(&out), 3, "the same run, continued: {}", stderr(&out));
    assert!(!sb.path("r.2.csv").exists());
}

#[test]
fn a_selection_that_names_nothing_real_is_refused_before_any_request() {
    let ids = ids(4, 952);
    let sb = Sandbox::seeded(&ids);
    write_csv(&sb.path("m.csv"), &ids[..3], &[]);
    let absent = ids[3].to_string();
    let out = sb
        .plan("m.csv")
        .args(["--only", &ids[0].to_string(), "--only", &absent])
        .run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&absent) && stderr(&out).contains("m.csv"),
        "{}",
        stderr(&out)
    );
    let out = sb.plan("m.csv").args(["--skip", "gw-7"]).run();
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).contains("\"gw-7\""), "{}", stderr(&out));
    sb.write("ids.txt", format!("{}\nnope\n", ids[0]));
    let out = sb.plan("m.csv").args(["--only", "@ids.txt"]).run();
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    // An output may not overwrite the list it was given.
    let out = sb
        .plan("m.csv")
        .args(["--only", "@ids.txt"])
        .summary_json("ids.txt")
        .run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(sb.state().stats().requests, 0);
}

/// `-o/--output` names a file wherever it is taken; the plan's display is
/// `--diff-format`, and the old spelling is refused with the new one.
#[test]
fn the_old_output_flag_of_plan_and_apply_is_refused_with_the_new_name() {
    let ids = ids(2, 953);
    let sb = Sandbox::with_manifest(&ids);
    for command in [&["plan"][..], &["apply", "--yes"]] {
        let out = run(sb.cmd().args(command).args(["m.csv", "--output", "json"]));
        assert_eq!(code(&out), 64, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--diff-format json"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(sb.state().stats().requests, 0);
    let out = sb.plan("m.csv").args(["--diff-format", "json"]).run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let last = stdout(&out).lines().last().unwrap().to_owned();
    let closing: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(closing["plan"]["would_update"], 2, "{last}");
    let help = stdout(&run(
        std::process::Command::new(BIN).args(["plan", "--help"])
    ));
    assert!(help.contains("-o, --output <PLAN>"), "{help}");
}

/// A file of ids saved by a Windows editor opens with a byte-order mark: the mark is not
/// part of the first id (it was refused as one), for `--only` and `--skip` alike.
#[test]
fn a_byte_order_mark_at_the_top_of_an_id_file_is_read_past() {
    let ids = ids(3, 954);
    let sb = Sandbox::with_manifest(&ids);
    sb.write("ids.txt", format!("\u{feff}{}\r\n{}\r\n", ids[0], ids[1]));
    for (flag, chosen) in [
        ("--only", [true, true, false]),
        ("--skip", [false, false, true]),
    ] {
        let report_name = format!("{}.csv", &flag[2..]);
        let out = sb
            .plan("m.csv")
            .args([flag, "@ids.txt"])
            .report(&report_name)
            .run();
        assert_eq!(code(&out), 0, "{flag}: {}", stderr(&out));
        let report = sb.report(&report_name);
        for (id, chosen) in ids.iter().zip(chosen) {
            let row = report.values().find(|r| r.id == id.to_string()).unwrap();
            assert_eq!(
                row.error_code.as_str() != "not_selected",
                chosen,
                "{flag}: {row:?}"
            );
        }
    }
}

/// A selection that leaves no row of the manifest is refused, exit 64, naming the flags,
/// before any request: `--skip` naming every id `--only` names (it selected nothing and
/// exited 0), an `--only` file with no id, a `--skip` of every row. A shard that holds none
/// of the chosen rows, while another does, runs (nothing to do there).
#[test]
fn a_selection_that_leaves_no_row_is_refused_before_any_request() {
    let ids = ids(4, 955);
    let sb = Sandbox::with_manifest(&ids);
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    sb.write("none.txt", "id\n# nothing failed\n");
    let all = ids.iter().map(|id| format!("{id}\n")).collect::<String>();
    sb.write("all.txt", all);
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--only", &a, "--skip", &a],
            &["--only and --skip leave no row"],
        ),
        (
            &["--only", &a, "--only", &b, "--skip", &b, "--skip", &a],
            &["--only and --skip"],
        ),
        (&["--only", "@none.txt"], &["--only names no id"]),
        (
            &["--skip", "@all.txt"],
            &["--only/--skip leave no row of m.csv"],
        ),
    ];
    for (flags, says) in cases {
        for command in [&["plan"][..], &["apply", "--yes"]] {
            let out = run(sb
                .cmd()
                .args(command)
                .args(["m.csv", "--report", "r.csv"])
                .args(flags));
            assert_eq!(code(&out), 64, "{command:?} {flags:?}: {}", stderr(&out));
            for said in says {
                assert!(stderr(&out).contains(said), "{flags:?}: {}", stderr(&out));
            }
        }
    }
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");
    // One chosen row: each shard runs, the one without it has nothing to do.
    for shard in ["0/2", "1/2"] {
        let out = sb
            .apply("m.csv")
            .args(["--only", &a, "--shard", shard])
            .args(["--report", &format!("s{}.csv", &shard[..1])])
            .run();
        assert_eq!(code(&out), 0, "{shard}: {}", stderr(&out));
    }
    assert_eq!(sb.state().stats().patches, 1, "{:?}", sb.state().stats());
}
