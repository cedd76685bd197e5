//! The steps other than an apply: edits made by someone else, a manifest that changes,
//! rollbacks (kept, or undone after the check), a chain rolled back whole, a report
//! deleted or cut short, and a `--resume` that is not its chain's schedule.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::checks::{read_manifest, report_line, rollback_cells, show, undo_matches, write_csv};
use crate::exec::{Refusal, Res, Seq, fail};
use crate::model::{ChainArgs, Expect, FileState, ManifestModel};
use crate::ops::{Apply, Damage, Step, Stray, Target, short};
use crate::world::{Snap, Space};

impl Seq {
    pub fn exec(&mut self, step: &Step) -> Res<String> {
        match step {
            Step::Apply(a) => self.apply(a),
            Step::Edit { edits, binary } => self.edit(edits, *binary),
            Step::ChangeManifest(rows) => {
                let m = self
                    .m
                    .manifests
                    .iter_mut()
                    .find(|m| m.name == "m.csv")
                    .expect("the main manifest");
                for (row, d) in rows {
                    m.rows[*row].1 = d.clone();
                }
                m.version += 1;
                let rows = m.rows.clone();
                write_csv(&self.w.path("m.csv"), &rows);
                Ok(String::new())
            }
            Step::Rollback { life, keep } => self.rollback(*life, *keep),
            Step::UndoChain(c) => self.undo_chain(*c),
            Step::Damage { life, how } => self.damage(*life, *how),
            Step::Stray { chain, how } => self.stray(*chain, how),
        }
    }

    fn edit(&mut self, edits: &[(Uuid, sipgw_bulk::model::Desired)], binary: bool) -> Res<String> {
        self.m.pull(self.w.sb.state(), None, &[], false);
        if !binary {
            for (id, d) in edits {
                self.edit_now(*id, d);
            }
            self.m.pull(self.w.sb.state(), None, &[], false);
            return Ok(String::new());
        }
        let n = self.counter;
        self.counter += 1;
        let manifest = format!("edit-{n}.csv");
        write_csv(&self.w.path(&manifest), edits);
        let report = format!("e-{n}.csv");
        let mut cmd = self.w.cmd(Space::Main);
        cmd.args(["apply", &manifest, "--yes", "--report", &report]);
        let out = self.w.run(&mut cmd);
        self.m.pull(self.w.sb.state(), None, &[], false);
        match out.code {
            Some(0..=2) => Ok(out.brief()),
            _ => fail(
                "run_outcome",
                format!("an out-of-band edit failed: {}", out.brief()),
            ),
        }
    }

    /// `rollback REPORT -o OUT`, and OUT's rows.
    fn rollback_manifest(
        &mut self,
        life: usize,
        out: &str,
    ) -> Res<Vec<(Uuid, sipgw_bulk::model::Desired)>> {
        let path = self.m.lives[life].path.clone();
        let mut cmd = self.w.cmd(Space::Main);
        cmd.args(["rollback", &path, "-o", out]);
        let result = self.w.run(&mut cmd);
        if result.code != Some(0) {
            return fail(
                "run_outcome",
                format!("rollback {path} failed: {}", result.brief()),
            );
        }
        read_manifest(&self.w.path(out)).or_else(|e| {
            fail(
                "run_outcome",
                format!("rollback {path} wrote a bad manifest: {e}"),
            )
        })
    }

    /// A rollback's manifest applied outside the model (a probe's: undone after).
    fn apply_outside(&mut self, manifest: &str, report: &str) -> Res {
        let mut cmd = self.w.cmd(Space::Main);
        cmd.args([
            "apply", manifest, "--yes", "--rate", "1000", "--report", report,
        ]);
        let out = self.w.run(&mut cmd);
        match out.code {
            Some(0..=2) => Ok(()),
            _ => fail(
                "run_outcome",
                format!("applying {manifest} failed: {}", out.brief()),
            ),
        }
    }

