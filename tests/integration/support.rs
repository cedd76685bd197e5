//! Test support: a real sandbox on a loopback port (in this process, so tests can read its
//! counters and state directly), the real `sipgw-bulk` binary, and manifest generators.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use sipgw_bulk::model::{Cipher, Codec, Encryption, GatewayFields};
use sipgw_bulk::report::{ReadRecord, read_report};
use sipgw_bulk::sandbox::{self, RunningSandbox, SandboxConfig, SandboxState};
use sipgw_bulk::status::Status;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_sipgw-bulk");

/// A sandbox serving on 127.0.0.1:0 from its own runtime; stops when dropped.
pub struct Sandbox {
    running: RunningSandbox,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn start(config: SandboxConfig, ids: &[Uuid]) -> Sandbox {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(SandboxState::new(config));
        state.seed(ids.iter().copied());
        let shutdown = CancellationToken::new();
        let running = runtime
            .block_on(sandbox::start(state, 0, shutdown.clone()))
            .unwrap();
        Sandbox {
            running,
            shutdown,
            _runtime: runtime,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn state(&self) -> &SandboxState {
        &self.running.state
    }

    pub fn base_url(&self) -> String {
        self.running.base_url()
    }

    /// The binary, run in this test's temp dir, pointed at this sandbox with its
    /// credentials in the environment (as a user would after `eval $(sipgw-bulk sandbox)`).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .env_remove("SIGNALWIRE_SPACE")
            .env_remove("RUST_LOG")
            // Each test's run locks in its own state directory (the default is the user's
            // ~/.local/state/sipgw-bulk, shared by every test).
            .env("SIPGW_BULK_STATE_DIR", self.dir.path().join("state"))
            .env("SIGNALWIRE_BASE_URL", self.base_url())
            .env("SIGNALWIRE_PROJECT_ID", &self.state().config().project_id)
            .env("SIGNALWIRE_API_TOKEN", &self.state().config().api_token);
        cmd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A sandbox with the default settings, holding `ids`.
    pub fn seeded(ids: &[Uuid]) -> Sandbox {
        Sandbox::start(SandboxConfig::default(), ids)
    }

    /// [`Sandbox::seeded`], with `m.csv` asking for `desired(i)` of each id ([`write_csv`]).
    pub fn with_manifest(ids: &[Uuid]) -> Sandbox {
        Sandbox::start_with_manifest(SandboxConfig::default(), ids)
    }

    /// [`Sandbox::start`], with `m.csv` asking for `desired(i)` of each id ([`write_csv`]).
    pub fn start_with_manifest(config: SandboxConfig, ids: &[Uuid]) -> Sandbox {
        let sb = Sandbox::start(config, ids);
        write_csv(&sb.path("m.csv"), ids, &[]);
        sb
    }

    /// Writes `text` to the file `name` in this test's directory.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// The text of the file `name` in this test's directory.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// The binary with `args` (any command), ready to take more and run.
    pub fn call<I, S>(&self, args: I) -> Call<'_>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.cmd();
        cmd.args(args);
        Call { cmd, _sb: self }
    }

    /// `apply MANIFEST --yes`, ready to take more arguments and run.
    pub fn apply(&self, manifest: &str) -> Call<'_> {
        self.call(["apply", manifest, "--yes"])
    }

    /// `plan MANIFEST`, ready to take more arguments and run.
    pub fn plan(&self, manifest: &str) -> Call<'_> {
        self.call(["plan", manifest])
    }

    /// The report `name` in this test's directory, by row ([`report`]).
    pub fn report(&self, name: &str) -> BTreeMap<u64, ReadRecord> {
        report(&self.path(name))
    }

    /// The summary JSON `name` in this test's directory.
    pub fn summary(&self, name: &str) -> serde_json::Value {
        summary_json(&self.path(name))
    }
}

/// A run of the binary against a sandbox, built argument by argument (in the order given).
pub struct Call<'a> {
    cmd: Command,
    _sb: &'a Sandbox,
}

