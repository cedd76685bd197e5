//! Running an apply step: which report of its chain it must write (or that it must be
//! refused), the run itself with its held PATCH, and what the model learns from it.

use std::process::Command;

use sipgw_bulk::diff::FieldSet;
use sipgw_bulk::model::GatewayFields;

use crate::model::{Chain, ChainArgs, Expect, FileState, Life, Model};
use crate::ops::{Apply, Second, Target};
use crate::world::{End, Outcome, Space, World, file_hash};

/// What a refused run must show: the promise it keeps, why it is refused, the name its
/// message must give, its exit code, and a run still going whose files may change.
pub struct Refusal<'a> {
    pub invariant: &'static str,
    pub why: String,
    pub name: Option<String>,
    pub code: Option<i32>,
    pub busy: Option<&'a str>,
}

/// A broken promise: which one, and what was seen.
#[derive(Debug)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

pub type Res<T = ()> = Result<T, Violation>;

pub fn fail<T>(invariant: &'static str, detail: impl Into<String>) -> Res<T> {
    Err(Violation {
        invariant,
        detail: detail.into(),
    })
}

pub struct Seq {
    pub w: World,
    pub m: Model,
    /// Numbers new file names.
    pub counter: u32,
}

/// Side files of a report: a run's own, never a report of the chain.
fn is_side_file(name: &str) -> bool {
    [".run.json", ".journal", ".lock", ".tmp"]
        .iter()
        .any(|s| name.ends_with(s))
        || name.contains(".rescued-")
}

impl Seq {
    /// `apply` of `args` into `report`, with the step's flags.
    pub fn command(
        &mut self,
        args: &ChainArgs,
        report: &str,
        a: &Apply,
        resume: bool,
        space: Space,
    ) -> Command {
        let mut cmd = self.w.cmd(space);
        cmd.arg("apply").arg(&args.manifest).args([
            "--yes",
            "--rate",
            "1000",
            "--report",
            report,
            "--concurrency",
            &a.concurrency.to_string(),
        ]);
        if resume {
            cmd.arg("--resume");
        }
        if let Some((k, n)) = args.shard {
            cmd.arg("--shard").arg(format!("{k}/{n}"));
        }
        if let Some((file, _)) = &args.only {
            cmd.arg("--only").arg(format!("@{file}"));
        }
        if args.jsonl {
            cmd.args(["--report-format", "jsonl"]);
        }
        if let Some(l) = a.limit {
            cmd.arg("--limit").arg(l.to_string());
        }
        if a.list {
            cmd.args(["--read-mode", "list"]);
        }
        cmd
    }

    /// A new chain for `args`: its root's name, and its `--only` file written.
    pub fn new_chain(&mut self, args: &ChainArgs) -> usize {
        let n = self.m.chains.len();
        let prefix = if args.manifest == "m.csv" { "r" } else { "u" };
        let ext = if args.jsonl { "jsonl" } else { "csv" };
        if let Some((file, ids)) = &args.only {
            let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
            std::fs::write(self.w.path(file), text).expect("the --only file");
        }
        self.m.chains.push(Chain {
            root: format!("{prefix}{n}.{ext}"),
            args: args.clone(),
            links: Vec::new(),
            broken: false,
        });
        n
    }

    /// One apply step. Returns what happened, for the step list.
    pub fn apply(&mut self, a: &Apply) -> Res<String> {
        self.m.pull(self.w.sb.state(), None, &[], false);
        let (chain, resume) = match &a.target {
            Target::New(args) => (self.new_chain(args), a.resume_new),
            Target::Resume(c) => (*c, true),
        };
        let expect = self.m.walk(chain);
        let life = self.open_life(chain, &expect);
        let files_before = self.w.files();
        let run_start = self.m.evs.len();
        let (out, wrote, note) = self.run_held(chain, a, resume, life)?;
        let landed = self.m.evs[run_start..].iter().filter(|e| e.patch).count();
        let line = format!("{} ({landed} PATCHes){note}", out.brief());
        match expect {
            Expect::Refuse {
                invariant,
                why,
                name,
                code,
            } => {
                let refusal = Refusal {
                    invariant,
                    why: why.clone(),
                    name,
                    code,
                    busy: None,
                };
                self.refused(&out, &refusal, &files_before, wrote)?;
                Ok(format!(
                    "refused as it must be ({why}), {}",
                    out.code_text()
                ))
            }
            Expect::ContinueOrRefuse(_)
            | Expect::Fresh {
                may_refuse: true, ..
            } if is_refusal(&out) => {
                let why = "a damaged newest link (cut short, or deleted beside its run file)";
                let refusal = Refusal {
                    invariant: "damaged_link",
                    why: why.into(),
                    name: None,
                    code: None,
                    busy: None,
                };
                self.refused(&out, &refusal, &files_before, wrote)?;
                // The report it would have made was never made.
                if let (Expect::Fresh { .. }, Some(l)) = (&expect, life) {
                    self.m.lives[l].dead = true;
                }
                Ok(format!("refused {why}, {}", out.code_text()))
            }
            _ => {
                let life = life.expect("a life for an accepted run");
                self.accepted(chain, life, &expect, &out, run_start, &files_before, a)?;
                Ok(format!("{} -> {line}", self.m.lives[life].path))
            }
        }
    }

