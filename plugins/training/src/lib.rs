//! opal's training plugin: the optimiser steps of the `ai.onnx.preview.training` domain —
//! Adagrad, Adam and Momentum (standard or Nesterov) — as ONNX operators behind the plugin ABI.
//! Each node updates any number of parameter tensors in one call: its inputs are the learning
//! rate, the step count, then one group of tensors per kind (all parameters, all gradients,
//! then the optimiser's state), and its outputs the new parameters and states, grouped alike.
//!
//! Updates compute in f64 whatever the tensors hold (f32 or f64). No kernel allocates on the
//! heap.

mod adagrad;
mod adam;
mod momentum;
mod optimizer;

pub use adagrad::Adagrad;
pub use adam::Adam;
pub use momentum::Momentum;

/// The domain of the training operators.
const TRAINING_DOMAIN: &str = "ai.onnx.preview.training";

opal_plugin_api::export_plugin! {
    name: "training",
    version: env!("CARGO_PKG_VERSION"),
    operators: [Adagrad, Adam, Momentum],
}
