//! `--read-mode list|get|auto`: the space read in pages gives the same report, row for
//! row, as one GET a row, with about (pages + changed rows) requests.

use std::collections::BTreeMap;

use sipgw_bulk::report::ReadRecord;
use sipgw_bulk::sandbox::{SandboxConfig, starting_fields};
use sipgw_bulk::status::Status;
use uuid::Uuid;

use crate::support::*;

/// A space of 100 gateways (25 a page); a manifest of 40 changed rows, 20 rows already as
/// asked, a row whose gateway is not there, an invalid row, and two rows whose gateways
/// another client edits: one to what the row asks, one to something else.
struct Scene {
    sb: Sandbox,
    ids: Vec<Uuid>,
    missing: Uuid,
}

const CHANGED: usize = 40;
const ALREADY: std::ops::Range<usize> = 40..60;
const EDITED_TO_DESIRED: usize = 60;
const EDITED_ELSEWHERE: usize = 61;
const IN_MANIFEST: usize = 62;

fn scene(seed: u64) -> Scene {
    let ids = ids(100, seed);
    let config = SandboxConfig {
        max_page_size: 25,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    let missing = crate::support::ids(1, seed + 1000)[0];
    write_csv(&sb.path("m.csv"), &ids[..CHANGED], &[]);
    let mut text = sb.read("m.csv");
    for i in ALREADY {
        let s = starting_fields(i as u64 + 1);
        text.push_str(&format!("{},{},{},,,\n", ids[i], s.name, s.uri));
    }
    for i in [EDITED_TO_DESIRED, EDITED_ELSEWHERE] {
        text.push_str(&format!("{},asked-{i},,,,\n", ids[i]));
    }
    text.push_str(&format!("{missing},pbx-missing,,,,\n"));
    text.push_str("not-a-uuid,pbx-bad,,,,\n");
    sb.write("m.csv", text);
    Scene { sb, ids, missing }
}

/// The edits another client makes: the first to what the manifest asks, the second not.
fn edits(ids: &[Uuid]) -> [(Uuid, sipgw_bulk::model::GatewayFields); 2] {
    let mut to_desired = starting_fields(EDITED_TO_DESIRED as u64 + 1);
    to_desired.name = format!("asked-{EDITED_TO_DESIRED}");
    let mut elsewhere = starting_fields(EDITED_ELSEWHERE as u64 + 1);
    elsewhere.uri = "sip:moved.example.com".into();
    [
        (ids[EDITED_TO_DESIRED], to_desired),
        (ids[EDITED_ELSEWHERE], elsewhere),
    ]
}

/// What must match between modes: everything but the request count and timing.
fn comparable(report: BTreeMap<u64, ReadRecord>) -> Vec<String> {
    report
        .into_values()
        .map(|r| {
            format!(
                "{} {} {} {:?} {:?} {:?} {:?} {} {}",
                r.row,
                r.id,
                r.status,
                r.changed_fields.to_string(),
                r.before,
                r.after,
                r.http_status,
                r.error_code,
                r.error
            )
        })
        .collect()
}

#[test]
fn list_and_get_modes_write_the_same_report_and_list_sends_pages_plus_changed_rows() {
    // get mode: the other client's edits are there before the run.
    let get = scene(120);
    for (id, fields) in edits(&get.ids) {
        assert!(get.sb.state().edit(&id, fields));
    }
    let out = run(get.sb.cmd().args([
        "apply",
        "m.csv",
        "--yes",
        "--read-mode",
        "get",
        "--report",
        "r.csv",
    ]));
    assert_eq!(
        code(&out),
        1,
        "the invalid and missing rows: {}",
        stderr(&out)
    );
    let get_stats = get.sb.state().stats();
    assert_eq!(get_stats.lists, 0);
    // Each row's GET, the missing id's, and a fresh GET before a PATCH whose slot came
    // later than its row's GET's round trip.
    let fresh_reads = get_stats.gets - (IN_MANIFEST as u64 + 1);
    assert!(fresh_reads <= get_stats.patches, "{get_stats:?}");
    assert_eq!(get_stats.patches, CHANGED as u64 + 1);

    // list mode: the edits land after the last page, before the PATCHes.
    let list = scene(120);
    for (id, fields) in edits(&list.ids) {
        list.sb.state().edit_after_listing(id, fields);
    }
    let out = run(list.sb.cmd().args([
        "apply",
        "m.csv",
        "--yes",
        "--read-mode",
        "list",
        "--report",
        "r.csv",
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let list_stats = list.sb.state().stats();
    assert_eq!(list_stats.lists, 4, "100 gateways, 25 a page");
    let summary = summary_json(&list.sb.path("s.json"));
    // A GET for each row the pages showed differing (the 40, and the 2 edited after the
    // snapshot: it still showed them as they were), and one for the missing id; on a busy
    // machine, a read that aged before its write could leave is read again, as a retry.
    let again = summary["retries"].as_u64().unwrap();
    assert_eq!(list_stats.gets, CHANGED as u64 + 2 + 1 + again, "{summary}");
    assert_eq!(list_stats.patches, CHANGED as u64 + 1);
    assert_eq!(summary["read_in_pages"]["pages"], 4, "{summary}");
    assert_eq!(summary["read_in_pages"]["found"], IN_MANIFEST, "{summary}");
    assert_eq!(summary["requests"], 4 + 43 + 41 + again, "{summary}");

    let get_report = report(&get.sb.path("r.csv"));
    let list_report = report(&list.sb.path("r.csv"));
    let by_status =
        |r: &BTreeMap<u64, ReadRecord>, s: Status| r.values().filter(|x| x.status == s).count();
    assert_eq!(by_status(&list_report, Status::Updated), CHANGED + 1);
    assert_eq!(
        by_status(&list_report, Status::Unchanged),
        ALREADY.len() + 1
    );
    assert_eq!(by_status(&list_report, Status::NotFound), 1);
    assert_eq!(by_status(&list_report, Status::Invalid), 1);
    let moved = list_report
        .values()
        .find(|r| r.id == list.ids[EDITED_ELSEWHERE].to_string())
        .unwrap();
    assert_eq!(
        moved.before.as_ref().unwrap().uri,
        "sip:moved.example.com",
        "diffed against the gateway as it was when written, not as listed"
    );
    assert!(
        list_report
            .values()
            .any(|r| r.id == list.missing.to_string())
    );
    assert_eq!(comparable(get_report), comparable(list_report));
    assert_eq!(get.sb.state().snapshot(), list.sb.state().snapshot());
}

#[test]
fn a_plan_read_in_pages_matches_one_read_by_get() {
    let get = scene(121);
    let list = scene(121);
    let plan = |sb: &Sandbox, mode: &str| {
        let out = sb
            .plan("m.csv")
            .args(["--read-mode", mode])
            .report("p.csv")
            .run();
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        stdout(&out)
    };
    let shown_get = plan(&get.sb, "get");
    let shown_list = plan(&list.sb, "list");
    assert_eq!(shown_get, shown_list, "the same plan on the screen");
    assert_eq!(
        comparable(report(&get.sb.path("p.csv"))),
        comparable(report(&list.sb.path("p.csv")))
    );
    let stats = list.sb.state().stats();
    assert_eq!(
        (stats.lists, stats.gets),
        (4, 1),
        "only the missing id is read by GET"
    );
}

#[test]
fn a_listing_that_fails_part_way_leaves_the_rest_to_get() {
    // The second page's next link points at another host: paging stops there, and every
    // row the first page did not hold is read by GET; nothing is lost.
    let s = scene(122);
    let config = SandboxConfig {
        max_page_size: 25,
        next_link_origin: Some("http://127.0.0.2:9".into()),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &s.ids);
    std::fs::copy(s.sb.path("m.csv"), sb.path("m.csv")).unwrap();
    let out = sb
        .plan("m.csv")
        .args(["--read-mode", "list"])
        .report("p.csv")
        .summary_json("s.json")
        .run();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped early"), "{}", stderr(&out));
    let stats = sb.state().stats();
    assert_eq!(stats.lists, 1);
    let found = sb.summary("s.json")["read_in_pages"]["found"]
        .as_u64()
        .unwrap();
    assert!(found > 0 && found < IN_MANIFEST as u64, "{found}");
    assert_eq!(stats.gets, IN_MANIFEST as u64 + 1 - found);
    let out = run(s
        .sb
        .cmd()
        .args(["plan", "m.csv", "--read-mode", "get", "--report", "p.csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        comparable(report(&sb.path("p.csv"))),
        comparable(report(&s.sb.path("p.csv")))
    );
}

#[test]
fn auto_reads_pages_only_while_they_cost_less_than_the_gets_would() {
    // 1,000 rows at concurrency 32: one GET a row is 32 rounds of requests, so auto reads
    // at most 32 pages. The space holds 2,000 gateways, 25 a page: 80 pages. Auto reads
    // 32 of them and GETs the rows they did not hold.
    let ids = ids(2000, 123);
    let config = SandboxConfig {
        max_page_size: 25,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    write_csv(&sb.path("m.csv"), &ids[..1000], &[]);
    let out = sb
        .plan("m.csv")
        .args(["--concurrency", "32"])
        .report("p.csv")
        .summary_json("s.json")
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = sb.summary("s.json");
    let pages = &summary["read_in_pages"];
    assert_eq!(pages["pages"], 32, "{summary}");
    assert_eq!(pages["complete"], false, "{summary}");
    assert!(
        pages["stopped_early"].as_str().unwrap().contains("budget"),
        "{summary}"
    );
    let found = pages["found"].as_u64().unwrap();
    let stats = sb.state().stats();
    assert_eq!(stats.lists, 32);
    assert_eq!(stats.gets, 1000 - found);
    assert!(
        found > 200,
        "about 400 of the 800 listed are the manifest's: {found}"
    );
    let report = sb.report("p.csv");
    assert_eq!(report.len(), 1000);
    assert!(report.values().all(|r| r.status == Status::WouldUpdate));

    // With fewer than 1,000 rows auto reads by GET alone.
    write_csv(&sb.path("small.csv"), &ids[..999], &[]);
    let out = sb.plan("small.csv").report("p2.csv").run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sb.state().stats().lists, 32, "no page read");
}

#[test]
fn a_paging_cap_stops_the_listing_and_says_so_and_the_rest_is_read_by_get() {
    // max_pages 2 over a space of 4 pages: the cap is named (not taken for auto's page
    // budget), and the rows the two pages did not hold are read by GET.
    let s = scene(124);
    std::fs::write(s.sb.path("c.yaml"), "max_pages: 2\n").unwrap();
    let out = run(s.sb.cmd().args([
        "plan",
        "m.csv",
        "--config",
        "c.yaml",
        "--read-mode",
        "list",
        "--report",
        "p.csv",
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let summary = summary_json(&s.sb.path("s.json"));
    let why = summary["read_in_pages"]["stopped_early"].as_str().unwrap();
    assert!(why.contains("max_pages"), "{why}");
    assert!(!why.contains("budget"), "{why}");
    let found = summary["read_in_pages"]["found"].as_u64().unwrap();
    let stats = s.sb.state().stats();
    assert_eq!(stats.lists, 2);
    assert_eq!(stats.gets, IN_MANIFEST as u64 + 1 - found);
}
