//! Mean and variance of runs of values, shared by the normalisation operators: two passes
//! (mean, then the mean squared deviation) for accuracy, population variance as ONNX uses.
//! Sums run in eight lanes, so that they vectorise and round less than one running total.

/// `(mean, variance)` of `values` (0 and 0 when empty).
pub(crate) fn mean_variance(values: &[f32]) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f32;
    let mean = sum(values) / n;
    (mean, squared_deviations(values, mean) / n)
}

/// `(mean, variance)` over several runs of values taken together.
pub(crate) fn mean_variance_of<'a>(runs: impl Iterator<Item = &'a [f32]> + Clone) -> (f32, f32) {
    let (total, count) = runs.clone().fold((0.0f64, 0usize), |(s, n), run| {
        (s + sum(run) as f64, n + run.len())
    });
    if count == 0 {
        return (0.0, 0.0);
    }
    let mean = (total / count as f64) as f32;
    let squares: f64 = runs.map(|run| squared_deviations(run, mean) as f64).sum();
    (mean, (squares / count as f64) as f32)
}

/// `sum(values)`.
pub(crate) fn sum(values: &[f32]) -> f32 {
    lane_sum(values, |v| v)
}

/// `sum(values²)`.
pub(crate) fn sum_of_squares(values: &[f32]) -> f32 {
    lane_sum(values, |v| v * v)
}

/// `sum((values - mean)²)`.
fn squared_deviations(values: &[f32], mean: f32) -> f32 {
    lane_sum(values, |v| (v - mean) * (v - mean))
}

#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_of_a_run_and_of_runs_agree() {
        let values: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let (m, v) = mean_variance(&values);
        let (m2, v2) = mean_variance_of(values.chunks(5));
        assert!((m - m2).abs() < 1e-5 && (v - v2).abs() < 1e-5);
        let expected_mean = values.iter().sum::<f32>() / 37.0;
        let expected_var = values
            .iter()
            .map(|x| (x - expected_mean).powi(2))
            .sum::<f32>()
            / 37.0;
        assert!((m - expected_mean).abs() < 1e-5);
        assert!((v - expected_var).abs() < 1e-4);
        assert_eq!(mean_variance(&[]), (0.0, 0.0));
        assert!((sum_of_squares(&values) - values.iter().map(|x| x * x).sum::<f32>()).abs() < 1e-3);
    }
}
