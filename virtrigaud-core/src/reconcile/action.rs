//! What a reconcile pass asks of the loop that drives it.

use std::time::Duration;

/// When to reconcile the object again (kube-runtime's `Action`, without the dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long: more steps remain, or something is under way.
    Requeue(Duration),
    /// The object is where its spec says; reconcile again when it changes (a controller may
    /// still resync it on its own schedule).
    AwaitChange,
}

impl Action {
    /// Reconcile again after `after`.
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    /// Nothing to do until the object changes.
    pub fn await_change() -> Self {
        Action::AwaitChange
    }

    /// Whether the object has settled.
    pub fn is_settled(self) -> bool {
        self == Action::AwaitChange
    }
}
