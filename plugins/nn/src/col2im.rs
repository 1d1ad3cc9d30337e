//! Col2Im: the inverse of im2col. Each column of `[N, C * prod(block_shape), L]` holds one
//! sliding block of an image of `image_shape`; overlapping taps are summed into `[N, C, *image]`.

use crate::float::{expect_float, input_f32, output_f32};
use opal_kernel_support::{
    broadcast::MAX_RANK,
    check::{error, Shape},
};
use opal_plugin_api::prelude::*;

/// Col2Im (opset 18 on).
pub struct Col2Im;

const OP: &str = "Col2Im";

/// The largest spatial rank: the output `[N, C, *image]` must fit `MAX_RANK`.
const MAX_SPATIAL: usize = MAX_RANK - 2;

/// One spatial axis: the image length, the block (kernel) length, and how blocks slide.
#[derive(Clone, Copy, Default)]
struct Axis {
    image: usize,
    block: usize,
    dilation: usize,
    stride: usize,
    pad_begin: usize,
    /// How many blocks fit along the padded axis.
    blocks: usize,
}

/// The spatial axes of a Col2Im node.
struct Geometry {
    axes: [Axis; MAX_SPATIAL],
    rank: usize,
}

impl Geometry {
    /// Reads the attributes against `image_shape` and `block_shape`, checking that they fit.
    fn new(attributes: &Attributes<'_>, image: &[i64], block: &[i64]) -> KernelResult<Self> {
        let rank = image.len();
        if rank == 0 || rank > MAX_SPATIAL || block.len() != rank {
            return Err(error(
                OP,
                format_args!(
                    "image_shape {} and block_shape {} must have the same length, 1 to {MAX_SPATIAL}",
                    Shape(image),
                    Shape(block)
                ),
            ));
        }
        let dilations = attributes.ints("dilations")?;
        let strides = attributes.ints("strides")?;
        let pads = attributes.ints("pads")?;
        if dilations.is_some_and(|d| d.len() != rank)
            || strides.is_some_and(|s| s.len() != rank)
            || pads.is_some_and(|p| p.len() != 2 * rank)
        {
            return Err(error(
                OP,
                format_args!("dilations, strides or pads do not match the {rank} spatial axes"),
            ));
        }
        let mut axes = [Axis::default(); MAX_SPATIAL];
        for (i, axis) in axes[..rank].iter_mut().enumerate() {
            let dilation = dilations.map_or(1, |d| d[i]);
            let stride = strides.map_or(1, |s| s[i]);
            let (pad_begin, pad_end) = pads.map_or((0, 0), |p| (p[i], p[i + rank]));
            if image[i] < 0
                || block[i] < 1
                || dilation < 1
                || stride < 1
                || pad_begin < 0
                || pad_end < 0
            {
                return Err(error(
                    OP,
                    format_args!(
                        "axis {i}: image {}, block {}, dilation {dilation}, stride {stride} and pads {pad_begin}, {pad_end} must be positive",
                        image[i], block[i]
                    ),
                ));
            }
            let span = dilation * (block[i] - 1) + 1;
            let padded = image[i] + pad_begin + pad_end;
            if padded < span {
                return Err(error(
                    OP,
                    format_args!(
                        "axis {i}: the block spans {span}, more than the padded image's {padded}"
                    ),
                ));
            }
            *axis = Axis {
                image: image[i] as usize,
                block: block[i] as usize,
                dilation: dilation as usize,
                stride: stride as usize,
                pad_begin: pad_begin as usize,
                blocks: ((padded - span) / stride + 1) as usize,
            };
        }
        Ok(Geometry { axes, rank })
    }

    fn axes(&self) -> &[Axis] {
        &self.axes[..self.rank]
    }

    fn block_size(&self) -> usize {
        self.axes().iter().map(|a| a.block).product()
    }

    fn block_count(&self) -> usize {
        self.axes().iter().map(|a| a.blocks).product()
    }

