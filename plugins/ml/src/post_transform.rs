//! The transforms the `ai.onnx.ml` predictors apply to a sample's scores (`post_transform`):
//! none, softmax, logistic, softmax that leaves zeros at zero, and probit, as onnxruntime
//! computes them.

/// A `post_transform` value.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    /// The transform numbered `code` as `TreeEnsemble` numbers them (0 to 4).
    pub(crate) fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => PostTransform::None,
            1 => PostTransform::Softmax,
            2 => PostTransform::Logistic,
            3 => PostTransform::SoftmaxZero,
            4 => PostTransform::Probit,
            _ => return None,
        })
    }

    /// Transforms one sample's scores in place.
    pub(crate) fn apply(self, scores: &mut [f64]) {
        match self {
            PostTransform::None => {}
            PostTransform::Softmax => softmax(scores, false),
            PostTransform::SoftmaxZero => softmax(scores, true),
            PostTransform::Logistic => {
                for v in scores {
                    *v = 1.0 / (1.0 + (-*v).exp());
                }
            }
            PostTransform::Probit => {
                for v in scores {
                    *v = std::f64::consts::SQRT_2 * erf_inv(2.0 * *v - 1.0);
                }
            }
        }
    }
}

/// Softmax over `scores`; with `keep_zeros`, scores of zero stay zero and take no share.
fn softmax(scores: &mut [f64], keep_zeros: bool) {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in scores.iter_mut() {
        *v = if keep_zeros && v.abs() < 1e-7 {
            0.0
        } else {
            (*v - max).exp()
        };
        sum += *v;
    }
    if sum > 0.0 {
        for v in scores {
            *v /= sum;
        }
    }
}

/// The inverse error function by Winitzki's approximation (relative error below 2e-3),
/// the one onnxruntime's probit uses.
fn erf_inv(x: f64) -> f64 {
    const A: f64 = 0.147;
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let ln = ((1.0 - x) * (1.0 + x)).ln();
    let first = 2.0 / (std::f64::consts::PI * A) + 0.5 * ln;
    let second = ln / A;
    sign * (-first + (first * first - second).sqrt()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_softmax_zero_keeps_zeros() {
        let mut v = [1.0, 2.0, 3.0];
        PostTransform::Softmax.apply(&mut v);
        assert!((v.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((v[2] - 0.665_240_955_774_821_5).abs() < 1e-12, "{v:?}");
        let mut v = [0.0, 1.0, 1.0];
        PostTransform::SoftmaxZero.apply(&mut v);
        assert_eq!(v, [0.0, 0.5, 0.5]);
    }

    #[test]
    fn logistic_and_probit() {
        let mut v = [0.0, 2.0];
        PostTransform::Logistic.apply(&mut v);
        assert!((v[0] - 0.5).abs() < 1e-15 && (v[1] - 0.880_797_077_977_882_3).abs() < 1e-12);
        // probit(0.975) is the 97.5th percentile of the standard normal, 1.95996.
        let mut v = [0.5, 0.975];
        PostTransform::Probit.apply(&mut v);
        assert!(
            v[0].abs() < 1e-12 && (v[1] - 1.959_964).abs() < 5e-3,
            "{v:?}"
        );
    }
}
