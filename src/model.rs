//! The gateway resource as the tool sees it: its writable fields, declared once in
//! `gateway_fields!` for every layer, the enums they use, and what a manifest row asks
//! for.
//!
//! The enums are "open": reading accepts any string (the server may add a codec one day and
//! we must send it back unchanged), while user input is checked strictly against the known
//! values, with a suggestion for near misses (`opus` -> `OPUS`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The collection path under the space's base URL.
pub const GATEWAYS_PATH: &str = "/api/fabric/resources/sip_gateways";

/// Longest `name` and `uri` believed from the server, in bytes.
pub const MAX_TEXT_FIELD: usize = 1024;
/// Most entries believed in `ciphers` or `codecs`, and the longest entry.
pub const MAX_LIST_FIELD: usize = 64;

/// A value a user typed that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What kind of value it was meant to be ("codec", "cipher", "encryption").
    pub what: &'static str,
    /// The value as typed.
    pub value: String,
    /// The closest known value, if one is close enough to suggest.
    pub suggestion: Option<&'static str>,
    /// Every known value, for the message.
    pub known: &'static [&'static str],
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.what, self.value)?;
        match self.suggestion {
            Some(s) => write!(f, ": did you mean `{s}`?"),
            None => write!(f, " (known: {})", self.known.join(", ")),
        }
    }
}

impl std::error::Error for UnknownValue {}

/// The known value closest to `input`: the same letters in another case, or within two
/// edits for longer words. `None` when nothing is close enough to be a useful hint.
pub fn suggest(input: &str, known: &'static [&'static str]) -> Option<&'static str> {
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(input)) {
        return Some(k);
    }
    let upper = input.to_ascii_uppercase();
    known
        .iter()
        .map(|k| (edit_distance(&upper, &k.to_ascii_uppercase()), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len() / 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes; the inputs are short enum names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.bytes().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// A SIP address split for checking: what follows the `sip:`/`sips:` scheme (if any), and
/// its host part (after any `user@`). `sip:alice@pbx.example.com` -> (`alice@pbx...`, `pbx...`).
pub fn sip_address_parts(uri: &str) -> (&str, &str) {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    (rest, host)
}

/// Declares an open enum: known variants with their exact wire strings, plus `Other` for
/// anything else the server sends.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = concat!("`", $text, "`")] $variant,)+
            /// A value this version of the tool does not know; kept and sent back verbatim.
            Other(String),
        }

        impl $name {
            /// Every value this version knows, in the API's documented order.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            /// The exact wire string.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            /// Lenient parse for what the server returns: never fails.
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }

            /// Strict parse for what a user asks for: exact, case-sensitive, known values only.
            pub fn parse_strict(s: &str) -> Result<Self, UnknownValue> {
                match Self::from_wire(s) {
                    Self::Other(_) => Err(UnknownValue {
                        what: $what,
                        value: s.to_owned(),
                        suggestion: suggest(s, Self::KNOWN),
                        known: Self::KNOWN,
                    }),
                    known => Ok(known),
                }
            }
        }

        impl OpenEnum for $name {
            fn as_str(&self) -> &str {
                $name::as_str(self)
            }
            fn from_wire(s: &str) -> Self {
                $name::from_wire(s)
            }
            fn parse_strict(s: &str) -> Result<Self, UnknownValue> {
                $name::parse_strict(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(Self::from_wire(&s))
            }
        }
    };
}

open_enum!(
    /// SRTP cipher suite.
    Cipher, "cipher", {
        AeadAes256Gcm8 => "AEAD_AES_256_GCM_8",
        Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
        AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        Aes256CmHmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
        AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
    }
);

open_enum!(
    /// Media codec; list order is SIP preference order.
    Codec, "codec", {
        Pcmu => "PCMU",
        Pcma => "PCMA",
        G722 => "G722",
        G729 => "G729",
        Opus => "OPUS",
        Opus48000 => "OPUS@48000H@20I",
        Opus24000 => "OPUS@24000H@20I",
        Opus16000 => "OPUS@16000H@20I",
        Opus8000 => "OPUS@8000H@20I",
        Vp8 => "VP8",
        H264 => "H264",
    }
);

open_enum!(
    /// Encryption requirement. The spec lists `default`; live spaces take `forbidden` and
    /// refuse `default`, so both are known and `default` earns a warning on input.
    Encryption, "encryption", {
        Required => "required",
        Optional => "optional",
        Forbidden => "forbidden",
        Default => "default",
    }
);

