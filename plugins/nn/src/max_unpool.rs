//! MaxUnpool: scatters each input value to the flat position its index names in the unpooled
//! tensor (`(in - 1) * stride + kernel - pads` per spatial axis), zeros elsewhere; with the
//! optional output_shape input the unpooled tensor sits at the start of a larger zero tensor.

use opal_kernel_support::{
    broadcast::MAX_RANK,
    check::{check_rank, error, expect_fixed_size, Shape},
};
use opal_plugin_api::prelude::*;

/// MaxUnpool (opsets 9, 11, 22).
pub struct MaxUnpool;

const OP: &str = "MaxUnpool";

/// The unpooled shape from X's shape (dims of -1 stay unknown).
fn unpooled(attributes: &Attributes<'_>, x: &[i64]) -> KernelResult<Vec<i64>> {
    let kernel = attributes
        .ints("kernel_shape")?
        .ok_or_else(|| error(OP, "the 'kernel_shape' attribute is required"))?;
    let dims = x.len().saturating_sub(2);
    let strides = attributes.ints("strides")?;
    let pads = attributes.ints("pads")?;
    let wrong = kernel.len() != dims
        || strides.is_some_and(|s| s.len() != dims)
        || pads.is_some_and(|p| p.len() != 2 * dims);
    if x.len() < 3 || wrong {
        return Err(error(
            OP,
            format_args!("kernel_shape, strides or pads do not match X {}", Shape(x)),
        ));
    }
    let mut shape = x[..2].to_vec();
    for axis in 0..dims {
        let stride = strides.map_or(1, |s| s[axis]);
        let pad = pads.map_or(0, |p| p[axis] + p[axis + dims]);
        shape.push(if x[axis + 2] < 0 {
            -1
        } else {
            (x[axis + 2] - 1) * stride + kernel[axis] - pad
        });
    }
    Ok(shape)
}

impl Operator for MaxUnpool {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 9;
    const VALUE_INPUTS: &'static [usize] = &[2];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (x, indices) = (cx.input(0)?, cx.input(1)?);
        expect_fixed_size(OP, x.dtype)?;
        check_rank(OP, x.shape.len())?;
        if indices.dtype != DType::I64 {
            return Err(error(
                OP,
                format_args!("I has dtype {}, expected i64", indices.dtype),
            ));
        }
        let shape = match cx.optional_input(2)? {
            Some(output_shape) => match output_shape.value_as::<i64>()? {
                Some(values) => values.to_vec(),
                None => vec![-1; x.shape.len()],
            },
            None => unpooled(&cx.attributes(), x.shape)?,
        };
        if shape.len() != x.shape.len() {
            return Err(error(
                OP,
                format_args!("output_shape {} has the wrong rank", Shape(&shape)),
            ));
        }
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (x, indices) = (cx.input(0)?, cx.input(1)?);
        let rank = x.shape().len();
        let mut x_dims = [0i64; MAX_RANK];
        for (d, &s) in x_dims.iter_mut().zip(x.shape()) {
            *d = s as i64;
        }
        // The unpooled dims, computed without allocating.
        let kernel = cx.attributes().ints("kernel_shape")?.unwrap_or(&[]);
        let strides = cx.attributes().ints("strides")?;
        let pads = cx.attributes().ints("pads")?;
        let dims = rank - 2;
        let mut inner = [0usize; MAX_RANK];
        inner[..2].copy_from_slice(&x.shape()[..2]);
        for axis in 0..dims.min(kernel.len()) {
            let stride = strides.map_or(1, |s| s[axis]);
            let pad = pads.map_or(0, |p| p[axis] + p[axis + dims]);
            inner[axis + 2] =
                ((x_dims[axis + 2] - 1) * stride + kernel[axis] - pad).max(0) as usize;
        }
        let y = cx.output(0)?;
        let out_dims = y.shape();
        let size = expect_fixed_size(OP, x.dtype())?;
        let indices = indices.as_slice::<i64>()?;
        let x_bytes = x.bytes();
        let y_bytes = y.bytes_mut();
        y_bytes.fill(0);
        let total: usize = inner[..rank].iter().product();
        for (i, &index) in indices.iter().enumerate().take(x_bytes.len() / size) {
            if index < 0 || index as usize >= total {
                return Err(error(
                    OP,
                    format_args!("index {index} is outside the unpooled tensor"),
                ));
            }
            // Flat index in the unpooled dims -> flat index in the output dims.
            let (mut rest, mut at, mut stride) = (index as usize, 0usize, 1usize);
            let mut inside = true;
            for axis in (0..rank).rev() {
                let coordinate = rest % inner[axis];
                rest /= inner[axis];
                inside &= coordinate < out_dims[axis];
                at += coordinate * stride;
                stride *= out_dims[axis];
            }
            if inside {
                y_bytes[at * size..][..size].copy_from_slice(&x_bytes[i * size..][..size]);
            }
        }
        Ok(())
    }
}
