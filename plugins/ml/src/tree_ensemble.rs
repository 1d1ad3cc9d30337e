//! `ai.onnx.ml` `TreeEnsemble` (opset 5): each sample of `X` (`[N, F]`, f32, f64 or f16) walks
//! every tree to a leaf, whose weight goes to the leaf's target; per target the weights are
//! summed, averaged over the trees, or their minimum or maximum kept (`aggregate_function`),
//! then `post_transform` is applied to the sample's `n_targets` scores. Computed in f64,
//! written in `X`'s dtype.
//!
//! Where ONNX's reference implementation and the operator's documentation differ, opal follows
//! the documentation: membership sets are taken in the order their nodes appear in
//! `nodes_modes` (the reference takes them in walk order and ends a set early at a member equal
//! to 0), a one-node tree whose branches share a leaf reaches that leaf (the reference takes the
//! leaf numbered like the root), and `post_transform` is applied (the reference ignores it).
//! A target no leaf reaches keeps the aggregate's starting value: 0 for a sum or an average,
//! the dtype's largest finite value for a minimum and its lowest for a maximum.

use crate::{post_transform::PostTransform, tree::Forest, ML_DOMAIN};
use opal_kernel_support::{
    check::error,
    float_values::{expect_float, Floats, Values},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the leaf weights a sample reaches are combined per target.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Aggregate {
    Average,
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn new(op: &str, attributes: &Attributes<'_>) -> KernelResult<Self> {
        let code = attributes
            .int("aggregate_function", 1)
            .map_err(|e| error(op, e))?;
        Ok(match code {
            0 => Aggregate::Average,
            1 => Aggregate::Sum,
            2 => Aggregate::Min,
            3 => Aggregate::Max,
            _ => {
                return Err(error(
                    op,
                    format_args!(
                        "aggregate_function {code} is not 0 (AVERAGE), 1 (SUM), 2 (MIN) or 3 (MAX)"
                    ),
                ))
            }
        })
    }

    /// The value a target starts from before any leaf is added, for output dtype `dtype`.
    fn start(self, dtype: DType) -> f64 {
        let largest = match dtype {
            DType::F64 => f64::MAX,
            DType::F16 => 65504.0,
            _ => f64::from(f32::MAX),
        };
        match self {
            Aggregate::Average | Aggregate::Sum => 0.0,
            Aggregate::Min => largest,
            Aggregate::Max => -largest,
        }
    }
}

fn post_transform(op: &str, attributes: &Attributes<'_>) -> KernelResult<PostTransform> {
    let code = attributes
        .int("post_transform", 0)
        .map_err(|e| error(op, e))?;
    PostTransform::from_code(code).ok_or_else(|| {
        error(
            op,
            format_args!(
                "post_transform {code} is not 0 (NONE), 1 (SOFTMAX), 2 (LOGISTIC), 3 (SOFTMAX_ZERO) or 4 (PROBIT)"
            ),
        )
    })
}

/// A regression or classification tree ensemble.
pub struct TreeEnsemble;

impl Operator for TreeEnsemble {
    const DOMAIN: &'static str = ML_DOMAIN;
    const OP_TYPE: &'static str = "TreeEnsemble";
    const SINCE_VERSION: i64 = 5;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        if !matches!(x.dtype, DType::F32 | DType::F64 | DType::F16) {
            return Err(error(
                op,
                format_args!("X has dtype {}, expected f32, f64 or f16", x.dtype),
            ));
        }
        let &[samples, features] = x.shape else {
            return Err(error(
                op,
                format_args!(
                    "X has rank {}, expected a [samples, features] matrix",
                    x.shape.len()
                ),
            ));
        };
        let attributes = cx.attributes();
        Aggregate::new(op, &attributes)?;
        post_transform(op, &attributes)?;
        let forest = Forest::new(&attributes)?;
        forest.check_acyclic()?;
        if let (Some(max), Ok(features)) = (forest.max_feature(), usize::try_from(features)) {
            if max >= features {
                return Err(error(
                    op,
                    format_args!("a node reads feature {max}, but X has {features} features"),
                ));
            }
        }
        Ok(vec![OutputType::new(
            x.dtype,
            vec![samples, forest.targets() as i64],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let attributes = cx.attributes();
        let aggregate = Aggregate::new(op, &attributes)?;
        let transform = post_transform(op, &attributes)?;
        let forest = Forest::new(&attributes)?;
        let x = cx.input(0)?;
        expect_float(op, "X", x.dtype())?;
        let features = x.shape().get(1).copied().unwrap_or(0);
        if forest.max_feature().is_some_and(|max| max >= features) {
            return Err(error(
                op,
                format_args!("a node reads a feature beyond the {features} of X"),
            ));
        }
        let samples = Floats::new(op, "X", x)?;
        let targets = forest.targets();
        let nodes = forest.node_count();
        let (starts, ends) = (cx.scratch::<u64>(nodes)?, cx.scratch::<u64>(nodes)?);
        forest.member_sets(starts, ends);
        let sets = (&*starts, &*ends);
        let trees = forest.roots().count() as f64;
        let out = cx.output(0)?;
        let dtype = out.dtype();
        let scores = cx.scratch::<f64>(out.len())?;
        let looped = AtomicBool::new(false);
        for_each_chunk(cx, scores, targets.max(1), 64, |start, chunk| {
            let first = start / targets.max(1);
            for (row, scores) in chunk.chunks_exact_mut(targets.max(1)).enumerate() {
                let base = (first + row) * features;
                scores.fill(aggregate.start(dtype));
                for root in forest.roots() {
                    let Some(leaf) = forest.walk(root, |f| samples.get(base + f), sets) else {
                        looped.store(true, Ordering::Relaxed);
                        return;
                    };
                    let (target, weight) = forest.leaf(leaf);
                    let score = &mut scores[target];
                    *score = match aggregate {
                        Aggregate::Sum => *score + weight,
                        Aggregate::Average => *score + weight / trees,
                        Aggregate::Min => score.min(weight),
                        Aggregate::Max => score.max(weight),
                    };
                }
                transform.apply(&mut scores[..targets]);
            }
        });
        if looped.load(Ordering::Relaxed) {
            return Err(error(op, "a walk through the trees did not reach a leaf"));
        }
        let mut values = Values::new(op, out)?;
        for (i, &score) in scores.iter().enumerate() {
            values.set(i, score);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::{
        testing::{infer_input, infer_operator, int_attr, ints_attr, run_operator, OwnedTensor},
        AttrValue, Attribute,
    };

    /// The attribute tensors of a forest: splits (f64), modes (u8), leaf weights (f64) and
    /// membership values (f32).
    struct Tensors {
        splits: OwnedTensor,
        modes: OwnedTensor,
        weights: OwnedTensor,
        members: OwnedTensor,
    }

    fn tensor_attr<'a>(name: &'a str, tensor: &'a OwnedTensor) -> Attribute<'a> {
        Attribute {
            name: abi_stable::std_types::RStr::from_str(name),
            value: AttrValue::Tensor(tensor.view()),
        }
    }

    /// The single tree of ONNX's `tree_ensemble_single_tree` example (with the root's split
    /// moved from 3.14 to 3.25, which sends the samples the same way): node 0 (x0 <= 3.25)
    /// leads to node 1 (x0 <= 1.2) or node 2 (x0 <= 4.2), whose branches are leaves 0 to 3.
    fn single_tree() -> Tensors {
        Tensors {
            splits: OwnedTensor::new::<f64>(&[3], &[3.25, 1.2, 4.2]),
            modes: OwnedTensor::new::<u8>(&[3], &[0, 0, 0]),
            weights: OwnedTensor::new::<f64>(&[4], &[5.23, 12.12, -12.23, 7.21]),
            members: OwnedTensor::new::<f32>(&[0], &[]),
        }
    }

    fn attributes<'a>(t: &'a Tensors, extra: &[Attribute<'a>]) -> Vec<Attribute<'a>> {
        let mut list = vec![
            tensor_attr("nodes_splits", &t.splits),
            tensor_attr("nodes_modes", &t.modes),
            tensor_attr("leaf_weights", &t.weights),
            ints_attr("nodes_featureids", &[0, 0, 0]),
            ints_attr("nodes_truenodeids", &[1, 0, 1]),
            ints_attr("nodes_falsenodeids", &[2, 2, 3]),
            ints_attr("nodes_trueleafs", &[0, 1, 1]),
            ints_attr("nodes_falseleafs", &[0, 1, 1]),
            ints_attr("leaf_targetids", &[0, 1, 0, 1]),
            ints_attr("tree_roots", &[0]),
        ];
        for a in extra {
            list.retain(|b| b.name.as_str() != a.name.as_str());
            list.push(*a);
        }
        list
    }

    fn x() -> OwnedTensor {
        OwnedTensor::new::<f64>(&[3, 2], &[1.2, 3.4, -0.12, 1.66, 4.14, 1.77])
    }

    #[test]
    fn sums_the_leaves_per_target() {
        let t = single_tree();
        let attrs = attributes(&t, &[int_attr("n_targets", 2)]);
        let y = run_operator::<TreeEnsemble>(&[x()], &attrs, 1).unwrap();
        assert_eq!(y[0].shape(), [3, 2]);
        assert_eq!(y[0].to_vec::<f64>(), [5.23, 0.0, 5.23, 0.0, 0.0, 12.12]);
    }

    #[test]
    fn two_trees_average_and_n_targets_defaults_to_the_leaves() {
        let t = single_tree();
        let two = attributes(
            &t,
            &[
                ints_attr("tree_roots", &[0, 0]),
                int_attr("aggregate_function", 0),
            ],
        );
        let y = run_operator::<TreeEnsemble>(&[x()], &two, 1).unwrap();
        assert_eq!(y[0].to_vec::<f64>(), [5.23, 0.0, 5.23, 0.0, 0.0, 12.12]);
        let max = attributes(&t, &[int_attr("aggregate_function", 3)]);
        let y = run_operator::<TreeEnsemble>(&[x()], &max, 1).unwrap();
        assert_eq!(y[0].to_vec::<f64>()[..2], [5.23, -f64::MAX]);
    }

    #[test]
    fn set_membership_and_missing_values() {
        let t = Tensors {
            splits: OwnedTensor::f32(&[3], &[11.0, 0.0, 0.0]),
            modes: OwnedTensor::new::<u8>(&[3], &[0, 6, 6]),
            weights: OwnedTensor::f32(&[4], &[1.0, 10.0, 1000.0, 100.0]),
            members: OwnedTensor::f32(&[7], &[0.0, 3.7, f32::NAN, 12.0, 7.0, f32::NAN, 1.0]),
        };
        let mut attrs = attributes(
            &t,
            &[
                ints_attr("leaf_targetids", &[0, 1, 2, 3]),
                ints_attr("nodes_missing_value_tracks_true", &[1, 0, 0]),
                int_attr("n_targets", 4),
            ],
        );
        attrs.push(tensor_attr("membership_values", &t.members));
        // The trailing 1.0 after the last set makes no set of its own: it is ignored.
        let x = OwnedTensor::f32(&[4, 1], &[0.0, 3.4, f32::NAN, 12.0]);
        let y = run_operator::<TreeEnsemble>(&[x], &attrs, 1).unwrap();
        let y = y[0].to_vec::<f32>();
        // Node 1 leads to leaves 0 (member) and 2, node 2 to leaves 1 (member) and 3. 0 is a
        // member of node 1's set (leaf 0); 3.4 is not (leaf 2); NaN tracks true at the root,
        // then is no member (leaf 2); 12 goes false at the root, member of node 2 (leaf 1).
        assert_eq!(y[0..4], [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(y[4..8], [0.0, 0.0, 1000.0, 0.0]);
        assert_eq!(y[8..12], [0.0, 0.0, 1000.0, 0.0]);
        assert_eq!(y[12..16], [0.0, 10.0, 0.0, 0.0]);
    }

    #[test]
    fn post_transform_applies_per_sample() {
        let t = single_tree();
        let attrs = attributes(&t, &[int_attr("post_transform", 1)]);
        let y = run_operator::<TreeEnsemble>(&[x()], &attrs, 1).unwrap();
        let y = y[0].to_vec::<f64>();
        assert!((y[0] + y[1] - 1.0).abs() < 1e-12 && y[0] > 0.99, "{y:?}");
    }

    #[test]
    fn bad_trees_are_refused_with_the_attribute_named() {
        let t = single_tree();
        let input = [infer_input(DType::F64, &[3, 2])];
        let cases: Vec<(Vec<Attribute<'_>>, &str)> = vec![
            (
                attributes(&t, &[ints_attr("nodes_featureids", &[0, 0])]),
                "'nodes_featureids' has 2 entries",
            ),
            (
                attributes(&t, &[ints_attr("nodes_truenodeids", &[1, 0, 9])]),
                "nodes_truenodeids[2] is 9",
            ),
            (
                attributes(
                    &t,
                    &[
                        ints_attr("nodes_falseleafs", &[0, 0, 1]),
                        ints_attr("nodes_falsenodeids", &[2, 0, 3]),
                    ],
                ),
                "the trees loop",
            ),
            (
                attributes(&t, &[int_attr("n_targets", 1)]),
                "leaf_targetids[1] is 1",
            ),
            (
                attributes(&t, &[ints_attr("nodes_featureids", &[0, 0, 2])]),
                "reads feature 2, but X has 2 features",
            ),
            (
                attributes(&t, &[int_attr("aggregate_function", 7)]),
                "aggregate_function 7",
            ),
        ];
        for (attrs, expected) in cases {
            let err = infer_operator::<TreeEnsemble>(&input, &attrs, 1).unwrap_err();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
        let mut missing = attributes(&t, &[]);
        missing.retain(|a| a.name.as_str() != "tree_roots");
        let err = infer_operator::<TreeEnsemble>(&input, &missing, 1).unwrap_err();
        assert!(
            err.contains("required attribute 'tree_roots' is missing"),
            "{err}"
        );
    }

    #[test]
    fn wrong_dtypes_and_ranks_are_named() {
        let t = single_tree();
        let attrs = attributes(&t, &[]);
        let err = infer_operator::<TreeEnsemble>(&[infer_input(DType::I64, &[3, 2])], &attrs, 1)
            .unwrap_err();
        assert!(err.contains("X has dtype i64"), "{err}");
        let err = infer_operator::<TreeEnsemble>(&[infer_input(DType::F32, &[6])], &attrs, 1)
            .unwrap_err();
        assert!(err.contains("X has rank 1"), "{err}");
    }
}