impl Call<'_> {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// `--report NAME`.
    pub fn report(self, name: &str) -> Self {
        self.args(["--report", name])
    }

    /// `--summary-json NAME`.
    pub fn summary_json(self, name: &str) -> Self {
        self.args(["--summary-json", name])
    }

    /// The command, to spawn (with [`SpawnGuarded`]) or change by hand.
    pub fn command(self) -> Command {
        self.cmd
    }

    /// Runs it to the end ([`run`]).
    pub fn run(mut self) -> Output {
        run(&mut self.cmd)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn ids(n: u64, seed: u64) -> Vec<Uuid> {
    sandbox::generated_ids(n, seed)
}

/// What row `i` asks for: every field differs from the sandbox's starting values.
pub fn desired(i: usize) -> GatewayFields {
    let codecs = [
        vec![Codec::Opus, Codec::Pcmu],
        vec![Codec::Pcma, Codec::Pcmu],
        vec![Codec::G722],
        vec![Codec::Opus48000, Codec::Pcmu, Codec::Pcma],
    ];
    let encryption = [Encryption::Required, Encryption::Forbidden];
    GatewayFields {
        name: format!("pbx-{i}"),
        uri: format!("sip:pbx{i}.example.com"),
        encryption: Some(encryption[i % 2].clone()),
        ciphers: vec![Cipher::AeadAes256Gcm8, Cipher::Aes256CmHmacSha1_80],
        codecs: codecs[i % codecs.len()].clone(),
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(";")
}

/// A CSV manifest asking for `desired(i)` for each id, plus `extra` raw lines at the end.
pub fn write_csv(path: &Path, ids: &[Uuid], extra: &[String]) {
    let mut text = String::from("id,name,uri,encryption,ciphers,codecs\n");
    for (i, id) in ids.iter().enumerate() {
        let d = desired(i);
        text.push_str(&format!(
            "{id},{},{},{},{},{}\n",
            d.name,
            d.uri,
            d.encryption.unwrap(),
            join(&d.ciphers),
            join(&d.codecs)
        ));
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// The expected state after applying `write_csv`'s manifest.
pub fn expected(ids: &[Uuid]) -> BTreeMap<Uuid, GatewayFields> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| (*id, desired(i)))
        .collect()
}

/// Longest a run of the binary may take in a test before it is killed (and the test fails).
const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// A child process that is killed when dropped, whatever the test's outcome: a failing
/// test never leaves a `sipgw-bulk` running.
pub struct Guarded(Option<std::process::Child>);

pub trait SpawnGuarded {
    fn spawn_guarded(&mut self) -> Guarded;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> Guarded {
        Guarded(Some(self.spawn().unwrap()))
    }
}

impl Guarded {
    pub fn wait_with_output(mut self) -> Output {
        let child = self.0.take().unwrap();
        wait_bounded(child)
    }
}

impl std::ops::Deref for Guarded {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a child, reading its output, and kills it past [`RUN_TIMEOUT`].
fn wait_bounded(mut child: std::process::Child) -> Output {
    use std::io::Read;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the binary ran longer than {RUN_TIMEOUT:?}: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub fn run(cmd: &mut Command) -> Output {
    // As `Command::output` does: no terminal on stdin, output captured.
    let child = Guarded(Some(
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let out = child.wait_with_output();
    if std::env::var_os("TEST_VERBOSE").is_some() {
        eprintln!("stdout:\n{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// The report, with a check that no manifest row appears twice.
pub fn report(path: &Path) -> BTreeMap<u64, ReadRecord> {
    let records = read_report(path).unwrap();
    let n = records.len();
    let by_row: BTreeMap<u64, ReadRecord> = records.into_iter().map(|r| (r.row, r)).collect();
    assert_eq!(
        by_row.len(),
        n,
        "a row appears more than once in the report"
    );
    by_row
}

/// How many rows of `report` have `status`.
pub fn count(report: &BTreeMap<u64, ReadRecord>, status: Status) -> usize {
    report.values().filter(|r| r.status == status).count()
}

pub fn summary_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The sandbox's starting values for `ids`, seeded in this order.
pub fn starting_state(ids: &[Uuid]) -> BTreeMap<Uuid, GatewayFields> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| (*id, sandbox::starting_fields(i as u64 + 1)))
        .collect()
}

/// The `sipgw-bulk sandbox` binary with `args` (port 0), and the three
/// `SIGNALWIRE_...=value` lines it prints once it serves.
pub fn sandbox_binary(args: &[&str]) -> (Guarded, Vec<(String, String)>) {
    sandbox_binary_lines(args, 3)
}

/// [`sandbox_binary`], reading `n` lines (4 with `--projects-out`).
pub fn sandbox_binary_lines(args: &[&str], n: usize) -> (Guarded, Vec<(String, String)>) {
    use std::io::BufRead;
    let mut server = Command::new(BIN)
        .args(["sandbox", "--port", "0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let env = (0..n)
        .map(|_| {
            let line = lines.next().unwrap().unwrap();
            let (k, v) = line.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (server, env)
}
