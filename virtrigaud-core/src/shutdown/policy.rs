//! How one shutdown should behave: the grace period and the budgets inside it.

use std::time::Duration;

/// Which channel to ask the guest through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChannelPreference {
    /// The agent when a probe says it is connected, ACPI otherwise.
    #[default]
    Auto,
    /// Only the agent; what happens without one is [`ShutdownPolicy::on_missing_agent`].
    AgentOnly,
    /// Only the ACPI power button.
    AcpiOnly,
}

/// What to do when [`ChannelPreference::AgentOnly`] finds no agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingAgent {
    /// Fall back to ACPI when the provider has it (else power off).
    #[default]
    FallBackToAcpi,
    /// Power off at once (outcome `Forced { NoGuestTools }`).
    PowerOff,
    /// Give up and leave the VM running (outcome `Failed`, kind Unsupported).
    Fail,
}

/// What to do with a paused guest, which cannot react to a shutdown request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PausedGuest {
    /// Resume it, then shut it down gracefully within the same grace period.
    #[default]
    Resume,
    /// Power it off at once.
    PowerOff,
    /// Give up and leave it paused (outcome `Failed`, kind InvalidState).
    Fail,
}

/// A pre-stop hook: an argv run through the manager's [`super::PreStopExecutor`] before the
/// guest is signalled. No implicit shell: `["/bin/sh", "-c", "…"]` if you want one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreStopHook {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Its time budget; the engine also cuts it at half the grace left when it starts, so
    /// the guest is always signalled with at least the other half to go.
    pub budget: Duration,
}

impl PreStopHook {
    /// A hook running `command` with a budget of `budget`.
    pub fn new(command: Vec<String>, budget: Duration) -> Self {
        PreStopHook { command, budget }
    }
}

/// The policy of one graceful shutdown.
///
/// The defaults follow the seeds: a 60 s grace (`OffGraceful`'s default timeout); use
/// [`ShutdownPolicy::kubevirt_default`] for KubeVirt's 30 s.
///
/// ```
/// use std::time::Duration;
/// use virtrigaud_core::shutdown::ShutdownPolicy;
/// let p = ShutdownPolicy::with_grace(Duration::from_secs(120));
/// assert_eq!(p.grace, Duration::from_secs(120));
/// assert_eq!(ShutdownPolicy::default().grace, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownPolicy {
    /// The grace period: from the start of the shutdown to the hard power-off. Zero powers
    /// off at once.
    pub grace: Duration,
    /// Channel choice.
    pub channel: ChannelPreference,
    /// What to do without an agent when only the agent will do.
    pub on_missing_agent: MissingAgent,
    /// What to do with a paused guest.
    pub on_paused: PausedGuest,
    /// Optional pre-stop hook.
    pub pre_stop: Option<PreStopHook>,
    /// Budget of the agent probe.
    pub probe_budget: Duration,
    /// Budget of one shutdown request (a blocking agent call never eats the grace).
    pub signal_budget: Duration,
    /// Budget of one power-state read.
    pub read_budget: Duration,
    /// First interval before re-sending the request while the guest still runs; it doubles
    /// after each re-send. `None` never re-sends.
    pub resignal_interval: Option<Duration>,
    /// First polling interval when the provider cannot push state changes.
    pub poll_initial: Duration,
    /// Longest polling interval.
    pub poll_max: Duration,
    /// Budget of the hard power-off stage (retries of retryable failures included).
    pub force_budget: Duration,
}

impl Default for ShutdownPolicy {
    fn default() -> Self {
        ShutdownPolicy {
            grace: Duration::from_secs(60),
            channel: ChannelPreference::Auto,
            on_missing_agent: MissingAgent::FallBackToAcpi,
            on_paused: PausedGuest::Resume,
            pre_stop: None,
            probe_budget: Duration::from_secs(2),
            signal_budget: Duration::from_secs(5),
            read_budget: Duration::from_secs(5),
            resignal_interval: Some(Duration::from_secs(5)),
            poll_initial: Duration::from_millis(250),
            poll_max: Duration::from_secs(2),
            force_budget: Duration::from_secs(30),
        }
    }
}

impl ShutdownPolicy {
    /// The default policy with a grace of `grace`.
    pub fn with_grace(grace: Duration) -> Self {
        ShutdownPolicy {
            grace,
            ..Default::default()
        }
    }
    /// KubeVirt's default: 30 s grace.
    pub fn kubevirt_default() -> Self {
        Self::with_grace(Duration::from_secs(30))
    }
    /// An immediate hard power-off (grace 0).
    pub fn force() -> Self {
        Self::with_grace(Duration::ZERO)
    }
    /// Sets the grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
    /// Sets the channel preference.
    pub fn channel(mut self, channel: ChannelPreference) -> Self {
        self.channel = channel;
        self
    }
    /// Sets what happens without an agent.
    pub fn on_missing_agent(mut self, action: MissingAgent) -> Self {
        self.on_missing_agent = action;
        self
    }
    /// Sets what happens with a paused guest.
    pub fn on_paused(mut self, action: PausedGuest) -> Self {
        self.on_paused = action;
        self
    }
    /// Sets a pre-stop hook.
    pub fn pre_stop(mut self, hook: PreStopHook) -> Self {
        self.pre_stop = Some(hook);
        self
    }
    /// Sets the re-send interval (`None`: never re-send).
    pub fn resignal_interval(mut self, interval: Option<Duration>) -> Self {
        self.resignal_interval = interval;
        self
    }
    /// Sets the hard power-off budget.
    pub fn force_budget(mut self, budget: Duration) -> Self {
        self.force_budget = budget;
        self
    }
    /// Sets the polling intervals used without a push-capable provider.
    pub fn polling(mut self, initial: Duration, max: Duration) -> Self {
        self.poll_initial = initial;
        self.poll_max = max.max(initial);
        self
    }

    /// The longest duration any field of a policy may hold (365 days): longer values are
    /// rejected by [`ShutdownPolicy::validate`], so no deadline arithmetic can overflow.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

    /// Checks the policy: a pre-stop hook needs a program, polling a non-zero interval, and
    /// no duration may exceed [`ShutdownPolicy::MAX_DURATION`]. Errors are
    /// [`crate::ErrorKind::InvalidSpec`] naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let durations = [
            ("grace", Some(self.grace)),
            ("probe_budget", Some(self.probe_budget)),
            ("signal_budget", Some(self.signal_budget)),
            ("read_budget", Some(self.read_budget)),
            ("resignal_interval", self.resignal_interval),
            ("poll_initial", Some(self.poll_initial)),
            ("poll_max", Some(self.poll_max)),
            ("force_budget", Some(self.force_budget)),
            ("pre_stop.budget", self.pre_stop.as_ref().map(|h| h.budget)),
        ];
        for (field, value) in durations {
            if let Some(d) = value
                && d > Self::MAX_DURATION
            {
                return Err(crate::Error::invalid_spec(format!(
                    "{field}: {} is longer than the maximum of 365 days",
                    humantime::format_duration(d)
                )));
            }
        }
        if let Some(hook) = &self.pre_stop
            && hook.command.first().is_none_or(|p| p.is_empty())
        {
            return Err(crate::Error::invalid_spec(
                "lifecycle.preStop.exec.command: must name a program (argv[0] is empty)",
            ));
        }
        if self.poll_initial.is_zero() {
            return Err(crate::Error::invalid_spec(
                "poll_initial: must be greater than zero",
            ));
        }
        Ok(())
    }
}