/// The gateway's writable fields, declared once: every layer takes them from here (the
/// struct, the row's wishes, the field set, merge and diff, the manifest's columns and
/// checks, the plan, the PATCH body and its checks, the plan view). Each entry is the
/// [`crate::diff::Field`] variant, the field (its name is the wire key, the CSV column and
/// the YAML key), its type (a [`FieldValue`]: text, one choice or a list) and the check of
/// a value a user typed, before it is parsed (lists and choices are parsed strictly).
///
/// Adding a field is one entry here and its check. A layer expands it with a macro of its
/// own: `gateway_fields!(its_macro)` calls `its_macro! { entries }`.
macro_rules! gateway_fields {
    ($then:ident) => {
        $then! {
            Name name: String, check $crate::model::check_name;
            Uri uri: String, check $crate::model::check_uri;
            Encryption encryption: Option<$crate::model::Encryption>, check $crate::model::no_check;
            Ciphers ciphers: Vec<$crate::model::Cipher>, check $crate::model::no_check;
            Codecs codecs: Vec<$crate::model::Codec>, check $crate::model::no_check;
        }
    };
}
pub(crate) use gateway_fields;

/// A field's value as its wire texts, whatever its type: what a layer that treats every
/// field alike (writers, views, size checks) works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire<'a> {
    /// Text; empty is "not set".
    Text(&'a str),
    /// One of a set of values, or none.
    Choice(Option<&'a str>),
    /// A list, in order.
    List(Vec<&'a str>),
}

impl Wire<'_> {
    /// Whether the gateway lacks it: a full-body PATCH could not carry it.
    pub fn is_unset(&self) -> bool {
        match self {
            Wire::Text(s) => s.is_empty(),
            Wire::Choice(c) => c.is_none(),
            Wire::List(l) => l.is_empty(),
        }
    }

    /// As JSON: a string, `null` for no choice, an array for a list.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Wire::Text(s) => Value::String((*s).to_owned()),
            Wire::Choice(c) => c.map_or(Value::Null, |c| Value::String(c.to_owned())),
            Wire::List(l) => {
                Value::Array(l.iter().map(|i| Value::String((*i).to_owned())).collect())
            }
        }
    }
}

/// An open enum's behaviour, for the field types built on one.
pub trait OpenEnum: Sized + Clone + PartialEq + fmt::Debug {
    fn as_str(&self) -> &str;
    fn from_wire(s: &str) -> Self;
    fn parse_strict(s: &str) -> Result<Self, UnknownValue>;
}

/// The type of a gateway field: its wire texts, and what a manifest row holds for it.
pub trait FieldValue: Clone + PartialEq + Default + fmt::Debug {
    /// A row's wish for the field: `None` (or no choice) leaves it as it is.
    type Wanted: Clone + PartialEq + Default + fmt::Debug;
    fn wire(&self) -> Wire<'_>;
    /// The value with each wire text passed through `f` (escaped for a terminal).
    fn map_wire(&self, f: &dyn Fn(&str) -> String) -> Self;
    /// The value a wish sets, `None` when it leaves the field.
    fn from_wanted(wanted: &Self::Wanted) -> Option<Self>;
    /// A wish for exactly this value (a saved plan's `after`).
    fn into_wanted(self) -> Self::Wanted;
}

impl FieldValue for String {
    type Wanted = Option<String>;
    fn wire(&self) -> Wire<'_> {
        Wire::Text(self)
    }
    fn map_wire(&self, f: &dyn Fn(&str) -> String) -> Self {
        f(self)
    }
    fn from_wanted(wanted: &Option<String>) -> Option<Self> {
        wanted.clone()
    }
    fn into_wanted(self) -> Option<String> {
        Some(self)
    }
}

impl<E: OpenEnum> FieldValue for Option<E> {
    type Wanted = Option<E>;
    fn wire(&self) -> Wire<'_> {
        Wire::Choice(self.as_ref().map(E::as_str))
    }
    fn map_wire(&self, f: &dyn Fn(&str) -> String) -> Self {
        self.as_ref().map(|e| E::from_wire(&f(e.as_str())))
    }
    fn from_wanted(wanted: &Option<E>) -> Option<Self> {
        wanted.clone().map(Some)
    }
    fn into_wanted(self) -> Option<E> {
        self
    }
}

