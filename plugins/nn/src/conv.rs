//! Conv: N-d convolution (1 to 3 spatial axes) with every attribute (auto_pad, pads, strides,
//! dilations, group) and an optional bias. Depthwise convolutions run a direct loop
//! ([`crate::depthwise`]); the others are matrix products on [`sgemm`] over an im2col buffer
//! ([`crate::im2col`]), or over the input itself for 1x1 convolutions without stride or padding.
//! Elementwise nodes the host fuses into the call run as an [`Epilogue`] over the output.

use crate::{
    depthwise::depthwise,
    float::{expect_float, input_f32, optional_input_f32, output_f32},
    im2col::{grouped_gemm, pack_weights, packed_weights_len},
    window::{output_dims, window, Window, WindowAttributes},
    winograd,
};
use opal_kernel_support::{
    check::{error, Shape},
    epilogue::{absorb, node_input_count, Epilogue},
};
use opal_plugin_api::prelude::*;

/// Conv of every opset (1, 11, 22): the semantics did not change, only the dtypes.
pub struct Conv;

/// The sizes of a convolution, known at compute time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub(crate) batch: usize,
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) group: usize,
    pub(crate) window: Window,
}

impl ConvShape {
    pub(crate) fn in_per_group(&self) -> usize {
        self.in_channels / self.group
    }

    pub(crate) fn out_per_group(&self) -> usize {
        self.out_channels / self.group
    }

    /// Elements of the weights: output channels times input channels per group times taps.
    pub(crate) fn weight_len(&self) -> usize {
        self.out_channels * self.in_per_group() * self.window.kernel_size()
    }
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// One input channel per group of several: a direct loop ([`depthwise`]).
    Depthwise,
    /// Winograd F(4,3) ([`winograd`]).
    Winograd,
    /// Matrix products over im2col ([`grouped_gemm`]).
    Gemm,
}

impl Method {
    /// The method for `shape`; Winograd pays off sooner when the weights are prepared once.
    fn choose(shape: &ConvShape, weights_prepared: bool) -> Method {
        if shape.in_per_group() == 1 && shape.group > 1 {
            Method::Depthwise
        } else if winograd::pays_off(shape, weights_prepared) {
            Method::Winograd
        } else {
            Method::Gemm
        }
    }
}

const OP: &str = "Conv";

/// Checks X, W and B of a Conv node (dims of -1 are unknown) and returns the group.
fn check_inputs(cx: &InferContext<'_>) -> KernelResult<i64> {
    let x = cx.input(0)?;
    let w = cx.input(1)?;
    expect_float(OP, 0, &x)?;
    if w.dtype != x.dtype {
        return Err(error(
            OP,
            format_args!("W has dtype {}, X has {}", w.dtype, x.dtype),
        ));
    }
    if x.shape.len() < 3 || w.shape.len() != x.shape.len() {
        return Err(error(
            OP,
            format_args!(
                "X {} and W {} must have the same rank, at least 3",
                Shape(x.shape),
                Shape(w.shape)
            ),
        ));
    }
    let group = cx.attributes().int("group", 1)?;
    if group < 1 {
        return Err(error(OP, format_args!("group {group} is not positive")));
    }
    let (channels, per_group, outputs) = (x.shape[1], w.shape[1], w.shape[0]);
    if channels >= 0 && per_group >= 0 && channels != per_group * group {
        return Err(error(
            OP,
            format_args!(
                "X has {channels} channels but W {} takes {per_group} per group for {group} groups",
                Shape(w.shape)
            ),
        ));
    }
    if outputs >= 0 && outputs % group != 0 {
        return Err(error(
            OP,
            format_args!("{outputs} output channels do not divide into {group} groups"),
        ));
    }
    if let Some(b) = cx.optional_input(2)? {
        if b.dtype != x.dtype
            || b.shape.len() != 1
            || (outputs >= 0 && b.shape[0] >= 0 && b.shape[0] != outputs)
        {
            return Err(error(
                OP,
                format_args!(
                    "B must be 1-D of {outputs} {}, got {} {}",
                    x.dtype,
                    b.dtype,
                    Shape(b.shape)
                ),
            ));
        }
    }
    if let Some(kernel) = cx.attributes().ints("kernel_shape")? {
        let matches = kernel.len() == w.shape.len() - 2
            && kernel
                .iter()
                .zip(&w.shape[2..])
                .all(|(&k, &w)| w < 0 || k == w);
        if !matches {
            return Err(error(
                OP,
                format_args!(
                    "kernel_shape {} does not match W {}",
                    Shape(kernel),
                    Shape(w.shape)
                ),
            ));
        }
    }
    Ok(group)
}

