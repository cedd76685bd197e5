//! Pure reconciliation logic: merge what a row asks for into what the server has, and name
//! the fields that differ. No I/O here, so the rules are pinned down by unit tests.

use std::fmt;

use crate::model::{Desired, FieldValue, GatewayFields, Wire};

macro_rules! field_set {
    ($($variant:ident $field:ident: $ty:ty, check $check:path;)+) => {
        /// One of the writable fields (declared in [`crate::model`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Field {
            $($variant,)+
        }

        impl Field {
            /// All fields, in the order reports and bodies list them.
            pub const ALL: [Field; crate::model::FIELDS] = [$(Field::$variant,)+];

            /// The field's name: its wire key, CSV column and YAML key.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Field::$variant => stringify!($field),)+
                }
            }

            /// Its value in `fields`, as wire texts.
            pub fn wire(self, fields: &GatewayFields) -> Wire<'_> {
                match self {
                    $(Field::$variant => FieldValue::wire(&fields.$field),)+
                }
            }
        }

        /// The full body to send: every field the row sets, the server's value for the rest.
        pub fn merge(current: &GatewayFields, desired: &Desired) -> GatewayFields {
            GatewayFields {
                $($field: <$ty as FieldValue>::from_wanted(&desired.$field)
                    .unwrap_or_else(|| current.$field.clone()),)+
            }
        }

        /// `fields` with only the fields in `keep`; the others empty (a manifest row's
        /// "leave it as it is").
        pub fn only(fields: &GatewayFields, keep: FieldSet) -> GatewayFields {
            let mut out = fields.clone();
            $(if !keep.contains(Field::$variant) {
                out.$field = Default::default();
            })+
            out
        }

        /// `base` with the fields in `set` taken from `from`: the undo value of a write
        /// that changed those fields, where everything else is as `base` shows it.
        pub fn with_fields_from(
            base: &GatewayFields,
            from: &GatewayFields,
            set: FieldSet,
        ) -> GatewayFields {
            let mut out = base.clone();
            $(if set.contains(Field::$variant) {
                out.$field = from.$field.clone();
            })+
            out
        }

        /// The fields whose values differ. Lists compare in order: codec order is
        /// preference.
        pub fn differing(a: &GatewayFields, b: &GatewayFields) -> FieldSet {
            let mut set = FieldSet::default();
            $(if a.$field != b.$field {
                set.insert(Field::$variant);
            })+
            set
        }
    };
}

crate::model::gateway_fields!(field_set);

// A `FieldSet` is a byte: one bit a field.
const _: () = assert!(crate::model::FIELDS <= 8, "widen FieldSet for more fields");

impl Field {
    /// The field of this name, if one is declared.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
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
            if let Some(f) = Field::from_name(part.trim()) {
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
