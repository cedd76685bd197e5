//! The report chain a schedule writes (`r.csv`, `r.2.csv`, ...) and the rollbacks it
//! allows: a link belongs to the first link's space, shard and selection; a link is never
//! skipped, reused or taken when cut; an undo value carried from an earlier link stands
//! only while the gateway is what that run left; a rollback puts back only the fields its
//! run changed.

use std::collections::BTreeMap;

use sipgw_bulk::model::GatewayFields;
use sipgw_bulk::sandbox::SandboxConfig;
use sipgw_bulk::status::Status;

use crate::support::*;

/// `rollback REPORT -o FILE`, then the rows of FILE (a CSV manifest) by id, as cells.
fn rollback_rows(sb: &Sandbox, report: &str, out: &str) -> BTreeMap<String, Vec<String>> {
    let done = run(sb.cmd().args(["rollback", report, "-o", out]));
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let text = std::fs::read_to_string(sb.path(out)).unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        ["id", "name", "uri", "encryption", "ciphers", "codecs"]
    );
    rows.records()
        .map(|r| {
            let cells: Vec<String> = r.unwrap().iter().map(String::from).collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

fn apply_undo(sb: &Sandbox, manifest: &str) {
    let report = format!("{manifest}.report.csv");
    let out = run(sb
        .cmd()
        .args(["apply", manifest, "--yes", "--report", &report]));
    assert!([0, 1].contains(&code(&out)), "{}", stderr(&out));
}

/// Finding 4: a rollback puts back only the fields its run changed; a field someone edited
/// since survives it, in CSV (an empty cell) and YAML (no key).
#[test]
fn a_rollback_puts_back_only_the_fields_its_run_changed() {
    let ids = ids(3, 3004);
    let sb = Sandbox::start(SandboxConfig::default(), &ids);
    let start = sb.state().snapshot();
    let mut text = String::from("id,codecs\n");
    for id in &ids {
        text.push_str(&format!("{id},G722;PCMU\n"));
    }
    std::fs::write(sb.path("m.csv"), text).unwrap();
    let out = run(sb
        .cmd()
        .args(["apply", "m.csv", "--yes", "--report", "r.csv"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        report(&sb.path("r.csv"))
            .values()
            .all(|r| r.status == Status::Updated && r.changed_fields.to_string() == "codecs")
    );
    // Someone renames a gateway since.
    let mut renamed: GatewayFields = sb.state().snapshot()[&ids[1]].clone();
    renamed.name = "renamed-since".into();
    assert!(sb.state().edit(&ids[1], renamed));

    let rows = rollback_rows(&sb, "r.csv", "undo.csv");
    assert_eq!(rows.len(), 3);
    for cells in rows.values() {
        assert_eq!(&cells[..4], ["", "", "", ""], "{cells:?}");
        assert_eq!(cells[4], "PCMU;PCMA", "{cells:?}");
    }
    let out = run(sb.cmd().args(["rollback", "r.csv", "-o", "undo.yaml"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let yaml = std::fs::read_to_string(sb.path("undo.yaml")).unwrap();
    assert_eq!(yaml.matches("codecs:").count(), 3, "{yaml}");
    assert!(!yaml.contains("name:") && !yaml.contains("uri:"), "{yaml}");

    apply_undo(&sb, "undo.csv");
    let now = sb.state().snapshot();
    for id in &ids {
        assert_eq!(now[id].codecs, start[id].codecs, "codecs put back");
    }
    assert_eq!(
        now[&ids[1]].name, "renamed-since",
        "the edit since survives"
    );
    assert_eq!(now[&ids[0]], start[&ids[0]]);
}