impl Operator for Conv {
    const OP_TYPE: &'static str = OP;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        check_inputs(cx)?;
        let (x, w) = (cx.input(0)?, cx.input(1)?);
        let attributes = WindowAttributes::read(OP, &cx.attributes())?;
        let kernel = &w.shape[2..];
        if kernel.iter().any(|&k| k < 0) {
            let mut shape = vec![x.shape[0], w.shape[0]];
            shape.resize(x.shape.len(), -1);
            return Ok(vec![OutputType::new(x.dtype, shape)]);
        }
        let spatial = output_dims(OP, &attributes, &x.shape[2..], kernel)?;
        let mut shape = vec![x.shape[0], w.shape[0]];
        shape.extend(spatial);
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (x_shape, w_shape) = (cx.input(0)?.shape(), cx.input(1)?.shape());
        let attributes = WindowAttributes::read(OP, &cx.attributes())?;
        let shape = ConvShape {
            batch: x_shape[0],
            in_channels: x_shape[1],
            out_channels: w_shape[0],
            group: cx.attributes().int("group", 1)?.max(1) as usize,
            window: window(OP, &attributes, &x_shape[2..], &w_shape[2..])?,
        };
        let x = input_f32(cx, OP, 0)?;
        let w = input_f32(cx, OP, 1)?;
        // Inputs past the node's own belong to nodes fused into the call.
        let bias = if node_input_count(cx) > 2 {
            optional_input_f32(cx, OP, 2)?
        } else {
            None
        };
        let prepared = prepared_weights(cx, &shape, w)?;
        let output_len = shape.batch * shape.out_channels * shape.window.output_size();
        let epilogue = Epilogue::from_call(cx, OP, shape.out_channels, output_len)?;
        let (y, sink) = output_f32(cx, 0)?;
        convolve(cx, &shape, x, w, prepared, bias, epilogue.as_ref(), y)?;
        sink.finish(OP, y)
    }

    /// Absorbs the elementwise nodes after a convolution (BatchNormalization, activations,
    /// residual adds) into its output pass.
    fn fuse(query: &FuseQuery<'_>) -> Option<Vec<u8>> {
        absorb(query)
    }
}

/// Constant f32 weights prepared once for the path [`convolve`] takes (transformed for
/// Winograd, or packed for im2col's matrix products) and kept by the host with the node; `None`
/// for depthwise convolutions, weights that vary, or when the host keeps none.
fn prepared_weights<'a>(
    cx: &KernelContext<'a>,
    shape: &ConvShape,
    w: &[f32],
) -> KernelResult<Option<&'a [f32]>> {
    if w.len() != shape.weight_len() || cx.input(1)?.dtype() != DType::F32 || !cx.is_constant(1) {
        return Ok(None);
    }
    // Packed for the instruction set that every call of the node asks for.
    let isa = opal_kernel_support::isa::current(cx);
    match Method::choose(shape, true) {
        Method::Depthwise => Ok(None),
        Method::Winograd => cx.prepared(winograd::prepared_len(isa, shape), |prepared| {
            winograd::prepare_weights(cx, isa, shape, w, prepared)
        }),
        Method::Gemm => cx.prepared(packed_weights_len(isa, shape), |packed| {
            pack_weights(isa, shape, w, packed);
            Ok(())
        }),
    }
}

