//! DepthToSpace and SpaceToDepth: blocks of channels moved to spatial positions of NCHW tensors
//! and back, in DCR (depth-column-row, the default) or CRD order. Each is a reshape to six
//! dims, a transpose and a reshape, done as one strided copy.

use crate::{
    check::error,
    layout::{element_size, expect_output_shape, row_major_strides, StridedRead},
};
use opal_plugin_api::prelude::*;

/// The block order of the channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Dcr,
    Crd,
}

/// The blocksize (positive) and mode attributes.
fn block_attributes(op: &str, attributes: &Attributes<'_>) -> KernelResult<(usize, Mode)> {
    let blocksize = attributes.int("blocksize", 0)?;
    let blocksize = usize::try_from(blocksize)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            error(
                op,
                format_args!("blocksize must be positive, got {blocksize}"),
            )
        })?;
    let mode = match attributes.string("mode", "DCR")? {
        "DCR" => Mode::Dcr,
        "CRD" => Mode::Crd,
        other => return Err(error(op, format_args!("unknown mode '{other}'"))),
    };
    Ok((blocksize, mode))
}

/// The four dims of an NCHW input, during inference (-1 unknown).
fn nchw(op: &str, shape: &[i64]) -> KernelResult<[i64; 4]> {
    <[i64; 4]>::try_from(shape).map_err(|_| {
        error(
            op,
            format_args!("the input must have rank 4, it has {}", shape.len()),
        )
    })
}

/// Copies input 0, seen with the six dims `tmp`, permuted by `perm`, into output 0 of shape
/// `out_shape`.
fn permuted_copy(
    op: &str,
    cx: &mut KernelContext<'_>,
    tmp: [usize; 6],
    perm: [usize; 6],
    out_shape: [usize; 4],
) -> KernelResult<()> {
    let x = cx.input(0)?;
    let strides = row_major_strides(&tmp);
    let dims = perm.map(|p| tmp[p]);
    let read_strides = perm.map(|p| strides[p] as isize);
    let out = cx.output(0)?;
    expect_output_shape(op, out.shape(), &out_shape)?;
    let size = element_size(op, x.dtype())?;
    StridedRead::new(op, &dims, &read_strides, 0)?.copy(cx, op, size, x.bytes(), out.bytes_mut())
}

/// Channel blocks moved into `blocksize x blocksize` spatial blocks.
pub struct DepthToSpace;

impl Operator for DepthToSpace {
    const OP_TYPE: &'static str = "DepthToSpace";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let (b, _) = block_attributes(op, &cx.attributes())?;
        let [n, c, h, w] = nchw(op, x.shape)?;
        let b = b as i64;
        if c >= 0 && c % (b * b) != 0 {
            return Err(error(
                op,
                format_args!("{c} channels do not split into blocks of {b}x{b}"),
            ));
        }
        let scale = |d: i64| if d < 0 { -1 } else { d * b };
        let channels = if c < 0 { -1 } else { c / (b * b) };
        Ok(vec![OutputType::new(
            x.dtype,
            vec![n, channels, scale(h), scale(w)],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (b, mode) = block_attributes(op, &cx.attributes())?;
        let &[n, c, h, w] = cx.input(0)?.shape() else {
            return Err(error(op, "the input must have rank 4"));
        };
        if c % (b * b) != 0 {
            return Err(error(
                op,
                format_args!("{c} channels do not split into blocks of {b}x{b}"),
            ));
        }
        let c2 = c / (b * b);
        let (tmp, perm) = match mode {
            Mode::Dcr => ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2]),
            Mode::Crd => ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3]),
        };
        permuted_copy(op, cx, tmp, perm, [n, c2, h * b, w * b])
    }
}

/// Spatial `blocksize x blocksize` blocks moved into channels.
pub struct SpaceToDepth;

impl Operator for SpaceToDepth {
    const OP_TYPE: &'static str = "SpaceToDepth";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let (b, _) = block_attributes(op, &cx.attributes())?;
        let [n, c, h, w] = nchw(op, x.shape)?;
        let b = b as i64;
        for d in [h, w] {
            if d >= 0 && d % b != 0 {
                return Err(error(
                    op,
                    format_args!("a spatial dim of {d} does not split into blocks of {b}"),
                ));
            }
        }
        let shrink = |d: i64| if d < 0 { -1 } else { d / b };
        let channels = if c < 0 { -1 } else { c * b * b };
        Ok(vec![OutputType::new(
            x.dtype,
            vec![n, channels, shrink(h), shrink(w)],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (b, mode) = block_attributes(op, &cx.attributes())?;
        let &[n, c, h, w] = cx.input(0)?.shape() else {
            return Err(error(op, "the input must have rank 4"));
        };
        if h % b != 0 || w % b != 0 {
            return Err(error(
                op,
                format_args!("spatial dims {h}x{w} do not split into blocks of {b}"),
            ));
        }
        let tmp = [n, c, h / b, b, w / b, b];
        let perm = match mode {
            Mode::Dcr => [0, 3, 5, 1, 2, 4],
            Mode::Crd => [0, 1, 3, 5, 2, 4],
        };
        permuted_copy(op, cx, tmp, perm, [n, c * b * b, h / b, w / b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, string_attr, OwnedTensor};

    #[test]
    fn depth_and_space_round_trip() {
        let values: Vec<f32> = (0..48).map(|v| v as f32).collect();
        for mode in ["DCR", "CRD"] {
            let attributes = [int_attr("blocksize", 2), string_attr("mode", mode)];
            let x = OwnedTensor::f32(&[1, 8, 2, 3], &values);
            let y = run_operator::<DepthToSpace>(&[x], &attributes, 1).unwrap();
            assert_eq!(y[0].shape(), [1, 2, 4, 6]);
            let back = run_operator::<SpaceToDepth>(&y, &attributes, 1).unwrap();
            assert_eq!(back[0].to_vec::<f32>(), values, "{mode}");
        }
        let x = OwnedTensor::f32(&[1, 4, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
        let y = run_operator::<DepthToSpace>(&[x], &[int_attr("blocksize", 2)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 2.0, 3.0, 4.0]);
    }
}