    fn image_size(&self) -> usize {
        self.axes().iter().map(|a| a.image).product()
    }

    /// Checks input dims 1 and 2 against the blocks; returns the channel count C.
    fn channels(&self, input: &[usize]) -> KernelResult<usize> {
        let (block_size, block_count) = (self.block_size(), self.block_count());
        if input.len() != 3 || !input[1].is_multiple_of(block_size) || input[2] != block_count {
            return Err(error(
                OP,
                format_args!(
                    "input {} must be [N, C * {block_size}, {block_count}] for these blocks",
                    Shape(input)
                ),
            ));
        }
        Ok(input[1] / block_size)
    }
}

/// Adds the columns of one channel, `[block_size, block_count]`, into its image.
fn fold_channel(geometry: &Geometry, columns: &[f32], image: &mut [f32]) {
    let axes = geometry.axes();
    let rank = axes.len();
    let block_count = geometry.block_count();
    let mut tap = [0usize; MAX_SPATIAL];
    for tap_columns in columns.chunks_exact(block_count) {
        let mut position = [0usize; MAX_SPATIAL];
        for &value in tap_columns {
            let mut offset = Some(0);
            for d in 0..rank {
                let axis = axes[d];
                let padded = position[d] * axis.stride + tap[d] * axis.dilation;
                offset = offset.and_then(|o| {
                    let at = padded.checked_sub(axis.pad_begin)?;
                    (at < axis.image).then_some(o * axis.image + at)
                });
            }
            if let Some(offset) = offset {
                image[offset] += value;
            }
            advance(&mut position[..rank], axes, |a| a.blocks);
        }
        advance(&mut tap[..rank], axes, |a| a.block);
    }
}

/// Steps the row-major multi-index `index` once, with dim `d` of length `len(axes[d])`.
fn advance(index: &mut [usize], axes: &[Axis], len: impl Fn(&Axis) -> usize) {
    for d in (0..index.len()).rev() {
        index[d] += 1;
        if index[d] < len(&axes[d]) {
            return;
        }
        index[d] = 0;
    }
}

/// Reads a 1-D i64 input's values (`image_shape` or `block_shape`).
fn shape_values<'a>(name: &str, tensor: TensorRef<'a>) -> KernelResult<&'a [i64]> {
    if tensor.dtype() != DType::I64 || tensor.shape().len() != 1 {
        return Err(error(
            OP,
            format_args!(
                "{name} must be a 1-D i64 tensor, got {} {}",
                tensor.dtype(),
                Shape(tensor.shape())
            ),
        ));
    }
    tensor.as_slice::<i64>()
}

