//! StringConcat: the elementwise concatenation of two string tensors, broadcast.

use crate::common::expect_strings;
use opal_kernel_support::broadcast::{broadcast_shapes, Plan};
use opal_plugin_api::prelude::*;

/// `x + y` for strings, broadcast.
pub struct StringConcat;

impl Operator for StringConcat {
    const OP_TYPE: &'static str = "StringConcat";
    const SINCE_VERSION: i64 = 20;
    const TAKES_STRINGS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        expect_strings(op, cx, 0)?;
        expect_strings(op, cx, 1)?;
        let shape = broadcast_shapes(op, cx.input(0)?.shape, cx.input(1)?.shape)?;
        Ok(vec![OutputType::new(DType::STRING, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (x, y) = (cx.input(0)?, cx.input(1)?);
        let (xs, ys) = (x.strings()?, y.strings()?);
        let longest = |s: Strings<'_>| -> KernelResult<usize> {
            s.iter().try_fold(0, |n, e| Ok(n.max(e?.len())))
        };
        let joined = cx.scratch::<u8>(longest(xs)? + longest(ys)?)?;
        let mut out = cx.output(0)?.strings_mut()?;
        let plan = Plan::broadcast(op, out.shape(), [x.shape(), y.shape()])?;
        for i in 0..out.len() {
            let [a, b] = plan.offsets(i);
            let (a, b) = (xs.get(a)?, ys.get(b)?);
            joined[..a.len()].copy_from_slice(a.as_bytes());
            joined[a.len()..a.len() + b.len()].copy_from_slice(b.as_bytes());
            let text = std::str::from_utf8(&joined[..a.len() + b.len()])
                .map_err(|_| KernelError::new("StringConcat: joined text is not UTF-8"))?;
            out.set(i, text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn strings_join_elementwise_and_broadcast() {
        let x = OwnedTensor::strings(&[3], &["cat", "", "的"]);
        let y = OwnedTensor::strings(&[1], &["s"]);
        let out = run_operator::<StringConcat>(&[x, y], &[], 1).unwrap();
        assert_eq!(out[0].to_strings(), ["cats", "s", "的s"]);
        let a = OwnedTensor::strings(&[2, 1], &["a", "b"]);
        let b = OwnedTensor::strings(&[2], &["1", "2"]);
        let out = run_operator::<StringConcat>(&[a, b], &[], 1).unwrap();
        assert_eq!(out[0].shape(), [2, 2]);
        assert_eq!(out[0].to_strings(), ["a1", "a2", "b1", "b2"]);
    }

    #[test]
    fn numbers_are_refused() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        let y = OwnedTensor::strings(&[1], &["s"]);
        let error = run_operator::<StringConcat>(&[x, y], &[], 1).unwrap_err();
        assert_eq!(
            error,
            "StringConcat: input 0 has dtype f32; it takes strings"
        );
    }
}
