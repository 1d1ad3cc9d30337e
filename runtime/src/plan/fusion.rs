//! Fusing steps: each step whose operator can fuse is offered the steps that consume its output,
//! earliest first, and grows into one kernel call while its operator accepts them. A group is
//! kept only as far as it is closed — every value computed inside it, but the last, is read
//! only inside it and is not a graph output — and runs where its last member ran, when all its
//! inputs exist. The host decides nothing about operators: the plugin says what it absorbs.

use super::{constant_mask, Fusion, SlotInfo, Step, ValueRef, INLINE_INPUTS};
use crate::{
    onnx::Model,
    tensor::{Shape, TensorRef},
};
use abi_stable::std_types::{RNone, RSome};
use opal_plugin_api::{
    fusion::{FuseCall, FuseCandidate, FusedOperand},
    infer::InferInput,
    DType, OutputType,
};
use smallvec::SmallVec;

/// What the pass needs to describe a step input to a plugin.
pub(super) struct ValueTypes<'a> {
    pub model: &'a Model,
    pub slots: &'a [SlotInfo],
    pub input_types: &'a [(DType, Shape)],
    pub constant: &'a dyn Fn(usize) -> TensorRef<'a>,
}

/// A step grown by the nodes it absorbed.
#[derive(Clone)]
struct Group {
    /// The absorbed steps, in the order they were absorbed.
    members: Vec<usize>,
    /// Their nodes in the model.
    nodes: Vec<usize>,
    /// The slots of the values computed inside: the leader's output, then each member's.
    values: Vec<usize>,
    /// The leader's inputs, then those its members bring.
    inputs: SmallVec<[ValueRef; 4]>,
    description: Vec<u8>,
}

/// Fuses `steps` (in run order) and returns the new run order.
pub(super) fn fuse_steps(steps: Vec<Step>, types: &ValueTypes<'_>) -> Vec<Step> {
    let mut readers: Vec<SmallVec<[usize; 2]>> = vec![SmallVec::new(); types.slots.len()];
    for (s, step) in steps.iter().enumerate() {
        for input in step.reads() {
            if let ValueRef::Slot(slot) = input {
                readers[slot].push(s);
            }
        }
    }
    let mut absorbed_by: Vec<Option<usize>> = vec![None; steps.len()];
    let mut groups: Vec<Option<Group>> = vec![None; steps.len()];
    for leader in 0..steps.len() {
        if absorbed_by[leader].is_some() || !steps[leader].kernel.can_fuse() {
            continue;
        }
        if let Some(group) = grow(leader, &steps, &readers, &absorbed_by, types) {
            for &member in &group.members {
                absorbed_by[member] = Some(leader);
            }
            groups[leader] = Some(group);
        }
    }
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut fused = Vec::with_capacity(steps.len());
    for s in 0..steps.len() {
        match absorbed_by[s] {
            Some(leader) => {
                let Some(group) = groups[leader].take_if(|g| g.members.last() == Some(&s)) else {
                    continue;
                };
                let (Some(mut step), Some(last)) = (steps[leader].take(), steps[s].take()) else {
                    continue;
                };
                step.constant_inputs = constant_mask(&group.inputs);
                step.inputs = group.inputs;
                step.outputs = last.outputs;
                step.fusion = Some(Fusion {
                    nodes: group.nodes,
                    description: group.description,
                });
                fused.push(step);
            }
            None if groups[s].is_some() => {}
            None => fused.extend(steps[s].take()),
        }
    }
    fused
}

/// A step with one output of known shape: one that can lead or join a group.
fn fusable(step: &Step) -> bool {
    !step.infer_at_run_time && step.outputs.len() == 1
}

