//! Typed events of the orchestration flows, for an embedder to forward (for example as
//! Kubernetes Events).

use std::fmt;

use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// The kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A `VirtualMachine`.
    VirtualMachine,
    /// A `VMSnapshot`.
    VMSnapshot,
    /// A `VMClone`.
    VMClone,
    /// A `VMImage`.
    VMImage,
}

impl ObjectKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::VirtualMachine => "VirtualMachine",
            ObjectKind::VMSnapshot => "VMSnapshot",
            ObjectKind::VMClone => "VMClone",
            ObjectKind::VMImage => "VMImage",
        }
    }
}

/// `Normal` or `Warning`, as in Kubernetes Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Expected progress.
    Normal,
    /// Something needing attention (a power cycle, a failure).
    Warning,
}

impl EventType {
    /// `"Normal"` or `"Warning"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The reason of an event (the seeds' names, CamelCase on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventReason {
    /// A reconfiguration started.
    ReconfigureStarted,
    /// The reconfiguration needs (and gets) a graceful power cycle.
    ReconfigurePowerCycle,
    /// The reconfiguration finished.
    ReconfigureCompleted,
    /// The change was stored but waits for a power cycle the caller did not allow.
    ReconfigurePending,
    /// The reconfiguration failed.
    ReconfigureFailed,
    /// A snapshot is being created.
    SnapshotCreating,
    /// A snapshot is ready.
    SnapshotReady,
    /// A snapshot operation failed.
    SnapshotFailed,
    /// A snapshot is being deleted.
    SnapshotDeleting,
    /// A snapshot was deleted.
    SnapshotDeleted,
    /// A snapshot was deleted by its retention policy.
    SnapshotPruned,
    /// A revert to a snapshot started.
    RevertStarted,
    /// A revert finished.
    RevertCompleted,
    /// A revert failed.
    RevertFailed,
    /// A clone started.
    CloneStarted,
    /// Clone customization is being checked/applied.
    CloneCustomizing,
    /// A clone is ready.
    CloneCompleted,
    /// A clone failed.
    CloneFailed,
    /// A half-made clone was deleted.
    CloneCleanedUp,
    /// Image preparation is waiting to start.
    ImagePending,
    /// An image is being downloaded / imported.
    ImageImporting,
    /// An import attempt failed and will be retried.
    ImageRetrying,
    /// The image is being handed to the provider.
    ImagePreparing,
    /// The image is ready.
    ImageReady,
    /// Image preparation failed.
    ImageFailed,
    /// A VM was started.
    VmStarted,
    /// A VM was stopped.
    VmStopped,
    /// A lifecycle action failed.
    LifecycleActionFailed,
    /// A VM's pre-stop hook exited with 0 before its shutdown.
    PreStopCompleted,
    /// A VM's pre-stop hook failed, hung or could not run; its shutdown went on.
    PreStopFailed,
    /// The supervisor restarted a VM after a failure.
    VmRestarted,
    /// The supervisor backs off before the next restart.
    CrashLoopBackOff,
    /// The supervisor gave up restarting a VM that cannot stay up.
    RestartGivenUp,
    /// The provider cannot honour the VM's run strategy (`RerunOnFailure` without failure
    /// detection); the supervisor treats every stop as clean.
    RunStrategyNotHonoured,
}

