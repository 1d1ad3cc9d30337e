//! If: runs one of two subgraphs, `then_branch` or `else_branch`, on a condition.

use crate::{
    carried::copy_into,
    types::{declare_kinds, merge_value_types, scalar_bool},
};
use opal_plugin_api::{prelude::*, value::ValueSource};

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
            let taken = BRANCHES[usize::from(!scalar_bool("the condition", value)?)];
            let types = cx.subgraph_value_types(taken, &[], &[])?;
            check_count(taken, types.len(), cx.output_count())?;
            return declare_kinds(cx, types);
        }
        let [then_types, else_types] =
            BRANCHES.map(|branch| cx.subgraph_value_types(branch, &[], &[]));
        for (branch, types) in BRANCHES.iter().zip([&then_types, &else_types]) {
            if let Ok(types) = types {
                check_count(branch, types.len(), cx.output_count())?;
            }
        }
        // A branch that cannot be typed for these inputs can never run on them: exporters
        // keep both paths of a check on the input (a sample rate, a rank), and only one fits.
        // The outputs are the other branch's; the run reports the error if it takes this one.
        let types = match (then_types, else_types) {
            (Ok(then_types), Ok(else_types)) => then_types
                .iter()
                .zip(&else_types)
                .enumerate()
                .map(|(k, (a, b))| merge_value_types(&format!("output {k}"), a, b))
                .collect::<KernelResult<_>>()?,
            (Ok(types), Err(_)) | (Err(_), Ok(types)) => types,
            (Err(error), Err(_)) => return Err(error),
        };
        declare_kinds(cx, types)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let taken = scalar_bool("the condition", cx.input(0)?)?;
        let branch = BRANCHES[usize::from(!taken)];
        let given = cx.run_subgraph(branch, &[])?;
        check_count(branch, given, cx.output_count())?;
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

/// An error unless `branch`, giving `given` outputs, gives one per output of the node.
fn check_count(branch: &str, given: usize, outputs: usize) -> KernelResult<()> {
    if given == outputs {
        return Ok(());
    }
    Err(KernelError::new(format!(
        "'{branch}' gives {given} outputs; the node has {outputs}"
    )))
}
