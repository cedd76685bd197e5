//! The benchmark: the release binary as its own process against `sipgw-bulk sandbox` in
//! another, on loopback. Writes the results into BENCHMARKS.md (between its markers; the
//! hand-written log of changes around them is kept).
//!
//! ```sh
//! cargo run --release --example bench              # full run, about 6 minutes
//! cargo run --release --example bench -- --quick --out /tmp/bench.md   # CI smoke run
//! ```
//!
//! Needs `oha` (`cargo install oha`) for the peer comparisons, and GNU `time` for peak RSS
//! and CPU time; without them those cells say "n/a".

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Options {
    quick: bool,
    out: PathBuf,
    /// Run only this section (fidelity, window, throughput, latency, memory, drift,
    /// crossover, shared, peer, end-to-end), for profiling work.
    only: Option<String>,
}

fn main() -> Result<()> {
    let mut options = Options {
        quick: false,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md")),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--out" => options.out = PathBuf::from(args.next().ok_or("--out needs a file")?),
            "--only" => options.only = Some(args.next().ok_or("--only needs a section")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let bin = build_binary()?;
    let work = tempdir()?;
    let mut md = String::new();
    writeln!(md, "{}", machine())?;
    writeln!(
        md,
        "Produced by `cargo run --release --example bench{}` on {}.\n",
        if options.quick { " -- --quick" } else { "" },
        now_utc()
    )?;

    let wanted = |name: &str| options.only.as_deref().is_none_or(|o| o == name);
    if wanted("fidelity") {
        fidelity(&bin, &work, &options, &mut md)?;
    }
    if wanted("window") {
        window(&bin, &work, &options, &mut md)?;
    }
    if wanted("throughput") {
        throughput(&bin, &work, &options, &mut md)?;
    }
    if wanted("latency") {
        latency_hiding(&bin, &work, &options, &mut md)?;
    }
    if wanted("memory") {
        memory(&bin, &work, &options, &mut md)?;
    }
    if wanted("drift") {
        drift(&bin, &work, &options, &mut md)?;
    }
    if wanted("crossover") {
        crossover(&bin, &work, &options, &mut md)?;
    }
    if wanted("shared") {
        shared_budget(&bin, &work, &options, &mut md)?;
    }
    if wanted("peer") {
        python_peer(&bin, &work, &options, &mut md)?;
    }
    if wanted("end-to-end") {
        end_to_end(&bin, &work, &options, &mut md)?;
    }
    if options.only.is_none() {
        write_results(&options.out, &md)?;
    }
    println!("{md}");
    if options.only.is_none() {
        eprintln!("results written to {}", options.out.display());
    }
    Ok(())
}

/// Builds the release binary and returns its path.
fn build_binary() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "sipgw-bulk"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    if !status.success() {
        return Err("cargo build failed".into());
    }
    Ok(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/release/sipgw-bulk"
    )))
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sipgw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A sandbox process; killed on drop.
struct Sandbox {
    child: Child,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn start(bin: &Path, gateways: u64, extra: &[&str]) -> Result<Sandbox> {
        let mut child = Command::new(bin)
            .args([
                "sandbox",
                "--port",
                "0",
                "--gateways",
                &gateways.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut env = Vec::new();
        for _ in 0..3 {
            let line = lines.next().ok_or("sandbox printed nothing")??;
            let (k, v) = line.split_once('=').ok_or("bad sandbox line")?;
            env.push((k.to_owned(), v.to_owned()));
        }
        Ok(Sandbox { child, env })
    }

    fn base_url(&self) -> &str {
        &self.env[0].1
    }

    fn auth_header(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.env[1].1, self.env[2].1);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// `GET /__sandbox/stats` over a plain socket.
    fn stats(&self) -> Result<serde_json::Value> {
        let addr = self.base_url().trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr)?;
        write!(
            stream,
            "GET /__sandbox/stats HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let body = text.split("\r\n\r\n").nth(1).ok_or("no body")?;
        Ok(serde_json::from_str(body)?)
    }

    fn cmd(&self, bin: &Path, work: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.current_dir(work).envs(self.env.iter().cloned());
        cmd
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manifest asking every one of the sandbox's `n` generated gateways for new values.
fn manifest(work: &Path, n: u64) -> Result<PathBuf> {
    let path = work.join(format!("m{n}.csv"));
    if path.exists() {
        return Ok(path);
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(out, "id,uri,encryption,codecs")?;
    for (i, id) in sipgw_bulk::sandbox::generated_ids(n, 42).iter().enumerate() {
        writeln!(out, "{id},sip:pbx{i}.example.com,required,OPUS;PCMU")?;
    }
    out.flush()?;
    Ok(path)
}

fn summary(path: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !(out.status.success() || out.status.code() == Some(2)) {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// At `--rate R`: the most writes the sandbox counted in any one-second window, and the mean.
fn fidelity(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let (rates, secs): (&[u64], u64) = if o.quick {
        (&[100], 3)
    } else {
        (&[100, 500, 1000], 32)
    };
    writeln!(md, "## Write-rate fidelity\n")?;
    writeln!(
        md,
        "`sipgw-bulk apply M --yes --rate R --concurrency 64 --read-rate 0` over R x {secs} rows; \
         the sandbox (`--write-limit 0`) counts every write's arrival.\n"
    )?;
    writeln!(
        md,
        "| --rate R | rows | max writes in any 1 s window | mean write rate | mean / R |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for &rate in rates {
        let rows = rate * secs;
        let s = apply_at(bin, work, rate, rows, &["--read-rate", "0"], "fid")?;
        let writes = s["writes"].as_u64().unwrap_or(0);
        let span = (s["last_write_us"].as_u64().unwrap_or(0)
            - s["first_write_us"].as_u64().unwrap_or(0)) as f64
            / 1e6;
        let mean = if span > 0.0 {
            (writes - 1) as f64 / span
        } else {
            0.0
        };
        writeln!(
            md,
            "| {rate} | {rows} | {} | {mean:.1}/s | {:.3} |",
            s["max_writes_in_any_second"],
            mean / rate as f64
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// How long a gateway's write waits after the read it is built from: the window in which
/// another client's edit is overwritten. The read is taken after the write slot, so the
/// window is one round trip whatever the pace.
fn window(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    // (--rate, rows, the sandbox's latency in ms)
    let runs: &[(u64, u64, u64)] = if o.quick {
        &[(20, 40, 0)]
    } else {
        &[
            (20, 400, 0),
            (250, 5000, 0),
            (1000, 10000, 0),
            (200, 2000, 20),
        ]
    };
    writeln!(
        md,
        "## Read-to-write window
"
    )?;
    writeln!(
        md,
        "`sipgw-bulk apply M --yes --rate R --concurrency 64 --read-mode get`; the sandbox \
         records, for each PATCH it applies, the time since it last served a GET of that \
         gateway. Before the write was built from a read taken after its slot, that gap was \
         the wait for the slot: up to 12 s at `--rate 20`. With latency, the sandbox's own \
         (added to the PATCH) is in the window.\n"
    )?;
    writeln!(
        md,
        "| --rate R | rows | latency | window p50 | window max |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for &(rate, rows, latency) in runs {
        let sandbox = ["--latency-ms".to_string(), latency.to_string()];
        let s = apply_at_on(
            bin,
            work,
            (rate, rows),
            &sandbox,
            &["--read-mode", "get"],
            "window",
        )?;
        let ms = |key: &str| s[key].as_u64().unwrap_or(0) as f64 / 1000.0;
        writeln!(
            md,
            "| {rate} | {rows} | {latency} ms | {:.2} ms | {:.2} ms |",
            ms("read_to_write_p50_us"),
            ms("read_to_write_max_us")
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// `apply` of `rows` changed rows at `--rate rate`, concurrency 64, plus `extra`, against a
/// fresh sandbox with no write limit; returns the sandbox's stats.
fn apply_at(
    bin: &Path,
    work: &Path,
    rate: u64,
    rows: u64,
    extra: &[&str],
    name: &str,
) -> Result<serde_json::Value> {
    apply_at_on(bin, work, (rate, rows), &[], extra, name)
}

/// [`apply_at`] against a sandbox started with `sandbox` arguments too.
fn apply_at_on(
    bin: &Path,
    work: &Path,
    (rate, rows): (u64, u64),
    sandbox: &[String],
    extra: &[&str],
    name: &str,
) -> Result<serde_json::Value> {
    let mut args = vec!["--write-limit"];
    args.push("0");
    args.extend(sandbox.iter().map(String::as_str));
    let sb = Sandbox::start(bin, rows, &args)?;
    let m = manifest(work, rows)?;
    let report = work.join(format!("{name}{rate}.csv"));
    fresh(&report);
    run_quiet(
        sb.cmd(bin, work)
            .arg("apply")
            .arg(&m)
            .args([
                "--yes",
                "--rate",
                &rate.to_string(),
                "--concurrency",
                "64",
                "-q",
            ])
            .args(extra)
            .arg("--report")
            .arg(&report),
    )?;
    sb.stats()
}

/// Removes an earlier run's report and its lock file, so the next run starts afresh.
fn fresh(report: &Path) {
    let _ = std::fs::remove_file(report);
    let _ = std::fs::remove_file(sipgw_bulk::ledger::lock_path(report));
}

fn oha() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [
        PathBuf::from(format!("{home}/.cargo/bin/oha")),
        PathBuf::from("/usr/local/bin/oha"),
    ];
    candidates.into_iter().find(|p| p.exists())
}

/// `oha` against one gateway's GET at concurrency `c`: requests per second.
fn oha_rate(oha: &Path, sb: &Sandbox, c: u64, n: u64) -> Result<f64> {
    let id = sipgw_bulk::sandbox::generated_ids(1, 42)[0];
    let url = format!("{}/api/fabric/resources/sip_gateways/{id}", sb.base_url());
    let out = Command::new(oha)
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-c",
            &c.to_string(),
            "-n",
            &n.to_string(),
        ])
        .args(["-H", &format!("Authorization: {}", sb.auth_header())])
        .arg(&url)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0))
}

/// Unthrottled: GETs per second of `plan` at concurrency 1, 8, 64, next to oha.
fn throughput(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let oha = oha();
    writeln!(
        md,
        "## Unthrottled request rate (tool vs oha, same sandbox endpoint)\n"
    )?;
    writeln!(
        md,
        "`sipgw-bulk plan M --concurrency C --read-rate 0 --read-mode get` (one GET per row; rate from the \
         run's own elapsed time) against `oha -c C` on one gateway's GET URL, same sandbox \
         (`--write-limit 0`, default threads). {}\n",
        if oha.is_some() {
            ""
        } else {
            "oha not installed: its column is n/a."
        }
    )?;
    writeln!(
        md,
        "| concurrency | requests | sipgw-bulk req/s | oha req/s | ratio |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let cases: &[(u64, u64)] = if o.quick {
        &[(1, 300), (8, 1000)]
    } else {
        &[(1, 5000), (8, 30000), (64, 60000)]
    };
    let max_n = cases.iter().map(|c| c.1).max().unwrap_or(0);
    let sb = Sandbox::start(bin, max_n, &["--write-limit", "0"])?;
    for &(c, n) in cases {
        let m = manifest_prefix(work, max_n, n)?;
        let report = work.join(format!("tp{c}.csv"));
        let sj = work.join(format!("tp{c}.json"));
        fresh(&report);
        let _ = std::fs::remove_file(&sj);
        run_quiet(
            sb.cmd(bin, work)
                .arg("plan")
                .arg(&m)
                .args([
                    "--concurrency",
                    &c.to_string(),
                    "--read-rate",
                    "0",
                    "--read-mode",
                    "get",
                    "-q",
                    "--report",
                ])
                .arg(&report)
                .arg("--summary-json")
                .arg(&sj),
        )?;
        let s = summary(&sj)?;
        let ours =
            s["requests"].as_f64().unwrap_or(0.0) / s["elapsed_secs"].as_f64().unwrap_or(1.0);
        let theirs = match &oha {
            Some(oha) => Some(oha_rate(oha, &sb, c, n)?),
            None => None,
        };
        writeln!(
            md,
            "| {c} | {n} | {ours:.0} | {} | {} |",
            theirs.map_or("n/a".into(), |t| format!("{t:.0}")),
            theirs.map_or("n/a".into(), |t| format!("{:.2}", ours / t))
        )?;
    }
    if let Some(oha) = &oha {
        let cap = oha_rate(oha, &sb, 256, if o.quick { 2000 } else { 100_000 })?;
        writeln!(
            md,
            "\nSandbox capacity (oha, concurrency 256, same endpoint): {cap:.0} req/s."
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// The first `n` rows of the `max`-row manifest (so one sandbox serves every case).
fn manifest_prefix(work: &Path, max: u64, n: u64) -> Result<PathBuf> {
    let full = manifest(work, max)?;
    if n == max {
        return Ok(full);
    }
    let path = work.join(format!("m{max}-first{n}.csv"));
    let text = std::fs::read_to_string(&full)?;
    let lines: Vec<&str> = text.lines().take(n as usize + 1).collect();
    std::fs::write(&path, lines.join("\n") + "\n")?;
    Ok(path)
}

/// 50 ms added to every response, concurrency 64: rows/s against the bound C / latency.
fn latency_hiding(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let n = if o.quick { 300 } else { 10_000 };
    let sb = Sandbox::start(bin, n, &["--write-limit", "0", "--latency-ms", "50"])?;
    let m = manifest(work, n)?;
    let report = work.join("lat.csv");
    let sj = work.join("lat.json");
    fresh(&report);
    let _ = std::fs::remove_file(&sj);
    run_quiet(
        sb.cmd(bin, work)
            .arg("plan")
            .arg(&m)
            .args([
                "--concurrency",
                "64",
                "--read-rate",
                "0",
                "--read-mode",
                "get",
                "-q",
            ])
            .arg("--report")
            .arg(&report)
            .arg("--summary-json")
            .arg(&sj),
    )?;
    let s = summary(&sj)?;
    let rows = s["rows"].as_f64().unwrap_or(0.0);
    let rate = rows / s["elapsed_secs"].as_f64().unwrap_or(1.0);
    let bound = 64.0 / 0.050;
    // The sandbox's own answers come later than 50 ms: its timer wakes on the next
    // millisecond, and it shares the cores with the client.
    let p50 = s["latency_ms"]["get"]["p50_ms"].as_f64().unwrap_or(50.0);
    let at_p50 = 64.0 / (p50 / 1000.0);
    writeln!(md, "## Latency hiding\n")?;
    writeln!(
        md,
        "Sandbox `--latency-ms 50`; `sipgw-bulk plan M --concurrency 64 --read-rate 0 --read-mode get` \
         over {n} rows (one GET a row). Bound: 64 / 0.050 s = {bound:.0} rows/s; and 64 over the \
         GET's median round trip as the client measured it (the sandbox's timer wakes on the next \
         millisecond, and it shares the cores with the client).\n"
    )?;
    writeln!(
        md,
        "| rows | rows/s | bound | achieved / bound | GET p50 | achieved / (64 / p50) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {n} | {rate:.0} | {bound:.0} | {:.3} | {p50:.1} ms | {:.3} |\n",
        rate / bound,
        rate / at_p50
    )?;
    Ok(())
}

/// Peak RSS (KiB), user and system seconds of a command, from GNU time.
fn measured(cmd: &mut Command) -> Result<Option<(u64, f64, f64)>> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        run_quiet(cmd)?;
        return Ok(None);
    }
    let out_file = std::env::temp_dir().join(format!("sipgw-bench-time-{}", std::process::id()));
    let mut timed = Command::new(time);
    timed
        .args(["-f", "%M %U %S", "-o"])
        .arg(&out_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    run_quiet(&mut timed)?;
    let text = std::fs::read_to_string(&out_file)?;
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() < 3 {
        return Ok(None);
    }
    Ok(Some((
        parts[0].parse()?,
        parts[1].parse()?,
        parts[2].parse()?,
    )))
}

/// Peak RSS of validate and apply at 10^4, 10^5, 10^6 rows, and CPU time per row.
fn memory(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let sizes: &[u64] = if o.quick {
        &[1_000, 10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    writeln!(md, "## Memory and CPU\n")?;
    writeln!(
        md,
        "Peak RSS and CPU (user + system) of the client process, from GNU time. `apply` runs \
         unthrottled (`--rate 1000000 --read-rate 0 --concurrency 64`, default read mode: auto, \
         so the space is read in pages first) against a sandbox holding the manifest's \
         gateways, every row needing a change.\n"
    )?;
    writeln!(
        md,
        "| rows | validate peak RSS | apply peak RSS | apply CPU | CPU per row |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for &n in sizes {
        let m = manifest(work, n)?;
        let v = measured(
            Command::new(bin)
                .current_dir(work)
                .arg("validate")
                .arg(&m)
                .arg("-q"),
        )?;
        let sb = Sandbox::start(bin, n, &["--write-limit", "0"])?;
        let report = work.join(format!("mem{n}.csv"));
        fresh(&report);
        let a = measured(
            sb.cmd(bin, work)
                .arg("apply")
                .arg(&m)
                .args([
                    "--yes",
                    "--rate",
                    "1000000",
                    "--read-rate",
                    "0",
                    "--concurrency",
                    "64",
                    "-q",
                    "--report",
                ])
                .arg(&report),
        )?;
        let _ = std::fs::remove_file(&report);
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        match (v, a) {
            (Some(v), Some(a)) => writeln!(
                md,
                "| {n} | {} | {} | {:.2} s | {:.1} µs |",
                mib(v.0),
                mib(a.0),
                a.1 + a.2,
                (a.1 + a.2) / n as f64 * 1e6
            )?,
            _ => writeln!(md, "| {n} | n/a | n/a | n/a | n/a |")?,
        }
    }
    writeln!(md)?;
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .map_or("unknown".into(), |k| {
            format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "Machine: {cores} cores ({cpu}), {mem} memory; {rustc}. Client and sandbox share these cores.\n"
    )
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Replaces the text between the markers of `path`, keeping the rest (the change log).
fn write_results(path: &Path, results: &str) -> Result<()> {
    const START: &str = "<!-- bench:start -->";
    const END: &str = "<!-- bench:end -->";
    // A missing or empty file (CI's `--out $(mktemp)`) starts a fresh document.
    let old = std::fs::read_to_string(path)
        .ok()
        .filter(|text| text.contains(START) && text.contains(END))
        .unwrap_or_else(|| format!("# Benchmarks\n\n{START}\n{END}\n"));
    let (head, rest) = old.split_once(START).ok_or("no start marker")?;
    let (_, tail) = rest.split_once(END).ok_or("no end marker")?;
    std::fs::write(path, format!("{head}{START}\n{results}{END}{tail}"))?;
    Ok(())
}

/// A manifest over the sandbox's first `n` generated gateways where one row in `every`
/// asks for a change and the others ask for what the gateway already holds (a drift check).
fn drift_manifest(work: &Path, n: u64, every: u64) -> Result<PathBuf> {
    let path = work.join(format!("drift{n}-{every}.csv"));
    if path.exists() {
        return Ok(path);
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(out, "id,uri")?;
    for (i, id) in sipgw_bulk::sandbox::generated_ids(n, 42).iter().enumerate() {
        let i = i as u64;
        if i.is_multiple_of(every) {
            writeln!(out, "{id},sip:moved{i}.example.com")?;
        } else {
            let uri = sipgw_bulk::sandbox::starting_fields(i + 1).uri;
            writeln!(out, "{id},{uri}")?;
        }
    }
    out.flush()?;
    Ok(path)
}

/// One `plan` run as a user times it (process start to exit): wall seconds, peak RSS (KiB,
/// when GNU time is there) and the run's summary.
fn timed_plan(
    bin: &Path,
    sb: &Sandbox,
    work: &Path,
    manifest: &Path,
    args: &[&str],
    name: &str,
) -> Result<(f64, Option<u64>, serde_json::Value)> {
    let report = work.join(format!("{name}.csv"));
    let sj = work.join(format!("{name}.json"));
    fresh(&report);
    let _ = std::fs::remove_file(&sj);
    let started = std::time::Instant::now();
    let m = measured(
        sb.cmd(bin, work)
            .arg("plan")
            .arg(manifest)
            .args(args)
            .args(["-q", "--report"])
            .arg(&report)
            .arg("--summary-json")
            .arg(&sj),
    )?;
    let wall = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&report);
    Ok((wall, m.map(|m| m.0), summary(&sj)?))
}

/// `plan`'s arguments in the read-mode sections: concurrency 64, reads unlimited.
fn unthrottled_at_64(mode: &str) -> [&str; 6] {
    [
        "--concurrency",
        "64",
        "--read-rate",
        "0",
        "--read-mode",
        mode,
    ]
}

fn p50(summary: &serde_json::Value, kind: &str) -> String {
    summary["latency_ms"][kind]["p50_ms"]
        .as_f64()
        .map_or("-".into(), |ms| format!("{ms:.0} ms"))
}

/// A nightly drift check: 10^5 gateways, 1% changed, 50 ms a response; get vs list.
fn drift(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let n = if o.quick { 2_000 } else { 100_000 };
    let sb = Sandbox::start(bin, n, &["--write-limit", "0", "--latency-ms", "50"])?;
    let m = drift_manifest(work, n, 100)?;
    writeln!(md, "## Drift check: one GET a row vs the space in pages\n")?;
    writeln!(
        md,
        "Sandbox of {n} gateways, `--latency-ms 50`; a manifest of all {n}, 1% asking for a \
         change. `sipgw-bulk plan M --concurrency 64 --read-mode MODE`, timed from process \
         start to exit; peak RSS from GNU time.\n"
    )?;
    writeln!(
        md,
        "| read mode | requests | wall time | peak RSS | would_update | GET p50 | LIST p50 |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for mode in ["get", "list"] {
        let (wall, rss, s) = timed_plan(
            bin,
            &sb,
            work,
            &m,
            &unthrottled_at_64(mode),
            &format!("drift-{mode}"),
        )?;
        writeln!(
            md,
            "| {mode} | {} | {wall:.1} s | {} | {} | {} | {} |",
            s["requests"],
            rss.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            s["counts"]["would_update"],
            p50(&s, "get"),
            p50(&s, "list"),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// Where `auto` should switch: manifests of several sizes in a space of 10^5 gateways.
fn crossover(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let (space, sizes): (u64, &[u64]) = if o.quick {
        (3_000, &[1_000, 3_000])
    } else {
        (100_000, &[2_000, 6_400, 20_000])
    };
    let sb = Sandbox::start(bin, space, &["--write-limit", "0", "--latency-ms", "50"])?;
    let full = drift_manifest(work, space, 100)?;
    writeln!(md, "## Read mode crossover\n")?;
    writeln!(
        md,
        "Sandbox of {space} gateways, `--latency-ms 50`; manifests of the first R of them. \
         `plan M --concurrency 64 --read-mode MODE`, wall time from process start to exit. \
         `auto` reads pages while they cost fewer round trips than the GETs would (R / 64) \
         and GETs the rows they did not reach.\n"
    )?;
    writeln!(md, "| rows R | get | list | auto | auto's pages |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    let text = std::fs::read_to_string(&full)?;
    for &r in sizes {
        let m = work.join(format!("cross{r}.csv"));
        let lines: Vec<&str> = text.lines().take(r as usize + 1).collect();
        std::fs::write(&m, lines.join("\n") + "\n")?;
        let mut cells = Vec::new();
        let mut auto_pages = serde_json::Value::Null;
        for mode in ["get", "list", "auto"] {
            let (wall, _, s) = timed_plan(
                bin,
                &sb,
                work,
                &m,
                &unthrottled_at_64(mode),
                &format!("cross{r}-{mode}"),
            )?;
            if mode == "auto" {
                auto_pages = s["read_in_pages"]["pages"].clone();
            }
            cells.push(format!("{wall:.1} s ({} req)", s["requests"]));
        }
        writeln!(
            md,
            "| {r} | {} | {} | {} | {auto_pages} |",
            cells[0], cells[1], cells[2]
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// The space's write budget, four ways: random 429s, a limit under `--rate`, that limit
/// shared with production writes, and the budget announced in headers.
fn shared_budget(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let rows = if o.quick { 300 } else { 3_000 };
    // (case, sandbox options, --rate, --concurrency, target). --concurrency counts requests
    // on the wire: a row waiting out its Retry-After holds none.
    let cases: [(&str, &[&str], &str, &str, &str); 6] = [
        (
            "1: 10% random 429s (Retry-After 1 s), 20 ms, no limit",
            &[
                "--write-limit",
                "0",
                "--fault",
                "429=0.1",
                "--latency-ms",
                "20",
            ],
            "200",
            "32",
            ">= 160/s",
        ),
        (
            "2: a limit of 100/s",
            &["--write-limit", "100"],
            "1000",
            "32",
            ">= 80/s, <= 5% refused",
        ),
        (
            "3: that limit, 40/s of it production",
            &["--write-limit", "100", "--background-writes", "40"],
            "1000",
            "32",
            "job >= 40/s, production <= 2% refused",
        ),
        (
            "4: 100/s announced over 10 s windows",
            &["--write-limit", "100", "--announce-limit"],
            "1000",
            "32",
            ">= 40/s (80% of the 50/s above the reserve), 0 refused",
        ),
        (
            "5: 100/s counted in fixed 1 s windows",
            &["--write-limit", "100", "--limit-window", "1"],
            "1000",
            "32",
            ">= 80/s, <= 5% refused",
        ),
        (
            "6: 100/s counted in fixed 10 s windows",
            &["--write-limit", "100", "--limit-window", "10"],
            "1000",
            "32",
            ">= 80/s, <= 5% refused",
        ),
    ];
    writeln!(md, "## Sharing the write budget\n")?;
    writeln!(
        md,
        "`sipgw-bulk apply M --yes --concurrency C --rate R` over {rows} rows, every one \
         changing, against the sandbox options shown. Writes and 429s as the sandbox counted \
         them; the job's rate is its accepted writes over the run.\n"
    )?;
    writeln!(
        md,
        "| case | --rate | --concurrency | writes sent | refused | job's write rate | requests a row | production refused | pace: lowest, end | target |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut series = Vec::new();
    for (i, (name, args, rate, concurrency, target)) in cases.iter().enumerate() {
        let sb = Sandbox::start(bin, rows, args)?;
        let m = manifest(work, rows)?;
        let report = work.join(format!("shared{i}.csv"));
        let sj = work.join(format!("shared{i}.json"));
        fresh(&report);
        let _ = std::fs::remove_file(&sj);
        run_quiet(
            sb.cmd(bin, work)
                .arg("apply")
                .arg(&m)
                .args([
                    "--yes",
                    "--concurrency",
                    concurrency,
                    "--rate",
                    rate,
                    "-q",
                    "--report",
                ])
                .arg(&report)
                .arg("--summary-json")
                .arg(&sj),
        )?;
        let s = summary(&sj)?;
        let st = sb.stats()?;
        let writes = st["writes"].as_u64().unwrap_or(0);
        let refused = st["writes_throttled"].as_u64().unwrap_or(0)
            + s["write_budget"]["refused"].as_u64().unwrap_or(0) * u64::from(i == 0);
        let production = st["production_writes"].as_u64().unwrap_or(0);
        let prod_refused = st["production_refused"].as_u64().unwrap_or(0);
        let b = &s["write_budget"];
        writeln!(
            md,
            "| {name} | {rate} | {concurrency} | {writes} | {refused} ({:.1}%) | {:.1}/s | {:.2} | {} | {:.0}/s, {:.0}/s | {target} |",
            refused as f64 * 100.0 / writes.max(1) as f64,
            s["write_rate"].as_f64().unwrap_or(0.0),
            st["requests"].as_f64().unwrap_or(0.0) / rows as f64,
            if production > 0 {
                format!(
                    "{prod_refused} of {production} ({:.1}%)",
                    prod_refused as f64 * 100.0 / production as f64
                )
            } else {
                "-".to_owned()
            },
            b["lowest_pace"].as_f64().unwrap_or(f64::NAN),
            b["pace"].as_f64().unwrap_or(f64::NAN),
        )?;
        if i == 1 || i == 2 {
            let per_second = |key: &str| -> Vec<u64> {
                st[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                    .unwrap_or_default()
            };
            series.push(Seconds {
                title: name.to_string(),
                accepted: per_second("accepted_per_second"),
                refused: per_second("throttled_per_second"),
                production: per_second("production_accepted_per_second"),
                production_refused: per_second("production_refused_per_second"),
            });
        }
    }
    let svg = o.out.with_file_name("budget.svg");
    draw_seconds(&svg, &series)?;
    writeln!(md)?;
    writeln!(
        md,
        "![writes a second, accepted and refused, the job's and production's, cases 2 and 3]\
         (budget.svg)\n"
    )?;
    Ok(())
}

/// One case's writes per second as the sandbox counted them.
struct Seconds {
    title: String,
    accepted: Vec<u64>,
    refused: Vec<u64>,
    production: Vec<u64>,
    production_refused: Vec<u64>,
}

/// Writes a second over time, one chart per case: the job's accepted and refused writes,
/// production's accepted and refused.
fn draw_seconds(path: &Path, cases: &[Seconds]) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 330 * cases.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((cases.len().max(1), 1));
    for (case, area) in cases.iter().zip(areas) {
        let len = case.accepted.len().max(case.production.len()).max(1);
        let top = [
            &case.accepted,
            &case.refused,
            &case.production,
            &case.production_refused,
        ]
        .iter()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
        let mut chart = ChartBuilder::on(&area)
            .caption(&case.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0u64..len as u64, 0u64..top + top / 10 + 1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the sandbox started")
            .y_desc("writes a second")
            .draw()?;
        let lines: [(&str, &Vec<u64>, RGBColor); 4] = [
            ("job, accepted", &case.accepted, BLUE),
            ("job, refused (429)", &case.refused, RED),
            ("production, accepted", &case.production, GREEN),
            ("production, refused", &case.production_refused, MAGENTA),
        ];
        for (label, values, colour) in lines {
            if values.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(x, y)| (x as u64, *y)),
                    colour.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The unthrottled ratio as a user meets it: `plan` of 20,000 rows at concurrency 64,
/// process start to exit, next to oha sending the same number of GETs.
fn end_to_end(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let n = if o.quick { 1_000 } else { 20_000 };
    let sb = Sandbox::start(bin, n, &["--write-limit", "0"])?;
    let m = manifest(work, n)?;
    let oha = oha();
    writeln!(md, "## Unthrottled, end to end\n")?;
    writeln!(
        md,
        "`sipgw-bulk plan M --concurrency 64 --read-rate 0` over {n} rows, timed from process \
         start to exit (manifest's first pass included), against `oha -c 64 -n {n}` on one \
         gateway's GET URL. Rows per second.\n"
    )?;
    writeln!(
        md,
        "| read mode | requests | sipgw-bulk rows/s | oha req/s | ratio |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let theirs = match &oha {
        Some(oha) => Some(oha_rate(oha, &sb, 64, n)?),
        None => None,
    };
    for mode in ["get", "auto"] {
        let (wall, _, s) = timed_plan(
            bin,
            &sb,
            work,
            &m,
            &unthrottled_at_64(mode),
            &format!("e2e-{mode}"),
        )?;
        let ours = n as f64 / wall;
        writeln!(
            md,
            "| {mode} | {} | {ours:.0} | {} | {} |",
            s["requests"],
            theirs.map_or("n/a".into(), |t| format!("{t:.0}")),
            theirs.map_or("n/a".into(), |t| format!("{:.2}", ours / t)),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// An unthrottled apply of every row, against what a competent user writes instead
/// (`examples/peer-python/apply.py`: aiohttp + aiolimiter + tenacity, GET then PATCH of the
/// merged body, 64 at once), each against a fresh sandbox: wall time, process start to exit.
fn python_peer(bin: &Path, work: &Path, o: &Options, md: &mut String) -> Result<()> {
    let n = if o.quick { 1_000 } else { 20_000 };
    let m = manifest(work, n)?;
    writeln!(
        md,
        "## Unthrottled apply against a Python client
"
    )?;
    writeln!(
        md,
        "`sipgw-bulk apply M --yes --concurrency 64 --rate 100000 --read-rate 0` (default \
         read mode) against `python3 examples/peer-python/apply.py M R --concurrency 64` over \
         {n} rows, every one changing, each against a fresh sandbox (`--write-limit 0`). \
         Requests as the sandbox counted them.\n"
    )?;
    writeln!(md, "| client | requests | wall | rows/s | ratio |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    let report = work.join("peer-ours.csv");
    fresh(&report);
    let sb = Sandbox::start(bin, n, &["--write-limit", "0"])?;
    let started = std::time::Instant::now();
    run_quiet(
        sb.cmd(bin, work)
            .arg("apply")
            .arg(&m)
            .args(["--yes", "--concurrency", "64", "--rate", "100000"])
            .args(["--read-rate", "0", "-q", "--report"])
            .arg(&report),
    )?;
    let ours = started.elapsed().as_secs_f64();
    let ours_requests = sb.stats()?["requests"].as_u64().unwrap_or(0);
    drop(sb);
    let python = Command::new("python3")
        .args(["-c", "import aiohttp, aiolimiter, tenacity"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let theirs = if python {
        let sb = Sandbox::start(bin, n, &["--write-limit", "0"])?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/peer-python/apply.py");
        let started = std::time::Instant::now();
        let out = Command::new("python3")
            .arg(script)
            .arg(&m)
            .arg(work.join("peer-python.csv"))
            .args(["--concurrency", "64"])
            .current_dir(work)
            .envs(sb.env.iter().cloned())
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "the Python client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let wall = started.elapsed().as_secs_f64();
        Some((wall, sb.stats()?["requests"].as_u64().unwrap_or(0)))
    } else {
        None
    };
    writeln!(
        md,
        "| sipgw-bulk | {ours_requests} | {ours:.2} s | {:.0} | {} |",
        n as f64 / ours,
        theirs.map_or("n/a".into(), |(t, _)| format!("{:.1}x", t / ours))
    )?;
    match theirs {
        Some((wall, requests)) => writeln!(
            md,
            "| Python (aiohttp) | {requests} | {wall:.2} s | {:.0} | 1.0x |",
            n as f64 / wall
        )?,
        None => writeln!(
            md,
            "| Python (aiohttp) | n/a (pip install aiohttp aiolimiter tenacity) | | | |"
        )?,
    }
    writeln!(md)?;
    Ok(())
}