impl Operator for Col2Im {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 18;
    const VALUE_INPUTS: &'static [usize] = &[1, 2];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (input, image, block) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        expect_float(OP, 0, &input)?;
        if input.shape.len() != 3 || image.shape.len() != 1 || block.shape.len() != 1 {
            return Err(error(
                OP,
                format_args!(
                    "input {} must be 3-D, image_shape {} and block_shape {} 1-D",
                    Shape(input.shape),
                    Shape(image.shape),
                    Shape(block.shape)
                ),
            ));
        }
        let (Some(image), Some(block)) = (image.value(), block.value()) else {
            // Without the values only the rank is known, if that.
            return match image.shape[0] {
                len if len >= 0 => Ok(vec![OutputType::new(
                    input.dtype,
                    vec![-1; 2 + len as usize],
                )]),
                _ => Err(error(OP, "the length of image_shape is not known")),
            };
        };
        let (image, block) = (
            shape_values("image_shape", image)?,
            shape_values("block_shape", block)?,
        );
        let geometry = Geometry::new(&cx.attributes(), image, block)?;
        let channels = if input.shape.iter().all(|&d| d >= 0) {
            let dims = [
                input.shape[0] as usize,
                input.shape[1] as usize,
                input.shape[2] as usize,
            ];
            geometry.channels(&dims)? as i64
        } else {
            -1
        };
        let mut shape = vec![input.shape[0], channels];
        shape.extend_from_slice(image);
        Ok(vec![OutputType::new(input.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let image = shape_values("image_shape", cx.input(1)?)?;
        let block = shape_values("block_shape", cx.input(2)?)?;
        let geometry = Geometry::new(&cx.attributes(), image, block)?;
        let input_shape = cx.input(0)?.shape();
        let channels = geometry.channels(input_shape)?;
        let planes = input_shape[0] * channels;
        let image_size = geometry.image_size();
        let columns_size = geometry.block_size() * geometry.block_count();
        let columns = input_f32(cx, OP, 0)?;
        let (y, sink) = output_f32(cx, 0)?;
        if y.len() != planes * image_size {
            return Err(error(
                OP,
                format_args!(
                    "the output holds {} values, expected {}",
                    y.len(),
                    planes * image_size
                ),
            ));
        }
        y.fill(0.0);
        if image_size > 0 {
            for (plane, image) in y.chunks_exact_mut(image_size).enumerate() {
                fold_channel(
                    &geometry,
                    &columns[plane * columns_size..][..columns_size],
                    image,
                );
            }
        }
        sink.finish(OP, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::{
        testing::{assert_close, ints_attr, run_operator, OwnedTensor},
        Attribute,
    };

    fn col2im(
        input: OwnedTensor,
        image: &[i64],
        block: &[i64],
        attributes: &[Attribute<'_>],
    ) -> OwnedTensor {
        let inputs = [
            input,
            OwnedTensor::i64(&[image.len()], image),
            OwnedTensor::i64(&[block.len()], block),
        ];
        run_operator::<Col2Im>(&inputs, attributes, 1)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn overlapping_blocks_are_summed() {
        // A 1x3 image from 1x2 blocks at columns 0 and 1: the middle pixel gets both taps.
        // Rows of the input are the taps (left, right), columns the blocks.
        let input = OwnedTensor::f32(&[1, 2, 2], &[1.0, 10.0, 2.0, 20.0]);
        let y = col2im(input, &[1, 3], &[1, 2], &[]);
        assert_eq!(y.shape(), [1, 1, 1, 3]);
        assert_close(&y.to_vec::<f32>(), &[1.0, 12.0, 20.0], 0.0);
    }

    #[test]
    fn strides_pads_and_dilations_place_taps() {
        // 1-D image of 4 with pads (1, 1), stride 2, dilation 2, block 2: padded length 6,
        // span 3, blocks at padded 0 and 2 touch image positions (-1, 1) and (1, 3).
        let input = OwnedTensor::f32(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let attributes = [
            ints_attr("pads", &[0, 1, 0, 1]),
            ints_attr("strides", &[1, 2]),
            ints_attr("dilations", &[1, 2]),
        ];
        let y = col2im(input, &[1, 4], &[1, 2], &attributes);
        // Tap 0 of block 0 is in the padding; tap 1 of block 0 and tap 0 of block 1 meet at 1.
        assert_close(&y.to_vec::<f32>(), &[0.0, 3.0 + 2.0, 0.0, 4.0], 0.0);
    }

    #[test]
    fn channels_come_from_the_block_size() {
        // Two channels of a 2x2 image with 1x1 blocks: a plain reshape.
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let y = col2im(OwnedTensor::f32(&[1, 2, 4], &values), &[2, 2], &[1, 1], &[]);
        assert_eq!(y.shape(), [1, 2, 2, 2]);
        assert_close(&y.to_vec::<f32>(), &values, 0.0);
    }

    #[test]
    fn a_wrong_block_count_is_refused() {
        let inputs = [
            OwnedTensor::f32(&[1, 4, 3], &[0.0; 12]),
            OwnedTensor::i64(&[2], &[3, 3]),
            OwnedTensor::i64(&[2], &[2, 2]),
        ];
        let message = run_operator::<Col2Im>(&inputs, &[], 1).unwrap_err();
        assert!(message.contains("Col2Im"), "{message}");
    }
}
