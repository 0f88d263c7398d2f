//! The numbers of the provider comparison: wire requests and wall time of each stop.

use std::time::Duration;

/// A measurement or why it failed.
pub(crate) type Res<T> = std::result::Result<T, String>;

/// Wire requests of one stop.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Count {
    /// HTTP requests (SOAP calls for vSphere), watches and long polls included.
    pub requests: u64,
    /// Of which watch requests (KubeVirt only).
    pub watches: Option<u64>,
    /// Watch events received (KubeVirt only).
    pub events: Option<u64>,
}

impl std::ops::Add for Count {
    type Output = Count;
    fn add(self, b: Count) -> Count {
        let s = |x: Option<u64>, y: Option<u64>| Some(x? + y?);
        Count {
            requests: self.requests + b.requests,
            watches: s(self.watches, b.watches),
            events: s(self.events, b.events),
        }
    }
}

impl std::ops::Sub for Count {
    type Output = Count;
    fn sub(self, b: Count) -> Count {
        let d = |x: Option<u64>, y: Option<u64>| Some(x?.saturating_sub(y?));
        Count {
            requests: self.requests.saturating_sub(b.requests),
            watches: d(self.watches, b.watches),
            events: d(self.events, b.events),
        }
    }
}

/// One measured stop.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    pub count: Count,
    pub elapsed: Duration,
    /// The engine's outcome (the loop's is always "off").
    pub outcome: String,
}

/// One guest time on one provider.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub guest: Duration,
    pub engine: Res<Stop>,
    pub poll: Res<Stop>,
}

/// What the section measured.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// Per backend run: its rows, or why it could not run.
    pub sections: Vec<(&'static str, Res<Vec<Row>>)>,
    /// Backends whose environment was not set.
    pub skipped: Vec<&'static str>,
    /// Wall time of the whole section.
    pub wall: Duration,
    /// Failures before any backend ran (runtime, missing environment under
    /// `VIRTRIGAUD_REQUIRE_BACKENDS`).
    pub setup_failures: Vec<String>,
}
