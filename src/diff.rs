//! Pure reconciliation logic: merge what a row asks for into what the server has, and name
//! the fields that differ. No I/O here, so the rules are pinned down by unit tests.

use std::fmt;

use crate::model::{Desired, GatewayFields};

/// One of the five writable fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Uri,
    Encryption,
    Ciphers,
    Codecs,
}

impl Field {
    /// All fields, in the order reports and bodies list them.
    pub const ALL: [Field; 5] = [
        Field::Name,
        Field::Uri,
        Field::Encryption,
        Field::Ciphers,
        Field::Codecs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Uri => "uri",
            Field::Encryption => "encryption",
            Field::Ciphers => "ciphers",
            Field::Codecs => "codecs",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of fields, small enough to copy; displays as `uri;codecs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldSet(u8);

impl FieldSet {
    pub fn insert(&mut self, f: Field) {
        self.0 |= f.bit();
    }
    pub fn contains(self, f: Field) -> bool {
        self.0 & f.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }
    /// The fields in either set.
    pub fn union(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 | other.0)
    }
    /// The fields in both sets.
    pub fn intersection(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 & other.0)
    }
    /// The fields of this set not in `other`.
    pub fn without(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 & !other.0)
    }
    /// Every field.
    pub fn all() -> FieldSet {
        Field::ALL
            .into_iter()
            .fold(FieldSet::default(), |mut all, f| {
                all.insert(f);
                all
            })
    }
    /// Parses the report's `a;b` form; unknown names are ignored.
    pub fn parse(s: &str) -> FieldSet {
        let mut set = FieldSet::default();
        for part in s.split(';') {
            if let Some(f) = Field::ALL.into_iter().find(|f| f.as_str() == part.trim()) {
                set.insert(f);
            }
        }
        set
    }
}

impl fmt::Display for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(field.as_str())?;
        }
        Ok(())
    }
}

/// The full body to send: every field the row sets, the server's value for the rest.
pub fn merge(current: &GatewayFields, desired: &Desired) -> GatewayFields {
    GatewayFields {
        name: desired.name.clone().unwrap_or_else(|| current.name.clone()),
        uri: desired.uri.clone().unwrap_or_else(|| current.uri.clone()),
        encryption: desired
            .encryption
            .clone()
            .or_else(|| current.encryption.clone()),
        ciphers: desired
            .ciphers
            .clone()
            .unwrap_or_else(|| current.ciphers.clone()),
        codecs: desired
            .codecs
            .clone()
            .unwrap_or_else(|| current.codecs.clone()),
    }
}

/// `fields` with only the fields in `keep`; the others empty (a manifest row's "leave it
/// as it is").
pub fn only(fields: &GatewayFields, keep: FieldSet) -> GatewayFields {
    let mut out = fields.clone();
    if !keep.contains(Field::Name) {
        out.name.clear();
    }
    if !keep.contains(Field::Uri) {
        out.uri.clear();
    }
    if !keep.contains(Field::Encryption) {
        out.encryption = None;
    }
    if !keep.contains(Field::Ciphers) {
        out.ciphers.clear();
    }
    if !keep.contains(Field::Codecs) {
        out.codecs.clear();
    }
    out
}

/// `base` with the fields in `set` taken from `from`: the undo value of a write that
/// changed those fields, where everything else is as `base` shows it.
pub fn with_fields_from(
    base: &GatewayFields,
    from: &GatewayFields,
    set: FieldSet,
) -> GatewayFields {
    let mut out = base.clone();
    if set.contains(Field::Name) {
        out.name = from.name.clone();
    }
    if set.contains(Field::Uri) {
        out.uri = from.uri.clone();
    }
    if set.contains(Field::Encryption) {
        out.encryption = from.encryption.clone();
    }
    if set.contains(Field::Ciphers) {
        out.ciphers = from.ciphers.clone();
    }
    if set.contains(Field::Codecs) {
        out.codecs = from.codecs.clone();
    }
    out
}

/// The fields whose values differ. Lists compare in order: codec order is preference.
pub fn differing(a: &GatewayFields, b: &GatewayFields) -> FieldSet {
    let mut set = FieldSet::default();
    if a.name != b.name {
        set.insert(Field::Name);
    }
    if a.uri != b.uri {
        set.insert(Field::Uri);
    }
    if a.encryption != b.encryption {
        set.insert(Field::Encryption);
    }
    if a.ciphers != b.ciphers {
        set.insert(Field::Ciphers);
    }
    if a.codecs != b.codecs {
        set.insert(Field::Codecs);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cipher, Codec, Encryption};

    fn current() -> GatewayFields {
        GatewayFields {
            name: "gw".into(),
            uri: "sip:old.example.com".into(),
            encryption: Some(Encryption::Optional),
            ciphers: vec![Cipher::AesCm128HmacSha1_80],
            codecs: vec![Codec::Pcmu, Codec::Pcma],
        }
    }

    #[test]
    fn only_keeps_the_fields_asked_for_and_empties_the_rest() {
        let all = current();
        let none = only(&all, FieldSet::default());
        assert_eq!(differing(&none, &all).len(), 5);
        assert!(none.name.is_empty() && none.encryption.is_none() && none.codecs.is_empty());
        let some = only(&all, FieldSet::parse("uri;codecs"));
        assert_eq!((&some.uri, &some.codecs), (&all.uri, &all.codecs));
        assert_eq!(
            differing(&some, &all).to_string(),
            "name;encryption;ciphers"
        );
    }

    #[test]
    fn empty_desire_changes_nothing() {
        let cur = current();
        let merged = merge(&cur, &Desired::default());
        assert_eq!(merged, cur);
        assert!(differing(&cur, &merged).is_empty());
    }

    #[test]
    fn merge_then_diff_names_exactly_the_changed_fields() {
        let cur = current();
        let desired = Desired {
            uri: Some("sip:new.example.com".into()),
            codecs: Some(vec![Codec::Pcma, Codec::Pcmu]), // reorder only
            encryption: Some(Encryption::Optional),       // same as now
            ..Desired::default()
        };
        let merged = merge(&cur, &desired);
        let changed = differing(&cur, &merged);
        assert_eq!(changed.to_string(), "uri;codecs");
        assert!(!changed.is_empty(), "a change is never taken for none");
        assert_eq!(changed.len(), 2);
        assert_eq!(merged.name, "gw");
        // Applying the diff gives the desired state, and diffing again gives nothing.
        assert!(differing(&merged, &merge(&merged, &desired)).is_empty());
    }

    #[test]
    fn unknown_server_values_survive_a_merge() {
        let mut cur = current();
        cur.codecs.push(Codec::Other("LYRA".into()));
        let merged = merge(
            &cur,
            &Desired {
                name: Some("x".into()),
                ..Desired::default()
            },
        );
        assert_eq!(merged.codecs, cur.codecs);
    }

    #[test]
    fn field_set_round_trips_through_text() {
        let mut set = FieldSet::default();
        set.insert(Field::Codecs);
        set.insert(Field::Name);
        assert_eq!(FieldSet::parse(&set.to_string()), set);
        assert_eq!(set.len(), 2);
    }
}
