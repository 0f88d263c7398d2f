//! [`IntOrPercent`]: a count (`1`) or a percentage of a total (`"25%"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The rule for `IntOrPercent` values, quoted in error messages.
pub const INT_OR_PERCENT_RULE: &str =
    "must be a non-negative whole number or a percentage such as \"25%\"";

/// A count or a percentage of a replica count, as in Kubernetes `maxUnavailable`/`maxSurge`.
///
/// ```
/// use virtrigaud_core::model::IntOrPercent;
/// let p: IntOrPercent = "25%".parse().unwrap();
/// assert_eq!(p.resolve_down(10), 2); // maxUnavailable rounds down
/// assert_eq!(p.resolve_up(10), 3); // maxSurge rounds up
/// assert_eq!(IntOrPercent::Count(1).resolve_up(10), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    /// An absolute count.
    Count(u32),
    /// A percentage of the total (may exceed 100 where the field allows it).
    Percent(u32),
}

/// Why an `IntOrPercent` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {input:?}: {rule}", rule = INT_OR_PERCENT_RULE)]
pub struct IntOrPercentParseError {
    input: String,
}

impl IntOrPercent {
    /// Resolve against `total`, rounding a percentage up (Kubernetes `maxSurge`).
    pub fn resolve_up(self, total: u32) -> u32 {
        self.resolve(total, true)
    }

    /// Resolve against `total`, rounding a percentage down (Kubernetes `maxUnavailable`).
    pub fn resolve_down(self, total: u32) -> u32 {
        self.resolve(total, false)
    }

    /// Resolve against `total`, rounding a percentage up or down.
    pub fn resolve(self, total: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => {
                let product = u64::from(p) * u64::from(total);
                let v = if round_up {
                    product.div_ceil(100)
                } else {
                    product / 100
                };
                u32::try_from(v).unwrap_or(u32::MAX)
            }
        }
    }

    /// Whether this is zero (`0` or `"0%"`).
    pub fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Count(0) | IntOrPercent::Percent(0))
    }
}

impl Default for IntOrPercent {
    fn default() -> Self {
        IntOrPercent::Count(0)
    }
}

impl FromStr for IntOrPercent {
    type Err = IntOrPercentParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IntOrPercentParseError {
            input: s.to_owned(),
        };
        let t = s.trim();
        let (digits, percent) = match t.strip_suffix('%') {
            Some(d) => (d, true),
            None => (t, false),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let n: u32 = digits.parse().map_err(|_| err())?;
        Ok(if percent {
            IntOrPercent::Percent(n)
        } else {
            IntOrPercent::Count(n)
        })
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Count(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Count(n) => s.serialize_u32(*n),
            IntOrPercent::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = IntOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or a percentage string such as \"25%\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrPercent, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrPercent, E> {
                u32::try_from(v)
                    .map(IntOrPercent::Count)
                    .map_err(|_| E::custom(format!("invalid value {v}: too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrPercent, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!(
                        "invalid value {v}: {INT_OR_PERCENT_RULE}"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<IntOrPercent, E> {
                Err(E::custom(format!(
                    "invalid value {v}: {INT_OR_PERCENT_RULE}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}
