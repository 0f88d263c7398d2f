//! [`HumanDuration`]: durations written for humans (`"120s"`, `"30m"`, `"7d"`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::validate::SpecErrors;

/// The rule every duration string must follow, quoted in error messages.
pub const DURATION_RULE: &str = "must be a duration with units such as \"30s\", \"2m\", \"1h 30m\" or \"7d\" \
     (days are 24 h; bare numbers are rejected)";

/// The longest grace period or timeout the model accepts: 365 days (`"365d"`,
/// 31 536 000 s).
///
/// It bounds `lifecycle.gracefulShutdownTimeout`, a lifecycle action's
/// `gracePeriodSeconds` and `prepare.timeout` of a `VMImage`: a longer value is rejected by
/// validation with an `InvalidSpec` error naming the field (rule `must be at most 365d`).
/// The shutdown engine applies the same bound to the durations of a `ShutdownPolicy`. Every
/// accepted value can be added to the clock without overflow. Note that `"1y"` is 365.25
/// days in `humantime`, so it is above the maximum; write `"365d"`.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The longest snapshot retention age (`retentionPolicy.maxAge`): 100 years of 365.25 days
/// (`"100y"`, 3 155 760 000 s). A longer value is rejected by validation.
pub const MAX_RETENTION_AGE: Duration = Duration::from_secs(100 * 31_557_600);

/// The rule quoted when a duration is above `max`: `must be at most 365d (31536000 s)`.
pub(crate) fn at_most_rule(max: Duration) -> String {
    format!(
        "must be at most {} ({} s)",
        HumanDuration(max),
        max.as_secs()
    )
}

/// Records a violation at `path` when `value` is above `max`.
pub(crate) fn check_at_most(
    errors: &mut SpecErrors,
    path: impl Into<String>,
    value: HumanDuration,
    max: Duration,
) {
    if value.as_duration() > max {
        errors.add(path, at_most_rule(max), value);
    }
}

/// A [`Duration`] written as text with units, parsed by `humantime`.
///
/// `"7d"` is seven 24-hour days. Bare numbers (`90`, `"90"`) are rejected: write `"90s"`.
/// It serialises in the largest unit that represents it exactly, so `"120s"` round-trips
/// as `"2m"` and `"7d"` as `"7d"`; the parsed value is always equal after a round trip.
///
/// ```
/// use virtrigaud_core::model::HumanDuration;
/// use std::time::Duration;
/// let d: HumanDuration = "7d".parse().unwrap();
/// assert_eq!(d.as_duration(), Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(d.to_string(), "7d");
/// assert_eq!("90s".parse::<HumanDuration>().unwrap().to_string(), "90s");
/// let err = "12 parsecs".parse::<HumanDuration>().unwrap_err();
/// assert!(err.to_string().contains("bare numbers are rejected"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}; {rule}", rule = DURATION_RULE)]
pub struct DurationParseError {
    input: String,
    reason: String,
}

impl DurationParseError {
    /// The rejected input.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl HumanDuration {
    /// Wrap a [`Duration`].
    pub const fn new(d: Duration) -> Self {
        HumanDuration(d)
    }

    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// The wrapped [`Duration`].
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = DurationParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DurationParseError {
            input: s.to_owned(),
            reason,
        };
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(err("empty".into()));
        }
        if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(err("a bare number has no unit".into()));
        }
        humantime::parse_duration(trimmed)
            .map(HumanDuration)
            .map_err(|e| err(e.to_string()))
    }
}

const UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        // Largest unit that divides exactly: one token, exact, humantime-parsable.
        for (unit, size) in UNITS {
            if nanos.is_multiple_of(size) {
                return write!(f, "{}{unit}", nanos / size);
            }
        }
        write!(f, "{nanos}ns")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with units such as \"30s\" or \"7d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a bare number has no unit; {DURATION_RULE}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a bare number has no unit; {DURATION_RULE}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a bare number has no unit; {DURATION_RULE}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let cases = [
            ("120s", 120, "2m"),
            ("7d", 604_800, "7d"),
            ("1h 30m", 5400, "90m"),
            ("90s", 90, "90s"),
            ("30m", 1800, "30m"),
            ("0s", 0, "0s"),
        ];
        for (input, secs, shown) in cases {
            let d: HumanDuration = input.parse().unwrap();
            assert_eq!(d.0, Duration::from_secs(secs), "{input}");
            assert_eq!(d.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<HumanDuration>().unwrap(), d);
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["12 parsecs", "90", "", "1.5", "abc"] {
            let e = bad.parse::<HumanDuration>().unwrap_err();
            assert!(e.to_string().contains("bare numbers are rejected"), "{e}");
        }
        assert!(serde_json::from_str::<HumanDuration>("90").is_err());
    }
}
