//! Calling one kernel: input and output views and attributes lent across the ABI, with the
//! host's allocator, scratch arena, threads and the step's prepared data. Shared by constant
//! folding and runs.

use crate::{
    engine::Engine,
    memory::{Owner, ScratchArena},
    onnx::NodeAttributes,
    plan::{Step, INLINE_INPUTS},
    plugin::{
        CallHost, CallValues, OperatorEntry, ShapedOutputs, StringOutputs, SubgraphRunner,
        SubgraphValues,
    },
    value::ValueView,
};
use opal_plugin_api::{
    operator::KernelCall,
    tensor::{TensorView, TensorViewMut},
};
use smallvec::SmallVec;
use std::cell::RefCell;

/// What a call reaches beyond its tensors: its node's subgraphs, the outputs it shapes, and
/// its outputs other than tensors, and the bytes of its string outputs.
#[derive(Default, Clone, Copy)]
pub(crate) struct CallScope<'a> {
    pub subgraphs: Option<&'a dyn SubgraphRunner>,
    pub subgraph_values: Option<&'a dyn SubgraphValues>,
    pub shaped: Option<&'a ShapedOutputs<'a>>,
    pub values: Option<&'a CallValues<'a>>,
    pub strings: Option<&'a StringOutputs>,
}

/// Runs `kernel` on `inputs` (values of any kind; `None`: an omitted optional input), writing `outputs`; the arena
/// is reset afterwards. `step` is the plan's step being run (`None` while folding constants),
/// whose constant inputs and prepared data the kernel may use. Errors are the plugin's message.
#[allow(clippy::too_many_arguments)]
pub(crate) fn invoke(
    engine: &Engine,
    kernel: &OperatorEntry,
    owner: &Owner,
    attributes: &NodeAttributes,
    inputs: &[Option<ValueView<'_>>],
    outputs: &[TensorViewMut<'_>],
    arena: &RefCell<ScratchArena>,
    step: Option<&Step>,
    scope: CallScope<'_>,
) -> Result<(), String> {
    let input_views: SmallVec<[TensorView<'_>; INLINE_INPUTS]> = inputs
        .iter()
        .map(|v| match v {
            Some(ValueView::Tensor(t)) => t.to_abi(),
            _ => TensorView::ABSENT,
        })
        .collect();
    let host = CallHost {
        plugin: owner,
        arena,
        threads: engine.threads(),
        constant_inputs: step.map_or(0, |step| step.constant_inputs),
        prepared: step.map(|step| &step.prepared),
        fusion: step
            .and_then(|step| step.fusion.as_ref())
            .map_or(&[], |f| &f.description),
        isa: engine.isa().isa,
        subgraphs: scope.subgraphs,
        shaped: scope.shaped,
        engine: Some(engine),
        values_in: inputs,
        values_out: scope.values,
        subgraph_values: scope.subgraph_values,
        strings: scope.strings,
    };
    let result = attributes.with_abi(|attributes| {
        let mut call = KernelCall {
            inputs: input_views.as_slice().into(),
            outputs: outputs.into(),
            attributes: attributes.into(),
            host: host.services(),
        };
        kernel.compute(&mut call)
    });
    arena.borrow_mut().reset();
    result
}
