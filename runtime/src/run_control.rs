//! Stopping a run from outside it: a flag the run checks at every kernel boundary, and the step
//! it is in, so a run that does not come back can be named.

use crate::plan::Plan;
use parking_lot::Mutex;
use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

/// No step is running.
const IDLE: usize = usize::MAX;

/// A handle shared by a run and whoever may stop it. Cloning shares the same run.
#[derive(Clone, Default)]
pub struct RunControl(Arc<Shared>);

struct Shared {
    cancelled: AtomicBool,
    /// The step the run is in, or [`IDLE`] between steps and outside runs.
    step: AtomicUsize,
    /// The plan the run follows (set as it starts), to name its steps.
    plan: Mutex<Option<Arc<Plan>>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            cancelled: AtomicBool::new(false),
            step: AtomicUsize::new(IDLE),
            plan: Mutex::new(None),
        }
    }
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop before its next kernel. A kernel already running finishes first.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// The step the run is in, described as `node 'name' (Op) of plugin 'p'`, or `None`
    /// between steps.
    pub fn current_step(&self) -> Option<String> {
        let step = self.0.step.load(Ordering::Acquire);
        if step == IDLE {
            return None;
        }
        let plan = self.0.plan.lock();
        let plan = plan.as_ref()?;
        let step = plan.steps().get(step)?;
        Some(format!(
            "{} of plugin '{}'",
            plan.describe_step(step),
            step.kernel.plugin_name()
        ))
    }

    pub(crate) fn start(&self, plan: &Arc<Plan>) {
        let mut current = self.0.plan.lock();
        if !current.as_ref().is_some_and(|p| Arc::ptr_eq(p, plan)) {
            *current = Some(plan.clone());
        }
    }

    pub(crate) fn enter(&self, step: usize) {
        self.0.step.store(step, Ordering::Release);
    }

    pub(crate) fn leave(&self) {
        self.0.step.store(IDLE, Ordering::Release);
    }
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("cancelled", &self.is_cancelled())
            .field("step", &self.current_step())
            .finish()
    }
}
