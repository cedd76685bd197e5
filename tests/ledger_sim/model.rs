//! What the space and the reports should be: every change the sandbox logged, each
//! credited to the report whose run made it (or to someone else), the reports as chains of
//! links, and from those, what rolling back a report or a whole chain must do.
//!
//! The expectations are the contract's (PRODUCT.md, "The report"): a report's rollback
//! puts back only the fields its own runs changed, to what they were just before its
//! first write of that gateway (a mismatch's `before` is never carried into the next
//! link); a chain rolled back newest-first restores the state before its first run when
//! nobody else wrote.

use std::collections::BTreeSet;

use sipgw_bulk::diff::{Field, FieldSet, differing, with_fields_from};
use sipgw_bulk::model::{Codec, Desired, GatewayFields};
use sipgw_bulk::sandbox::SandboxState;
use uuid::Uuid;

use crate::world::Snap;

/// One change to a gateway, as the sandbox logged it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: Uuid,
    pub before: GatewayFields,
    pub after: GatewayFields,
    /// The report life whose run wrote it; `None`: someone else (an edit, a run the
    /// model does not follow).
    pub by: Option<usize>,
    /// Written while the sandbox answered this gateway's PATCHes with other codecs.
    pub mismatch: bool,
    /// A PATCH (else an out-of-band edit).
    pub patch: bool,
}

/// A report file as the sequence left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    Intact,
    /// Deleted; `traces`: its run file and journal were left beside it.
    Deleted {
        traces: bool,
    },
    Truncated,
}

/// A PATCH journaled and maybe sent when a run was killed, never seen to land:
/// (`evs.len()` then, gateway, journaled before, the fields it asked to change when the
/// journal says).
pub type Maybe = (usize, Uuid, GatewayFields, Option<FieldSet>);

/// One report at one path, from the run that created it to the last that wrote it.
#[derive(Debug, Clone)]
pub struct Life {
    pub path: String,
    pub chain: usize,
    /// 1 for the name given, N for `STEM.N.EXT`.
    pub link: u32,
    /// `evs.len()` when its first run started, and the space then.
    pub start_ev: usize,
    pub start_snap: Snap,
    /// The space when its last run ended or was killed.
    pub end_snap: Snap,
    /// Its last run ended (was not killed).
    pub ended: bool,
    /// Its last run went through every row (exit 0, 1 or 2).
    pub finished: bool,
    pub file: FileState,
    /// Replaced by a new report at the same path (its own was lost).
    pub dead: bool,
    /// PATCHes journaled and maybe sent when a run was killed, never seen to land.
    pub maybe: Vec<Maybe>,
    /// Gateways a killed run of it wrote with a mismatched PATCH: the kill may have lost
    /// that answer, and with it which codecs were the sandbox's rather than an edit's.
    pub lost_mismatch: BTreeSet<Uuid>,
    /// The manifest's version when the report was made (a resume needs the same).
    pub manifest_version: u32,
    /// The file's hash once its run finished: a finished report is never written again.
    pub sealed: Option<u64>,
    /// The ids its report must hold, one line each.
    pub rows: Vec<Uuid>,
}

/// What a chain was made with: every link keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainArgs {
    pub manifest: String,
    /// `--only @FILE`: the file and the ids it lists.
    pub only: Option<(String, Vec<Uuid>)>,
    pub shard: Option<(u32, u32)>,
    pub jsonl: bool,
}

#[derive(Debug, Clone)]
pub struct Chain {
    pub root: String,
    pub args: ChainArgs,
    pub links: Vec<usize>,
    /// A link's writes were lost (deleted with its traces): the whole chain no longer
    /// undoes to its start.
    pub broken: bool,
}

/// A manifest the sequence wrote (or a rollback wrote), as rows and a version that
/// changes with its content.
#[derive(Debug, Clone)]
pub struct ManifestModel {
    pub name: String,
    pub rows: Vec<(Uuid, Desired)>,
    pub version: u32,
}

/// What a rollback may do to one gateway.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a handful per check
pub enum Undo {
    Untouched,
    /// Put back `pre`'s value of every field where `pre` and `left` (what the report's
    /// runs left) differ; the other fields stay as they are.
    Restore {
        pre: GatewayFields,
        left: GatewayFields,
    },
}

