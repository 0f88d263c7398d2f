//! VM sets: `replicas` VMs from one template, scaled and replaced by rolling update.
//!
//! [`VmSetReconciler`] reconciles a [`crate::model::VMSet`] against any provider, one
//! level-triggered pass at a time:
//!
//! - **State lives on the VMs.** Members carry the labels [`SET_LABEL`]
//!   (`virtrigaud.io/set=<set>`) and [`TEMPLATE_HASH_LABEL`]
//!   (`virtrigaud.io/template-hash=<hash>`, see [`template_hash`]) and are named `<set>-<n>`.
//!   A restarted process builds a new reconciler and continues; nothing is kept in memory.
//! - **Rolling update** on template change, honouring `maxUnavailable` and `maxSurge` (counts
//!   or percentages, resolved like Kubernetes): at most `replicas + maxSurge` VMs exist, and
//!   removals never take the available VMs below `replicas - maxUnavailable` (see [`plan`]).
//!   `Recreate` removes every old VM first.
//! - **Readiness gates**: a member is available when it runs (power gate; an off member of
//!   the current template is started) and the optional [`HealthProbe`] says ready. A probe
//!   that reports [`Health::Failed`] for a current member **pauses** the rollout (no creation,
//!   no removal; [`SetStatus::paused`] says which VM and why) until the VM recovers or the
//!   template changes. Because the pause is derived from the VM, it survives restarts too.
//! - **Never from a partial view.** A pass that cannot list the members (the listing fails,
//!   or the provider refuses it as partial because a node is offline) does nothing and
//!   reports why in [`SetStatus::unobserved`], a `Paused` condition with the reason
//!   `MembersUnobserved`: acting on it could create a member twice.
//! - **Placement** through any [`crate::placement::Placer`], with the set as the anti-affinity
//!   group and every existing member (old ones included, so surge VMs avoid them) as peers.
//! - **Removal**: graceful stop through the [`crate::shutdown::ShutdownManager`] (the
//!   template's `gracefulShutdownTimeout`), then delete.
//! - **Events**: a broadcast of [`RolloutEvent`]s ([`VmSetReconciler::subscribe`],
//!   [`VmSetReconciler::events`]).
//!
//! Not done: readiness timeouts (a member that stays `NotReady` blocks the rollout, with the
//! status saying so, but is not declared failed: that would need a start time stored
//! somewhere), and resolving `classRef`/`imageRef`/`placementRef` objects (the embedder
//! resolves them; the template's resources, disks, networks and image name are used as is).

mod events;
mod images;
mod plan;
mod probe;
mod reconciler;
mod status;
mod template;

pub use events::{RemovalReason, RolloutEvent};
pub use images::{ImageResolver, member_image};
pub use plan::{Bounds, Member, Plan, Readiness, plan};
pub use probe::{Health, HealthProbe, ProbeFn, probe_fn};
pub use reconciler::VmSetReconciler;
pub use status::SetStatus;
pub use template::{
    DEFAULT_CPU, DEFAULT_MEMORY_MIB, create_spec, expects_running, member_labels,
    placement_request, template_hash,
};

/// Label naming the set a VM belongs to.
pub const SET_LABEL: &str = "virtrigaud.io/set";
/// Label holding the hash of the template a VM was created from.
pub const TEMPLATE_HASH_LABEL: &str = "virtrigaud.io/template-hash";