/// The largest closed group `leader` grows into, if it absorbs anything.
fn grow(
    leader: usize,
    steps: &[Step],
    readers: &[SmallVec<[usize; 2]>],
    absorbed_by: &[Option<usize>],
    types: &ValueTypes<'_>,
) -> Option<Group> {
    let lead = &steps[leader];
    if !fusable(lead) {
        return None;
    }
    let mut group = Group {
        members: Vec::new(),
        nodes: Vec::new(),
        values: vec![lead.outputs[0]],
        inputs: lead.inputs.clone(),
        description: Vec::new(),
    };
    let mut closed: Option<Group> = None;
    loop {
        let in_group = |s: usize| s == leader || group.members.contains(&s);
        let Some(next) = group
            .values
            .iter()
            .flat_map(|&slot| readers[slot].iter().copied())
            .filter(|&s| !in_group(s))
            .min()
        else {
            break;
        };
        let candidate = &steps[next];
        if absorbed_by[next].is_some() || !fusable(candidate) {
            break;
        }
        let mut inputs = group.inputs.clone();
        let operands: SmallVec<[FusedOperand; 4]> = candidate
            .inputs
            .iter()
            .map(|&at| match at {
                ValueRef::Absent => FusedOperand::Absent,
                ValueRef::Slot(slot) if group.values.contains(&slot) => {
                    FusedOperand::Value(group.values.iter().position(|&v| v == slot).unwrap_or(0))
                }
                at => FusedOperand::Input(match inputs.iter().position(|&i| i == at) {
                    Some(index) => index,
                    None => {
                        inputs.push(at);
                        inputs.len() - 1
                    }
                }),
            })
            .collect();
        if inputs.len() > INLINE_INPUTS {
            break;
        }
        let Some(answer) = offer(lead, candidate, &group, &inputs, &operands, types) else {
            break;
        };
        group.members.push(next);
        group.nodes.push(candidate.node);
        group.values.push(candidate.outputs[0]);
        group.inputs = inputs;
        group.description = answer;
        if is_closed(&group, leader, readers, types) {
            closed = Some(group.clone());
        }
    }
    closed
}

/// Whether every value of `group` but the last is read only inside it and is no graph output.
fn is_closed(
    group: &Group,
    leader: usize,
    readers: &[SmallVec<[usize; 2]>],
    types: &ValueTypes<'_>,
) -> bool {
    let inner = &group.values[..group.values.len() - 1];
    inner.iter().all(|&slot| {
        let is_output = types.slots[slot]
            .value
            .is_some_and(|v| types.model.outputs.contains(&v));
        !is_output
            && readers[slot]
                .iter()
                .all(|&s| s == leader || group.members.contains(&s))
    })
}

/// Asks the leader's operator whether it absorbs `candidate`; its description if it does.
fn offer(
    lead: &Step,
    candidate: &Step,
    group: &Group,
    inputs: &[ValueRef],
    operands: &[FusedOperand],
    types: &ValueTypes<'_>,
) -> Option<Vec<u8>> {
    let model = types.model;
    let node = &model.nodes[candidate.node];
    let opset = model.opset(&node.domain)?;
    let input_types: Vec<(DType, Vec<i64>, Option<TensorRef<'_>>)> =
        inputs.iter().map(|&at| describe(at, types)).collect();
    let infer_inputs: Vec<InferInput<'_>> = input_types
        .iter()
        .map(|(dtype, shape, value)| InferInput {
            dtype: *dtype,
            shape: shape.as_slice().into(),
            value: match value {
                Some(v) => RSome(v.to_abi()),
                None => RNone,
            },
        })
        .collect();
    let values: Vec<OutputType> = group
        .values
        .iter()
        .map(|&slot| slot_type(slot, types))
        .collect();
    let output = slot_type(candidate.outputs[0], types);
    lead.attributes.with_abi(|lead_attributes| {
        candidate.attributes.with_abi(|candidate_attributes| {
            lead.kernel.fuse(&FuseCall {
                inputs: infer_inputs.as_slice().into(),
                attributes: lead_attributes.into(),
                node_inputs: lead.inputs.len(),
                values: values.as_slice().into(),
                state: group.description.as_slice().into(),
                candidate: FuseCandidate {
                    domain: node.domain.as_str().into(),
                    op_type: node.op_type.as_str().into(),
                    opset,
                    attributes: candidate_attributes.into(),
                    operands: operands.into(),
                    output,
                },
            })
        })
    })
}

fn slot_type(slot: usize, types: &ValueTypes<'_>) -> OutputType {
    let info = &types.slots[slot];
    OutputType::fixed(info.dtype, info.shape.as_deref().unwrap_or_default())
}

/// The dtype, dims and (for constants) value of a step input.
fn describe<'a>(at: ValueRef, types: &ValueTypes<'a>) -> (DType, Vec<i64>, Option<TensorRef<'a>>) {
    let dims = |shape: &[usize]| shape.iter().map(|&d| d as i64).collect::<Vec<_>>();
    match at {
        ValueRef::Absent => (DType::UNDEFINED, Vec::new(), None),
        ValueRef::Input(k) => {
            let (dtype, shape) = &types.input_types[k];
            (*dtype, dims(shape), None)
        }
        ValueRef::Constant(c) => {
            let tensor = (types.constant)(c);
            (tensor.dtype, dims(tensor.shape), Some(tensor))
        }
        ValueRef::Slot(slot) => {
            let info = &types.slots[slot];
            let shape = info.shape.as_deref().map_or_else(|| vec![-1], dims);
            (info.dtype, shape, None)
        }
    }
}
