//! Clones: full and linked (linked only where capable), customization through the
//! provider's [`crate::Cloner`], optional power-on; a failed clone leaves nothing behind.

use tokio::time::Instant;

use super::events::{EventReason, ObjectKind};
use super::metrics;
use super::orchestrator::{Orchestrator, now_rfc3339};
use crate::clone::{CloneOptions, CloneResult, Customization, NetworkCustomization};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    CloneCustomization, ClonePhase, Condition, VMClone, condition_types, set_condition,
};
use crate::provider::{DeleteOptions, ListOptions};
use crate::vm::VmId;

/// Converts the model's customization into the provider contract's. A cloud-init
/// `secretRef` needs the secret's content: pass it as `secret_user_data`.
pub fn customization_from_model(
    c: &CloneCustomization,
    secret_user_data: Option<&str>,
) -> Result<Customization> {
    let mut out = Customization {
        hostname: c.hostname.clone(),
        networks: c
            .networks
            .iter()
            .map(|n| NetworkCustomization {
                name: n.name.clone(),
                ip_address: n.ip_address.clone(),
                gateway: n.gateway.clone(),
                dns: n.dns.clone(),
            })
            .collect(),
        cloud_init_user_data: None,
    };
    if let Some(ci) = c.user_data.as_ref().and_then(|u| u.cloud_init.as_ref()) {
        out.cloud_init_user_data = match (&ci.inline, &ci.secret_ref, secret_user_data) {
            (Some(inline), _, _) => Some(inline.clone()),
            (None, Some(_), Some(data)) => Some(data.to_owned()),
            (None, Some(r), None) => {
                return Err(Error::invalid_spec(format!(
                    "customization.userData.cloudInit.secretRef: the content of secret {} must be supplied",
                    r.name
                )));
            }
            (None, None, _) => None,
        };
    }
    Ok(out)
}

/// What [`Orchestrator::clone_vm`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloneReport {
    /// The provider's result.
    pub result: CloneResult,
    /// Whether the clone was powered on.
    pub powered_on: bool,
}

pub(crate) fn set_phase(c: &mut VMClone, phase: ClonePhase, message: Option<String>) {
    let st = c.status.get_or_insert_with(Default::default);
    st.phase = Some(phase);
    st.message = message;
    let now = now_rfc3339();
    let reason = format!("{phase:?}");
    set_condition(
        &mut st.conditions,
        Condition::new(
            condition_types::CLONING,
            phase == ClonePhase::Cloning,
            reason.clone(),
            "",
        )
        .at(now.clone()),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            condition_types::CUSTOMIZING,
            phase == ClonePhase::Customizing,
            reason.clone(),
            "",
        )
        .at(now.clone()),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            condition_types::READY,
            phase == ClonePhase::Ready,
            reason,
            st.message.clone().unwrap_or_default(),
        )
        .at(now),
    );
}

impl Orchestrator {
    /// Clones `source` as described by `clone` (target name, linked, powerOn,
    /// customization), moving `clone.status` through `Cloning`, `Customizing` and `Ready`
    /// (or `Failed`). `secret_user_data` is the content of a cloud-init `secretRef`, if any.
    ///
    /// Linked clones need both the provider's and the source VM's capability; otherwise
    /// the error is [`ErrorKind::Unsupported`] and nothing is created. Customization that
    /// the provider cannot apply, or silently did not apply, fails the clone. Any failure
    /// after the copy deletes the half-made clone; if even that fails the error names the
    /// leftover VM.
    pub async fn clone_vm(
        &self,
        source: &VmId,
        clone: &mut VMClone,
        secret_user_data: Option<&str>,
    ) -> Result<CloneReport> {
        let started = Instant::now();
        let linked = clone.spec.linked.unwrap_or(false);
        let name = clone.metadata.name.clone();
        set_phase(clone, ClonePhase::Cloning, None);
        self.events.emit(
            ObjectKind::VMClone,
            &name,
            EventReason::CloneStarted,
            format!(
                "cloning {source} into {} ({})",
                clone.spec.target.name,
                if linked { "linked" } else { "full" }
            ),
        );
        let res = self.clone_inner(source, clone, secret_user_data).await;
        metrics::clone(
            linked,
            self.ptype(),
            metrics::outcome_of(&res),
            started.elapsed(),
        );
        match &res {
            Ok(r) => {
                clone.status.get_or_insert_with(Default::default).target_id =
                    Some(r.result.vm.to_string());
                set_phase(clone, ClonePhase::Ready, None);
                self.events.emit(
                    ObjectKind::VMClone,
                    &name,
                    EventReason::CloneCompleted,
                    format!("VM clone {} created successfully", r.result.vm),
                );
            }
            Err(e) => {
                set_phase(clone, ClonePhase::Failed, Some(e.to_string()));
                self.events.emit(
                    ObjectKind::VMClone,
                    &name,
                    EventReason::CloneFailed,
                    e.to_string(),
                );
            }
        }
        res
    }

