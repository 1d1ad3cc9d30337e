//! If: runs one of two subgraphs, `then_branch` or `else_branch`, on a condition.

use crate::{
    carried::copy_into,
    types::{declare_kinds, merge_value_types, scalar_bool},
};
use opal_plugin_api::{
    prelude::*,
    value::{ValueSource, ValueType},
};

pub struct If;

const BRANCHES: [&str; 2] = ["then_branch", "else_branch"];

impl Operator for If {
    const OP_TYPE: &'static str = "If";
    /// The condition: when inference knows it, only the branch taken is typed.
    const VALUE_INPUTS: &'static [usize] = &[0];
    /// Its branches may give sequences and optionals, which it passes on.
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let cond = cx.input(0)?;
        if cond.dtype != DType::BOOL {
            return Err(KernelError::new(format!(
                "the condition must be bool, got {}",
                cond.dtype
            )));
        }
        if let Some(value) = cond.value() {
            let taken = scalar_bool("the condition", value)?;
            return declare_kinds(cx, branch_types(cx, BRANCHES[usize::from(!taken)])?);
        }
        let then_types = branch_types(cx, BRANCHES[0])?;
        let else_types = branch_types(cx, BRANCHES[1])?;
        let types = then_types
            .iter()
            .zip(&else_types)
            .enumerate()
            .map(|(k, (a, b))| merge_value_types(&format!("output {k}"), a, b))
            .collect::<KernelResult<_>>()?;
        declare_kinds(cx, types)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let taken = scalar_bool("the condition", cx.input(0)?)?;
        let branch = BRANCHES[usize::from(!taken)];
        let given = cx.run_subgraph(branch, &[])?;
        if given != cx.output_count() {
            return Err(KernelError::new(format!(
                "'{branch}' gives {given} outputs; the node has {}",
                cx.output_count()
            )));
        }
        for k in 0..given {
            // A sequence or none is no tensor view: the host passes it on.
            let Ok(value) = cx.subgraph_output(branch, k) else {
                cx.forward(k, ValueSource::subgraph_output(branch, k))?;
                continue;
            };
            let output = cx.shaped_output(k, value.shape())?;
            copy_into(output, value.dtype(), value.bytes())?;
        }
        Ok(())
    }
}

/// The output kinds and types of `branch`, which must give one output per output of the node.
fn branch_types(cx: &InferContext<'_>, branch: &str) -> KernelResult<Vec<ValueType>> {
    let types = cx.subgraph_value_types(branch, &[], &[])?;
    if types.len() != cx.output_count() {
        return Err(KernelError::new(format!(
            "'{branch}' gives {} outputs; the node has {}",
            types.len(),
            cx.output_count()
        )));
    }
    Ok(types)
}
