//! The world one sequence runs in: a sandbox that logs every change (and a second space,
//! started when a step needs one), the directory every run shares, and the real binary,
//! run with a PATCH held so that it can be killed at a chosen point.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sipgw_bulk::model::GatewayFields;
use sipgw_bulk::sandbox::SandboxConfig;
use uuid::Uuid;

use crate::support::{Guarded, Sandbox, SpawnGuarded};

pub type Snap = BTreeMap<Uuid, GatewayFields>;

/// Longest a run may take before the sequence calls it hung.
const RUN_BOUND: Duration = Duration::from_secs(60);

pub struct World {
    pub sb: Sandbox,
    other: Option<Sandbox>,
    pub ids: Vec<Uuid>,
}

/// Which space a command points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Main,
    /// A second sandbox holding the same ids: another space for the same manifest.
    Other,
}

/// How a run of the binary ended: its exit code, or `None` when the sequence killed it.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Outcome {
    pub fn killed(&self) -> bool {
        self.code.is_none()
    }

    /// `exit N`, or `killed`.
    pub fn code_text(&self) -> String {
        self.code.map_or("killed".into(), |c| format!("exit {c}"))
    }

    /// The exit code and the last lines of stderr, for a step's line and a failure.
    pub fn brief(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        match self.code {
            None => "killed".into(),
            Some(c @ 0..=2) => format!("exit {c}"),
            Some(c) => format!("exit {c}; stderr tail: {}", tail.join(" | ")),
        }
    }
}

/// How the sequence ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Kill,
    Release,
    Wait,
}

/// A run in progress.
pub struct Running {
    child: Guarded,
    started: Instant,
    held_before: u64,
}

impl World {
    pub fn new(ids: Vec<Uuid>) -> World {
        let config = SandboxConfig {
            write_limit: 0,
            log_changes: true,
            ..SandboxConfig::default()
        };
        let sb = Sandbox::start(config, &ids);
        std::fs::create_dir_all(sb.path("probe")).expect("a probe directory");
        World {
            sb,
            other: None,
            ids,
        }
    }

    pub fn snapshot(&self) -> Snap {
        self.sb.state().snapshot()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.sb.path(name)
    }

    /// The binary pointed at `space`, run in the sequence's directory with its lock
    /// directory, whichever space it talks to.
    pub fn cmd(&mut self, space: Space) -> Command {
        let dir = self.sb.dir.path().to_owned();
        let state = self.sb.path("state");
        let mut cmd = match space {
            Space::Main => self.sb.cmd(),
            Space::Other => self.other().cmd(),
        };
        cmd.current_dir(dir).env("SIPGW_BULK_STATE_DIR", state);
        cmd
    }

    fn other(&mut self) -> &Sandbox {
        let ids = self.ids.clone();
        self.other.get_or_insert_with(|| {
            let config = SandboxConfig {
                write_limit: 0,
                ..SandboxConfig::default()
            };
            Sandbox::start(config, &ids)
        })
    }

    /// PATCHes the second space has seen (0 when it was never started).
    pub fn other_patches(&self) -> u64 {
        self.other.as_ref().map_or(0, |o| o.state().stats().patches)
    }

    /// Starts `cmd`, with the `nth` PATCH from now held when `hold` is given.
    pub fn spawn(&self, cmd: &mut Command, hold: Option<(u64, bool)>) -> Running {
        let state = self.sb.state();
        let held_before = state.patches_held();
        match hold {
            Some((nth, applied)) => state.hold_patch(nth, applied),
            None => state.disarm_hold(),
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_guarded();
        Running {
            child,
            started: Instant::now(),
            held_before,
        }
    }

    /// Waits until the run's held PATCH arrives (true) or the run ends (false).
    pub fn wait_held(&self, run: &mut Running) -> Result<bool, String> {
        loop {
            if self.sb.state().patches_held() > run.held_before {
                return Ok(true);
            }
            match run.child.try_wait() {
                Ok(Some(_)) => return Ok(false),
                Ok(None) => {}
                Err(e) => return Err(format!("cannot wait for the binary: {e}")),
            }
            if run.started.elapsed() > RUN_BOUND {
                return Err(format!("a run took longer than {RUN_BOUND:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Ends a run: kills it (SIGKILL), or lets its held PATCH go on, or just waits.
    pub fn finish(&self, mut run: Running, end: End) -> Outcome {
        match end {
            End::Kill => {
                let _ = run.child.kill();
            }
            End::Release => self.sb.state().release_held(),
            End::Wait => {}
        }
        let out = run.child.wait_with_output();
        Outcome {
            code: match end {
                End::Kill => None,
                _ => out.status.code(),
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Waits until the sandbox has taken no new request for 100 ms (2 s at most): after a
    /// kill, requests the dead client had already sent are handled before the model reads
    /// the change log, so none is credited to the next run.
    pub fn settle(&self) {
        let started = Instant::now();
        let mut seen = self.sb.state().stats().requests;
        let mut quiet = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.sb.state().stats().requests;
            if now != seen {
                seen = now;
                quiet = Instant::now();
            } else if quiet.elapsed() >= Duration::from_millis(100) {
                return;
            }
        }
    }

    /// Runs `cmd` to its end. A PATCH held for another run stays held.
    pub fn run(&self, cmd: &mut Command) -> Outcome {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_guarded();
        let run = Running {
            child,
            started: Instant::now(),
            held_before: 0,
        };
        self.finish(run, End::Wait)
    }

    /// The sequence directory's files (not the lock or probe directories) and a hash of
    /// each one's bytes: what a refused run must leave as it was.
    pub fn files(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.sb.dir.path()) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.insert(name, file_hash(&path));
            }
        }
        out
    }
}

/// A hash of a file's bytes (0 for a file that cannot be read).
pub fn file_hash(path: &std::path::Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}