    /// Puts every gateway back as `before` and forgets the changes since the last pull.
    fn restore(&mut self, before: &Snap) {
        let state = self.w.sb.state();
        for (id, fields) in before {
            if state.snapshot().get(id) != Some(fields) {
                state.edit(id, fields.clone());
            }
        }
        self.m.pull(state, None, &[], true);
    }

    fn rollback(&mut self, life: usize, keep: bool) -> Res<String> {
        self.m.pull(self.w.sb.state(), None, &[], false);
        let n = self.counter;
        self.counter += 1;
        let out = match keep {
            true => format!("u{n}.rb.csv"),
            false => format!("probe/p{n}.rb.csv"),
        };
        let rows = self.rollback_manifest(life, &out)?;
        rollback_cells(self, life, &rows)?;
        let before = self.w.snapshot();
        let note = format!(
            "{}: {} rows to put back",
            self.m.lives[life].path,
            rows.len()
        );
        if rows.is_empty() {
            undo_matches(self, life, &before, &before)?;
            return Ok(note);
        }
        if !keep {
            self.apply_outside(&out, &format!("probe/p{n}.csv"))?;
            let after = self.w.snapshot();
            let checked = undo_matches(self, life, &before, &after);
            self.restore(&before);
            return checked.map(|()| note);
        }
        self.m.manifests.push(ManifestModel {
            name: out.clone(),
            rows,
            version: 0,
        });
        let args = ChainArgs {
            manifest: out,
            only: None,
            shard: None,
            jsonl: false,
        };
        let a = Apply {
            target: Target::New(args),
            resume_new: false,
            limit: None,
            concurrency: 1,
            list: false,
            mismatch: Vec::new(),
            hold: None,
        };
        let ran = self.apply(&a)?;
        let after = self.w.snapshot();
        undo_matches(self, life, &before, &after)?;
        Ok(format!("{note}; {ran}"))
    }

    /// Rolls back every link newest-first; when nobody else wrote since the chain's first
    /// run, the space must be as it was then. Undone after.
    fn undo_chain(&mut self, chain: usize) -> Res<String> {
        if let Err(why) = self.m.chain_clean(chain) {
            return Ok(format!("skipped: {why}"));
        }
        self.m.pull(self.w.sb.state(), None, &[], false);
        let n = self.counter;
        self.counter += 1;
        let links = self.m.chains[chain].links.clone();
        let before = self.w.snapshot();
        for (k, &l) in links.iter().enumerate().rev() {
            let out = format!("probe/c{n}-{k}.rb.csv");
            let rows = self.rollback_manifest(l, &out);
            let rows = match rows.and_then(|rows| rollback_cells(self, l, &rows).map(|()| rows)) {
                Ok(rows) => rows,
                Err(e) => {
                    self.restore(&before);
                    return Err(e);
                }
            };
            if !rows.is_empty()
                && let Err(e) = self.apply_outside(&out, &format!("probe/c{n}-{k}.csv"))
            {
                self.restore(&before);
                return Err(e);
            }
        }
        let after = self.w.snapshot();
        let start = self.m.lives[links[0]].start_snap.clone();
        let written: BTreeSet<Uuid> = links.iter().flat_map(|&l| self.m.touched(l)).collect();
        let mut problems = Vec::new();
        for (id, now) in &after {
            let want = match written.contains(id) {
                true => start.get(id),
                false => before.get(id),
            };
            if want != Some(now) {
                let lines: Vec<String> = links.iter().map(|&l| report_line(self, l, id)).collect();
                problems.push(format!(
                    "{}: became {}, was {} before the chain's first run{}",
                    short(id),
                    show(now),
                    want.map_or("-".into(), show),
                    lines.join("")
                ));
            }
        }
        self.restore(&before);
        if problems.is_empty() {
            return Ok(format!("{} links undone to the chain's start", links.len()));
        }
        let names: Vec<&str> = links
            .iter()
            .map(|&l| self.m.lives[l].path.as_str())
            .collect();
        fail(
            "rollback_chain",
            format!(
                "rolling back {names:?} newest-first, with nobody else writing, did not restore \
                 the state before the first run: {}",
                problems.join("; ")
            ),
        )
    }

