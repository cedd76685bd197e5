//! Every declared gateway field, walked through every layer by the real binary against the
//! sandbox: a manifest (CSV and YAML, written by the library's writer) asks for one field
//! per gateway; the plan shows it (text and JSON, saved); `apply --plan` PATCHes it; the
//! report records it; `rollback` puts it back. A layer that does not know a field drops
//! it somewhere on the way, and an assertion here names the field and the layer.

use std::collections::BTreeMap;

use sipgw_bulk::diff::{Field, FieldSet, only, with_fields_from};
use sipgw_bulk::manifest::{Format, ManifestWriter};
use sipgw_bulk::model::GatewayFields;
use sipgw_bulk::status::Status;
use uuid::Uuid;

use crate::support::*;

fn one(field: Field) -> FieldSet {
    let mut set = FieldSet::default();
    set.insert(field);
    set
}

/// A field's value as JSON, read from the serialized fields (not from any layer's code).
fn json_of(fields: &GatewayFields, field: Field) -> serde_json::Value {
    serde_json::to_value(fields).unwrap()[field.as_str()].clone()
}

fn write_manifest(path: &std::path::Path, format: Format, rows: &[(Uuid, GatewayFields)]) {
    let mut writer = ManifestWriter::new(Vec::new(), format).unwrap();
    for (id, fields) in rows {
        writer.write(&id.to_string(), fields).unwrap();
    }
    std::fs::write(path, writer.finish().unwrap()).unwrap();
}

/// The JSON plan's rows by id: the fields each one changes, with their old and new values.
fn planned_changes(out: &str) -> BTreeMap<String, serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("changes").is_some())
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v["changes"].clone()))
        .collect()
}

#[test]
fn every_declared_field_goes_through_manifest_plan_patch_report_and_rollback() {
    let ids = ids(Field::ALL.len() as u64, 310);
    let sb = Sandbox::seeded(&ids);
    let start = starting_state(&ids);
    // Gateway i asks for field i alone, at a value that differs from the sandbox's.
    let walk: Vec<(Uuid, Field, GatewayFields)> = Field::ALL
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (field, id))| (*id, *field, desired(i)))
        .collect();
    let rows: Vec<(Uuid, GatewayFields)> = walk
        .iter()
        .map(|(id, field, want)| (*id, only(want, one(*field))))
        .collect();
    for (id, field, want) in &walk {
        assert_ne!(
            json_of(&start[id], *field),
            json_of(want, *field),
            "the walk needs a value that changes `{}`",
            field.as_str()
        );
    }
    write_manifest(&sb.path("m.csv"), Format::Csv, &rows);
    write_manifest(&sb.path("m.yaml"), Format::Yaml, &rows);

    // The plan, from either format: each gateway changes its field and nothing else.
    for manifest in ["m.csv", "m.yaml"] {
        let saved = format!("{manifest}.plan");
        let out = sb
            .plan(manifest)
            .args(["--diff-format", "json", "--out", &saved])
            .report(&format!("{manifest}.report.csv"))
            .run();
        assert_eq!(code(&out), 0, "{manifest}: {}", stderr(&out));
        let planned = planned_changes(&stdout(&out));
        for (id, field, want) in &walk {
            let name = field.as_str();
            let changes = planned.get(&id.to_string()).unwrap_or_else(|| {
                panic!("{manifest}: the plan does not change `{name}`: {planned:?}")
            });
            let keys: Vec<&String> = changes.as_object().unwrap().keys().collect();
            assert_eq!(keys, [name], "{manifest}: the plan of `{name}`");
            assert_eq!(changes[name]["old"], json_of(&start[id], *field), "{name}");
            assert_eq!(changes[name]["new"], json_of(want, *field), "{name}");
        }
        let text_report = format!("{manifest}.text.csv");
        let text = sb.plan(manifest).report(&text_report).run();
        for (_, field, _) in &walk {
            let shown = format!("\n    {:<11} ", field.as_str());
            assert!(
                stdout(&text).contains(&shown),
                "{manifest}: the text plan names `{}`:\n{}",
                field.as_str(),
                stdout(&text)
            );
        }
    }
    assert_eq!(sb.state().stats().patches, 0);

    // The saved plan applied: each PATCH carries every field, the asked one changed.
    let out = run(sb.cmd().args([
        "apply",
        "--plan",
        "m.csv.plan",
        "--yes",
        "--report",
        "r.csv",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let now = sb.state().snapshot();
    let report = sb.report("r.csv");
    assert_eq!(report.len(), walk.len());
    for (id, field, want) in &walk {
        let name = field.as_str();
        let expected = with_fields_from(&start[id], want, one(*field));
        assert_eq!(now[id], expected, "the PATCH of `{name}`");
        let line = report.values().find(|r| r.id == id.to_string()).unwrap();
        assert_eq!(line.status, Status::Updated, "{name}: {line:?}");
        assert_eq!(line.changed_fields, one(*field), "the report of `{name}`");
        assert_eq!(line.before.as_ref(), Some(&start[id]), "{name}");
        assert_eq!(line.after.as_ref(), Some(&expected), "{name}");
    }
    assert_eq!(sb.state().stats().partial_patches, 0);

    // Rolled back through either format: every gateway as it was.
    for undo in ["undo.csv", "undo.yaml"] {
        let out = run(sb.cmd().args(["rollback", "r.csv", "-o", undo]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let out = sb.apply(undo).report(&format!("{undo}.report.csv")).run();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let now = sb.state().snapshot();
        for (id, field, _) in &walk {
            assert_eq!(
                now[id],
                start[id],
                "{undo}: the rollback of `{}`",
                field.as_str()
            );
        }
    }
}

#[test]
fn the_sandbox_knows_the_api_fields_the_tool_declares() {
    let declared: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(sipgw_bulk::sandbox::API_FIELDS, declared.as_slice());
    let serialized = serde_json::to_value(GatewayFields::default()).unwrap();
    let keys: Vec<&String> = serialized.as_object().unwrap().keys().collect();
    let mut sorted = declared.clone();
    sorted.sort_unstable();
    assert_eq!(
        keys, sorted,
        "the PATCH body's keys are the declared fields"
    );
}
