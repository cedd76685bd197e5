//! Numbers as a person reads them: counts with thousands separators (`12,345`), rates with
//! at most one decimal (`4,436.4/s`), durations in the largest sensible unit (`350 ms`,
//! `12.4s`, `1m 05s`, `2h 03m`). Used by the summary, the progress bar and stats lines.

use std::time::Duration;

/// `12345` -> `12,345`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `4436.4228` -> `4,436.4`; whole numbers keep one decimal so columns line up.
pub fn decimal(x: f64) -> String {
    // `as` saturates: a negative rate or NaN shows as 0.0; only infinity needs saying.
    let tenths = if x.is_finite() {
        (x * 10.0).round() as u64
    } else {
        0
    };
    format!("{}.{}", count(tenths / 10), tenths % 10)
}

/// A rate per second: `4,436.4/s`.
pub fn rate(per_second: f64) -> String {
    format!("{}/s", decimal(per_second))
}

/// `350 ms`, `12.4s`, `1m 05s`, `2h 03m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        let us = d.as_micros();
        if us < 10_000 {
            return format!("{}.{} ms", us / 1000, (us % 1000) / 100);
        }
        return format!("{ms} ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        return format!("{}.{}s", secs, (ms % 1000) / 100);
    }
    if secs < 3600 {
        return format!("{}m {:02}s", secs / 60, secs % 60);
    }
    format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_durations_read_like_a_person_writes_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(4436.4228), "4,436.4/s");
        assert_eq!(rate(80.0), "80.0/s");
        assert_eq!(rate(0.04), "0.0/s");
        assert_eq!(rate(f64::NAN), "0.0/s");
        assert_eq!(rate(f64::INFINITY), "0.0/s");
        assert_eq!(rate(-3.0), "0.0/s");
        assert_eq!(decimal(999.96), "1,000.0");
        let ms = Duration::from_millis;
        assert_eq!(duration(Duration::from_micros(3140)), "3.1 ms");
        assert_eq!(duration(ms(350)), "350 ms");
        assert_eq!(duration(ms(10)), "10 ms");
        assert_eq!(duration(Duration::from_micros(9_999)), "9.9 ms");
        assert_eq!(duration(ms(999)), "999 ms");
        assert_eq!(duration(ms(1000)), "1.0s");
        assert_eq!(duration(ms(59_999)), "59.9s");
        assert_eq!(duration(ms(60_000)), "1m 00s");
        assert_eq!(duration(ms(3_600_000)), "1h 00m");
        assert_eq!(duration(ms(12_440)), "12.4s");
        assert_eq!(duration(ms(65_000)), "1m 05s");
        assert_eq!(duration(ms(7_380_000)), "2h 03m");
    }
}
