//! The files and messages around a run: formats from extensions, paths in every I/O error,
//! rollback that refuses what is not an apply report, no lock file left by refused runs or
//! plans, forgiving headers and hints.

use crate::support::*;

#[test]
fn the_report_format_follows_the_extension_and_a_contradiction_is_refused() {
    let ids = ids(5, 83);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb.plan("m.csv").report("x.jsonl").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = sb.read("x.jsonl");
    assert!(text.starts_with('{'), "JSONL, not CSV: {text}");
    let out = sb
        .plan("m.csv")
        .report("y.jsonl")
        .args(["--report-format", "csv"])
        .run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(!sb.path("y.jsonl").exists());
}

#[test]
fn io_errors_name_the_path_the_user_gave() {
    let ids = ids(3, 84);
    let sb = Sandbox::with_manifest(&ids);
    let out = run(sb.cmd().args(["export", "-o", "nodir/x.csv"]));
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("nodir/x.csv"), "{}", stderr(&out));
    let out = sb.plan("m.csv").report("nodir/r.csv").run();
    assert_eq!(code(&out), 64);
    let err = stderr(&out);
    assert!(
        err.contains("nodir/r.csv") && !err.contains(".lock"),
        "{err}"
    );
}

#[test]
fn rollback_refuses_a_manifest_a_plan_and_a_plan_report_writing_nothing() {
    let ids = ids(5, 85);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb
        .plan("m.csv")
        .args(["--out", "p.plan"])
        .report("p.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (file, says) in [
        ("m.csv", "is a manifest"),
        ("p.plan", "is a saved plan"),
        ("p.csv", "is a plan's report"),
    ] {
        let out = run(sb.cmd().args(["rollback", file]));
        assert_eq!(code(&out), 64, "{file}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{file}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "",
            "{file}: nothing on stdout, not even a header"
        );
    }
}

#[test]
fn refused_runs_and_plans_leave_no_lock_file() {
    let ids = ids(5, 86);
    let sb = Sandbox::with_manifest(&ids);
    // Refused: no --yes off a terminal.
    let out = run(sb.cmd().args(["apply", "m.csv", "--report", "a.csv"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(!sb.path("a.csv.lock").exists());
    let out = sb.plan("m.csv").report("p.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(sb.path("p.csv").exists() && !sb.path("p.csv.lock").exists());
    let leftovers: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_capitalised_header_is_read_and_a_comma_in_a_list_cell_gets_a_hint() {
    let ids = ids(2, 87);
    let sb = Sandbox::seeded(&ids);
    let text = format!(
        "ID,Codecs\n{},OPUS;PCMU\n{},\"OPUS,PCMU\"\n",
        ids[0], ids[1]
    );
    sb.write("m.csv", text);
    let out = run(sb.cmd().args(["validate", "m.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let listing = stdout(&out);
    assert!(
        listing.starts_with("line 3:"),
        "only the second row is bad: {listing}"
    );
    assert!(listing.contains("separate values with `;`"), "{listing}");
}

#[test]
fn show_prints_one_gateway_as_a_manifest_row_or_json() {
    let ids = ids(3, 88);
    let sb = Sandbox::seeded(&ids);
    let out = run(sb.cmd().args(["show", &ids[1].to_string()]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let want = sipgw_bulk::sandbox::starting_fields(2);
    assert_eq!(
        stdout(&out),
        format!(
            "id,name,uri,encryption,ciphers,codecs\n{},{},{},optional,AES_CM_128_HMAC_SHA1_80,PCMU;PCMA\n",
            ids[1], want.name, want.uri
        )
    );
    let out = run(sb.cmd().args(["show", &ids[1].to_string(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["fields"]["name"], want.name);
    let missing = "99999999-9999-4999-8999-999999999999";
    let out = run(sb.cmd().args(["show", missing]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = run(sb.cmd().args(["show", "not-an-id"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
}

#[test]
fn color_is_never_on_by_default_off_a_terminal_and_always_when_asked() {
    let ids = ids(3, 89);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb.plan("m.csv").report("a.csv").run();
    assert!(!stdout(&out).contains('\u{1b}'));
    let out = sb
        .plan("m.csv")
        .report("b.csv")
        .args(["--color", "always"])
        .run();
    assert!(stdout(&out).contains("\u{1b}[33m"), "{}", stdout(&out));
}

#[test]
fn each_help_lists_its_own_flags_first_and_only_the_global_ones_that_apply() {
    let help = |args: &[&str]| {
        let out = run(std::process::Command::new(BIN).args(args));
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let apply = help(&["apply", "--help"]);
    let global = apply.find("Global options:").unwrap();
    assert!(apply.find("--max-changes").unwrap() < global, "{apply}");
    assert!(apply[global..].contains("--rate"), "{apply}");
    for cmd in ["export", "sandbox", "show", "rollback", "validate"] {
        for short in [false, true] {
            let text = help(&[cmd, if short { "-h" } else { "--help" }]);
            assert!(text.contains(&format!("Usage: sipgw-bulk {cmd}")), "{text}");
            for flag in ["--rate ", "--report ", "--concurrency "] {
                assert!(!text.contains(flag), "{cmd} lists {flag}: {text}");
            }
            assert!(text.contains("--log-format"), "{cmd}: {text}");
        }
    }
    assert!(help(&["export", "--help"]).contains("--space"));
    assert!(help(&["help", "export"]).contains("--page-size"));
}

#[test]
fn a_plan_refused_on_an_apply_report_leaves_that_report_resumable() {
    let ids = ids(4, 90);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb.apply("m.csv").report("a.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run_file = std::fs::read(sb.path("a.csv.run.json")).unwrap();
    assert!(!sb.path("a.csv.lock").exists(), "no lock outlives its run");
    let out = sb.plan("m.csv").report("a.csv").run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(sb.path("a.csv.run.json")).unwrap(),
        run_file,
        "the apply's run file is kept"
    );
    assert!(!sb.path("a.csv.lock").exists());
    let out = sb.apply("m.csv").args(["--resume"]).report("a.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