impl<E: OpenEnum> FieldValue for Vec<E> {
    type Wanted = Option<Vec<E>>;
    fn wire(&self) -> Wire<'_> {
        Wire::List(self.iter().map(E::as_str).collect())
    }
    fn map_wire(&self, f: &dyn Fn(&str) -> String) -> Self {
        self.iter().map(|e| E::from_wire(&f(e.as_str()))).collect()
    }
    fn from_wanted(wanted: &Option<Vec<E>>) -> Option<Self> {
        wanted.clone()
    }
    fn into_wanted(self) -> Option<Vec<E>> {
        Some(self)
    }
}

/// A typed text's check: no control character, and at most [`MAX_TEXT_FIELD`] bytes.
pub fn check_name(field: &str, value: &str, problems: &mut Vec<String>) {
    if value.chars().any(char::is_control) {
        problems.push(format!("{field} contains a control character"));
    }
    check_text_cap(field, value, problems);
}

/// A typed SIP address's check: at most [`MAX_TEXT_FIELD`] bytes, and a [`sip_address`].
pub fn check_uri(field: &str, value: &str, problems: &mut Vec<String>) {
    check_text_cap(field, value, problems);
    if let Err(message) = sip_address(field, value) {
        problems.push(message);
    }
}

/// The API wants an external SIP entity, written `sip:host`, `sips:host` or `user@host`.
pub fn sip_address(field: &str, value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{field} `{}` contains white space",
            crate::inert::text(value, 100)
        ));
    }
    let (rest, host) = sip_address_parts(value);
    if host.is_empty() || (!value.starts_with("sip") && !rest.contains('@') && !host.contains('.'))
    {
        return Err(format!(
            "{field} `{value}` is not a SIP address (write `sip:pbx.example.com` or `user@pbx.example.com`)"
        ));
    }
    Ok(())
}

fn check_text_cap(field: &str, value: &str, problems: &mut Vec<String>) {
    if value.len() > MAX_TEXT_FIELD {
        problems.push(format!(
            "{field} is {} bytes long; at most {MAX_TEXT_FIELD} are accepted",
            value.len()
        ));
    }
}

/// No check before parsing: a choice or a list is parsed strictly against its known values.
pub fn no_check<T: ?Sized>(_field: &str, _value: &T, _problems: &mut Vec<String>) {}

macro_rules! gateway_structs {
    ($($variant:ident $field:ident: $ty:ty, check $check:path;)+) => {
        /// How many writable fields a gateway has.
        pub const FIELDS: usize = [$(stringify!($field),)+].len();

        /// The writable fields of a SIP gateway: what GET returns and what PATCH sends
        /// (always all of them, because live spaces validate PATCH as a full replacement).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
        pub struct GatewayFields {
            $(#[serde(default)] pub $field: $ty,)+
        }

        impl GatewayFields {
            /// The fields a full-body PATCH would lack: a gateway read back without them
            /// cannot be written safely unless the manifest supplies them.
            pub fn missing(&self) -> Vec<&'static str> {
                let mut missing = Vec::new();
                for (name, value) in self.wires() {
                    if value.is_unset() {
                        missing.push(name);
                    }
                }
                missing
            }

            /// Each field's name and value as wire texts, in the declared order (the order
            /// of bodies, reports and manifest columns).
            pub fn wires(&self) -> [(&'static str, Wire<'_>); FIELDS] {
                [$((stringify!($field), FieldValue::wire(&self.$field)),)+]
            }

            /// Every wire text passed through `f` (for a terminal: escaped).
            pub fn map_wire(&self, f: &dyn Fn(&str) -> String) -> GatewayFields {
                GatewayFields {
                    $($field: FieldValue::map_wire(&self.$field, f),)+
                }
            }

            /// A wish for exactly these values (a saved plan's `after`).
            pub fn into_desired(self) -> Desired {
                Desired {
                    $($field: FieldValue::into_wanted(self.$field),)+
                }
            }
        }

        /// What a manifest row asks for: `None` means "leave this field as it is".
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct Desired {
            $(pub $field: <$ty as FieldValue>::Wanted,)+
        }

        impl Desired {
            /// Fills every field this row leaves open from `defaults`.
            pub fn with_defaults(mut self, defaults: &Desired) -> Desired {
                $(if <$ty as FieldValue>::from_wanted(&self.$field).is_none() {
                    self.$field = defaults.$field.clone();
                })+
                self
            }
        }
    };
}

