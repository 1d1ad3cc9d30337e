//! What the quantization operators share: the integer element types they quantize to, with
//! saturation and round-half-to-even, the low-bit types they also quantize to (4- and 2-bit
//! integers, 8- and 4-bit floats, a byte per element), and how a scale or zero point (per
//! tensor, per axis or per block) maps onto the elements of the tensor it applies to.

use crate::half::is_float;
use opal_kernel_support::{
    check::{error, normalize_axis, Shape},
    low_bit,
};
use opal_plugin_api::prelude::*;

/// An integer type values are quantized to.
pub(crate) trait QuantInt: Element {
    const LOWEST: i64;
    const HIGHEST: i64;
    fn to_i64(self) -> i64;
    /// `v` saturated to the type's range.
    fn saturate(v: i64) -> Self;
}

macro_rules! quant_int {
    ($($t:ty),*) => {$(
        impl QuantInt for $t {
            const LOWEST: i64 = <$t>::MIN as i64;
            const HIGHEST: i64 = <$t>::MAX as i64;
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn saturate(v: i64) -> Self {
                v.clamp(Self::LOWEST, Self::HIGHEST) as $t
            }
        }
    )*};
}

quant_int!(u8, i8, u16, i16, i32);

/// Rounds half to even and saturates to `T`'s range (NaN becomes 0).
pub(crate) fn quantize_value<T: QuantInt>(v: f64) -> T {
    T::saturate(quantize_to_range(v, T::LOWEST, T::HIGHEST))
}

/// Rounds half to even and saturates to `lowest..=highest` (NaN becomes 0, or the bound
/// nearest to it).
pub(crate) fn quantize_to_range(v: f64, lowest: i64, highest: i64) -> i64 {
    let rounded = v.round_ties_even();
    if rounded.is_nan() {
        return 0.clamp(lowest, highest);
    }
    rounded.clamp(lowest as f64, highest as f64) as i64
}

/// Runs `$body` with `$t` bound to the Rust type of an integer quantized dtype.
macro_rules! with_quant_int {
    ($dtype:expr, $t:ident => $body:expr, _ => $fallback:expr) => {
        match $dtype {
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::I8 => {
                type $t = i8;
                $body
            }
            DType::U16 => {
                type $t = u16;
                $body
            }
            DType::I16 => {
                type $t = i16;
                $body
            }
            _ => $fallback,
        }
    };
}
pub(crate) use with_quant_int;

/// Checks that operand `index` of an integer product is u8 or i8.
pub(crate) fn check_operand(op: &str, index: usize, dtype: DType) -> KernelResult<()> {
    if dtype != DType::U8 && dtype != DType::I8 {
        return Err(error(
            op,
            format_args!("input {index} has dtype {dtype}, expected u8 or i8"),
        ));
    }
    Ok(())
}

/// The output dtype of a QLinear product (QLinearMatMul, QLinearConv), whose inputs are
/// `a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero`: the operands are u8/i8, the scales
/// floats, and the output takes y_zero's dtype (a's without it).
pub(crate) fn qlinear_output_dtype(op: &str, cx: &InferContext<'_>) -> KernelResult<DType> {
    let (a, b) = (cx.input(0)?, cx.input(3)?);
    check_operand(op, 0, a.dtype)?;
    check_operand(op, 3, b.dtype)?;
    for i in [1, 4, 6] {
        let scale = cx.input(i)?;
        if !is_float(scale.dtype) {
            return Err(error(
                op,
                format_args!(
                    "input {i} has dtype {}, expected a float scale",
                    scale.dtype
                ),
            ));
        }
    }
    let dtype = cx.optional_input(7)?.map_or(a.dtype, |z| z.dtype);
    if !is_quant_int(dtype) {
        return Err(error(
            op,
            format_args!("output dtype {dtype} is not supported"),
        ));
    }
    Ok(dtype)
}

/// Whether `dtype` is one of the integer types quantized values have here.
pub(crate) fn is_quant_int(dtype: DType) -> bool {
    matches!(dtype, DType::U8 | DType::I8 | DType::U16 | DType::I16)
}

/// Whether `dtype` is a low-bit type values are quantized to: every one but E8M0, which holds
/// scales.
pub(crate) fn is_quant_low_bit(dtype: DType) -> bool {
    dtype.is_low_bit() && dtype != DType::F8E8M0
}

/// How a scale (or zero point) of some shape spreads over the elements of a tensor, seen as
/// `[outer, dim, inner]` around the quantization axis.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Spread {
    /// One value for every element.
    Tensor,
    /// One value per index along the axis.
    Axis { dim: usize, inner: usize },
    /// One value per block of `block` indices along the axis (the scale's axis has
    /// `blocks` entries), per position elsewhere.
    Blocked {
        dim: usize,
        inner: usize,
        block: usize,
        blocks: usize,
    },
}

