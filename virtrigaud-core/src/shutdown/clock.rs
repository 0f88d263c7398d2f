//! Wall-clock time for journalled deadlines.

use std::fmt::Debug;
use std::time::SystemTime;

use tokio::time::Instant;

/// A source of wall-clock time. Leases store wall-clock deadlines so they survive a restart;
/// the engine itself measures with tokio's clock.
pub trait WallClock: Send + Sync + Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that follows tokio's (possibly paused) clock from an anchor, for tests and
/// the simulator: `now() = anchor + (tokio now - tokio time at creation)`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor_wall: SystemTime,
    anchor: Instant,
}

impl TokioClock {
    /// A clock reading `anchor_wall` now.
    pub fn new(anchor_wall: SystemTime) -> Self {
        TokioClock {
            anchor_wall,
            anchor: Instant::now(),
        }
    }
}

impl WallClock for TokioClock {
    fn now(&self) -> SystemTime {
        super::lease::wall_add(
            self.anchor_wall,
            Instant::now().saturating_duration_since(self.anchor),
        )
    }
}
