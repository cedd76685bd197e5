//! The invariants read from the files and the space after a step, and the manifests the
//! sequence writes.

use std::collections::BTreeMap;
use std::path::Path;

use sipgw_bulk::diff::{Field, FieldSet, differing};
use sipgw_bulk::model::{Desired, GatewayFields};
use sipgw_bulk::report::read_report;
use sipgw_bulk::status::Status;
use uuid::Uuid;

use crate::exec::{Res, Seq, fail};
use crate::model::{FileState, Undo};
use crate::ops::short;
use crate::world::{Snap, file_hash};

/// Every row at most once in a report; after a run that ended, every row of its
/// manifest (in its shard) exactly once.
pub fn rows_once(seq: &Seq, life: usize) -> Res {
    let l = &seq.m.lives[life];
    let path = seq.w.path(&l.path);
    if !path.exists() {
        return match l.ended {
            true => fail(
                "rows_once",
                format!("{} is missing after its run ended", l.path),
            ),
            false => Ok(()),
        };
    }
    let records = match read_report(&path) {
        Ok(r) => r,
        Err(e) => return fail("rows_once", format!("{} cannot be read back: {e}", l.path)),
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *seen.entry(r.id.clone()).or_default() += 1;
    }
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    if !twice.is_empty() {
        return fail(
            "rows_once",
            format!("{} holds {twice:?} more than once", l.path),
        );
    }
    let wanted: Vec<String> = l.rows.iter().map(Uuid::to_string).collect();
    if let Some(stranger) = seen.keys().find(|id| !wanted.contains(id)) {
        return fail(
            "rows_once",
            format!("{} holds {stranger}, not one of its rows", l.path),
        );
    }
    if l.ended {
        let missing: Vec<&String> = wanted.iter().filter(|id| !seen.contains_key(*id)).collect();
        if !missing.is_empty() {
            return fail(
                "rows_once",
                format!(
                    "{} ended without a line for {} rows: {missing:?}",
                    l.path,
                    missing.len()
                ),
            );
        }
    }
    Ok(())
}

/// After a run ended: no lock file of its report (or its chain's name) is left, and
/// every row it reports `updated` or `unchanged` is as the manifest asks, unless someone
/// else wrote it since or the sandbox answered it with other codecs.
pub fn ended_clean(seq: &Seq, life: usize, mismatch: &[Uuid]) -> Res {
    let l = &seq.m.lives[life];
    let root = &seq.m.chains[l.chain].root;
    for name in [&l.path, root] {
        if seq.w.path(&format!("{name}.lock")).exists() {
            return fail(
                "run_outcome",
                format!("{name}.lock outlived the run that ended"),
            );
        }
    }
    let manifest = seq.m.manifest(&seq.m.chains[l.chain].args.manifest);
    let desired: BTreeMap<String, &Desired> = manifest
        .rows
        .iter()
        .map(|(id, d)| (id.to_string(), d))
        .collect();
    let now = seq.w.snapshot();
    let records = read_report(&seq.w.path(&l.path)).unwrap_or_default();
    for r in records {
        if !matches!(r.status, Status::Updated | Status::Unchanged) {
            continue;
        }
        let Ok(id) = Uuid::try_parse(&r.id) else {
            continue;
        };
        let others = seq.m.evs[l.start_ev..]
            .iter()
            .any(|e| e.id == id && (e.by != Some(life) || e.mismatch));
        if others || mismatch.contains(&id) {
            continue;
        }
        if let (Some(d), Some(f)) = (desired.get(&r.id), now.get(&id))
            && sipgw_bulk::diff::merge(f, d) != *f
        {
            return fail(
                "run_outcome",
                format!(
                    "{} says {} is {}, but the gateway is {} (the manifest asks {})",
                    l.path,
                    short(&id),
                    r.status,
                    show(f),
                    crate::ops::wish(d)
                ),
            );
        }
    }
    Ok(())
}

/// A finished report is never written again (it is that run's undo file).
pub fn sealed_untouched(seq: &Seq) -> Res {
    for l in &seq.m.lives {
        if let Some(hash) = l.sealed
            && !l.dead
            && l.file == FileState::Intact
            && file_hash(&seq.w.path(&l.path)) != hash
        {
            return fail(
                "chain_order",
                format!("finished report {} was written again", l.path),
            );
        }
    }
    Ok(())
}