impl Spread {
    /// The spread of a scale of shape `scale` over a tensor of shape `x`.
    pub(crate) fn new(
        op: &str,
        x: &[usize],
        scale: &[usize],
        axis: i64,
        block_size: i64,
    ) -> KernelResult<Self> {
        let count: usize = scale.iter().product();
        if scale.is_empty() || count == 1 {
            return Ok(Spread::Tensor);
        }
        let axis = normalize_axis(op, axis, x.len())?;
        let (dim, inner) = (x[axis], x[axis + 1..].iter().product());
        if block_size <= 0 {
            if scale.len() != 1 || scale[0] != dim {
                return Err(error(
                    op,
                    format_args!(
                        "scale {} does not fit axis {axis} of {} (per-axis scales are 1-D)",
                        Shape(scale),
                        Shape(x)
                    ),
                ));
            }
            return Ok(Spread::Axis { dim, inner });
        }
        let block = block_size as usize;
        let blocks = dim.div_ceil(block);
        let fits = scale.len() == x.len()
            && scale
                .iter()
                .zip(x)
                .enumerate()
                .all(|(d, (&s, &n))| if d == axis { s == blocks } else { s == n });
        if !fits {
            return Err(error(
                op,
                format_args!(
                    "scale {} does not fit blocks of {block} along axis {axis} of {}",
                    Shape(scale),
                    Shape(x)
                ),
            ));
        }
        Ok(Spread::Blocked {
            dim,
            inner,
            block,
            blocks,
        })
    }

    /// The index of element `e`'s value.
    pub(crate) fn index(&self, e: usize) -> usize {
        match *self {
            Spread::Tensor => 0,
            Spread::Axis { dim, inner } => e / inner % dim,
            Spread::Blocked {
                dim,
                inner,
                block,
                blocks,
            } => {
                let i = e % inner;
                let a = e / inner % dim;
                let o = e / (inner * dim);
                (o * blocks + a / block) * inner + i
            }
        }
    }
}

/// A zero point of integer type as i64 values, or of a low-bit type, or none.
#[derive(Clone, Copy)]
pub(crate) enum ZeroPoint<'a> {
    None,
    U8(&'a [u8]),
    I8(&'a [i8]),
    U16(&'a [u16]),
    I16(&'a [i16]),
    /// A byte per value of the low-bit `DType`.
    LowBit(DType, &'a [u8]),
}

impl<'a> ZeroPoint<'a> {
    /// The zero point in `tensor`, which must have dtype `dtype`.
    pub(crate) fn new(op: &str, tensor: Option<TensorRef<'a>>, dtype: DType) -> KernelResult<Self> {
        let Some(t) = tensor else {
            return Ok(ZeroPoint::None);
        };
        if t.dtype() != dtype {
            return Err(error(
                op,
                format_args!("zero point has dtype {}, expected {dtype}", t.dtype()),
            ));
        }
        Ok(match t.dtype() {
            DType::U8 => ZeroPoint::U8(t.as_slice()?),
            DType::I8 => ZeroPoint::I8(t.as_slice()?),
            DType::U16 => ZeroPoint::U16(t.as_slice()?),
            DType::I16 => ZeroPoint::I16(t.as_slice()?),
            low if is_quant_low_bit(low) => ZeroPoint::LowBit(low, t.bytes()),
            other => {
                return Err(error(
                    op,
                    format_args!("zero point of dtype {other} is not supported"),
                ))
            }
        })
    }

    pub(crate) fn len(&self) -> Option<usize> {
        match self {
            ZeroPoint::None => None,
            ZeroPoint::U8(v) => Some(v.len()),
            ZeroPoint::I8(v) => Some(v.len()),
            ZeroPoint::U16(v) => Some(v.len()),
            ZeroPoint::I16(v) => Some(v.len()),
            ZeroPoint::LowBit(_, v) => Some(v.len()),
        }
    }

    /// Value `i` (0 without a zero point; a low-bit float's truncated toward zero).
    pub(crate) fn get(&self, i: usize) -> i64 {
        match self {
            ZeroPoint::LowBit(..) => self.value(i) as i64,
            _ => self.integer(i).unwrap_or(0),
        }
    }

    /// Value `i` as an f32, which holds every zero point exactly (0 without a zero point).
    pub(crate) fn value(&self, i: usize) -> f32 {
        match *self {
            ZeroPoint::LowBit(dtype, v) => low_bit::to_f32(dtype, v[i]),
            _ => self.integer(i).unwrap_or(0) as f32,
        }
    }

    fn integer(&self, i: usize) -> Option<i64> {
        Some(match self {
            ZeroPoint::None | ZeroPoint::LowBit(..) => return None,
            ZeroPoint::U8(v) => i64::from(v[i]),
            ZeroPoint::I8(v) => i64::from(v[i]),
            ZeroPoint::U16(v) => i64::from(v[i]),
            ZeroPoint::I16(v) => i64::from(v[i]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even_and_saturates() {
        assert_eq!(quantize_value::<u8>(2.5), 2);
        assert_eq!(quantize_value::<u8>(3.5), 4);
        assert_eq!(quantize_value::<u8>(-3.0), 0);
        assert_eq!(quantize_value::<i8>(300.0), 127);
        assert_eq!(quantize_value::<i8>(-0.5), 0);
    }

    #[test]
    fn blocks_map_to_their_scale() {
        let spread = Spread::new("Q", &[3, 4], &[3, 2], 1, 2).unwrap();
        let indices: Vec<usize> = (0..12).map(|e| spread.index(e)).collect();
        assert_eq!(indices, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        let spread = Spread::new("Q", &[2, 3, 2], &[3], 1, 0).unwrap();
        assert_eq!(spread.index(7), 0);
        assert_eq!(spread.index(3), 1);
    }
}
