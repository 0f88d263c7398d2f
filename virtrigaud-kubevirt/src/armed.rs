//! What one of our stop requests changed, so that `cancel_shutdown` can put it back.

use serde_json::Value;

/// What one of our stop requests changed on the objects, so that `cancel_stop`
/// can put it back. Remembered per VM (in memory) when `request_shutdown` sends a stop.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Armed {
    /// The instance the stop was aimed at.
    pub(crate) vmi_uid: Option<String>,
    /// `spec.runStrategy` (or the legacy `spec.running`) before the stop set it to `Halted`:
    /// the JSON-pointer of the field and its old value.
    pub(crate) run_state: Option<(&'static str, Value)>,
    /// The `Stop` state-change request the stop queued (`Manual` / `RerunOnFailure`).
    pub(crate) stop_request: Option<Value>,
    /// The VMI's `terminationGracePeriodSeconds` before the stop (`None`: unset) and the one
    /// the stop set.
    pub(crate) grace: Option<(Option<i64>, i64)>,
}

impl Armed {
    pub(crate) fn is_empty(&self) -> bool {
        self.run_state.is_none() && self.stop_request.is_none() && self.grace.is_none()
    }
    /// Folds a later stop of the same run into this record: the first one holds the values
    /// from before any of our stops; the grace set last is the one in force.
    pub(crate) fn merge(&mut self, later: Armed) {
        if self.vmi_uid != later.vmi_uid {
            *self = later;
            return;
        }
        if self.run_state.is_none() {
            self.run_state = later.run_state;
        }
        if self.stop_request.is_none() {
            self.stop_request = later.stop_request;
        }
        match (&mut self.grace, later.grace) {
            (Some((_, set)), Some((_, new))) => *set = new,
            (g @ None, Some(new)) => *g = Some(new),
            _ => {}
        }
    }
}