    /// Runs the step's apply with its PATCH held: edits, a second run, then a kill or a
    /// release. Returns how it ended, the PATCHes it wrote since the second run (if any),
    /// and a note on the second run; its PATCHes are credited to `life`.
    fn run_held(
        &mut self,
        chain: usize,
        a: &Apply,
        resume: bool,
        life: Option<usize>,
    ) -> Res<(Outcome, usize, String)> {
        let args = self.m.chains[chain].args.clone();
        let root = self.m.chains[chain].root.clone();
        let mut cmd = self.command(&args, &root, a, resume, Space::Main);
        self.w.sb.state().set_mismatch(a.mismatch.iter().copied());
        let hold = a.hold.as_ref().map(|h| (h.nth, h.applied));
        let mut run = self.w.spawn(&mut cmd, hold);
        let held = self
            .w
            .wait_held(&mut run)
            .or_else(|e| fail("run_outcome", e))?;
        let mut end = End::Wait;
        let mut note = String::new();
        if held && let Some(h) = &a.hold {
            let held_id = self.w.sb.state().held_gateway();
            for (id, d) in &h.edits {
                if Some(*id) != held_id {
                    self.edit_now(*id, d);
                }
            }
            if let Some(second) = h.second {
                note = self.second(second, &args, a, &root, resume, life)?;
            }
            end = if h.kill { End::Kill } else { End::Release };
        }
        let out = self.w.finish(run, end);
        self.w.sb.state().disarm_hold();
        if end == End::Kill && a.concurrency > 1 {
            // Writes already on the wire land now, not in the next step.
            self.w.settle();
        }
        self.w.sb.state().set_mismatch([]);
        let new = self.m.pull(self.w.sb.state(), life, &a.mismatch, false);
        let wrote = new.iter().filter(|e| e.patch).count();
        Ok((out, wrote, note))
    }

    /// The life an accepted run will write: a new one for a fresh report.
    fn open_life(&mut self, chain: usize, expect: &Expect) -> Option<usize> {
        match expect {
            Expect::Fresh {
                link,
                path,
                replaces,
                ..
            } => {
                let args = self.m.chains[chain].args.clone();
                let snap = self.w.snapshot();
                let maybe = match replaces {
                    Some(old) => self.inherited(*old),
                    None => Vec::new(),
                };
                self.m.lives.push(Life {
                    path: path.clone(),
                    chain,
                    link: *link,
                    start_ev: self.m.evs.len(),
                    start_snap: snap.clone(),
                    end_snap: snap,
                    ended: false,
                    finished: false,
                    file: FileState::Intact,
                    dead: false,
                    maybe,
                    lost_mismatch: Default::default(),
                    manifest_version: self.m.manifest(&args.manifest).version,
                    sealed: None,
                    rows: self.m.rows_of(&args),
                });
                Some(self.m.lives.len() - 1)
            }
            Expect::Continue(l) | Expect::ContinueOrRefuse(l) => Some(*l),
            Expect::Refuse { .. } => None,
        }
    }

    /// What a report made in place of deleted `old` may still know of it (its journal
    /// may be read): `old`'s unsettled PATCHes and the before of its first write of each
    /// gateway.
    fn inherited(&self, old: usize) -> Vec<crate::model::Maybe> {
        let mut out = self.m.lives[old].maybe.clone();
        for id in self.m.touched(old) {
            if let Some(i) = (0..self.m.evs.len())
                .find(|&i| self.m.evs[i].by == Some(old) && self.m.evs[i].id == id)
            {
                out.push((
                    i,
                    id,
                    self.m.evs[i].before.clone(),
                    Some(Default::default()),
                ));
            }
        }
        out
    }