/// `y = epilogue(conv(x, w) + bias)` on f32; `prepared` is `w` as [`prepared_weights`]
/// prepares it, when kept.
#[allow(clippy::too_many_arguments)]
pub(crate) fn convolve(
    cx: &KernelContext<'_>,
    shape: &ConvShape,
    x: &[f32],
    w: &[f32],
    prepared: Option<&[f32]>,
    bias: Option<&[f32]>,
    epilogue: Option<&Epilogue<'_>>,
    y: &mut [f32],
) -> KernelResult<()> {
    let expected_y = shape.batch * shape.out_channels * shape.window.output_size();
    if y.len() != expected_y
        || w.len() != shape.weight_len()
        || bias.is_some_and(|b| b.len() != shape.out_channels)
    {
        return Err(error(
            OP,
            "output, weight or bias sizes do not match the inputs",
        ));
    }
    if y.is_empty() {
        return Ok(());
    }
    // Prepared weights were prepared for `Method::choose(shape, true)`, the same choice.
    match Method::choose(shape, prepared.is_some()) {
        Method::Depthwise => {
            // Applies the epilogue plane by plane, while each is in cache.
            depthwise(cx, shape, x, w, bias, epilogue, y);
            return Ok(());
        }
        Method::Winograd => winograd::winograd(cx, shape, x, w, prepared, bias, y)?,
        Method::Gemm => grouped_gemm(cx, shape, x, w, prepared, bias, y)?,
    }
    if let Some(epilogue) = epilogue {
        epilogue.apply(cx, y, shape.out_channels, shape.window.output_size());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::conv_reference;
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{
        assert_close, int_attr, ints_attr, string_attr, OwnedTensor, TestHost,
    };

    fn check(
        x_shape: &[usize],
        w_shape: &[usize],
        bias: bool,
        attributes: &[opal_plugin_api::Attribute<'_>],
    ) {
        let x = values(x_shape.iter().product(), 1);
        let w = values(w_shape.iter().product(), 2);
        let b = values(w_shape[0], 3);
        let mut inputs = vec![OwnedTensor::f32(x_shape, &x), OwnedTensor::f32(w_shape, &w)];
        if bias {
            inputs.push(OwnedTensor::f32(&[w_shape[0]], &b));
        }
        // Weights packed per call, and packed once as constant weights.
        for (threads, constant_weights) in [(1, false), (2, false), (1, true), (2, true)] {
            let y = TestHost::new()
                .threads(threads)
                .constant_inputs(if constant_weights { 0b10 } else { 0 })
                .run::<Conv>(&inputs, attributes, 1)
                .unwrap();
            let (shape, expected) = conv_reference(&inputs, attributes);
            assert_eq!(y[0].shape(), shape.as_slice());
            assert_close(y[0].as_slice(), &expected, 1e-4);
        }
    }

    #[test]
    fn plain_padded_strided_and_dilated_2d() {
        check(&[1, 3, 7, 8], &[4, 3, 3, 3], true, &[]);
        check(
            &[2, 3, 7, 8],
            &[4, 3, 3, 2],
            false,
            &[ints_attr("pads", &[1, 0, 2, 1])],
        );
        check(
            &[1, 2, 9, 9],
            &[5, 2, 3, 3],
            true,
            &[
                ints_attr("strides", &[2, 3]),
                ints_attr("dilations", &[2, 1]),
            ],
        );
        check(
            &[1, 4, 5, 5],
            &[3, 4, 3, 3],
            false,
            &[
                string_attr("auto_pad", "SAME_LOWER"),
                ints_attr("strides", &[2, 2]),
            ],
        );
    }

    #[test]
    fn pointwise_grouped_and_depthwise() {
        check(&[2, 6, 4, 5], &[8, 6, 1, 1], true, &[]);
        check(
            &[1, 6, 6, 5],
            &[4, 3, 3, 3],
            true,
            &[int_attr("group", 2), ints_attr("pads", &[1, 1, 1, 1])],
        );
        check(
            &[2, 4, 6, 7],
            &[4, 1, 3, 3],
            true,
            &[
                int_attr("group", 4),
                ints_attr("pads", &[1, 1, 1, 1]),
                ints_attr("strides", &[2, 1]),
            ],
        );
        check(
            &[1, 3, 6, 7],
            &[6, 1, 3, 2],
            false,
            &[int_attr("group", 3), ints_attr("dilations", &[1, 2])],
        );
    }

    #[test]
    fn depthwise_bands_of_every_stride_padding_and_width() {
        // (input, kernel, pads, strides, dilations), two output channels per input channel.
        type Case = (&'static [usize], [usize; 2], [i64; 4], [i64; 2], [i64; 2]);
        let cases: [Case; 10] = [
            // Odd and even leading pads under stride 2, and stride 3.
            (&[1, 3, 9, 10], [3, 3], [1, 1, 0, 1], [2, 2], [1, 1]),
            (&[1, 3, 9, 11], [3, 3], [2, 2, 1, 0], [2, 2], [1, 1]),
            (&[1, 2, 10, 23], [3, 4], [1, 2, 1, 2], [3, 3], [1, 1]),
            // Dilated 5 x 5 taps with stride 2, and rows wider than one tile.
            (&[2, 2, 13, 40], [5, 5], [4, 4, 4, 4], [2, 2], [2, 2]),
            // Several bands down a tall plane, and rows too wide for a band.
            (&[1, 2, 100, 150], [3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            (&[1, 2, 6, 3000], [3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            // Three output rows and two; 5 x 5 taps at stride 1 and 2.
            (&[1, 2, 3, 150], [3, 5], [0, 2, 0, 2], [1, 1], [1, 1]),
            (&[1, 3, 2, 96], [5, 5], [2, 2, 2, 2], [1, 1], [1, 1]),
            (&[1, 4, 20, 20], [5, 5], [2, 2, 2, 2], [1, 1], [1, 1]),
            (&[1, 4, 21, 35], [5, 5], [2, 2, 2, 2], [2, 2], [1, 1]),
        ];
        for (x, k, pads, strides, dilations) in cases {
            let attributes = [
                int_attr("group", x[1] as i64),
                ints_attr("pads", &pads),
                ints_attr("strides", &strides),
                ints_attr("dilations", &dilations),
            ];
            check(x, &[x[1] * 2, 1, k[0], k[1]], true, &attributes);
        }
        // 1-D.
        check(
            &[1, 3, 131],
            &[3, 1, 7],
            true,
            &[
                int_attr("group", 3),
                ints_attr("pads", &[3, 3]),
                ints_attr("strides", &[2]),
            ],
        );
    }

    #[test]
    fn one_and_three_spatial_axes() {
        check(
            &[2, 3, 11],
            &[4, 3, 3],
            true,
            &[ints_attr("pads", &[2, 1]), ints_attr("strides", &[2])],
        );
        check(
            &[1, 2, 4, 5, 6],
            &[3, 2, 2, 3, 3],
            true,
            &[ints_attr("pads", &[1, 0, 1, 0, 1, 1])],
        );
        check(
            &[1, 3, 4, 5, 6],
            &[3, 1, 3, 3, 3],
            true,
            &[int_attr("group", 3), ints_attr("pads", &[1, 1, 1, 1, 1, 1])],
        );
    }
}
