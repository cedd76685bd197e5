//! The gateway resource as the tool sees it: the five writable fields, the enums they
//! use, and what a manifest row asks for.
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

/// The five writable fields of a SIP gateway: what GET returns and what PATCH sends (always
/// all five, because live spaces validate PATCH as a full replacement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GatewayFields {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub encryption: Option<Encryption>,
    #[serde(default)]
    pub ciphers: Vec<Cipher>,
    #[serde(default)]
    pub codecs: Vec<Codec>,
}

impl GatewayFields {
    /// The fields a full-body PATCH would lack: a gateway read back without them cannot be
    /// written safely unless the manifest supplies them.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.name.is_empty() {
            missing.push("name");
        }
        if self.uri.is_empty() {
            missing.push("uri");
        }
        if self.encryption.is_none() {
            missing.push("encryption");
        }
        if self.ciphers.is_empty() {
            missing.push("ciphers");
        }
        if self.codecs.is_empty() {
            missing.push("codecs");
        }
        missing
    }
}

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

/// What a manifest row asks for: `None` means "leave this field as it is".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub name: Option<String>,
    pub uri: Option<String>,
    pub encryption: Option<Encryption>,
    pub ciphers: Option<Vec<Cipher>>,
    pub codecs: Option<Vec<Codec>>,
}

impl Desired {
    /// Fills every field this row leaves open from `defaults`.
    pub fn with_defaults(mut self, defaults: &Desired) -> Desired {
        self.name = self.name.or_else(|| defaults.name.clone());
        self.uri = self.uri.or_else(|| defaults.uri.clone());
        self.encryption = self.encryption.or_else(|| defaults.encryption.clone());
        self.ciphers = self.ciphers.or_else(|| defaults.ciphers.clone());
        self.codecs = self.codecs.or_else(|| defaults.codecs.clone());
        self
    }
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