    /// An out-of-band edit made now, if it changes anything.
    pub fn edit_now(&self, id: uuid::Uuid, d: &sipgw_bulk::model::Desired) {
        let state = self.w.sb.state();
        if let Some(now) = state.snapshot().get(&id) {
            let new = sipgw_bulk::diff::merge(now, d);
            if new != *now {
                state.edit(&id, new);
            }
        }
    }

    /// A run that must be refused was: not killed, not a success, the name given,
    /// nothing written, no file changed (but those of a run still going, `busy`).
    pub fn refused(
        &self,
        out: &Outcome,
        r: &Refusal,
        files_before: &std::collections::BTreeMap<String, u64>,
        wrote: usize,
    ) -> Res {
        let (invariant, why, name, code, busy) = (
            r.invariant,
            r.why.as_str(),
            r.name.as_deref(),
            r.code,
            r.busy,
        );
        if !is_refusal(out) || code.is_some_and(|c| out.code != Some(c)) {
            let want = code.map_or("a refusal".to_owned(), |c| format!("exit {c}"));
            return fail(
                invariant,
                format!("{why}: expected {want}, got {}", out.brief()),
            );
        }
        if let Some(name) = name
            && !out.stderr.contains(name)
        {
            return fail(
                invariant,
                format!("{why}: refused without naming {name}: {}", out.brief()),
            );
        }
        if wrote > 0 {
            return fail(
                invariant,
                format!("{why}: refused, yet {wrote} PATCHes landed"),
            );
        }
        // A lock file a killed run left may go: the next run on that report takes it over.
        let theirs = |name: &str| busy.is_some_and(|b| name.starts_with(b));
        let mut before = files_before.clone();
        before.retain(|name, _| !name.ends_with(".lock") && !theirs(name));
        let mut after = self.w.files();
        after.retain(|name, _| {
            !theirs(name) && (!name.ends_with(".lock") || !files_before.contains_key(name))
        });
        if after != before {
            return fail(
                invariant,
                format!(
                    "{why}: refused, yet files changed: {}",
                    changed_files(&before, &after)
                ),
            );
        }
        Ok(())
    }

    /// The model after a run that was let in: its life, its chain, and the checks.
    #[allow(clippy::too_many_arguments)]
    fn accepted(
        &mut self,
        chain: usize,
        life: usize,
        expect: &Expect,
        out: &Outcome,
        run_start: usize,
        files_before: &std::collections::BTreeMap<String, u64>,
        a: &Apply,
    ) -> Res {
        if let Some(code) = out.code
            && !matches!(code, 0..=2)
        {
            return fail(
                "run_outcome",
                format!(
                    "the run of {} was refused or failed: {}",
                    self.m.lives[life].path,
                    out.brief()
                ),
            );
        }
        if let Expect::Fresh { replaces, link, .. } = expect {
            match replaces {
                Some(old) => {
                    self.m.lives[*old].dead = true;
                    let c = &mut self.m.chains[chain];
                    if let Some(slot) = c.links.iter_mut().find(|x| **x == *old) {
                        *slot = life;
                    }
                    c.broken |= *link > 1;
                }
                None => self.m.chains[chain].links.push(life),
            }
        }
        let path = self.m.lives[life].path.clone();
        let report = self.w.path(&path);
        let snap = self.w.snapshot();
        {
            let l = &mut self.m.lives[life];
            l.end_snap = snap;
            l.ended = !out.killed();
            l.finished = !out.killed();
            l.file = FileState::Intact;
            l.sealed = l.finished.then(|| file_hash(&report));
        }
        if out.killed() {
            self.note_unsettled(life, run_start);
        }
        let root = self.m.chains[chain].root.clone();
        self.only_its_report(&path, &root, files_before)?;
        crate::checks::rows_once(self, life)?;
        if !out.killed() {
            crate::checks::ended_clean(self, life, &a.mismatch)?;
        }
        Ok(())
    }

