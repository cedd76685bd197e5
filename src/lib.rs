//! `sipgw-bulk` reconciles SignalWire SIP gateways with a manifest.
//!
//! # Map
//!
//! ```text
//!  cli ──▶ run (lock, scan, review, ledger, journal) ──▶ engine ──┬──▶ manifest (stream, checks)
//!                                                                  ├──▶ client ──▶ limiter ──▶ budget
//!                                                                  ├──▶ diff (merge, changed fields)
//!                                                                  ├──▶ ledger ──▶ report (a line a row)
//!                                                                  └── observed by plan_view, progress,
//!                                                                      saved_plan, metrics
//!  export: client pages ──▶ manifest writer        sandbox: a simulated space on loopback
//! ```
//!
//! `ARCHITECTURE.md` (at the repository's root) has the code map: what each module owns,
//! what it must never import (a test holds the code to it), one apply from row to report
//! line, the invariants, and where to start for common changes.
//!
//! Data flows one way: the [`manifest`] reader streams checked rows into a bounded channel;
//! a fixed pool of [`engine`] workers takes each row, GETs the gateway through the
//! [`client`], lets [`diff`] decide what changes, PATCHes the full body (every field) when
//! something does, and hands one record per row to the single [`report`] writer.
//!
//! - [`model`]: the gateway's fields, declared once, and the open enums (unknown server
//!   values kept).
//! - [`manifest`]: CSV and YAML readers, row checks with line numbers and suggestions.
//! - [`config`]: flag > environment > file > default; credentials never from argv.
//! - [`client`]: GET/PATCH/list with Basic auth; [`client::ReadClient`] cannot write.
//! - [`limiter`]: the process-wide pace: the write and read lanes ([`limiter::Lane`]), `--rate` the
//!   hard ceiling, the space's write budget below it.
//! - [`budget`]: the space's write budget: its announced count kept above `--reserve`,
//!   else an estimate of what it accepts, cut only when the share of 429s rises.
//! - [`failure`]: what a failed request means: its kind (a 429 is a kind of its own), and
//!   the one table that decides, for each kind, retry, wait, stop, row status, exit code.
//! - [`retry`]: how long to wait before another try (pure functions).
//! - [`breaker`]: one circuit breaker for the space: an unreachable space pauses the job,
//!   then stops it, instead of every row retrying on its own.
//! - [`inert`]: output that cannot act: control characters escaped for terminals and logs,
//!   spreadsheet formulas neutralised in CSV cells (and read back exactly).
//! - [`diff`]: merge and field-level diff (pure functions).
//! - [`engine`]: the pipeline; plan and apply are one loop.
//! - [`run`]: one plan or apply as a program calls it: lock, ledger, review, saved plans,
//!   resume, journal; the CLI maps flags to it and its outcome to an exit code.
//! - [`report`]: the per-row record, CSV or JSONL, and reading it back.
//! - [`status`]: what became of a row (`updated`, `would_update`, `conflict`, ...): the
//!   report's vocabulary, at the bottom so everything above can speak it.
//! - [`ledger`]: the report's lock, its run file (what `--resume` must match), the journal, and the
//!   run lock that keeps two runs off the same gateways.
//! - [`metrics`]: the run's metrics in Prometheus' text format: a file for node_exporter,
//!   a Pushgateway, `/metrics` while the run lasts.
//! - [`latency`]: request latencies per kind, in a fixed log-scale histogram (p50/p95/p99).
//! - [`human`]: counts, rates and durations as a person reads them.
//! - [`plan_view`]: the plan as people (text) and tools (JSON lines) read it.
//! - [`progress`]: the progress bar or periodic stats lines, and the log writer around it.
//! - [`saved_plan`]: `plan --out` and `apply --plan`: apply exactly what was reviewed.
//! - [`settings`]: every global setting declared once (flag, environment, config key,
//!   default, help, the commands that take it); `config` and `cli` expand it.
//! - [`shard`]: `--shard K/N`, a stable split of the rows by id.
//! - [`selection`]: `--only`/`--skip`: the rows a run is given, by id.
//! - [`export`]: paging through every gateway, links checked.
//! - [`snapshot`]: `--read-mode list`: the space read in pages, kept for the rows the run
//!   needs (a temporary file, 16 bytes of memory a row); rows it lacks are read by GET.
//! - [`secret`]: credentials that print as `(redacted)`, and the [`secret::Redactor`] that
//!   cuts them out of anything the server sends back.
//! - [`output`]: files written whole or not at all, and never over an input.
//! - [`bounded`]: config, token and manifest inputs read against a stated cap.
//! - [`sandbox`]: the simulated space (axum).
//! - [`cli`]: the clap parser, each command's flags mapped to a library call, and the exit
//!   codes; `main.rs` only calls [`cli::main`].

pub mod bounded;
pub mod breaker;
pub mod budget;
pub mod cli;
pub mod client;
pub mod config;
pub mod diff;
pub mod engine;
pub mod export;
pub mod failure;
pub mod human;
pub mod inert;
pub mod latency;
pub mod ledger;
pub mod limiter;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plan_view;
pub mod progress;
pub mod projects;
pub mod report;
pub mod retry;
pub mod run;
pub mod sandbox;
pub mod saved_plan;
pub mod secret;
pub mod selection;
pub mod settings;
pub mod shard;
pub mod snapshot;
pub mod status;
