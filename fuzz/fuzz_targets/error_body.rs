//! The error-body parser: whatever a server sends, the code and message are inert and
//! bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reqwest::StatusCode;
use sipgw_bulk::client::parse_error_body;

fuzz_target!(|data: &[u8]| {
    let (code, message) = parse_error_body(StatusCode::UNPROCESSABLE_ENTITY, data);
    for text in [&code, &message] {
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    assert!(code.chars().count() <= 64 + 20);
    assert!(message.chars().count() <= 500 + 20);
});
