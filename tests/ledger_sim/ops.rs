//! The operations a sequence is made of, drawn from a seeded generator given what the
//! model knows (which chains exist, which reports can be rolled back), and how each is
//! written in the step list a failure prints.

use std::fmt;

use fastrand::Rng;
use sipgw_bulk::model::{Cipher, Codec, Desired, Encryption};
use uuid::Uuid;

use crate::model::{ChainArgs, Expect, FileState, Model};
use crate::world::Snap;

/// The kinds of step, as `LEDGER_SKIP` names them.
pub const KINDS: [&str; 8] = [
    "new",
    "resume",
    "edit",
    "manifest",
    "rollback",
    "undo_chain",
    "damage",
    "stray",
];

/// How hard a sequence leans on each kind of step (drawn once per seed).
#[derive(Debug, Clone)]
pub struct Profile {
    /// Out-of-band edits: none, some, many.
    pub edits: u32,
    /// Reports in play: one chain mostly, or many.
    pub chains: u32,
    /// Kinds of step never drawn, and `mismatch` for no read-back mismatches
    /// (`LEDGER_SKIP`, to look past a known failure).
    pub skip: Vec<String>,
}

impl Profile {
    pub fn draw(rng: &mut Rng, skip: &[String]) -> Profile {
        Profile {
            edits: [0, 2, 2, 4][rng.usize(..4)],
            chains: [1, 1, 3][rng.usize(..3)],
            skip: skip.to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Step {
    Apply(Apply),
    /// Someone else changes gateways: through the sandbox, or with the binary (a one-row
    /// apply under its own report, as the README shows).
    Edit {
        edits: Vec<(Uuid, Desired)>,
        binary: bool,
    },
    /// The manifest's content changes (its ids stay).
    ChangeManifest(Vec<(usize, Desired)>),
    /// `rollback` of a report, its manifest applied; `keep`: left applied (else undone
    /// after the check).
    Rollback {
        life: usize,
        keep: bool,
    },
    /// Every link of a chain rolled back newest-first, checked, then undone.
    UndoChain(usize),
    Damage {
        life: usize,
        how: Damage,
    },
    /// A `--resume` of a chain that is not its schedule: it must be refused.
    Stray {
        chain: usize,
        how: Stray,
    },
}

#[derive(Debug, Clone)]
pub enum Target {
    New(ChainArgs),
    Resume(usize),
}

#[derive(Debug, Clone)]
pub struct Apply {
    pub target: Target,
    /// `--resume` on a new chain's first run (it just starts).
    pub resume_new: bool,
    pub limit: Option<u32>,
    pub concurrency: u32,
    pub list: bool,
    /// Gateways whose PATCH answer (and stored value) differs from what was sent.
    pub mismatch: Vec<Uuid>,
    pub hold: Option<Hold>,
}

/// The `nth` PATCH of the run held; then edits, a second run of the same rows, and a
/// kill -9 or a release.
#[derive(Debug, Clone)]
pub struct Hold {
    pub nth: u64,
    pub applied: bool,
    pub edits: Vec<(Uuid, Desired)>,
    pub second: Option<Second>,
    pub kill: bool,
}

/// A second apply of the same rows while the first holds them.
#[derive(Debug, Clone, Copy)]
pub enum Second {
    /// The same command, the same report.
    SameReport,
    /// The same rows to another report.
    OtherReport,
    /// The same rows reordered in YAML, to another report.
    Yaml,
}

#[derive(Debug, Clone, Copy)]
pub enum Damage {
    DeleteReport,
    /// The report and its run file, journal and lock.
    DeleteAll,
    /// Keep this many whole lines (the header counts).
    KeepLines(usize),
    /// Cut the last line in the middle.
    TearLast,
    Empty,
}

#[derive(Debug, Clone)]
pub enum Stray {
    OtherSpace,
    Shard(Option<(u32, u32)>),
    Only(Option<Vec<Uuid>>),
}

pub fn short(id: &Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
}

/// A row's wishes in one short line: `name=gw-alpha,codecs=OPUS;PCMU`.
pub fn wish(d: &Desired) -> String {
    let list = |v: Vec<&str>| v.join(";");
    let mut out = Vec::new();
    if let Some(n) = &d.name {
        out.push(format!("name={n}"));
    }
    if let Some(u) = &d.uri {
        out.push(format!("uri={u}"));
    }
    if let Some(e) = &d.encryption {
        out.push(format!("encryption={}", e.as_str()));
    }
    if let Some(c) = &d.ciphers {
        out.push(format!(
            "ciphers={}",
            list(c.iter().map(|x| x.as_str()).collect())
        ));
    }
    if let Some(c) = &d.codecs {
        out.push(format!(
            "codecs={}",
            list(c.iter().map(|x| x.as_str()).collect())
        ));
    }
    out.join(",")
}

/// A random change to some fields, every value from small pools (so runs, edits and
/// rollbacks often meet on the same values).
pub fn desired(rng: &mut Rng, p: f64) -> Desired {
    loop {
        let mut d = Desired::default();
        if rng.f64() < p {
            d.name = Some(format!(
                "gw-{}",
                ["alpha", "bravo", "carol"][rng.usize(..3)]
            ));
        }
        if rng.f64() < p {
            d.uri = Some(format!(
                "sip:{}.example.com",
                ["pbx-a", "pbx-b"][rng.usize(..2)]
            ));
        }
        if rng.f64() < p {
            let e = [
                Encryption::Required,
                Encryption::Optional,
                Encryption::Forbidden,
            ];
            d.encryption = Some(e[rng.usize(..3)].clone());
        }
        if rng.f64() < p {
            let c = [
                vec![Cipher::AeadAes256Gcm8],
                vec![Cipher::Aes256CmHmacSha1_80, Cipher::AeadAes256Gcm8],
                vec![Cipher::AesCm128HmacSha1_80],
            ];
            d.ciphers = Some(c[rng.usize(..3)].clone());
        }
        if rng.f64() < p {
            let c = [
                vec![Codec::Opus, Codec::Pcmu],
                vec![Codec::Pcma],
                vec![Codec::G722, Codec::Pcmu],
                vec![Codec::Pcmu, Codec::Pcma],
            ];
            d.codecs = Some(c[rng.usize(..4)].clone());
        }
        if d != Desired::default() {
            return d;
        }
    }
}

fn pick<T: Clone>(rng: &mut Rng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.usize(..items.len())].clone())
}

fn some_ids(rng: &mut Rng, ids: &[Uuid], most: usize) -> Vec<Uuid> {
    let mut out: Vec<Uuid> = Vec::new();
    for _ in 0..rng.usize(1..=most.max(1)) {
        if let Some(id) = pick(rng, ids)
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

/// Gateways whose last change was a run's PATCH (`mismatch`: one the sandbox answered
/// with other codecs).
fn last_written(m: &Model, mismatch: bool) -> Vec<Uuid> {
    let mut last: std::collections::BTreeMap<Uuid, &crate::model::Ev> = Default::default();
    for e in &m.evs {
        last.insert(e.id, e);
    }
    last.into_iter()
        .filter(|(_, e)| e.by.is_some() && (!mismatch || e.mismatch))
        .map(|(id, _)| id)
        .collect()
}

fn edits(rng: &mut Rng, ids: &[Uuid], most: usize) -> Vec<(Uuid, Desired)> {
    some_ids(rng, ids, most)
        .into_iter()
        .map(|id| (id, desired(rng, 0.35)))
        .collect()
}

/// The chains of the main manifest whose next `--resume` the sequence may run; one
/// stuck behind a damaged link (every resume refused) only now and then.
fn resumable(rng: &mut Rng, m: &Model) -> Vec<usize> {
    (0..m.chains.len())
        .filter(|&c| m.chains[c].args.manifest == "m.csv")
        .filter(|&c| !matches!(m.walk(c), Expect::Refuse { .. }) || rng.f64() < 0.2)
        .collect()
}

fn new_chain(rng: &mut Rng, m: &Model, ids: &[Uuid]) -> ChainArgs {
    let n = m.chains.len();
    let mut args = ChainArgs {
        manifest: "m.csv".into(),
        only: None,
        shard: None,
        jsonl: rng.f64() < 0.15,
    };
    match rng.usize(..6) {
        0 => {
            let count = [2, 3][rng.usize(..2)];
            args.shard = Some((rng.u32(..count), count));
        }
        1 => args.only = Some((format!("only-{n}.txt"), some_ids(rng, ids, ids.len() / 2))),
        _ => {}
    }
    args
}

/// The next step, given the model and the space now.
pub fn next(rng: &mut Rng, m: &Model, now: &Snap, profile: &Profile) -> Step {
    let ids: Vec<Uuid> = now.keys().copied().collect();
    let chains = resumable(rng, m);
    let usable = |l: &usize, ended: bool| {
        let life = &m.lives[*l];
        !life.dead && life.file == FileState::Intact && (life.ended || !ended)
    };
    let rollbackable: Vec<usize> = (0..m.lives.len()).filter(|l| usable(l, true)).collect();
    let damageable: Vec<usize> = (0..m.lives.len()).filter(|l| usable(l, false)).collect();
    let pools = [chains.len(), rollbackable.len(), damageable.len()];
    match draw_kind(rng, m, profile, pools) {
        0 => {
            let args = new_chain(rng, m, &ids);
            Step::Apply(apply(rng, m, now, Target::New(args), profile))
        }
        1 => {
            let chain = pick(rng, &chains).unwrap_or_default();
            Step::Apply(apply(rng, m, now, Target::Resume(chain), profile))
        }
        2 => edit_step(rng, m, &ids),
        3 => {
            let rows = m.manifest("m.csv").rows.len();
            let changed = (0..rng.usize(1..=4))
                .map(|_| (rng.usize(..rows), desired(rng, 0.5)))
                .collect();
            Step::ChangeManifest(changed)
        }
        4 => rollback_step(rng, m, &rollbackable),
        5 => Step::UndoChain(pick(rng, &chains).unwrap_or_default()),
        6 => damage_step(rng, m, &damageable),
        _ => stray_step(rng, m, &chains, &ids),
    }
}

/// Which kind of step ([`KINDS`]) comes next. `pools`: how many chains to resume,
/// reports to roll back, reports to damage.
fn draw_kind(rng: &mut Rng, m: &Model, profile: &Profile, pools: [usize; 3]) -> usize {
    let few = pools[0] < profile.chains as usize;
    let [chains, rollbackable, damageable] = pools.map(|n| u32::from(n > 0));
    // Leaning toward what an operator's week looks like: a write the platform answered
    // with other values is fixed by hand, the next scheduled run follows, and that run's
    // report is the one rolled back.
    let fixable = profile.edits > 0 && !last_written(m, true).is_empty();
    let after_edit = m.evs.last().is_some_and(|e| !e.patch);
    let newest_link = m.lives.last().is_some_and(|l| l.link > 1 && l.ended);
    let mut weights = [
        if few { 4 } else { 1 },
        chains * (9 + 6 * u32::from(after_edit)),
        profile.edits * 2 + 6 * u32::from(fixable),
        1,
        rollbackable * (4 + 4 * u32::from(newest_link)),
        chains * 2,
        damageable,
        chains,
    ];
    for (kind, name) in KINDS.iter().enumerate() {
        if profile.skip.iter().any(|s| s == name) {
            weights[kind] = 0;
        }
    }
    if weights.iter().all(|w| *w == 0) {
        weights[0] = 1;
    }
    let total: u32 = weights.iter().sum();
    let mut draw = rng.u32(..total);
    let mut kind = 0;
    while draw >= weights[kind] {
        draw -= weights[kind];
        kind += 1;
    }
    kind
}

/// Mostly gateways a run wrote last, the mismatched ones first: an edit then lies
/// between a write and the next link's, where a carried `before` must give way.
fn edit_step(rng: &mut Rng, m: &Model, ids: &[Uuid]) -> Step {
    let written = last_written(m, true);
    let written = match written.is_empty() || rng.bool() {
        true => last_written(m, false),
        false => written,
    };
    let pool = match written.is_empty() || rng.f64() < 0.3 {
        true => ids,
        false => &written,
    };
    Step::Edit {
        edits: edits(rng, pool, 3),
        binary: rng.f64() < 0.15,
    }
}

/// Mostly the newest report of a chain: the one a nightly run just made.
fn rollback_step(rng: &mut Rng, m: &Model, rollbackable: &[usize]) -> Step {
    let newest: Vec<usize> = rollbackable
        .iter()
        .copied()
        .filter(|&l| m.chains[m.lives[l].chain].links.last() == Some(&l))
        .collect();
    let life = match rng.f64() < 0.7 {
        true => pick(rng, &newest),
        false => None,
    };
    Step::Rollback {
        life: life.or_else(|| pick(rng, rollbackable)).unwrap_or_default(),
        keep: rng.bool(),
    }
}

/// Half the time a link with a later one after it: the middle of a chain.
fn damage_step(rng: &mut Rng, m: &Model, damageable: &[usize]) -> Step {
    let middle: Vec<usize> = damageable
        .iter()
        .copied()
        .filter(|&l| {
            let c = &m.chains[m.lives[l].chain];
            c.links.last().is_some_and(|&last| last != l)
        })
        .collect();
    let life = match rng.bool() {
        true => pick(rng, &middle),
        false => None,
    };
    let life = life.or_else(|| pick(rng, damageable)).unwrap_or_default();
    let how = match rng.usize(..5) {
        0 => Damage::DeleteReport,
        1 => Damage::DeleteAll,
        2 => Damage::KeepLines(rng.usize(1..6)),
        3 => Damage::TearLast,
        _ => Damage::Empty,
    };
    Step::Damage { life, how }
}

fn stray_step(rng: &mut Rng, m: &Model, chains: &[usize], ids: &[Uuid]) -> Step {
    let chain = pick(rng, chains).unwrap_or_default();
    let args = &m.chains[chain].args;
    let how = match rng.usize(..3) {
        0 => Stray::OtherSpace,
        1 => Stray::Shard(match args.shard {
            Some((k, n)) if rng.bool() => Some(((k + 1) % n, n)),
            Some(_) => None,
            None => Some((rng.u32(..2), 2)),
        }),
        _ => Stray::Only(match &args.only {
            Some(_) if rng.bool() => None,
            _ => Some(some_ids(rng, ids, 3)),
        }),
    };
    Step::Stray { chain, how }
}

fn apply(rng: &mut Rng, m: &Model, now: &Snap, target: Target, profile: &Profile) -> Apply {
    let args = match &target {
        Target::New(args) => args.clone(),
        Target::Resume(c) => m.chains[*c].args.clone(),
    };
    let writes = m.would_write(&args, now);
    let limit = (rng.f64() < 0.15).then(|| rng.u32(1..4));
    let mut a = Apply {
        target,
        resume_new: rng.bool(),
        limit,
        concurrency: [1, 1, 1, 2, 4][rng.usize(..5)],
        list: rng.f64() < 0.2,
        mismatch: Vec::new(),
        hold: None,
    };
    if !writes.is_empty() && rng.f64() < 0.45 {
        a.mismatch = some_ids(rng, &writes, 2);
        if profile.skip.iter().any(|s| s == "mismatch") {
            a.mismatch.clear();
        }
    }
    if !writes.is_empty() && rng.f64() < 0.55 {
        let most = limit.map_or(writes.len(), |l| writes.len().min(l as usize));
        let second = match rng.usize(..8) {
            0 => Some(Second::SameReport),
            1 => Some(Second::OtherReport),
            2 => Some(Second::Yaml),
            _ => None,
        };
        // A PATCH held with other rows in flight: the kill lands among several writes,
        // but nobody edits then (which rows are mid-write is not known).
        let edits = match (a.concurrency, second) {
            (1, None) if rng.f64() < 0.4 => edits(rng, &m_ids(now), 2),
            _ => Vec::new(),
        };
        if second.is_some() {
            a.concurrency = 1;
        }
        a.hold = Some(Hold {
            nth: rng.u64(1..=most.max(1) as u64),
            applied: rng.bool(),
            edits,
            second,
            kill: rng.f64() < 0.7,
        });
    }
    a
}

fn m_ids(now: &Snap) -> Vec<Uuid> {
    now.keys().copied().collect()
}

impl fmt::Display for Apply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::New(args) => {
                write!(f, "apply a new chain")?;
                if let Some((k, n)) = args.shard {
                    write!(f, " --shard {k}/{n}")?;
                }
                if let Some((file, ids)) = &args.only {
                    write!(f, " --only @{file} ({} ids)", ids.len())?;
                }
                if args.jsonl {
                    write!(f, " --report-format jsonl")?;
                }
                if self.resume_new {
                    write!(f, " --resume")?;
                }
            }
            Target::Resume(c) => write!(f, "apply --resume chain {c}")?,
        }
        write!(f, " --concurrency {}", self.concurrency)?;
        if let Some(l) = self.limit {
            write!(f, " --limit {l}")?;
        }
        if self.list {
            write!(f, " --read-mode list")?;
        }
        if !self.mismatch.is_empty() {
            let ids: Vec<String> = self.mismatch.iter().map(short).collect();
            write!(f, "; mismatch on {}", ids.join(","))?;
        }
        if let Some(h) = &self.hold {
            write!(
                f,
                "; hold PATCH #{} ({})",
                h.nth,
                if h.applied { "applied" } else { "not applied" }
            )?;
            for (id, d) in &h.edits {
                write!(f, ", edit {} {}", short(id), wish(d))?;
            }
            if let Some(s) = h.second {
                write!(f, ", then a second run ({s:?})")?;
            }
            write!(f, ", then {}", if h.kill { "kill -9" } else { "release" })?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Apply(a) => write!(f, "{a}"),
            Step::Edit { edits, binary } => {
                let how = if *binary {
                    "with the binary"
                } else {
                    "in the sandbox"
                };
                write!(f, "edit out of band {how}:")?;
                for (id, d) in edits {
                    write!(f, " {} {};", short(id), wish(d))?;
                }
                Ok(())
            }
            Step::ChangeManifest(rows) => {
                write!(f, "change the manifest:")?;
                for (row, d) in rows {
                    write!(f, " row {row} {};", wish(d))?;
                }
                Ok(())
            }
            Step::Rollback { life, keep } => write!(
                f,
                "rollback report #{life} and apply it{}",
                if *keep { "" } else { " (then undone)" }
            ),
            Step::UndoChain(c) => write!(f, "roll back chain {c} newest-first (then undone)"),
            Step::Damage { life, how } => write!(f, "damage report #{life}: {how:?}"),
            Step::Stray { chain, how } => write!(f, "resume chain {chain} with {how:?}"),
        }
    }
}
