//! [`Quantity`]: Kubernetes-style byte quantities (`4Gi`, `512Mi`, `1G`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

const SUFFIXES: [(&str, u64); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// A byte quantity as written in Kubernetes manifests (`memory: 4Gi`).
///
/// Binary (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`) and decimal (`k`, `M`, `G`, `T`, `P`, `E`)
/// suffixes and plain integers are accepted; a fractional number must come to whole bytes
/// (`1.5Gi` is fine). The text is kept as written, so it serialises back unchanged.
///
/// ```
/// use virtrigaud_core::model::Quantity;
/// let q: Quantity = "4Gi".parse().unwrap();
/// assert_eq!(q.bytes(), 4 << 30);
/// assert_eq!(q.mebibytes(), 4096);
/// assert_eq!(q.to_string(), "4Gi");
/// assert!("4 lightyears".parse::<Quantity>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    text: String,
    bytes: u64,
}

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity {input:?}: {reason}; must be a whole number of bytes, optionally with a \
     suffix Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E (e.g. \"4Gi\")"
)]
pub struct QuantityParseError {
    input: String,
    reason: &'static str,
}

impl Quantity {
    /// A quantity of exactly `bytes`, written as the shortest exact binary form.
    pub fn from_bytes(bytes: u64) -> Self {
        let mut text = bytes.to_string();
        for (suffix, size) in SUFFIXES[..6].iter().rev() {
            if bytes != 0 && bytes.is_multiple_of(*size) {
                text = format!("{}{suffix}", bytes / size);
                break;
            }
        }
        Quantity { text, bytes }
    }

    /// The value in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The value in whole MiB (rounded down).
    pub fn mebibytes(&self) -> u64 {
        self.bytes >> 20
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Quantity {
    type Err = QuantityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| QuantityParseError {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        let (number, multiplier) = SUFFIXES
            .iter()
            .find_map(|(suffix, size)| text.strip_suffix(suffix).map(|n| (n, *size)))
            .unwrap_or((text, 1));
        if number.is_empty() {
            return Err(err("missing number"));
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits_ok = |p: &str| p.chars().all(|c| c.is_ascii_digit());
        if int_part.is_empty() || !digits_ok(int_part) || !digits_ok(frac_part) {
            return Err(err("not a non-negative number with a known suffix"));
        }
        let int: u128 = int_part.parse().map_err(|_| err("number too large"))?;
        let mut bytes = int
            .checked_mul(u128::from(multiplier))
            .ok_or_else(|| err("number too large"))?;
        if !frac_part.is_empty() {
            if frac_part.len() > 18 {
                return Err(err("too many decimals"));
            }
            let frac: u128 = frac_part.parse().map_err(|_| err("number too large"))?;
            let scale = 10u128.pow(frac_part.len() as u32);
            let scaled = frac * u128::from(multiplier);
            if !scaled.is_multiple_of(scale) {
                return Err(err("not a whole number of bytes"));
            }
            bytes += scaled / scale;
        }
        let bytes = u64::try_from(bytes).map_err(|_| err("number too large"))?;
        Ok(Quantity {
            text: text.to_owned(),
            bytes,
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte quantity such as \"4Gi\" or a whole number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity {
                    text: v.to_string(),
                    bytes: v,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("invalid quantity {v}: must not be negative")))
                    .and_then(|b| self.visit_u64(b))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!("4Gi".parse::<Quantity>().unwrap().bytes(), 4 << 30);
        assert_eq!("1.5Gi".parse::<Quantity>().unwrap().bytes(), 3 << 29);
        assert_eq!("1G".parse::<Quantity>().unwrap().bytes(), 1_000_000_000);
        assert_eq!("512".parse::<Quantity>().unwrap().bytes(), 512);
        assert_eq!(Quantity::from_bytes(8 << 30).as_str(), "8Gi");
        for bad in [
            "",
            "Gi",
            "-1Gi",
            "4 lightyears",
            "0.5",
            "1.2.3Mi",
            "99999999999Ei",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad}");
        }
    }
}
