//! `sipgw-bulk`: everything lives in the library; this only turns its result into an exit
//! code.

fn main() -> std::process::ExitCode {
    let code = sipgw_bulk::cli::main();
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

// glibc's malloc showed as 30% of the client's user time in profiles (many small
// allocations per row across threads); mimalloc halves that. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
