//! Row checks shared by the CSV and YAML readers: raw cells in, a typed row or an actionable
//! message out. Also applies `defaults:` and catches a second row for the same id.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use super::{InvalidRow, Row};
use crate::diff::Field;
use crate::model::{Desired, Encryption, FieldValue, GatewayFields, OpenEnum, UnknownValue};

/// A list as written: one `;`-separated cell (CSV, or a YAML string) or a YAML sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum RawList {
    Joined(String),
    Items(Vec<String>),
}

/// A field's type as a manifest carries it: read from a cell (CSV), checked into a wish.
pub trait UserValue: FieldValue {
    /// The value as written, before any check.
    type Raw: Clone + fmt::Debug + PartialEq;
    /// A CSV cell (or a YAML scalar) as this raw value.
    fn raw_from_text(text: String) -> Self::Raw;
    /// The value as a manifest would carry it.
    fn to_raw(&self) -> Self::Raw;
    /// The wish a raw value makes, every problem pushed (for a list: each entry's).
    fn check(field: &str, raw: &Self::Raw, problems: &mut Vec<String>) -> Self::Wanted;
}

impl UserValue for String {
    type Raw = String;
    fn raw_from_text(text: String) -> String {
        text
    }
    fn to_raw(&self) -> String {
        self.clone()
    }
    fn check(_field: &str, raw: &String, _problems: &mut Vec<String>) -> Option<String> {
        Some(raw.clone())
    }
}

impl<E: OpenEnum> UserValue for Option<E> {
    type Raw = String;
    fn raw_from_text(text: String) -> String {
        text
    }
    fn to_raw(&self) -> String {
        self.as_ref().map_or("", E::as_str).to_owned()
    }
    fn check(_field: &str, raw: &String, problems: &mut Vec<String>) -> Option<E> {
        E::parse_strict(raw)
            .map_err(|err| problems.push(err.to_string()))
            .ok()
    }
}

impl<E: OpenEnum> UserValue for Vec<E> {
    type Raw = RawList;
    fn raw_from_text(text: String) -> RawList {
        RawList::Joined(text)
    }
    fn to_raw(&self) -> RawList {
        RawList::Items(self.iter().map(|e| e.as_str().to_owned()).collect())
    }
    fn check(field: &str, raw: &RawList, problems: &mut Vec<String>) -> Option<Vec<E>> {
        check_list(field, raw, E::parse_strict, problems)
    }
}

macro_rules! raw_row {
    ($($variant:ident $field:ident: $ty:ty, check $check:path;)+) => {
        /// The columns (CSV) or keys (YAML) a row may have.
        pub const KNOWN_COLUMNS: &[&str] = &["id", $(stringify!($field),)+];
        /// The columns (CSV) or keys (YAML) a manifest read may have: the known ones and
        /// `project` (several projects of one space).
        pub const READ_COLUMNS: &[&str] = &["id", $(stringify!($field),)+ "project"];

        /// A row as read, before any check. `None` is an empty cell or a missing column/key.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct RawRow {
            pub line: u64,
            pub id: Option<String>,
            $(pub $field: Option<<$ty as UserValue>::Raw>,)+
            /// The `project` cell: a project's id or name (several projects of one space).
            pub project: Option<String>,
            /// Problems found while reading the row's shape (unknown key, a map where a
            /// string goes).
            pub shape_errors: Vec<String>,
        }

        impl RawRow {
            /// A row from one text a field (a CSV record's cells).
            pub fn from_texts(
                line: u64,
                id: Option<String>,
                mut text: impl FnMut(Field) -> Option<String>,
            ) -> RawRow {
                RawRow {
                    line,
                    id,
                    $($field: text(Field::$variant).map(<$ty as UserValue>::raw_from_text),)+
                    project: None,
                    shape_errors: Vec::new(),
                }
            }

            /// The values a change would write that the gateway does not already hold, as
            /// a manifest row would carry them.
            pub fn changes(before: &GatewayFields, after: &GatewayFields) -> RawRow {
                RawRow {
                    $($field: (after.$field != before.$field)
                        .then(|| UserValue::to_raw(&after.$field)),)+
                    ..RawRow::default()
                }
            }
        }

        /// Each field's own check, then its parse; problems in field order.
        fn check_fields(raw: &RawRow, problems: &mut Vec<String>) -> Desired {
            Desired {
                $($field: match &raw.$field {
                    Some(value) => {
                        $check(stringify!($field), value, problems);
                        <$ty as UserValue>::check(stringify!($field), value, problems)
                    }
                    None => Default::default(),
                },)+
            }
        }
    };
}

