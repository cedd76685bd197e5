//! The report reader behind `--resume` and `rollback`, both formats: any bytes give records
//! or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipgw_bulk::report::{ReportFormat, records_from};

fuzz_target!(|data: &[u8]| {
    let format = if data.first() == Some(&b'{') {
        ReportFormat::Jsonl
    } else {
        ReportFormat::Csv
    };
    let _ = records_from(format, data, |_| Ok(()));
});