gateway_fields!(gateway_structs);

/// A gateway resource as the API returns it (GET, PATCH and each list element). Only what
/// the tool uses is typed; everything else is ignored on read.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GatewayResource {
    /// The top-level resource id: the one the URL takes.
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub sip_gateway: GatewayFields,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_round_trip_and_unknown_are_kept() {
        for k in Codec::KNOWN {
            assert_eq!(Codec::from_wire(k).as_str(), *k);
            assert!(!matches!(Codec::from_wire(k), Codec::Other(_)));
        }
        let new: Codec = serde_json::from_str("\"LYRA\"").unwrap();
        assert_eq!(new, Codec::Other("LYRA".into()));
        assert_eq!(serde_json::to_string(&new).unwrap(), "\"LYRA\"");
    }

    #[test]
    fn strict_parse_suggests_near_misses() {
        let err = Codec::parse_strict("opus").unwrap_err();
        assert_eq!(err.suggestion, Some("OPUS"));
        assert_eq!(
            err.to_string(),
            "unknown codec `opus`: did you mean `OPUS`?"
        );
        let err = Encryption::parse_strict("requird").unwrap_err();
        assert_eq!(err.suggestion, Some("required"));
        let err = Cipher::parse_strict("ROT13").unwrap_err();
        assert_eq!(err.suggestion, None);
        assert!(err.to_string().contains("AEAD_AES_256_GCM_8"));
        assert_eq!(
            Encryption::parse_strict("forbidden"),
            Ok(Encryption::Forbidden)
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let full = GatewayFields {
            name: "a".into(),
            uri: "sip:a.example.com".into(),
            encryption: Some(Encryption::Optional),
            ciphers: vec![Cipher::AeadAes256Gcm8],
            codecs: vec![Codec::Opus],
        };
        assert!(full.missing().is_empty());
        let partial = GatewayFields {
            codecs: vec![],
            encryption: None,
            ..full
        };
        assert_eq!(partial.missing(), vec!["encryption", "codecs"]);
    }

    #[test]
    fn edit_distance_is_a_distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "OPUS"), 4);
        assert_eq!(edit_distance("PCMU", ""), 4);
        assert_eq!(edit_distance("PCMA", "PCMU"), 1);
        assert_eq!(edit_distance("G722", "G729"), 1);
        assert_eq!(edit_distance("AB", "BA"), 2);
        let mut rng = fastrand::Rng::with_seed(3);
        let word = |rng: &mut fastrand::Rng| -> String {
            (0..rng.usize(0..7))
                .map(|_| ['A', 'B', 'C', '7'][rng.usize(..4)])
                .collect()
        };
        for _ in 0..2000 {
            let (a, b, c) = (word(&mut rng), word(&mut rng), word(&mut rng));
            let d = edit_distance(&a, &b);
            assert_eq!(edit_distance(&a, &a), 0);
            assert_eq!(d, edit_distance(&b, &a), "{a} {b}");
            assert!(d <= a.len().max(b.len()), "{a} {b}");
            assert!(d >= a.len().abs_diff(b.len()), "{a} {b}");
            assert!(
                d <= edit_distance(&a, &c) + edit_distance(&c, &b),
                "{a} {b} {c}"
            );
        }
    }

    #[test]
    fn suggestions_need_to_be_close_for_the_word_they_suggest() {
        // Case alone: always suggested.
        assert_eq!(suggest("pcmu", Codec::KNOWN), Some("PCMU"));
        // One edit from a four-letter value: suggested; two: not (2 is not under 4 / 2).
        assert_eq!(suggest("PCMX", Codec::KNOWN), Some("PCMU"));
        assert_eq!(suggest("G72", Codec::KNOWN), Some("G722"));
        assert_eq!(suggest("G7", Codec::KNOWN), None);
        // Two edits from a long value: suggested; three: never.
        assert_eq!(
            suggest("OPUS@48000H@2", Codec::KNOWN),
            Some("OPUS@48000H@20I")
        );
        assert_eq!(suggest("requird", Encryption::KNOWN), Some("required"));
        assert_eq!(suggest("rqird", Encryption::KNOWN), None);
    }
}
