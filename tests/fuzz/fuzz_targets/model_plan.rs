//! Decodes arbitrary bytes as an ONNX model and, when they decode, compiles a plan with the workspace's real plugins and runs it when its inputs are small.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use opal_fuzz::{fuzz_path, plugin_engine};
use opal_plugin_api::DType;
use opal_runtime::{
    onnx::{Dim, Model},
    synthetic::synthetic_tensor,
    tensor::{byte_size, Shape, Tensor, TensorRef},
    Engine, Plan, RunState,
};
use std::sync::Arc;

/// Plans whose inputs add up to more bytes than this are compiled but not run (the light zoo's
/// image models, say: a run would take most of a second).
const RUN_INPUT_BYTES: usize = 64 << 10;

/// Plans whose slab is larger than this are compiled but not run.
const RUN_SLAB_BYTES: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let engine = plugin_engine();
    let loaded = Model::from_bytes(
        Bytes::copy_from_slice(data),
        &fuzz_path("model.onnx"),
        engine.weights_owner(),
    );
    let model = match loaded {
        Ok(model) => Arc::new(model),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if let Some(types) = declared_input_types(&model) {
        match Plan::compile(engine, &model, &types) {
            Ok(plan) => run_if_small(engine, plan, &types),
            Err(e) => check_error(&e.to_string()),
        }
    }
    drop(model);
    engine.pool().clear();
    assert_eq!(
        engine.tracker().current_bytes(),
        0,
        "memory is still accounted after the model, its plan and its run were dropped: {:?}",
        engine.tracker().owners()
    );
});

/// The inputs' declared dtypes and shapes, symbolic and unknown dims taken as 1; `None` when
/// an input declares no dtype or no shape.
fn declared_input_types(model: &Model) -> Option<Vec<(DType, Shape)>> {
    model
        .inputs
        .iter()
        .map(|&id| {
            let value = &model.values[id];
            let shape = value
                .shape
                .as_ref()?
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbol(_) | Dim::Unknown => 1,
                })
                .collect();
            Some((value.dtype?, shape))
        })
        .collect()
}

/// Runs `plan` once on synthetic inputs when they and its slab are small.
fn run_if_small(engine: &Engine, plan: Plan, types: &[(DType, Shape)]) {
    let input_bytes = types
        .iter()
        .map(|(dtype, shape)| byte_size(*dtype, shape).unwrap_or(usize::MAX))
        .fold(0usize, usize::saturating_add);
    if input_bytes > RUN_INPUT_BYTES || plan.slab_bytes() > RUN_SLAB_BYTES {
        return;
    }
    let Some(inputs) = types
        .iter()
        .enumerate()
        .map(|(k, (dtype, shape))| synthetic_tensor(*dtype, shape, k as u64, engine.tensor_owner()))
        .collect::<Option<Vec<Tensor>>>()
    else {
        return;
    };
    let views: Vec<TensorRef<'_>> = inputs.iter().map(Tensor::as_ref).collect();
    let mut state = RunState::new(engine, Arc::new(plan));
    if let Err(e) = state.run(engine, &views) {
        check_error(&e.to_string());
    }
    state.release(engine);
}

/// Fails on an error that is a plugin's caught panic (its catch turns a panic into an error
/// starting `panicked:`): a kernel or inference function must refuse bad input with a message.
fn check_error(message: &str) {
    assert!(!message.is_empty());
    assert!(
        !message.contains("panicked: "),
        "a plugin panicked: {message}"
    );
}