/// What rolling back `life` did (`before` to `after`) is one of the things it may do to
/// each gateway.
pub fn undo_matches(seq: &Seq, life: usize, before: &Snap, after: &Snap) -> Res {
    let mut problems = Vec::new();
    for (id, was) in before {
        let now = after.get(id).unwrap_or(was);
        let allowed = seq.m.undo(life, *id);
        if allowed.iter().any(|u| u.applied_to(was) == *now) {
            continue;
        }
        let wanted: Vec<String> = allowed.iter().map(|u| show(&u.applied_to(was))).collect();
        problems.push(format!(
            "{}: was {}, became {}, expected {}{}; its history: {}",
            short(id),
            show(was),
            show(now),
            wanted.join(" or "),
            report_line(seq, life, id),
            history(seq, id)
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    fail(
        "rollback_one",
        format!(
            "rolling back {} changed what its runs did not, or did not put back what they \
             changed: {}",
            seq.m.lives[life].path,
            problems.join("; ")
        ),
    )
}

/// The rollback manifest of `life` holds, for each gateway its runs changed, the before
/// value of the fields they changed, every other cell empty (PRODUCT.md): every field
/// they left changed, and any they changed and then changed back (its before value is
/// what is there); a gateway they did not change has no row, or a row of empty cells.
pub fn rollback_cells(seq: &Seq, life: usize, rows: &[(Uuid, Desired)]) -> Res {
    let mut problems = Vec::new();
    for id in seq.w.ids.iter() {
        let row = rows.iter().find(|(r, _)| r == id).map(|(_, d)| d.clone());
        let row = row.unwrap_or_default();
        let written = seq.m.written_fields(life, *id);
        let allowed: Vec<Desired> = seq
            .m
            .undo(life, *id)
            .iter()
            .flat_map(|u| match u {
                Undo::Untouched => vec![Desired::default()],
                Undo::Restore { pre, left } => cells_within(pre, left, written),
            })
            .collect();
        if !allowed.contains(&row) {
            let wanted: Vec<String> = allowed.iter().map(crate::ops::wish).collect();
            problems.push(format!(
                "{}: its row is `{}`, expected `{}`{}; its history: {}",
                short(id),
                crate::ops::wish(&row),
                wanted.join("` or `"),
                report_line(seq, life, id),
                history(seq, id)
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    fail(
        "rollback_one",
        format!(
            "the rollback manifest of {} does not hold exactly the before values of the \
             fields its runs changed: {}",
            seq.m.lives[life].path,
            problems.join("; ")
        ),
    )
}

/// `pre`'s values of the fields where `pre` and `left` differ; the rest empty.
/// The rows a rollback may hold: `pre`'s value of every field where `pre` and `left`
/// differ, and of any subset of the other fields in `written`.
fn cells_within(pre: &GatewayFields, left: &GatewayFields, written: FieldSet) -> Vec<Desired> {
    let need = differing(pre, left);
    let extra: Vec<Field> = written.iter().filter(|f| !need.contains(*f)).collect();
    (0..1u32 << extra.len())
        .map(|pick| {
            let mut set = need;
            for (i, f) in extra.iter().enumerate() {
                if pick & (1 << i) != 0 {
                    set.insert(*f);
                }
            }
            cells_of(pre, set)
        })
        .collect()
}

fn cells_of(pre: &GatewayFields, set: FieldSet) -> Desired {
    Desired {
        name: set.contains(Field::Name).then(|| pre.name.clone()),
        uri: set.contains(Field::Uri).then(|| pre.uri.clone()),
        encryption: pre
            .encryption
            .clone()
            .filter(|_| set.contains(Field::Encryption)),
        ciphers: set.contains(Field::Ciphers).then(|| pre.ciphers.clone()),
        codecs: set.contains(Field::Codecs).then(|| pre.codecs.clone()),
    }
}

/// The report's line for `id`, for a failure's detail.
pub fn report_line(seq: &Seq, life: usize, id: &Uuid) -> String {
    let records = read_report(&seq.w.path(&seq.m.lives[life].path)).unwrap_or_default();
    match records.iter().find(|r| r.id == id.to_string()) {
        Some(r) => format!(
            " [report: {} changed_fields={} before={}]",
            r.status,
            r.changed_fields,
            r.before.as_ref().map_or("-".into(), show)
        ),
        None => " [no line in the report]".into(),
    }
}

/// Every change the model saw to `id`, oldest first: who, and each field's move.
pub fn history(seq: &Seq, id: &Uuid) -> String {
    let moves: Vec<String> = seq
        .m
        .evs
        .iter()
        .filter(|e| e.id == *id)
        .map(|e| {
            let who = match e.by {
                Some(l) => seq.m.lives[l].path.clone(),
                None if e.patch => "another run".into(),
                None => "an edit".into(),
            };
            let (a, b) = (show(&e.before), show(&e.after));
            let fields: Vec<String> = a
                .split('|')
                .zip(b.split('|'))
                .filter(|(x, y)| x != y)
                .map(|(x, y)| format!("{x}->{y}"))
                .collect();
            let mismatch = if e.mismatch { " (mismatch)" } else { "" };
            format!("{who}{mismatch}: {}", fields.join(","))
        })
        .collect();
    moves.join("; ")
}

/// A gateway in one short line: name|uri|encryption|ciphers|codecs.
pub fn show(f: &GatewayFields) -> String {
    let list = |v: Vec<String>| v.join(";");
    format!(
        "{}|{}|{}|{}|{}",
        f.name,
        f.uri,
        f.encryption.as_ref().map_or("", |e| e.as_str()),
        list(f.ciphers.iter().map(|c| c.as_str().to_owned()).collect()),
        list(f.codecs.iter().map(|c| c.as_str().to_owned()).collect()),
    )
}

fn cells(d: &Desired) -> [String; 5] {
    let list = |v: Vec<&str>| v.join(";");
    [
        d.name.clone().unwrap_or_default(),
        d.uri.clone().unwrap_or_default(),
        d.encryption
            .as_ref()
            .map_or(String::new(), |e| e.as_str().to_owned()),
        d.ciphers.as_ref().map_or(String::new(), |c| {
            list(c.iter().map(|x| x.as_str()).collect())
        }),
        d.codecs.as_ref().map_or(String::new(), |c| {
            list(c.iter().map(|x| x.as_str()).collect())
        }),
    ]
}

pub fn write_csv(path: &Path, rows: &[(Uuid, Desired)]) {
    let mut text = String::from("id,name,uri,encryption,ciphers,codecs\n");
    for (id, d) in rows {
        text.push_str(&format!("{id},{}\n", cells(d).join(",")));
    }
    std::fs::write(path, text).expect("the manifest");
}

/// The same rows, last first, in YAML.
pub fn write_yaml(path: &Path, rows: &[(Uuid, Desired)]) {
    let keys = ["name", "uri", "encryption", "ciphers", "codecs"];
    let mut text = String::new();
    for (id, d) in rows.iter().rev() {
        text.push_str(&format!("- id: {id}\n"));
        for (key, cell) in keys.iter().zip(cells(d)) {
            if cell.is_empty() {
                continue;
            }
            if matches!(*key, "ciphers" | "codecs") {
                let items: Vec<String> = cell.split(';').map(|c| format!("\"{c}\"")).collect();
                text.push_str(&format!("  {key}: [{}]\n", items.join(", ")));
            } else {
                text.push_str(&format!("  {key}: \"{cell}\"\n"));
            }
        }
    }
    std::fs::write(path, text).expect("the YAML manifest");
}

/// A manifest's rows as the library reads them (a rollback's output).
pub fn read_manifest(path: &Path) -> Result<Vec<(Uuid, Desired)>, String> {
    let manifest = sipgw_bulk::manifest::Manifest::open(path, None).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    manifest
        .read(|row| {
            match row {
                Ok(r) => rows.push((r.id, r.desired)),
                Err(b) => bad.push(b.id),
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    match bad.is_empty() {
        true => Ok(rows),
        false => Err(format!("invalid rows for {bad:?}")),
    }
}