impl Undo {
    pub fn applied_to(&self, now: &GatewayFields) -> GatewayFields {
        match self {
            Undo::Untouched => now.clone(),
            Undo::Restore { pre, left } => {
                let mut out = now.clone();
                if pre.name != left.name {
                    out.name = pre.name.clone();
                }
                if pre.uri != left.uri {
                    out.uri = pre.uri.clone();
                }
                if pre.encryption != left.encryption {
                    out.encryption = pre.encryption.clone();
                }
                if pre.ciphers != left.ciphers {
                    out.ciphers = pre.ciphers.clone();
                }
                if pre.codecs != left.codecs {
                    out.codecs = pre.codecs.clone();
                }
                out
            }
        }
    }
}

/// What a `--resume` of a chain must do.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Write a new report at `path` (link `link`), following `follows`, in place of
    /// `replaces` (a deleted link with nothing after it). `may_refuse`: the deleted
    /// link's run file or journal is still there, so a refusal naming it is right too.
    Fresh {
        link: u32,
        path: String,
        follows: Option<usize>,
        replaces: Option<usize>,
        may_refuse: bool,
    },
    /// Continue this cut-off report.
    Continue(usize),
    /// A cut-off report cut short since: continue it (rebuilding what it lost) or refuse.
    ContinueOrRefuse(usize),
    Refuse {
        invariant: &'static str,
        why: String,
        /// A name the refusal must give.
        name: Option<String>,
        code: Option<i32>,
    },
}

/// `dir/STEM.N.EXT` for `STEM.EXT`.
pub fn numbered(root: &str, n: u32) -> String {
    match root.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{n}.{ext}"),
        None => format!("{root}.{n}"),
    }
}

#[derive(Default)]
pub struct Model {
    pub evs: Vec<Ev>,
    /// Entries of the sandbox's change log already read.
    pos: usize,
    pub lives: Vec<Life>,
    pub chains: Vec<Chain>,
    pub manifests: Vec<ManifestModel>,
}

impl Model {
    /// Reads the sandbox's new changes: PATCHes are `running`'s, edits someone else's;
    /// a probe's changes (undone after it) are read and dropped.
    pub fn pull(
        &mut self,
        state: &SandboxState,
        running: Option<usize>,
        mismatch: &[Uuid],
        probe: bool,
    ) -> Vec<Ev> {
        let changes = state.changes_from(self.pos);
        self.pos += changes.len();
        let mut new = Vec::new();
        for c in changes {
            let ev = Ev {
                id: c.id,
                by: if c.patch { running } else { None },
                mismatch: c.patch && mismatch.contains(&c.id),
                patch: c.patch,
                before: c.before,
                after: c.after,
            };
            new.push(ev.clone());
            // An edit that changes nothing is no write; a PATCH is its run's, whatever it did.
            if !probe && (ev.patch || ev.before != ev.after) {
                self.evs.push(ev);
            }
        }
        new
    }

    pub fn manifest(&self, name: &str) -> &ManifestModel {
        self.manifests
            .iter()
            .find(|m| m.name == name)
            .expect("a manifest the model wrote")
    }

