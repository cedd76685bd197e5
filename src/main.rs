//! `sipgw-bulk`: everything lives in the library; this only turns its result into an exit
//! code.

fn main() -> std::process::ExitCode {
    let code = sipgw_bulk::cli::main();
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
