//! SequenceMap: runs its `body` once per element of the input sequences, on element `i` of
//! each sequence input and on each tensor input whole, and gathers the body's outputs into
//! output sequences. The host runs the body (ABI 1.6).

use crate::common::{element_type, push_copy, sequence_output};
use opal_kernel_support::check::error;
use opal_plugin_api::{prelude::*, tensor::TensorView};
use smallvec::SmallVec;

pub struct SequenceMap;

impl Operator for SequenceMap {
    const OP_TYPE: &'static str = "SequenceMap";
    const SINCE_VERSION: i64 = 17;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        cx.sequence_input(0)?;
        let mut types = Vec::with_capacity(cx.input_count());
        for i in 0..cx.input_count() {
            let kind = cx.input_kind(i);
            let ty = if kind == ValueKind::SEQUENCE {
                let elements = cx.sequence_input(i)?;
                element_type(&elements).ok_or_else(|| {
                    error(
                        Self::OP_TYPE,
                        format_args!("input {i} is a sequence with no element type: it is empty"),
                    )
                })?
            } else if kind == ValueKind::TENSOR {
                let x = cx.input(i)?;
                (x.dtype, x.shape.to_vec())
            } else {
                return Err(error(
                    Self::OP_TYPE,
                    format_args!(
                        "input {i} is {}; it takes sequences and tensors",
                        kind.described()
                    ),
                ));
            };
            types.push(ty);
        }
        let inputs: Vec<InferInput<'_>> = types
            .iter()
            .map(|(dtype, shape)| InferInput::typed(*dtype, shape))
            .collect();
        let body = cx.subgraph_types("body", &inputs)?;
        if body.len() < cx.output_count() {
            return Err(error(
                Self::OP_TYPE,
                format_args!(
                    "the body gives {} outputs, the node has {}",
                    body.len(),
                    cx.output_count()
                ),
            ));
        }
        (0..cx.output_count())
            .map(|k| sequence_output(cx, k, body[k].dtype, body[k].shape.to_vec()))
            .collect()
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let mut values: SmallVec<[Value<'_>; 4]> = SmallVec::new();
        for i in 0..cx.input_count() {
            values.push(cx.value(i)?);
        }
        let Some(Value::Sequence(first)) = values.first() else {
            return Err(error(Self::OP_TYPE, "input 0 must be a sequence"));
        };
        let count = first.len();
        for (i, value) in values.iter().enumerate() {
            match value {
                Value::Sequence(s) if s.len() != count => {
                    return Err(error(
                        Self::OP_TYPE,
                        format_args!(
                            "input {i} holds {} elements, input 0 {count}: the sequences must be as long",
                            s.len()
                        ),
                    ))
                }
                Value::None => {
                    return Err(error(Self::OP_TYPE, format_args!("input {i} is none")))
                }
                _ => {}
            }
        }
        let outputs = cx.output_count();
        let mut inputs: SmallVec<[TensorView<'_>; 4]> = SmallVec::new();
        for element in 0..count {
            inputs.clear();
            for value in &values {
                inputs.push(match value {
                    Value::Sequence(s) => s.get(element)?.view(),
                    Value::Tensor(t) => t.view(),
                    Value::None => TensorView::ABSENT,
                });
            }
            let given = cx.run_subgraph("body", &inputs)?;
            if given < outputs {
                return Err(error(
                    Self::OP_TYPE,
                    format_args!("the body gave {given} outputs, the node has {outputs}"),
                ));
            }
            for k in 0..outputs {
                push_copy(cx, k, cx.subgraph_output("body", k)?)?;
            }
        }
        Ok(())
    }
}