    async fn clone_inner(
        &self,
        source: &VmId,
        clone: &mut VMClone,
        secret_user_data: Option<&str>,
    ) -> Result<CloneReport> {
        let target = clone.spec.target.name.clone();
        let err = |kind: ErrorKind, msg: String| {
            Error::new(kind, msg)
                .with_provider(self.ptype())
                .with_operation("clone")
                .with_resource(source.to_string())
        };
        if target.is_empty() {
            return Err(err(
                ErrorKind::InvalidSpec,
                "target.name: must not be empty".into(),
            ));
        }
        let caps = self.provider.capabilities();
        let cloner = self.provider.cloner().ok_or_else(|| {
            err(
                ErrorKind::Unsupported,
                format!("provider {} cannot clone VMs", self.ptype()),
            )
        })?;
        let linked = clone.spec.linked.unwrap_or(false);
        if linked {
            if !caps.linked_clones {
                return Err(err(
                    ErrorKind::Unsupported,
                    format!(
                        "provider {} does not support linked clones; set linked: false for a full clone",
                        self.ptype()
                    ),
                ));
            }
            let vcaps = self.provider.vm_capabilities(source).await?;
            if !vcaps.linked_clone_source {
                return Err(err(
                    ErrorKind::Unsupported,
                    format!(
                        "VM {source} cannot be the source of a linked clone (it needs a snapshot or template on this provider); set linked: false for a full clone"
                    ),
                ));
            }
        } else if !caps.full_clones {
            return Err(err(
                ErrorKind::Unsupported,
                format!("provider {} does not support full clones", self.ptype()),
            ));
        }
        let customization = match &clone.spec.customization {
            Some(c) => {
                Some(customization_from_model(c, secret_user_data)?).filter(|c| !c.is_empty())
            }
            None => None,
        };
        if customization.is_some() && !caps.clone_customization {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "provider {} cannot customize clones (hostname, networks, cloud-init)",
                    self.ptype()
                ),
            ));
        }
        if customization
            .as_ref()
            .is_some_and(|c| c.cloud_init_user_data.is_some())
            && !caps.clone_user_data
        {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "customization.userData.cloudInit: provider {} cannot hand a clone cloud-init user data",
                    self.ptype()
                ),
            ));
        }
        let power_on = clone.spec.power_on.unwrap_or(false);
        let mut opts = CloneOptions::new(target.clone())
            .linked(linked)
            .power_on(false);
        opts.customization = customization.clone();
        let result = match cloner.clone_vm(source, &opts).await {
            Ok(r) => r,
            Err(e) => {
                // The contract says providers clean up; make sure nothing is left anyway.
                let leftover = self.find_vm_by_name(&target).await;
                if e.is(ErrorKind::AlreadyExists) {
                    return Err(e.context(self.ptype(), "clone"));
                }
                if let Some(vm) = leftover {
                    return Err(self.cleanup_clone(&vm, e).await);
                }
                return Err(e.context(self.ptype(), "clone"));
            }
        };
        let vm = result.vm.clone();
        if customization.is_some() {
            set_phase(clone, ClonePhase::Customizing, None);
            self.events.emit(
                ObjectKind::VMClone,
                &clone.metadata.name,
                EventReason::CloneCustomizing,
                "applying customization",
            );
            if !result.customized {
                let e = err(
                    ErrorKind::Unsupported,
                    format!(
                        "provider {} did not apply the requested customization to {vm}",
                        self.ptype()
                    ),
                );
                return Err(self.cleanup_clone(&vm, e).await);
            }
        }
        if linked && !result.linked {
            let e = err(
                ErrorKind::Internal,
                format!("a linked clone was requested but the provider made a full clone {vm}"),
            );
            return Err(self.cleanup_clone(&vm, e).await);
        }
        if power_on && let Err(e) = self.start_with_retry(&vm).await {
            let e = err(
                e.kind(),
                format!("the clone {vm} could not be powered on: {e}"),
            );
            return Err(self.cleanup_clone(&vm, e).await);
        }
        Ok(CloneReport {
            result,
            powered_on: power_on,
        })
    }

    async fn find_vm_by_name(&self, name: &str) -> Option<VmId> {
        let vms = self.provider.list_vms(&ListOptions::default()).await.ok()?;
        vms.into_iter().find(|d| d.name == name).map(|d| d.id)
    }

    /// Powers off and deletes a half-made clone; returns the error to report.
    async fn cleanup_clone(&self, vm: &VmId, cause: Error) -> Error {
        let res = async {
            if self.provider.power_state(vm).await?.is_active() {
                self.hard_off(vm).await?;
            }
            match self
                .provider
                .delete(vm, &DeleteOptions { delete_disks: true })
                .await
            {
                Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
                other => other,
            }
        }
        .await;
        let res = match res {
            Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
            other => other,
        };
        match res {
            Ok(()) => {
                self.events.emit(ObjectKind::VirtualMachine, vm.as_str(), EventReason::CloneCleanedUp, format!("deleted the half-made clone: {cause}"));
                Error::new(cause.kind(), format!("{}; the half-made clone {vm} was deleted", cause.message()))
                    .with_provider(self.ptype()).with_operation("clone").with_resource(vm.to_string())
            }
            Err(ce) => Error::new(cause.kind(), format!(
                "{}; deleting the half-made clone {vm} also failed ({ce}): it is LEFT BEHIND and must be deleted", cause.message()
            )).with_provider(self.ptype()).with_operation("clone").with_resource(vm.to_string()),
        }
    }
}
