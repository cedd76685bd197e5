//! YAML manifests: a list of rows, or a mapping with `defaults:` (first) and `gateways:`.
//!
//! Rows are pushed to the sink from inside serde's sequence visitor, one at a time, so a
//! manifest of any length is read in constant memory. Scalars are read as strings (typed,
//! so `NO` stays `NO` and `05060` stays `05060`).

use std::fmt;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::check::{
    DuplicateCheck, READ_COLUMNS, RawList, RawRow, RowChecker, UserValue, check_defaults,
};
use super::{CheckedRow, ManifestError};
use crate::diff::Field;
use crate::model::Desired;

/// Why the reader stopped before the end, carried out of serde's error channel.
enum Stop {
    /// The sink asked to stop: not an error.
    Sink,
    /// The `defaults:` block is invalid.
    Defaults { line: u64, message: String },
}

struct State<'s> {
    sink: &'s mut dyn FnMut(CheckedRow) -> ControlFlow<()>,
    checker: RowChecker,
    stop: Option<Stop>,
}

const STOP_MARKER: &str = "sipgw-bulk: reading stopped";

pub(super) fn read(
    path: &Path,
    input: impl Read,
    duplicates: DuplicateCheck,
    sink: &mut dyn FnMut(CheckedRow) -> ControlFlow<()>,
) -> Result<(), ManifestError> {
    let mut state = State {
        sink,
        checker: RowChecker::new(Desired::default()).with_duplicates(duplicates),
        stop: None,
    };
    let mut options = serde_saphyr::Options::default();
    // The default budget caps a document at 1e6 events; a manifest is legitimately larger.
    // Alias limits stay on, so an alias bomb is still refused.
    options.budget = None;
    let result = serde_saphyr::with_deserializer_from_reader_with_options(input, options, |de| {
        TopSeed(&mut state).deserialize(de)
    });
    match (result, state.stop) {
        (_, Some(Stop::Sink)) | (Ok(()), None) => Ok(()),
        (_, Some(Stop::Defaults { line, message })) => Err(ManifestError::Defaults {
            path: path.to_owned(),
            line,
            message,
        }),
        (Err(err), None) => Err(ManifestError::Yaml {
            path: path.to_owned(),
            message: err.to_string(),
        }),
    }
}

/// The whole document.
struct TopSeed<'a, 's>(&'a mut State<'s>);

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of gateways, or a mapping with `defaults` and `gateways`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        RowsSeed(self.0).visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        let mut saw_gateways = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "defaults" if saw_gateways => {
                    return Err(de::Error::custom(
                        "`defaults` must come before `gateways` (rows are applied as they are read)",
                    ));
                }
                "defaults" => {
                    let raw: Spanned<YamlRow> = map.next_value()?;
                    let line = raw.referenced.line();
                    let raw = raw.value.into_raw(line);
                    match check_defaults(&raw) {
                        Ok(defaults) => {
                            state.checker.set_defaults(defaults);
                            state.checker.set_default_project(raw.project);
                        }
                        Err(message) => {
                            state.stop = Some(Stop::Defaults { line, message });
                            return Err(de::Error::custom(STOP_MARKER));
                        }
                    }
                }
                "gateways" => {
                    saw_gateways = true;
                    map.next_value_seed(RowsSeed(state))?;
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown top-level key `{}` (expected `defaults` and `gateways`)",
                        crate::inert::text(other, 100)
                    )));
                }
            }
        }
        if saw_gateways {
            Ok(())
        } else {
            Err(de::Error::custom("no `gateways` list"))
        }
    }
}

/// The list of rows: each is checked and handed to the sink as soon as it is parsed.
struct RowsSeed<'a, 's>(&'a mut State<'s>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of gateways")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(row) = seq.next_element::<Spanned<YamlRow>>()? {
            let line = row.referenced.line();
            let checked = state.checker.check(row.value.into_raw(line));
            if (state.sink)(checked).is_break() {
                state.stop = Some(Stop::Sink);
                return Err(de::Error::custom(STOP_MARKER));
            }
        }
        Ok(())
    }
}

/// One row's mapping, loosely typed so that a bad key costs the row, not the manifest.
#[derive(Default)]
struct YamlRow {
    raw: RawRow,
}

impl YamlRow {
    fn into_raw(mut self, line: u64) -> RawRow {
        self.raw.line = line;
        self.raw
    }
}

impl<'de> de::Deserialize<'de> for YamlRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(YamlRowVisitor)
    }
}

struct YamlRowVisitor;

impl<'de> Visitor<'de> for YamlRowVisitor {
    type Value = YamlRow;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a gateway: a mapping with `id` and the fields to set")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<YamlRow, A::Error> {
        let mut raw = RawRow::default();
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), Field::from_name(&key)) {
                ("id", _) => {
                    raw.id = non_empty(map.next_value::<Option<Scalar>>()?)
                        .map(|id| id.trim().to_owned())
                }
                (_, Some(field)) => read_field(&mut raw, field, &mut map)?,
                ("project", None) => {
                    raw.project =
                        non_empty(map.next_value::<Option<Scalar>>()?).map(|p| p.trim().to_owned())
                }
                (other, None) => {
                    map.next_value::<IgnoredAny>()?;
                    let hint = crate::model::suggest(other, READ_COLUMNS)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    raw.shape_errors.push(format!(
                        "unknown key `{}`{hint}; known keys: {}",
                        crate::inert::text(other, 100),
                        READ_COLUMNS.join(", ")
                    ));
                }
            }
        }
        Ok(YamlRow { raw })
    }
}

/// A raw field value read from a YAML value.
trait YamlCell: Sized {
    fn next_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error>;
}

/// A scalar field: its text.
impl YamlCell for String {
    fn next_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(non_empty(map.next_value::<Option<Scalar>>()?))
    }
}

/// A list field: a sequence, or one `;`-separated string.
impl YamlCell for RawList {
    fn next_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(map.next_value::<Option<ListCell>>()?.and_then(|l| l.0))
    }
}

macro_rules! yaml_keys {
    ($($variant:ident $field:ident: $ty:ty, check $check:path;)+) => {
        /// Reads the value of a field's key into the row.
        fn read_field<'de, A: MapAccess<'de>>(
            raw: &mut RawRow,
            field: Field,
            map: &mut A,
        ) -> Result<(), A::Error> {
            match field {
                $(Field::$variant => {
                    raw.$field =
                        <<$ty as UserValue>::Raw as YamlCell>::next_value(map)?;
                })+
            }
            Ok(())
        }
    };
}

crate::model::gateway_fields!(yaml_keys);

/// A value as written: YAML itself drops the spaces around a plain scalar, and a quoted
/// one keeps them (a name restored by `rollback` must come back exactly).
fn non_empty(s: Option<Scalar>) -> Option<String> {
    s.map(|s| s.0).filter(|s| !s.trim().is_empty())
}

/// A scalar read as its text, whatever type YAML would give it.
struct Scalar(String);

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a single value (text)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}

/// A list field: a YAML sequence, or one `;`-separated string as in CSV.
struct ListCell(Option<RawList>);

impl<'de> de::Deserialize<'de> for ListCell {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = ListCell;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of values, like [OPUS, PCMU]")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ListCell, E> {
        let v = v.trim();
        Ok(ListCell(
            (!v.is_empty()).then(|| RawList::Joined(v.to_owned())),
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<ListCell, E> {
        Ok(ListCell(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListCell, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            items.push(item.0);
        }
        Ok(ListCell(Some(RawList::Items(items))))
    }
}