crate::model::gateway_fields!(raw_row);

/// How a read looks for a second row with the same id.
#[derive(Debug, Clone, Default)]
pub enum DuplicateCheck {
    /// Remember every id (memory grows with the manifest: fine for small ones).
    #[default]
    All,
    /// Remember only ids whose [`id_hash`] is in the set: the hashes a first pass saw more
    /// than once. Exact, in file order, and memory stays flat however long the manifest is.
    Only(Arc<HashSet<u64>>),
    /// No duplicate check (the first pass itself).
    Off,
}

/// A 64-bit hash of an id, for the first pass of [`DuplicateCheck::Only`].
pub fn id_hash(id: &Uuid) -> u64 {
    let v = id.as_u128();
    ((v as u64) ^ ((v >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Checks rows one at a time; remembers the ids it has seen so a repeat names the first.
pub struct RowChecker {
    defaults: Desired,
    /// The YAML `defaults:` block's `project`, for rows that name none.
    default_project: Option<String>,
    duplicates: DuplicateCheck,
    /// Id -> line of the row that first used it (only the ids `duplicates` asks to track).
    seen: HashMap<u128, u64>,
    default_encryption_warned: bool,
}

impl RowChecker {
    pub fn new(defaults: Desired) -> RowChecker {
        RowChecker {
            defaults,
            default_project: None,
            duplicates: DuplicateCheck::All,
            seen: HashMap::new(),
            default_encryption_warned: false,
        }
    }

    pub fn with_duplicates(mut self, duplicates: DuplicateCheck) -> RowChecker {
        self.duplicates = duplicates;
        self
    }

    /// Sets the `defaults:` every later row is completed with.
    pub fn set_defaults(&mut self, defaults: Desired) {
        self.defaults = defaults;
    }

    /// Sets the project a later row that names none belongs to (`defaults: project:`).
    pub fn set_default_project(&mut self, project: Option<String>) {
        self.default_project = project;
    }

    fn tracks(&self, id: &Uuid) -> bool {
        match &self.duplicates {
            DuplicateCheck::All => true,
            DuplicateCheck::Only(hashes) => hashes.contains(&id_hash(id)),
            DuplicateCheck::Off => false,
        }
    }

    /// Checks one row. Every problem in the row is reported, joined by `; `.
    pub fn check(&mut self, raw: RawRow) -> Result<Row, InvalidRow> {
        let line = raw.line;
        let raw_id = raw.id.clone().unwrap_or_default();
        let mut problems = raw.shape_errors.clone();
        let fields = check_fields(&raw, &mut problems);
        let project = raw.project.clone().or_else(|| self.default_project.clone());
        if let Some(p) = &project
            && let Err(message) = check_project(p)
        {
            problems.push(message);
        }
        let id = match raw.id.as_deref() {
            None => {
                problems.insert(0, "`id` is empty: every row needs the gateway's id".into());
                None
            }
            Some(text) => match parse_uuid(text) {
                Ok(id) => Some(id),
                Err(msg) => {
                    problems.insert(0, msg);
                    None
                }
            },
        };
        if let Some(id) = id.filter(|id| self.tracks(id)) {
            // Only rows with a usable id claim it; the first claim wins.
            if let Some(first) = self.seen.get(&id.as_u128()) {
                problems.push(format!(
                    "duplicate id `{id}`: line {first} already has it (one row per gateway)"
                ));
            } else if problems.is_empty() {
                self.seen.insert(id.as_u128(), line);
            }
        }
        if fields.encryption == Some(Encryption::Default) && !self.default_encryption_warned {
            self.default_encryption_warned = true;
            tracing::warn!(
                line,
                "encryption `default` is in the API spec but live spaces refuse it; \
                 `required`, `optional` or `forbidden` are safe"
            );
        }
        match (id, problems.is_empty()) {
            (Some(id), true) => Ok(Row {
                seq: 0,
                line,
                id,
                desired: fields.with_defaults(&self.defaults),
                expected: None,
                project,
            }),
            // Cells echoed back are inert: a manifest cannot drive the terminal it is
            // validated on, nor fill a report with megabytes.
            _ => Err(InvalidRow {
                seq: 0,
                line,
                id: crate::inert::text(&raw_id, 100),
                message: crate::inert::text(&problems.join("; "), 2000),
            }),
        }
    }
}

/// A `project` cell's form: a project id or a name from the projects file (letters,
/// digits, `-`, `_`, `.`; 1 to 80). Whether the run has that project is the run's to say.
pub fn check_project(text: &str) -> Result<(), String> {
    let ok = (1..=80).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "project `{}` is not a project id or name (letters, digits, `-`, `_`, `.`; 1 to 80)",
            crate::inert::text(text, 100)
        ))
    }
}

/// Checks the `defaults:` block of a YAML manifest: the same rules as a row, without `id`.
pub fn check_defaults(raw: &RawRow) -> Result<Desired, String> {
    let mut problems = raw.shape_errors.clone();
    if raw.id.is_some() {
        problems.push("`defaults` cannot set `id`".into());
    }
    let desired = check_fields(raw, &mut problems);
    if let Some(p) = &raw.project
        && let Err(message) = check_project(p)
    {
        problems.push(message);
    }
    if problems.is_empty() {
        Ok(desired)
    } else {
        Err(problems.join("; "))
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, String> {
    // Only the hyphenated form: the one the API prints and URLs carry.
    if text.len() == 36
        && let Ok(id) = Uuid::try_parse(text)
    {
        return Ok(id);
    }
    Err(format!(
        "id `{text}` is not a UUID (expected the gateway's resource id, like \
         0823a606-0aff-4c90-9eba-f88ba118fe05)"
    ))
}

fn check_list<T: PartialEq>(
    field: &str,
    raw: &RawList,
    parse: fn(&str) -> Result<T, UnknownValue>,
    problems: &mut Vec<String>,
) -> Option<Vec<T>> {
    let items: Vec<&str> = match raw {
        RawList::Joined(s) => s.split(';').map(str::trim).collect(),
        RawList::Items(v) => v.iter().map(|s| s.trim()).collect(),
    };
    if items.is_empty() || items.iter().all(|s| s.is_empty()) {
        problems.push(format!(
            "{field}: the list is empty (at least one value; leave the cell empty to keep the current list)"
        ));
        return None;
    }
    let before = problems.len();
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() {
            problems.push(format!("{field}: value {} is empty", i + 1));
            continue;
        }
        match parse(item) {
            Ok(v) if out.contains(&v) => {
                problems.push(format!("{field}: `{item}` is listed twice"));
            }
            Ok(v) => out.push(v),
            Err(err) if item.contains(',') => problems.push(format!(
                "{field}: {err} (list cells separate values with `;`, like `OPUS;PCMU`)"
            )),
            Err(err) => problems.push(format!("{field}: {err}")),
        }
    }
    (problems.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Codec;

    /// A `uri` cell's address check alone.
    fn check_uri(uri: &str) -> Result<(), String> {
        crate::model::sip_address(Field::Uri.as_str(), uri)
    }

    const ID: &str = "0823a606-0aff-4c90-9eba-f88ba118fe05";

    fn raw(line: u64) -> RawRow {
        RawRow {
            line,
            id: Some(ID.into()),
            ..RawRow::default()
        }
    }

    #[test]
    fn only_a_list_item_with_a_comma_gets_the_separator_hint() {
        let hint = "list cells separate values with `;`";
        for (cell, hinted) in [("OPUS,PCMU", true), ("OPUZ", false), ("OPUS;PCMX", false)] {
            let mut problems = Vec::new();
            let raw = RawList::Joined(cell.into());
            assert_eq!(
                check_list("codecs", &raw, Codec::parse_strict, &mut problems),
                None
            );
            assert_eq!(problems.len(), 1, "{cell}: {problems:?}");
            assert_eq!(problems[0].contains(hint), hinted, "{cell}: {problems:?}");
        }
    }

    #[test]
    fn a_good_row_gets_defaults_for_what_it_leaves_open() {
        let defaults = Desired {
            codecs: Some(vec![Codec::Opus]),
            uri: Some("sip:default.example.com".into()),
            ..Desired::default()
        };
        let mut checker = RowChecker::new(defaults);
        let row = checker
            .check(RawRow {
                uri: Some("sip:pbx.example.com".into()),
                ..raw(2)
            })
            .unwrap();
        assert_eq!(row.desired.uri.as_deref(), Some("sip:pbx.example.com"));
        assert_eq!(row.desired.codecs, Some(vec![Codec::Opus]));
        assert_eq!(row.desired.name, None);
    }

    #[test]
    fn every_problem_in_a_row_is_reported() {
        let mut checker = RowChecker::new(Desired::default());
        let err = checker
            .check(RawRow {
                id: Some("not-a-uuid".into()),
                codecs: Some(RawList::Joined("opus;PCMU;PCMU".into())),
                ciphers: Some(RawList::Joined(";".into())),
                ..raw(5)
            })
            .unwrap_err();
        assert_eq!(err.line, 5);
        assert!(
            err.message.contains("id `not-a-uuid` is not a UUID"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("did you mean `OPUS`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("`PCMU` is listed twice"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("ciphers: the list is empty"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_second_row_for_an_id_names_the_first() {
        let mut checker = RowChecker::new(Desired::default());
        assert!(checker.check(raw(2)).is_ok());
        let err = checker.check(raw(9)).unwrap_err();
        assert!(
            err.message.contains("line 2 already has it"),
            "{}",
            err.message
        );
    }

    #[test]
    fn tracking_only_candidate_hashes_finds_the_same_duplicates() {
        let id = Uuid::try_parse(ID).unwrap();
        let only = DuplicateCheck::Only(Arc::new([id_hash(&id)].into_iter().collect()));
        let mut checker = RowChecker::new(Desired::default()).with_duplicates(only);
        assert!(checker.check(raw(2)).is_ok());
        assert!(
            checker
                .check(raw(3))
                .unwrap_err()
                .message
                .contains("line 2")
        );
        let mut off = RowChecker::new(Desired::default()).with_duplicates(DuplicateCheck::Off);
        assert!(off.check(raw(2)).is_ok() && off.check(raw(3)).is_ok());
    }

    #[test]
    fn uri_must_look_like_sip() {
        assert!(check_uri("sip:pbx.example.com").is_ok());
        assert!(check_uri("user3@domain.com").is_ok());
        assert!(check_uri("sip:").is_err());
        assert!(check_uri("pbx example").is_err());
        assert!(check_uri("justaword").is_err());
    }

    #[test]
    fn id_hashes_spread_so_duplicates_are_tracked_rarely() {
        let ids = crate::sandbox::generated_ids(10_000, 77);
        let mut hashes: Vec<u64> = ids.iter().map(id_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), 10_000, "distinct ids, distinct hashes");
    }

    #[test]
    fn both_halves_of_an_id_reach_its_hash() {
        for low in [0u128, u64::MAX as u128] {
            let mut hashes: Vec<u64> = (1..=1000u128)
                .map(|k| id_hash(&Uuid::from_u128((k << 64) | low)))
                .collect();
            hashes.sort_unstable();
            hashes.dedup();
            assert_eq!(hashes.len(), 1000, "ids differing only in the upper half");
        }
    }

    #[test]
    fn names_and_uris_are_accepted_up_to_the_limit_and_no_further() {
        let row = |name: String| RawRow {
            line: 2,
            id: Some("0823a606-0aff-4c90-9eba-f88ba118fe05".into()),
            name: Some(name),
            ..RawRow::default()
        };
        let limit = crate::model::MAX_TEXT_FIELD;
        assert!(
            RowChecker::new(Desired::default())
                .check(row("n".repeat(limit)))
                .is_ok()
        );
        let err = RowChecker::new(Desired::default())
            .check(row("n".repeat(limit + 1)))
            .unwrap_err();
        assert!(err.message.contains("at most 1024"), "{}", err.message);
    }

    #[test]
    fn a_uri_needs_a_sip_scheme_a_user_or_a_dotted_host_and_no_space() {
        for ok in [
            "sip:pbx",
            "sips:pbx.example.com",
            "alice@pbx",
            "pbx.example.com",
        ] {
            assert!(check_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "pbx",
            "sip:",
            "sip:pbx example.com",
            "sip:pbx\texample",
            "a@",
        ] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_encryption_warning_comes_once() {
        use std::sync::{Arc, Mutex};
        let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&seen);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || CaptureWriter(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut checker = RowChecker::new(Desired::default());
            for line in 2..5 {
                let row = RawRow {
                    line,
                    id: Some(crate::sandbox::generated_ids(3, 8)[line as usize - 2].to_string()),
                    encryption: Some("default".into()),
                    ..RawRow::default()
                };
                assert!(checker.check(row).is_ok());
            }
        });
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("live spaces refuse it").count(), 1, "{text}");
    }

    struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for CaptureWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
