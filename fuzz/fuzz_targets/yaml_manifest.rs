//! The YAML manifest reader: any bytes give rows or a whole-file error, never a panic; every
//! invalid row's id and message are inert (no control character reaches a terminal).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipgw_bulk::manifest::{Format, Manifest};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::read_slice(Format::Yaml, data, |row| {
        if let Err(bad) = row {
            assert!(!bad.id.chars().any(char::is_control), "{:?}", bad.id);
            assert!(!bad.message.chars().any(char::is_control), "{:?}", bad.message);
        }
        std::ops::ControlFlow::Continue(())
    });
});
