//! LpNormalization: `x / ||x||_p` along one axis (p is 1 or 2); a zero norm gives 0.

use crate::float::{expect_float, input_f32, output_f32};
use opal_kernel_support::check::{error, normalize_axis};
use opal_plugin_api::prelude::*;

/// LpNormalization of every opset.
pub struct LpNormalization;

const OP: &str = "LpNormalization";

impl Operator for LpNormalization {
    const OP_TYPE: &'static str = OP;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_float(OP, 0, &x)?;
        normalize_axis(OP, cx.attributes().int("axis", -1)?, x.shape.len())?;
        let p = cx.attributes().int("p", 2)?;
        if p != 1 && p != 2 {
            return Err(error(OP, format_args!("p must be 1 or 2, got {p}")));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let shape = cx.input(0)?.shape();
        let axis = normalize_axis(OP, cx.attributes().int("axis", -1)?, shape.len())?;
        let l1 = cx.attributes().int("p", 2)? == 1;
        let (dim, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
        let x = input_f32(cx, OP, 0)?;
        let norms = cx.scratch::<f32>(inner)?;
        let (y, sink) = output_f32(cx, 0)?;
        let block = dim * inner;
        if block > 0 {
            for (y, x) in y.chunks_exact_mut(block).zip(x.chunks_exact(block)) {
                norms.fill(0.0);
                for row in x.chunks_exact(inner) {
                    for (n, &v) in norms.iter_mut().zip(row) {
                        *n += if l1 { v.abs() } else { v * v };
                    }
                }
                if !l1 {
                    norms.iter_mut().for_each(|n| *n = n.sqrt());
                }
                for (y_row, x_row) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
                    for ((y, &x), &n) in y_row.iter_mut().zip(x_row).zip(norms.iter()) {
                        *y = if n == 0.0 { 0.0 } else { x / n };
                    }
                }
            }
        }
        sink.finish(OP, y)
    }
}
