//! One integration binary (faster links): every test runs the real `sipgw-bulk` binary
//! against a real sandbox on a loopback port.

mod apply;
mod architecture;
mod chain;
mod console;
mod docs;
mod edges;
mod faults;
mod fields;
mod hostile;
mod kubernetes;
mod ledger;
mod manifest_errors;
mod monitoring;
mod operations;
mod operator;
mod peer;
mod plan_export;
mod projects;
mod projects_runs;
mod read_modes;
mod resilience;
mod reviewed;
mod sandbox;
mod schedules;
mod selection;
mod shared_budget;
mod special_inputs;
mod support;
