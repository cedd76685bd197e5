//! Scheduled runs as shipped: `examples/cron/run-nightly.sh` run by bash, and the
//! CronJob's container arguments run by `/bin/sh`, each twice with an edit made out of
//! band between: the second run must see the drift, fix it and report it, in a report of
//! its own, leaving the first run's report (its undo file) as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sipgw_bulk::shard::Shard;
use sipgw_bulk::status::Status;
use uuid::Uuid;

use crate::support::*;

/// What someone else does between two runs: the README's recipe, a one-row apply under
/// its own report.
fn edit_out_of_band(sb: &Sandbox, id: Uuid, name: &str) {
    let edit = sb.path("edit.csv");
    std::fs::write(&edit, format!("id,name\n{id},{name}\n")).unwrap();
    let report = sb.path(&format!("edit-{name}.csv"));
    let out = run(sb
        .cmd()
        .arg("apply")
        .arg(&edit)
        .arg("--yes")
        .arg("--report")
        .arg(&report));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().snapshot()[&id].name, name);
}

/// The reports in `dir` whose names `is_report` accepts, oldest first (by name:
/// `DAY.csv`, `DAY.2.csv`, ...).
fn reports_in(dir: &Path, is_report: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_report(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    // DAY.csv < DAY.2.csv < ... < DAY.10.csv: by the number before the extension.
    found.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        parts[parts.len() - 2].parse::<u32>().unwrap_or(1)
    });
    found
}

fn statuses(report: &Path) -> BTreeMap<String, (Status, String)> {
    crate::support::report(report)
        .into_values()
        .map(|r| (r.id, (r.status, r.changed_fields.to_string())))
        .collect()
}

/// The nightly script as shipped, with its state directory, credentials file, binary and
/// metrics file from the environment.
#[test]
fn the_nightly_script_run_again_after_an_edit_fixes_and_reports_the_drift() {
    let ids = ids(12, 901);
    let sb = Sandbox::seeded(&ids);
    let manifest = sb.path("gateways.csv");
    write_csv(&manifest, &ids, &[]);
    let state = sb.path("var");
    let textfiles = sb.path("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let credentials = sb.path("credentials.env");
    let config = sb.state().config();
    std::fs::write(
        &credentials,
        format!(
            "SIGNALWIRE_BASE_URL={}\nSIGNALWIRE_PROJECT_ID={}\nSIGNALWIRE_API_TOKEN={}\n",
            sb.base_url(),
            config.project_id,
            config.api_token
        ),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cron/run-nightly.sh");
    // Every run starts in the same second, as two runs of one minute's cron line may.
    let clock = sb.path("clock");
    std::fs::create_dir(&clock).unwrap();
    let date = clock.join("date");
    std::fs::write(
        &date,
        "#!/bin/sh\ncase \"$1\" in +%F) echo 2026-12-07 ;; *) echo 030000 ;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&date, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", clock.display());
    let nightly = || {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(&manifest)
            .current_dir(sb.dir.path())
            .env_clear()
            .env("PATH", &path)
            .env("SIPGW_BULK", BIN)
            .env("SIPGW_STATE_DIR", &state)
            .env("SIPGW_CREDENTIALS", &credentials)
            .env("SIPGW_METRICS_FILE", textfiles.join("sipgw_bulk.prom"))
            .env("SIPGW_BULK_STATE_DIR", sb.path("locks"));
        run(&mut cmd)
    };
    let is_report =
        |n: &str| n.ends_with(".csv") && n.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    let reports = state.join("reports");

    let first = nightly();
    assert_eq!(code(&first), 2, "drift fixed: exit 2\n{}", stderr(&first));
    let found = reports_in(&reports, is_report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        stderr(&first).contains(&format!("its undo file: {} (summary: ", found[0].display())),
        "the alert names the report: {}",
        stderr(&first)
    );
    let first_report = std::fs::read(&found[0]).unwrap();
    assert!(
        statuses(&found[0])
            .values()
            .all(|(s, _)| *s == Status::Updated),
        "the first run fixes every row"
    );

    edit_out_of_band(&sb, ids[4], "renamed-elsewhere");
    let second = nightly();
    assert_eq!(
        code(&second),
        2,
        "the edit is seen and fixed\n{}",
        stderr(&second)
    );
    let found = reports_in(&reports, is_report);
    assert_eq!(found.len(), 2, "a report of its own: {found:?}");
    assert!(
        stderr(&second).contains(&format!("its undo file: {} (summary: ", found[1].display())),
        "the second run's alert names its own report: {}",
        stderr(&second)
    );
    let day = found[0].file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        found[1].file_name().unwrap().to_string_lossy(),
        format!("{day}.2.csv")
    );
    assert_eq!(
        std::fs::read(&found[0]).unwrap(),
        first_report,
        "the first run's report (its undo file) is left as it was"
    );
    let seen = statuses(&found[1]);
    assert_eq!(seen.len(), ids.len(), "every gateway was read again");
    for (i, id) in ids.iter().enumerate() {
        let (status, fields) = &seen[&id.to_string()];
        match i {
            4 => assert_eq!((status, fields.as_str()), (&Status::Updated, "name")),
            _ => assert_eq!(*status, Status::Unchanged, "row {i}"),
        }
    }
    assert_eq!(
        sb.state().snapshot(),
        expected(&ids),
        "the space as declared again"
    );
    let log = std::fs::read_to_string(state.join("logs").join(format!("{day}.jsonl"))).unwrap();
    assert!(
        log.contains(&format!("{day}.2.csv")),
        "the log names the new report"
    );
    let summaries: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".summary.json"))
        .collect();
    assert!(
        summaries
            .iter()
            .map(|p| summary_json(p))
            .any(|s| s["report"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{day}.2.csv"))
                && s["counts"]["updated"] == 1),
        "the second run's summary names its report and its one fix"
    );
    assert_eq!(summaries.len(), 2, "one summary per run: {summaries:?}");
    let metrics = std::fs::read_to_string(textfiles.join("sipgw_bulk.prom")).unwrap();
    assert!(metrics.contains("sipgw_bulk_last_exit_code{"), "{metrics}");

    let third = nightly();
    assert_eq!(
        code(&third),
        0,
        "nothing drifted: exit 0\n{}",
        stderr(&third)
    );
    let found = reports_in(&reports, is_report);
    assert_eq!(found.len(), 3);
    assert!(
        statuses(&found[2])
            .values()
            .all(|(s, _)| *s == Status::Unchanged)
    );
}