    /// After a kill: PATCHes its journal holds that were never seen to land may have been
    /// sent; the report may carry their before-values.
    fn note_unsettled(&mut self, life: usize, run_start: usize) {
        let mismatched: Vec<uuid::Uuid> = self.m.evs[run_start..]
            .iter()
            .filter(|e| e.by == Some(life) && e.mismatch)
            .map(|e| e.id)
            .collect();
        self.m.lives[life].lost_mismatch.extend(mismatched);
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
            before: GatewayFields,
            fields: Option<String>,
        }
        let path = self.w.path(&format!("{}.journal", self.m.lives[life].path));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for entry in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        {
            let Ok(id) = uuid::Uuid::try_parse(&entry.id) else {
                continue;
            };
            let fields = entry.fields.as_deref().map(FieldSet::parse);
            let entry = (id, entry.before);
            let landed = (run_start..self.m.evs.len())
                .find(|&i| self.m.evs[i].by == Some(life) && self.m.evs[i].id == entry.0);
            let known = self.m.lives[life]
                .maybe
                .iter()
                .any(|(_, id, b, _)| *id == entry.0 && *b == entry.1);
            // A mismatched PATCH whose answer the kill lost counts too: what it asked for
            // may be found later, put there by someone else, and taken for its own.
            let at = match landed {
                None => Some(self.m.evs.len()),
                Some(i) if self.m.lives[life].lost_mismatch.contains(&entry.0) => Some(i),
                Some(_) => None,
            };
            if let Some(at) = at.filter(|_| !known) {
                self.m.lives[life]
                    .maybe
                    .push((at, entry.0, entry.1, fields));
            }
        }
    }

    /// A run writes its own report and files beside it or its chain's name (`NAME.*`),
    /// no other report.
    fn only_its_report(
        &self,
        path: &str,
        root: &str,
        before: &std::collections::BTreeMap<String, u64>,
    ) -> Res {
        let after = self.w.files();
        for (name, hash) in &after {
            let changed = before.get(name) != Some(hash);
            let beside = [path, root]
                .iter()
                .any(|p| name.starts_with(&format!("{p}.")));
            // A second run's YAML manifest is the sequence's own file.
            let ours = name.starts_with("m-") && name.ends_with(".yaml");
            if changed && name != path && !beside && !is_side_file(name) && !ours {
                return fail(
                    "chain_order",
                    format!("the run was to write {path}, but {name} changed too"),
                );
            }
        }
        Ok(())
    }

    /// A second apply of the same rows while the first holds a PATCH: refused (exit 5),
    /// nothing written, no report made.
    fn second(
        &mut self,
        how: Second,
        args: &ChainArgs,
        a: &Apply,
        report: &str,
        resume: bool,
        life: Option<usize>,
    ) -> Res<String> {
        self.m.pull(self.w.sb.state(), life, &a.mismatch, false);
        let n = self.counter;
        self.counter += 1;
        let mut b = args.clone();
        let other = format!("x-{n}.{}", if args.jsonl { "jsonl" } else { "csv" });
        let (report, resume) = match how {
            Second::SameReport => (report.to_owned(), resume),
            Second::OtherReport => (other, false),
            Second::Yaml => {
                b.manifest = format!("m-{n}.yaml");
                let rows = self.m.manifest(&args.manifest).rows.clone();
                crate::checks::write_yaml(&self.w.path(&b.manifest), &rows);
                (other, false)
            }
        };
        let files_before = self.w.files();
        let mut cmd = self.command(&b, &report, a, resume, Space::Main);
        let out = self.w.run(&mut cmd);
        let landed = self.m.pull(self.w.sb.state(), None, &[], false);
        let wrote = landed.iter().filter(|e| e.patch).count();
        let why = format!("a second run of the same rows ({how:?}) while the first held a PATCH");
        let first = life.map(|l| self.m.lives[l].path.clone());
        let refusal = Refusal {
            invariant: "lock",
            why,
            name: None,
            code: Some(5),
            busy: first.as_deref(),
        };
        self.refused(&out, &refusal, &files_before, wrote)?;
        Ok(format!("; a second run ({how:?}) refused, exit 5"))
    }
}

pub fn is_refusal(out: &Outcome) -> bool {
    out.code.is_some_and(|c| c > 0 && !matches!(c, 1 | 2 | 4))
}

pub fn changed_files(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> String {
    let mut out = Vec::new();
    for (name, hash) in after {
        match before.get(name) {
            None => out.push(format!("{name} (new)")),
            Some(h) if h != hash => out.push(format!("{name} (changed)")),
            _ => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push(format!("{name} (gone)"));
    }
    out.join(", ")
}
