//! Answers counted by kind of request and status code, for the run's metrics. The codes
//! are a fixed list (the ones this API sends, and a class for any other), so a server
//! that answers with every code there is cannot grow the set.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::latency::RequestKind;

/// The codes counted by name; any other is counted by its class.
const NAMED: [u16; 14] = [
    200, 201, 204, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504,
];
/// The classes after the named codes: another 2xx, 4xx, 5xx, any other code, no answer.
const CLASSES: [&str; 5] = ["2xx", "4xx", "5xx", "other", "none"];
const SLOTS: usize = NAMED.len() + CLASSES.len();

/// One counter per kind of request and code.
#[derive(Debug, Default)]
pub struct AnswerCounts {
    counts: [[AtomicU64; SLOTS]; 3],
}

impl AnswerCounts {
    /// Counts one attempt's answer: its status code, or `None` when none came back.
    pub fn record(&self, kind: RequestKind, status: Option<u16>) {
        self.counts[kind as usize][slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Every count above zero, as (kind, code, count).
    pub fn snapshot(&self) -> Vec<(RequestKind, String, u64)> {
        let mut out = Vec::new();
        for kind in RequestKind::ALL {
            for (i, count) in self.counts[kind as usize].iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((kind, label(i), n));
                }
            }
        }
        out
    }
}

/// Answers counted per project, in a run of several (the metrics' `project` label): one
/// set of counts a project id, so bounded by the projects file.
#[derive(Debug, Default)]
pub struct ProjectAnswers(
    std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Arc<AnswerCounts>>>,
);

/// One project's answers: (project id, (kind, code, count) above zero).
pub type ProjectSnapshot = (String, Vec<(RequestKind, String, u64)>);

impl ProjectAnswers {
    /// The counts of `project`, made on first use.
    pub fn of(&self, project: &str) -> std::sync::Arc<AnswerCounts> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::sync::Arc::clone(map.entry(project.to_owned()).or_default())
    }

    /// Every project's counts, by project id.
    pub fn snapshot(&self) -> Vec<ProjectSnapshot> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(p, a)| (p.clone(), a.snapshot())).collect()
    }
}

fn slot(status: Option<u16>) -> usize {
    let Some(code) = status else {
        return NAMED.len() + 4;
    };
    if let Some(i) = NAMED.iter().position(|c| *c == code) {
        return i;
    }
    NAMED.len()
        + match code {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        }
}

fn label(slot: usize) -> String {
    match NAMED.get(slot) {
        Some(code) => code.to_string(),
        None => CLASSES[slot - NAMED.len()].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_counted_by_name_or_class_and_the_set_stays_bounded() {
        let a = AnswerCounts::default();
        a.record(RequestKind::Get, Some(200));
        a.record(RequestKind::Get, Some(200));
        a.record(RequestKind::Patch, Some(429));
        a.record(RequestKind::Patch, None);
        for code in 100..1000 {
            a.record(RequestKind::List, Some(code));
        }
        let got = a.snapshot();
        let find = |k: RequestKind, c: &str| {
            got.iter()
                .find(|(kind, code, _)| *kind == k && code == c)
                .map(|(_, _, n)| *n)
        };
        assert_eq!(find(RequestKind::Get, "200"), Some(2));
        assert_eq!(find(RequestKind::Patch, "429"), Some(1));
        assert_eq!(find(RequestKind::Patch, "none"), Some(1));
        assert_eq!(
            find(RequestKind::Get, "404"),
            None,
            "zero counts are left out"
        );
        let list: Vec<_> = got
            .iter()
            .filter(|(k, _, _)| *k == RequestKind::List)
            .collect();
        assert_eq!(
            list.len(),
            SLOTS - 1,
            "every named code and class but `none`"
        );
        assert_eq!(find(RequestKind::List, "2xx"), Some(100 - 3));
        assert_eq!(find(RequestKind::List, "4xx"), Some(100 - 7));
        assert_eq!(find(RequestKind::List, "5xx"), Some(100 - 4));
        assert_eq!(find(RequestKind::List, "other"), Some(900 - 300));
    }
}