/// The binary missing where the script looks for it is said (cron would otherwise log
/// nothing: exit 127 from a PATH lookup).
#[test]
fn the_nightly_script_says_when_the_binary_is_not_where_it_looks() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cron/run-nightly.sh");
    let out = run(Command::new("bash")
        .arg(&script)
        .arg("gateways.csv")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SIPGW_BULK", dir.path().join("nowhere/sipgw-bulk"))
        .env("SIPGW_STATE_DIR", dir.path().join("var")));
    assert_eq!(code(&out), 127);
    let said = stderr(&out);
    // With a syslog the message goes there; without one, to stderr.
    use std::os::unix::fs::FileTypeExt;
    let syslog = std::fs::metadata("/dev/log").is_ok_and(|m| m.file_type().is_socket());
    if !syslog {
        assert!(said.contains("SIPGW_BULK"), "{said}");
    }
}

/// The CronJob's container arguments, as `/bin/sh -c` runs them in the pod (see
/// `kubernetes::CronJobPod`), as shard 0 of its 4.
#[test]
fn the_cronjob_s_command_run_again_after_an_edit_fixes_and_reports_the_drift() {
    let ids = ids(24, 902);
    let sb = Sandbox::seeded(&ids);
    let cronjob = crate::kubernetes::CronJobPod::new(&sb);
    let volume = cronjob.volume.clone();
    write_csv(&cronjob.manifests.join("gateways.csv"), &ids, &[]);
    let pod = || cronjob.run(&sb, 0, &[]);
    let shard: Shard = "0/4".parse().unwrap();
    let mine: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| shard.owns(&id.to_string()))
        .collect();
    assert!(mine.len() > 1, "shard 0 has rows to work with");

    let first = pod();
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let day_dir = std::fs::read_dir(&volume)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let is_report = |n: &str| n.starts_with("shard-0") && n.ends_with(".csv");
    let found = reports_in(&day_dir, is_report);
    assert_eq!(found.len(), 1, "{found:?}");
    let first_report = std::fs::read(&found[0]).unwrap();
    assert_eq!(statuses(&found[0]).len(), mine.len(), "shard 0's rows only");

    edit_out_of_band(&sb, mine[1], "renamed-in-the-pod-s-absence");
    let second = pod();
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let found = reports_in(&day_dir, is_report);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[1].file_name().unwrap(), "shard-0.2.csv");
    assert_eq!(std::fs::read(&found[0]).unwrap(), first_report);
    let seen = statuses(&found[1]);
    assert_eq!(seen.len(), mine.len());
    assert_eq!(
        seen[&mine[1].to_string()],
        (Status::Updated, "name".to_owned()),
        "the edit is seen and fixed"
    );
    assert_eq!(
        seen.values()
            .filter(|(s, _)| *s == Status::Unchanged)
            .count(),
        mine.len() - 1
    );
    assert_eq!(sb.state().snapshot()[&mine[1]], expected(&ids)[&mine[1]]);
}
