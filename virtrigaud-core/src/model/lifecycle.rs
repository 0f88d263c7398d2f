//! The lifecycle action of seed 004 (`start`/`stop`, `force`, `gracePeriodSeconds`) and
//! KubeVirt-style run strategies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{MAX_DURATION, at_most_rule};
use super::validate::{SpecErrors, Validate, join};

/// Grace period of a `stop` action without `gracePeriodSeconds` (KubeVirt's default).
pub const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// What a lifecycle action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LifecycleActionKind {
    /// Start a stopped VM.
    Start,
    /// Stop a running VM (gracefully unless forced).
    Stop,
}

/// A one-shot lifecycle request (`spec.lifecycleAction` in seed 004).
///
/// Rules: `gracePeriodSeconds` must not be negative nor above [`MAX_DURATION`]
/// (31 536 000, 365 days); `force: true` means "no grace
/// period", so it may only be combined with `gracePeriodSeconds: 0` or none (as with
/// `virtctl stop --force --grace-period=0`); `force` and `gracePeriodSeconds` only apply to
/// `stop`.
///
/// ```
/// use std::time::Duration;
/// use virtrigaud_core::model::{LifecycleAction, DEFAULT_STOP_GRACE_PERIOD};
/// let stop = LifecycleAction::stop().with_grace_period_seconds(60);
/// assert_eq!(stop.grace_period(DEFAULT_STOP_GRACE_PERIOD), Duration::from_secs(60));
/// assert_eq!(LifecycleAction::force_stop().grace_period(DEFAULT_STOP_GRACE_PERIOD), Duration::ZERO);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LifecycleAction {
    /// `start` or `stop`.
    pub action: LifecycleActionKind,
    /// Stop without a grace period (immediate hard power-off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Seconds to wait for a graceful stop before forcing it off (default 30). From 0 to
    /// [`MAX_DURATION`] in seconds (31 536 000); other values are rejected by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
}

impl LifecycleAction {
    /// A `start` action.
    pub fn start() -> Self {
        LifecycleAction {
            action: LifecycleActionKind::Start,
            force: false,
            grace_period_seconds: None,
        }
    }

    /// A graceful `stop` action with the default grace period.
    pub fn stop() -> Self {
        LifecycleAction {
            action: LifecycleActionKind::Stop,
            ..Self::start()
        }
    }

    /// A forced `stop` action.
    pub fn force_stop() -> Self {
        LifecycleAction {
            force: true,
            ..Self::stop()
        }
    }

    /// Set `gracePeriodSeconds`.
    pub fn with_grace_period_seconds(mut self, secs: i64) -> Self {
        self.grace_period_seconds = Some(secs);
        self
    }

    /// The grace period this action asks for: zero when forced, else
    /// `gracePeriodSeconds` (negative values count as zero), else `default`.
    ///
    /// Never panics. A value above [`MAX_DURATION`] is returned as is (validation rejects
    /// it, and so does the shutdown engine's policy check).
    pub fn grace_period(&self, default: Duration) -> Duration {
        if self.force {
            return Duration::ZERO;
        }
        match self.grace_period_seconds {
            Some(s) => Duration::from_secs(u64::try_from(s).unwrap_or(0)),
            None => default,
        }
    }
}

impl Validate for LifecycleAction {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        let grace_path = join(path, "gracePeriodSeconds");
        if let Some(g) = self.grace_period_seconds {
            if g < 0 {
                errors.add(&grace_path, "must not be negative", g);
            } else if u64::try_from(g).is_ok_and(|s| s > MAX_DURATION.as_secs()) {
                let rule = at_most_rule(MAX_DURATION);
                errors.add(&grace_path, rule, g);
            }
        }
        match self.action {
            LifecycleActionKind::Stop => {
                if self.force
                    && let Some(g) = self.grace_period_seconds
                    && g > 0
                {
                    errors.add(
                        grace_path,
                        "must be 0 or absent when force is true (a forced stop has no grace period)",
                        g,
                    );
                }
            }
            LifecycleActionKind::Start => {
                if self.force {
                    errors.add(join(path, "force"), "only applies to action stop", true);
                }
                if let Some(g) = self.grace_period_seconds {
                    errors.add(grace_path, "only applies to action stop", g);
                }
            }
        }
    }
}

/// When a VM should be running (KubeVirt `runStrategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum RunStrategy {
    /// Always running: restarted whenever it stops.
    Always,
    /// Restarted only when it fails; a clean guest shutdown leaves it off.
    RerunOnFailure,
    /// Started and stopped only by explicit actions.
    #[default]
    Manual,
    /// Kept off.
    Halted,
    /// Run once; not restarted after it stops.
    Once,
}

impl RunStrategy {
    /// Whether the VM should be started when it is created.
    pub fn starts_on_create(self) -> bool {
        matches!(
            self,
            RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once
        )
    }

    /// Whether the VM is restarted after it stopped on its own (`failed`: it crashed or
    /// exited with an error rather than shutting down cleanly).
    pub fn restarts_after_stop(self, failed: bool) -> bool {
        match self {
            RunStrategy::Always => true,
            RunStrategy::RerunOnFailure => failed,
            RunStrategy::Manual | RunStrategy::Halted | RunStrategy::Once => false,
        }
    }

    /// Whether an explicit action of `kind` is meaningful under this strategy
    /// (`start` is refused for `Halted`; `stop` for `Halted` is a no-op but allowed).
    pub fn allows(self, kind: LifecycleActionKind) -> bool {
        !(self == RunStrategy::Halted && kind == LifecycleActionKind::Start)
    }
}

/// What a run-strategy supervisor must remember across restarts of the process that runs
/// it (`status.runStrategyState`): without it, `Once` would run again and a user's `stop`
/// would be undone by `Always` after a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RunStrategyState {
    /// `Once` has started the VM; it is not started again.
    #[serde(default)]
    pub once_done: bool,
    /// A user `stop` suspended restarts until the next `start`.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// The supervisor gave up restarting a VM that cannot stay up.
    #[serde(default)]
    pub gave_up: bool,
    /// Consecutive failed boots.
    #[serde(default)]
    pub failed_boots: u32,
    /// Restarts made so far.
    #[serde(default)]
    pub restarts: u32,
}

/// Lifecycle state reported in status (`status.lifecycleState` in seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum LifecyclePhase {
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// The last action failed.
    Failed,
}

/// `status.lifecycleState`: the outcome of the last lifecycle action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LifecycleState {
    /// Current lifecycle phase.
    pub state: LifecyclePhase,
    /// The last action applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<LifecycleActionKind>,
    /// When it was applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action_time: Option<String>,
}
