//! Review, then apply exactly that: `plan --out PLAN` and `apply --plan PLAN`.

use sipgw_bulk::sandbox::starting_fields;
use sipgw_bulk::status::Status;

use crate::support::*;

#[test]
fn apply_of_a_saved_plan_writes_exactly_its_changes_and_reports_a_moved_gateway_as_conflict() {
    let ids = ids(30, 80);
    let sb = Sandbox::seeded(&ids);
    // Rows 0..20 ask for changes; rows 20..30 ask for what the sandbox already holds.
    write_csv(&sb.path("m.csv"), &ids[..20], &[]);
    let mut text = sb.read("m.csv");
    for (i, id) in ids.iter().enumerate().skip(20) {
        text.push_str(&format!(
            "{id},{},,,,\n",
            starting_fields(i as u64 + 1).name
        ));
    }
    sb.write("m.csv", text);
    let out = sb
        .plan("m.csv")
        .args(["--out", "p.plan"])
        .report("plan.csv")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("apply --plan p.plan"),
        "{}",
        stderr(&out)
    );

    // After the review, another client edits a planned gateway and an unplanned one.
    let mut moved = starting_fields(6);
    moved.uri = "sip:moved.example.com".into();
    assert!(sb.state().edit(&ids[5], moved.clone()));
    let mut unplanned = starting_fields(26);
    unplanned.name = "renamed-elsewhere".into();
    assert!(sb.state().edit(&ids[25], unplanned.clone()));

    let gets_before = sb.state().stats().gets;
    let out = run(sb
        .cmd()
        .args(["apply", "--plan", "p.plan", "--report", "r.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // Each written row: a GET that finds the change, and a fresh one after its write slot
    // unless that came within the first GET's round trip. The moved row is judged on its
    // first GET: no write slot, no second read.
    let gets = sb.state().stats().gets - gets_before;
    assert!((19 + 1..=19 * 2 + 1).contains(&gets), "{gets} GETs");
    // The console names the conflict as it happens and again at the end.
    let err = stderr(&out);
    let conflict_id = ids[5].to_string();
    assert_eq!(err.matches(&conflict_id).count(), 2, "{err}");
    assert!(err.contains("1 row(s) need attention"), "{err}");
    assert!(
        !err.contains("conflict conflict"),
        "the code repeats the status: {err}"
    );
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 20, "one line per planned change");
    let want = expected(&ids[..20]);
    let now = sb.state().snapshot();
    for r in report.values() {
        let id: uuid::Uuid = r.id.parse().unwrap();
        if id == ids[5] {
            assert_eq!(r.status, Status::Conflict, "{r:?}");
            assert!(r.error.contains("uri"), "{r:?}");
            assert_eq!(now[&id], moved, "not written");
        } else {
            assert_eq!(r.status, Status::Updated, "{r:?}");
            assert_eq!(now[&id], want[&id]);
        }
    }
    for id in &ids[20..] {
        assert_eq!(
            sb.state().patch_count(id),
            0,
            "not in the plan: never written"
        );
    }
    assert_eq!(now[&ids[25]], unplanned);
    // The conflict is not in the undo file.
    let out = run(sb.cmd().args(["rollback", "r.csv"]));
    assert_eq!(stdout(&out).lines().count(), 20, "{}", stdout(&out));
}

#[test]
fn a_plan_from_another_space_or_an_edited_manifest_is_refused() {
    let ids = ids(10, 81);
    let sb = Sandbox::seeded(&ids);
    let other = Sandbox::seeded(&ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let out = sb.plan("m.csv").args(["--out", "p.plan"]).run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_BASE_URL", other.base_url())
        .args(["apply", "--plan", "p.plan", "--report", "x.csv"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("was read from"), "{}", stderr(&out));
    assert_eq!(other.state().stats().requests, 0);

    write_csv(&sb.path("m.csv"), &ids[..5], &[]);
    let requests = sb.state().stats().requests;
    let out = run(sb
        .cmd()
        .args(["apply", "--plan", "p.plan", "--report", "y.csv"]));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has changed since"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.state().stats().requests, requests, "nothing sent");

    // A plan given where a manifest goes: the hint names --plan.
    let out = sb.apply("p.plan").run();
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("--plan p.plan"), "{}", stderr(&out));
}

#[test]
fn an_incomplete_plan_is_not_saved() {
    let ids = ids(10, 82);
    let sb = Sandbox::with_manifest(&ids);
    let out = run(sb
        .cmd()
        .env("SIGNALWIRE_API_TOKEN", "wrong")
        .args(["plan", "m.csv", "--out", "p.plan"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!sb.path("p.plan").exists());
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
}

/// A plan file that is not there: one line says so, its cause once.
#[test]
fn a_missing_plan_is_refused_with_its_cause_said_once() {
    let ids = ids(1, 3207);
    let sb = Sandbox::seeded(&ids);
    let out = run(sb.cmd().args(["apply", "--plan", "nope.plan", "--yes"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 64, "{err}");
    assert!(err.contains("cannot read plan nope.plan: "), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");
}