impl EventReason {
    /// The CamelCase name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ReconfigureStarted => "ReconfigureStarted",
            EventReason::ReconfigurePowerCycle => "ReconfigurePowerCycle",
            EventReason::ReconfigureCompleted => "ReconfigureCompleted",
            EventReason::ReconfigurePending => "ReconfigurePending",
            EventReason::ReconfigureFailed => "ReconfigureFailed",
            EventReason::SnapshotCreating => "SnapshotCreating",
            EventReason::SnapshotReady => "SnapshotReady",
            EventReason::SnapshotFailed => "SnapshotFailed",
            EventReason::SnapshotDeleting => "SnapshotDeleting",
            EventReason::SnapshotDeleted => "SnapshotDeleted",
            EventReason::SnapshotPruned => "SnapshotPruned",
            EventReason::RevertStarted => "RevertStarted",
            EventReason::RevertCompleted => "RevertCompleted",
            EventReason::RevertFailed => "RevertFailed",
            EventReason::CloneStarted => "CloneStarted",
            EventReason::CloneCustomizing => "CloneCustomizing",
            EventReason::CloneCompleted => "CloneCompleted",
            EventReason::CloneFailed => "CloneFailed",
            EventReason::CloneCleanedUp => "CloneCleanedUp",
            EventReason::ImagePending => "ImagePending",
            EventReason::ImageImporting => "ImageImporting",
            EventReason::ImageRetrying => "ImageRetrying",
            EventReason::ImagePreparing => "ImagePreparing",
            EventReason::ImageReady => "ImageReady",
            EventReason::ImageFailed => "ImageFailed",
            EventReason::VmStarted => "VMStarted",
            EventReason::VmStopped => "VMStopped",
            EventReason::LifecycleActionFailed => "LifecycleActionFailed",
            EventReason::PreStopCompleted => "PreStopCompleted",
            EventReason::PreStopFailed => "PreStopFailed",
            EventReason::VmRestarted => "VMRestarted",
            EventReason::CrashLoopBackOff => "CrashLoopBackOff",
            EventReason::RestartGivenUp => "RestartGivenUp",
            EventReason::RunStrategyNotHonoured => "RunStrategyNotHonoured",
        }
    }

    /// The event type that goes with the reason.
    pub fn event_type(self) -> EventType {
        match self {
            EventReason::ReconfigurePowerCycle
            | EventReason::ReconfigurePending
            | EventReason::ReconfigureFailed
            | EventReason::SnapshotFailed
            | EventReason::RevertFailed
            | EventReason::CloneFailed
            | EventReason::ImageRetrying
            | EventReason::ImageFailed
            | EventReason::LifecycleActionFailed
            | EventReason::PreStopFailed
            | EventReason::VmRestarted
            | EventReason::CrashLoopBackOff
            | EventReason::RestartGivenUp
            | EventReason::RunStrategyNotHonoured => EventType::Warning,
            _ => EventType::Normal,
        }
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrchestrationEvent {
    /// Kind of the object concerned.
    pub object: ObjectKind,
    /// Its name (a VM id for VMs, the object name otherwise).
    pub name: String,
    /// Normal or Warning.
    pub event_type: EventType,
    /// Why.
    pub reason: EventReason,
    /// Human-readable detail.
    pub message: String,
}

impl fmt::Display for OrchestrationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {:<22} {}/{}: {}",
            self.event_type.as_str(),
            self.reason.as_str(),
            self.object.as_str(),
            self.name,
            self.message
        )
    }
}

/// A broadcast bus of [`OrchestrationEvent`]s. Cheap to clone; sending with no subscriber
/// is a no-op; slow subscribers lag (they see `Lagged`) instead of blocking the flows.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<OrchestrationEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus {
    /// A bus keeping up to `capacity` unread events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus { tx }
    }

    /// Subscribes (events sent from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<OrchestrationEvent> {
        self.tx.subscribe()
    }

    /// Subscribes as a [`futures::Stream`] (lag shows up as an `Err` item).
    pub fn stream(&self) -> BroadcastStream<OrchestrationEvent> {
        BroadcastStream::new(self.tx.subscribe())
    }

    /// Sends an event.
    pub fn emit(
        &self,
        object: ObjectKind,
        name: &str,
        reason: EventReason,
        message: impl Into<String>,
    ) {
        let event = OrchestrationEvent {
            object,
            name: name.to_owned(),
            event_type: reason.event_type(),
            reason,
            message: message.into(),
        };
        tracing::debug!(target: "virtrigaud::orchestration", event = %event, "event");
        let _ = self.tx.send(event);
    }
}
