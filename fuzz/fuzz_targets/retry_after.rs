//! `Retry-After`: any header value parses or is refused without a panic, and the wait the
//! policy derives from it is within [min_delay, cap] and never carries a request past its
//! total budget.
#![no_main]
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use sipgw_bulk::retry::{RetryPolicy, parse_retry_after};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let parsed = parse_retry_after(text, now);
    let policy = RetryPolicy::default();
    let spent = Duration::from_millis(u64::from(data.len() as u16) * 7);
    if let Some(wait) = policy.next_delay(parsed, Some(Duration::from_millis(300)), spent) {
        assert!(wait >= policy.min_delay && wait <= policy.retry_after_cap, "{wait:?}");
        assert!(spent + wait <= policy.max_total);
    }
});
