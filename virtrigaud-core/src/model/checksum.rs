//! [`Checksum`]: an image digest written `sha256:<64 hex>` or `sha512:<128 hex>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A digest algorithm accepted in image checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChecksumAlgorithm {
    /// SHA-256 (64 hex digits).
    Sha256,
    /// SHA-512 (128 hex digits).
    Sha512,
}

impl ChecksumAlgorithm {
    /// The prefix used in text (`sha256`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Sha512 => "sha512",
        }
    }

    /// Number of hex digits of a digest.
    pub const fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Sha512 => 128,
        }
    }
}

/// A well-formed image checksum: algorithm and lower-case hex digest.
///
/// Parsing is strict: a known algorithm, a colon and exactly the right number of hex
/// digits (upper case is accepted and normalised to lower case).
///
/// ```
/// use virtrigaud_core::model::{Checksum, ChecksumAlgorithm};
/// let c: Checksum = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
/// assert_eq!(c.algorithm(), ChecksumAlgorithm::Sha256);
/// let err = "sha256:abcd1234...".parse::<Checksum>().unwrap_err();
/// assert!(err.to_string().contains("64 hex digits"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    algorithm: ChecksumAlgorithm,
    hex: String,
}

/// Why a checksum string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checksum {input:?}: {rule}")]
pub struct ChecksumParseError {
    input: String,
    rule: String,
}

impl ChecksumParseError {
    /// The rule that was broken.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

impl Checksum {
    /// Build from an algorithm and a hex digest (validated).
    pub fn new(algorithm: ChecksumAlgorithm, hex: &str) -> Result<Self, ChecksumParseError> {
        format!("{}:{hex}", algorithm.as_str()).parse()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    /// The digest as lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `digest` (raw bytes) equals this checksum.
    pub fn matches(&self, digest: &[u8]) -> bool {
        digest.len() * 2 == self.hex.len()
            && digest
                .iter()
                .zip(self.hex.as_bytes().chunks(2))
                .all(|(b, pair)| format!("{b:02x}").as_bytes() == pair)
    }
}

impl FromStr for Checksum {
    type Err = ChecksumParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |rule: String| ChecksumParseError {
            input: s.to_owned(),
            rule,
        };
        let Some((algo, hex)) = s.trim().split_once(':') else {
            return Err(err(
                "must be \"<algorithm>:<hex digest>\" with algorithm sha256 or sha512".into(),
            ));
        };
        let algorithm = match algo.to_ascii_lowercase().as_str() {
            "sha256" => ChecksumAlgorithm::Sha256,
            "sha512" => ChecksumAlgorithm::Sha512,
            _ => {
                return Err(err(format!(
                    "unknown algorithm {algo:?}; expected sha256 or sha512"
                )));
            }
        };
        let want = algorithm.hex_len();
        if hex.len() != want || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err(format!(
                "a {} digest must be exactly {want} hex digits",
                algorithm.as_str()
            )));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}