    fn damage(&mut self, life: usize, how: Damage) -> Res<String> {
        let name = self.m.lives[life].path.clone();
        let path = self.w.path(&name);
        let side = |s: &str| self.w.path(&format!("{name}{s}"));
        let state = match how {
            Damage::DeleteReport => {
                let _ = std::fs::remove_file(&path);
                let traces = side(".run.json").exists() || side(".journal").exists();
                FileState::Deleted { traces }
            }
            Damage::DeleteAll => {
                for p in [
                    path.clone(),
                    side(".run.json"),
                    side(".journal"),
                    side(".lock"),
                ] {
                    let _ = std::fs::remove_file(p);
                }
                FileState::Deleted { traces: false }
            }
            _ => {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let cut = cut(&bytes, how);
                if cut == bytes {
                    return Ok("nothing to cut".into());
                }
                std::fs::write(&path, &cut).expect("the report cut short");
                FileState::Truncated
            }
        };
        let l = &mut self.m.lives[life];
        l.file = state;
        l.sealed = None;
        Ok(format!("{name} is now {state:?}"))
    }

    fn stray(&mut self, chain: usize, how: &Stray) -> Res<String> {
        match self.m.walk(chain) {
            Expect::Continue(_)
            | Expect::Fresh {
                follows: Some(_), ..
            } => {}
            other => return Ok(format!("skipped: its next run is {other:?}")),
        }
        self.m.pull(self.w.sb.state(), None, &[], false);
        let c = self.m.chains[chain].clone();
        let mut args = c.args.clone();
        let mut space = Space::Main;
        match how {
            Stray::OtherSpace => space = Space::Other,
            Stray::Shard(s) => args.shard = *s,
            Stray::Only(ids) => {
                let n = self.counter;
                self.counter += 1;
                args.only = ids
                    .as_ref()
                    .map(|ids| (format!("stray-{n}.txt"), ids.clone()));
                if let Some((file, ids)) = &args.only {
                    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
                    std::fs::write(self.w.path(file), text).expect("the --only file");
                }
            }
        }
        let same_ids = |a: &ChainArgs| a.only.as_ref().map(|(_, ids)| ids.clone());
        if space == Space::Main
            && args.shard == c.args.shard
            && same_ids(&args) == same_ids(&c.args)
        {
            return Ok("skipped: the same schedule after all".into());
        }
        let files_before = self.w.files();
        let other_before = self.w.other_patches();
        let a = Apply {
            target: Target::Resume(chain),
            resume_new: false,
            limit: None,
            concurrency: 1,
            list: false,
            mismatch: Vec::new(),
            hold: None,
        };
        let mut cmd = self.command(&args, &c.root, &a, true, space);
        let out = self.w.run(&mut cmd);
        let new = self.m.pull(self.w.sb.state(), None, &[], false);
        let wrote = new.iter().filter(|e| e.patch).count();
        let elsewhere = (self.w.other_patches() - other_before) as usize;
        let refusal = Refusal {
            invariant: "chain_identity",
            why: format!("--resume of {} with {how:?}", c.root),
            name: None,
            code: Some(64),
            busy: None,
        };
        self.refused(&out, &refusal, &files_before, wrote + elsewhere)?;
        Ok("refused, exit 64".into())
    }
}

/// A report's bytes cut short as `how` says.
fn cut(bytes: &[u8], how: Damage) -> Vec<u8> {
    let ends: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    match how {
        Damage::KeepLines(k) if ends.len() > k => bytes[..ends[k - 1]].to_vec(),
        Damage::KeepLines(_) if ends.len() > 1 => bytes[..ends[ends.len() - 2]].to_vec(),
        Damage::TearLast if ends.len() > 1 => {
            let start = ends[ends.len() - 2];
            bytes[..start + (bytes.len() - start) / 2].to_vec()
        }
        Damage::Empty => Vec::new(),
        _ => bytes.to_vec(),
    }
}
