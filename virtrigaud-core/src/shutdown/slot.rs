//! [`Slot`]: what one shutdown in flight shares between its task and every handle on it.
//!
//! One small allocation per shutdown: the current deadline (only ever moved earlier), the
//! handles attached to it, the cancellation flag and, at the end, the report. The shutdown is
//! cancelled only when every attached handle has cancelled (a handle dropped without
//! cancelling detaches, and leaves the decision to the others). The task is woken through `driver`
//! (a single waiter, so a wake-up sent while it is busy is kept as a permit); callers
//! waiting for the report are woken through `done`.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::outcome::ShutdownReport;

#[derive(Debug)]
struct State {
    deadline: Instant,
    /// The deadline moved since the task last took it.
    shortened: bool,
    /// Handles attached and not cancelled.
    attached: usize,
    /// Some handle asked to cancel.
    cancel_requested: bool,
    cancelled: bool,
    report: Option<ShutdownReport>,
    abandoned: bool,
}

/// The shared state of one shutdown in flight.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<State>,
    driver: Notify,
    done: Notify,
}

impl Slot {
    pub(crate) fn new(deadline: Instant) -> Self {
        Slot {
            state: Mutex::new(State {
                deadline,
                shortened: false,
                attached: 0,
                cancel_requested: false,
                cancelled: false,
                report: None,
                abandoned: false,
            }),
            driver: Notify::new(),
            done: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few plain fields, consistent after every write: a panic elsewhere
        // while the lock was held cannot have left it half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.lock().deadline
    }

    /// The current deadline, taken by the task: a later move is reported by
    /// [`Slot::take_shortened`].
    pub(crate) fn take_deadline(&self) -> Instant {
        let mut s = self.lock();
        s.shortened = false;
        s.deadline
    }

    /// The new deadline, if it moved since the task last took it (then taken).
    pub(crate) fn take_shortened(&self) -> Option<Instant> {
        let mut s = self.lock();
        std::mem::take(&mut s.shortened).then_some(s.deadline)
    }

    /// Moves the deadline to `requested` if that is earlier; wakes the task if it moved.
    pub(crate) fn shorten(&self, requested: Instant) -> bool {
        let moved = {
            let mut s = self.lock();
            if requested < s.deadline && s.report.is_none() {
                s.deadline = requested;
                s.shortened = true;
                true
            } else {
                false
            }
        };
        if moved {
            self.driver.notify_one();
        }
        moved
    }

    /// A handle attaches.
    pub(crate) fn attach(&self) {
        self.lock().attached += 1;
    }

    /// A handle detaches, cancelling or not. The task is asked to stop sending anything once
    /// some handle cancelled and none is left that did not.
    pub(crate) fn detach(&self, cancel: bool) {
        let cancel_now = {
            let mut s = self.lock();
            s.attached = s.attached.saturating_sub(1);
            s.cancel_requested |= cancel;
            let now = s.cancel_requested && s.attached == 0 && !s.cancelled;
            if now {
                s.cancelled = true;
            }
            now
        };
        if cancel_now {
            self.driver.notify_one();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Whether the shutdown has ended (with a report, or abandoned).
    pub(crate) fn is_finished(&self) -> bool {
        let s = self.lock();
        s.report.is_some() || s.abandoned
    }

    /// Resolves when the task has been asked to wake up (deadline moved or cancelled).
    pub(crate) async fn woken(&self) {
        self.driver.notified().await;
    }

    /// Resolves once the task has been cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            self.driver.notified().await;
        }
    }

    /// Publishes the report and wakes every waiter.
    pub(crate) fn finish(&self, report: ShutdownReport) {
        self.lock().report = Some(report);
        self.done.notify_waiters();
    }

    /// Marks the shutdown abandoned (its task was dropped before a report) and wakes every
    /// waiter. Does nothing once a report is in.
    pub(crate) fn abandon(&self) {
        {
            let mut s = self.lock();
            if s.report.is_some() {
                return;
            }
            s.abandoned = true;
        }
        self.done.notify_waiters();
    }

    /// Waits for the report.
    pub(crate) async fn report(&self) -> ShutdownReport {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                if let Some(report) = &s.report {
                    return report.clone();
                }
                if s.abandoned {
                    return ShutdownReport::abandoned();
                }
            }
            notified.await;
        }
    }
}
