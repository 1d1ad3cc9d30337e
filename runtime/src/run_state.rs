//! The mutable half of execution: one run's intermediates and scratch arena over a shared
//! [`Plan`]. Intermediates come from the engine's pool and go back to it after their last
//! reader, so once the pool is warm a run allocates nothing.

use crate::{
    engine::Engine,
    memory::ScratchArena,
    plan::{invoke, Plan, ValueRef},
    tensor::{Tensor, TensorRef},
};
use smallvec::SmallVec;
use std::{cell::RefCell, path::PathBuf, sync::Arc};

/// Why a run failed. The state stays usable: the next run starts clean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("model {path}: input '{name}': {reason}")]
    Input {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("model {path}: {node}: plugin '{plugin}' failed in operator {operator}: {message}")]
    Kernel {
        path: PathBuf,
        node: String,
        plugin: String,
        operator: String,
        message: String,
    },
    #[error("model {path}: {node}: {reason}")]
    Memory {
        path: PathBuf,
        node: String,
        reason: String,
    },
}

/// One run's intermediates over a plan; reuse it for the next run with the same shapes.
pub struct RunState {
    plan: Arc<Plan>,
    slots: Vec<Option<Tensor>>,
    /// Graph outputs that are graph inputs, copied so they outlive the caller's inputs.
    passthrough: Vec<Option<Tensor>>,
    arena: RefCell<ScratchArena>,
}

impl RunState {
    pub fn new(engine: &Engine, plan: Arc<Plan>) -> Self {
        RunState {
            slots: (0..plan.slots().len()).map(|_| None).collect(),
            passthrough: (0..plan.outputs().len()).map(|_| None).collect(),
            arena: RefCell::new(ScratchArena::new(
                engine.scratch_owner().clone(),
                engine.config().scratch_limit as usize,
            )),
            plan,
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Runs the plan on `inputs` (graph inputs in declaration order). The outputs stay in the
    /// state until the next run or [`RunState::release`].
    pub fn run(&mut self, engine: &Engine, inputs: &[TensorRef<'_>]) -> Result<(), RunError> {
        self.release(engine);
        self.check_inputs(inputs)?;
        let plan = self.plan.clone();
        let model = plan.model();
        for step in plan.steps() {
            let node = &model.nodes[step.node];
            let mut outputs: SmallVec<[Tensor; 2]> = SmallVec::new();
            for &slot in &step.outputs {
                let info = &plan.slots()[slot];
                let limit = engine.config().memory_limit;
                if engine.tracker().current_bytes() as u64 + info.bytes as u64 > limit {
                    self.release(engine);
                    return Err(RunError::Memory {
                        path: model.path().to_owned(),
                        node: node.describe(),
                        reason: format!(
                            "an output of {} bytes would exceed the deployment's memory limit of {limit} bytes (engine.memory_limit)",
                            info.bytes
                        ),
                    });
                }
                match engine.pool().get(info.dtype, &info.shape) {
                    Ok(t) => outputs.push(t),
                    Err(e) => {
                        self.release(engine);
                        return Err(RunError::Memory {
                            path: model.path().to_owned(),
                            node: node.describe(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
            let views: SmallVec<[Option<TensorRef<'_>>; 8]> = step
                .inputs
                .iter()
                .map(|&at| self.resolve(&plan, inputs, at))
                .collect();
            let result = invoke(
                engine,
                &step.kernel,
                &step.owner,
                &step.attributes,
                &views,
                &mut outputs,
                &self.arena,
            );
            drop(views);
            for (&slot, tensor) in step.outputs.iter().zip(outputs) {
                self.slots[slot] = Some(tensor);
            }
            if let Err(message) = result {
                self.release(engine);
                return Err(RunError::Kernel {
                    path: model.path().to_owned(),
                    node: node.describe(),
                    plugin: step.kernel.plugin_name().to_owned(),
                    operator: format!("{:?}", step.kernel),
                    message,
                });
            }
            for &slot in &step.release {
                if let Some(t) = self.slots[slot].take() {
                    engine.pool().put(t);
                }
            }
        }
        for (k, &at) in plan.outputs().iter().enumerate() {
            if let ValueRef::Input(i) = at {
                let input = inputs[i];
                let mut copy =
                    engine
                        .pool()
                        .get(input.dtype, input.shape)
                        .map_err(|e| RunError::Input {
                            path: model.path().to_owned(),
                            name: model.value_name(model.inputs[i]).to_owned(),
                            reason: e.to_string(),
                        })?;
                copy.bytes_mut().copy_from_slice(input.data);
                self.passthrough[k] = Some(copy);
            }
        }
        Ok(())
    }

    /// Graph output `k` of the last run.
    pub fn output(&self, k: usize) -> Option<TensorRef<'_>> {
        match *self.plan.outputs().get(k)? {
            ValueRef::Slot(s) => self.slots[s].as_ref().map(Tensor::as_ref),
            ValueRef::Constant(c) => Some(self.plan.constant(c)),
            ValueRef::Input(_) => self.passthrough[k].as_ref().map(Tensor::as_ref),
            ValueRef::Absent => None,
        }
    }

    /// Every graph output of the last run, in order.
    pub fn outputs(&self) -> impl Iterator<Item = TensorRef<'_>> + '_ {
        (0..self.plan.outputs().len()).filter_map(|k| self.output(k))
    }

    /// Returns every tensor the state holds to the pool.
    pub fn release(&mut self, engine: &Engine) {
        for t in self.slots.iter_mut().chain(&mut self.passthrough) {
            if let Some(t) = t.take() {
                engine.pool().put(t);
            }
        }
    }

    fn resolve<'a>(
        &'a self,
        plan: &'a Plan,
        inputs: &[TensorRef<'a>],
        at: ValueRef,
    ) -> Option<TensorRef<'a>> {
        match at {
            ValueRef::Absent => None,
            ValueRef::Input(i) => Some(inputs[i]),
            ValueRef::Constant(c) => Some(plan.constant(c)),
            ValueRef::Slot(s) => self.slots[s].as_ref().map(Tensor::as_ref),
        }
    }

    fn check_inputs(&self, inputs: &[TensorRef<'_>]) -> Result<(), RunError> {
        let model = self.plan.model();
        let error = |k: usize, reason: String| RunError::Input {
            path: model.path().to_owned(),
            name: model
                .inputs
                .get(k)
                .map_or("?", |&id| model.value_name(id))
                .to_owned(),
            reason,
        };
        let expected = self.plan.input_types();
        if inputs.len() != expected.len() {
            return Err(error(
                inputs.len().min(expected.len()),
                format!(
                    "the model takes {} inputs, {} were given",
                    expected.len(),
                    inputs.len()
                ),
            ));
        }
        for (k, (input, (dtype, shape))) in inputs.iter().zip(expected).enumerate() {
            if input.dtype != *dtype || input.shape != shape.as_slice() {
                return Err(error(
                    k,
                    format!(
                        "the plan expects {dtype} {shape:?}, got {} {:?}",
                        input.dtype, input.shape
                    ),
                ));
            }
            if Some(input.data.len()) != crate::tensor::byte_size(input.dtype, input.shape) {
                return Err(error(
                    k,
                    format!("{} bytes do not match {dtype} {shape:?}", input.data.len()),
                ));
            }
        }
        Ok(())
    }
}