    /// The ids a run of `args` reports: the manifest's, within the shard.
    pub fn rows_of(&self, args: &ChainArgs) -> Vec<Uuid> {
        self.manifest(&args.manifest)
            .rows
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| match args.shard {
                Some((k, n)) => sipgw_bulk::shard::shard_of(&id.to_string(), n) == k,
                None => true,
            })
            .collect()
    }

    /// The rows a run of `args` would write now, in manifest order.
    pub fn would_write(&self, args: &ChainArgs, now: &Snap) -> Vec<Uuid> {
        let manifest = self.manifest(&args.manifest);
        let rows = self.rows_of(args);
        manifest
            .rows
            .iter()
            .filter(|(id, _)| rows.contains(id))
            .filter(|(id, _)| args.only.as_ref().is_none_or(|(_, ids)| ids.contains(id)))
            .filter(|(id, desired)| {
                now.get(id)
                    .is_some_and(|f| sipgw_bulk::diff::merge(f, desired) != *f)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn writes(&self, life: usize, id: Uuid) -> Vec<usize> {
        (0..self.evs.len())
            .filter(|&i| self.evs[i].by == Some(life) && self.evs[i].id == id)
            .collect()
    }

    /// The fields a life's writes of `id` changed, each write on its own (a field one
    /// write changed and a later one changed back is among them).
    pub fn written_fields(&self, life: usize, id: Uuid) -> FieldSet {
        self.writes(life, id)
            .into_iter()
            .fold(FieldSet::default(), |set, i| {
                set.union(differing(&self.evs[i].before, &self.evs[i].after))
            })
    }

    /// Every gateway a life wrote or may have written.
    pub fn touched(&self, life: usize) -> BTreeSet<Uuid> {
        let mut out: BTreeSet<Uuid> = self
            .evs
            .iter()
            .filter(|e| e.by == Some(life))
            .map(|e| e.id)
            .collect();
        out.extend(self.lives[life].maybe.iter().map(|m| m.1));
        out
    }

    /// The values a rollback of `life` may put back for `id`: the before of its first
    /// write, or of a PATCH a kill left unsettled before it. `None`: it never wrote `id`.
    /// Each with the fields it covers beyond the writes seen (a PATCH a kill left
    /// unseen: those it asked for, or every field when the journal does not say).
    fn own_pres(&self, life: usize, id: Uuid) -> Vec<(GatewayFields, Option<FieldSet>)> {
        let writes = self.writes(life, id);
        let first = writes.first().copied();
        let mut pres: Vec<(GatewayFields, Option<FieldSet>)> = self.lives[life]
            .maybe
            .iter()
            .filter(|(at, m, _, _)| *m == id && first.is_none_or(|f| *at <= f))
            .map(|(_, _, before, fields)| (before.clone(), *fields))
            .collect();
        if let Some(f) = first {
            pres.push((self.evs[f].before.clone(), Some(FieldSet::default())));
        }
        pres
    }

    /// A mismatched PATCH's codecs are the sandbox's, not asked for: where a kill lost
    /// its answer, the run cannot tell them from someone else's edit and leaves them (an
    /// edit made since survives), so their undo value may be what that PATCH left, or,
    /// when a later write of the report changed them, what was there just before it.
    fn mangled_codecs(&self, life: usize, id: Uuid) -> Vec<Vec<Codec>> {
        if !self.lives[life].lost_mismatch.contains(&id) {
            return Vec::new();
        }
        let writes = self.writes(life, id);
        let mut out = Vec::new();
        for (n, &i) in writes.iter().enumerate() {
            let e = &self.evs[i];
            if !(e.mismatch && e.before.codecs != e.after.codecs) {
                continue;
            }
            out.push(e.after.codecs.clone());
            let later = writes[n + 1..].iter().map(|&j| &self.evs[j]);
            if let Some(next) = later
                .into_iter()
                .find(|x| x.before.codecs != x.after.codecs)
            {
                out.push(next.before.codecs.clone());
            }
        }
        out
    }

    /// What rolling back `life`'s report may do to `id`.
    pub fn undo(&self, life: usize, id: Uuid) -> Vec<Undo> {
        let writes = self.writes(life, id);
        let pres = self.own_pres(life, id);
        let left = match writes.last() {
            Some(&last) => Some(self.evs[last].after.clone()),
            None => self.lives[life].end_snap.get(&id).cloned(),
        };
        let mut out = Vec::new();
        if writes.is_empty() {
            out.push(Undo::Untouched);
        }
        // A mismatched PATCH whose answer a kill lost, and a value it asked for found
        // there later (put there by someone else): the run may take it for its own, as
        // its write left it.
        let taken = self.lives[life]
            .end_snap
            .get(&id)
            .filter(|_| self.lives[life].lost_mismatch.contains(&id));
        if let Some(left) = left {
            for (base, unseen) in pres {
                let pre = self.per_field(&writes, &base, unseen, &left);
                for codecs in self.mangled_codecs(life, id) {
                    let mut alt = pre.clone();
                    alt.codecs = codecs;
                    out.push(Undo::Restore {
                        pre: alt,
                        left: left.clone(),
                    });
                }
                if taken.is_some() {
                    // The codecs that PATCH's lost answer would have shown as the sandbox's
                    // look like anyone's edit: left alone.
                    let mut alone = pre.clone();
                    alone.codecs = left.codecs.clone();
                    out.push(Undo::Restore {
                        pre: alone,
                        left: left.clone(),
                    });
                }
                out.push(Undo::Restore {
                    pre,
                    left: left.clone(),
                });
                if let Some(end) = taken {
                    out.push(Undo::Restore {
                        pre: self.per_field(&writes, &base, unseen, end),
                        left: end.clone(),
                    });
                }
            }
        }
        out
    }

    /// Each field's undo value: what it was just before the first of `writes` that changed
    /// it (`base` for the first write, whose before a kill may leave in doubt); a field
    /// none of them changed is not the report's (as `left`). Where `base` is a PATCH a kill
    /// left unseen, the fields it asked for (`unseen`; `None`: any field) are `base`'s.
    fn per_field(
        &self,
        writes: &[usize],
        base: &GatewayFields,
        unseen: Option<FieldSet>,
        left: &GatewayFields,
    ) -> GatewayFields {
        let first_change = |f: Field| {
            writes
                .iter()
                .find(|&&i| differing(&self.evs[i].before, &self.evs[i].after).contains(f))
        };
        let mut pre = left.clone();
        for f in Field::ALL {
            // A PATCH a kill left unseen that asked for the field came first: the report
            // keeps its before across resumes.
            let asked = unseen.is_none_or(|s| s.contains(f));
            let from = match first_change(f) {
                // Not asked for by an unseen PATCH: the before of the seen write that first
                // changed it (`base` itself when `base` is that write's before).
                Some(&i) if !asked => &self.evs[i].before,
                Some(_) => base,
                None if asked => base,
                None => continue,
            };
            let mut one = FieldSet::default();
            one.insert(f);
            pre = with_fields_from(&pre, from, one);
        }
        pre
    }

    /// What a `--resume` of `chain` must do, walking its links as the contract says.
    pub fn walk(&self, chain: usize) -> Expect {
        let c = &self.chains[chain];
        let lives = &self.lives;
        for (i, &l) in c.links.iter().enumerate() {
            let life = &lives[l];
            let later = c.links[i + 1..]
                .iter()
                .any(|&x| !matches!(lives[x].file, FileState::Deleted { .. }));
            match life.file {
                FileState::Intact if life.finished => continue,
                FileState::Intact => {
                    let version = self.manifest(&c.args.manifest).version;
                    if version != life.manifest_version {
                        return Expect::Refuse {
                            invariant: "chain_identity",
                            why: format!("the manifest changed since {} was cut off", life.path),
                            name: None,
                            code: Some(64),
                        };
                    }
                    return Expect::Continue(l);
                }
                FileState::Truncated if life.finished => {
                    return Expect::Refuse {
                        invariant: "damaged_link",
                        why: format!("finished link {} was truncated", life.path),
                        name: Some(life.path.clone()),
                        code: None,
                    };
                }
                FileState::Truncated => return Expect::ContinueOrRefuse(l),
                FileState::Deleted { .. } if later => {
                    return Expect::Refuse {
                        invariant: "damaged_link",
                        why: format!("link {} was deleted and a later link exists", life.path),
                        name: Some(life.path.clone()),
                        code: None,
                    };
                }
                FileState::Deleted { traces } => {
                    // A later link deleted with its traces left (its run file): the tool
                    // may see that link as still there, and refusing to skip it is right.
                    let later_traces = c.links[i + 1..]
                        .iter()
                        .any(|&x| matches!(lives[x].file, FileState::Deleted { traces: true }));
                    return Expect::Fresh {
                        link: life.link,
                        path: life.path.clone(),
                        follows: i.checked_sub(1).map(|p| c.links[p]),
                        replaces: Some(l),
                        may_refuse: traces || later_traces,
                    };
                }
            }
        }
        let link = c.links.len() as u32 + 1;
        Expect::Fresh {
            link,
            path: if link == 1 {
                c.root.clone()
            } else {
                numbered(&c.root, link)
            },
            follows: c.links.last().copied(),
            replaces: None,
            may_refuse: false,
        }
    }

    /// Whether someone other than `chain`'s runs changed a gateway it wrote since its
    /// first run began: then its rollback cannot be expected to restore that start.
    pub fn chain_clean(&self, chain: usize) -> Result<(), String> {
        let c = &self.chains[chain];
        if c.broken {
            return Err("a link's writes were lost".into());
        }
        let Some(&first) = c.links.first() else {
            return Err("no link".into());
        };
        for &l in &c.links {
            let life = &self.lives[l];
            if life.dead || life.file != FileState::Intact || !life.ended {
                return Err(format!("{} is not whole or was cut off", life.path));
            }
            if let Some(id) = life.lost_mismatch.iter().next() {
                return Err(format!(
                    "a kill may have lost the answer of {}'s mismatched PATCH of {id}",
                    life.path
                ));
            }
        }
        let written: BTreeSet<Uuid> = c.links.iter().flat_map(|&l| self.touched(l)).collect();
        let start = self.lives[first].start_ev;
        let foreign = self.evs[start..]
            .iter()
            .find(|e| written.contains(&e.id) && !e.by.is_some_and(|b| c.links.contains(&b)));
        match foreign {
            Some(e) => Err(format!("someone else wrote {}", e.id)),
            None => Ok(()),
        }
    }
}
