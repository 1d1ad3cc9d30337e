//! The random numbers of the generator operators (RandomUniform, RandomNormal, their `Like`
//! forms, Bernoulli): numpy's legacy `RandomState`, so that a given `seed` yields numpy's
//! numbers, which is how ONNX's reference implementation draws them. A Mersenne Twister
//! (MT19937, seeded with `init_genrand` as `RandomState(seed)` seeds it) gives 53-bit uniform
//! doubles as numpy's `random_sample` makes them, normal draws by numpy's polar method (which
//! keeps the second value of each pair for the next draw), and Bernoulli draws by numpy's
//! binomial inversion with `n = 1`.
//!
//! Each call of a node starts a new generator from its seed: a seeded node gives the same
//! values on every run. Without `seed` the generator is seeded from the operating system's
//! randomness.

use crate::check::error;
use opal_plugin_api::prelude::*;
use rand_mt::Mt;
use std::hash::{BuildHasher, RandomState};

/// numpy's `RandomState` with its cached normal draw.
pub(crate) struct LegacyRandom {
    mt: Mt,
    gauss: Option<f64>,
}

impl LegacyRandom {
    /// The generator `numpy.random.RandomState(seed)` makes.
    pub(crate) fn new(seed: u32) -> Self {
        LegacyRandom {
            mt: Mt::new(seed),
            gauss: None,
        }
    }

    /// A uniform double in `[0, 1)` from 53 random bits (numpy's `random_sample`).
    pub(crate) fn uniform(&mut self) -> f64 {
        let high = self.mt.next_u32() >> 5;
        let low = self.mt.next_u32() >> 6;
        (f64::from(high) * 67_108_864.0 + f64::from(low)) / 9_007_199_254_740_992.0
    }

    /// A standard normal draw by the polar method (numpy's `legacy_gauss`).
    pub(crate) fn gauss(&mut self) -> f64 {
        if let Some(kept) = self.gauss.take() {
            return kept;
        }
        loop {
            let x1 = 2.0 * self.uniform() - 1.0;
            let x2 = 2.0 * self.uniform() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.gauss = Some(f * x1);
                return f * x2;
            }
        }
    }

    /// 1 with probability `p` (in `[0, 1]`), else 0: numpy's legacy `binomial(1, p)`, which
    /// draws for every `p`, 0 included.
    pub(crate) fn bernoulli(&mut self, p: f64) -> u8 {
        if p <= 0.5 {
            self.binomial_inversion(p)
        } else {
            1 - self.binomial_inversion(1.0 - p)
        }
    }

    /// numpy's `random_binomial_inversion` for one trial: counts successes by walking the
    /// cumulative probabilities with one uniform draw, drawing again past the bound.
    fn binomial_inversion(&mut self, p: f64) -> u8 {
        let q = 1.0 - p;
        let qn = q.ln().exp();
        let bound = (p + 10.0 * (p * q + 1.0).sqrt()).min(1.0) as u8;
        let mut successes = 0u8;
        let mut px = qn;
        let mut u = self.uniform();
        while u > px {
            successes += 1;
            if successes > bound {
                successes = 0;
                px = qn;
                u = self.uniform();
            } else {
                u -= px;
                px = (f64::from(2 - successes) * p * px) / (f64::from(successes) * q);
            }
        }
        successes
    }
}

/// The generator for a node: seeded from its `seed` attribute (truncated to an integer, as
/// numpy takes it, which must lie in `[0, 2^32)`), or from fresh randomness when it has none.
pub(crate) fn generator(op: &str, attributes: &Attributes<'_>) -> KernelResult<LegacyRandom> {
    let seed = match attributes.get("seed") {
        None => RandomState::new().hash_one(0u8) as u32,
        Some(_) => {
            let seed = attributes.float("seed", 0.0).map_err(|e| error(op, e))?;
            let whole = seed.trunc();
            if !(0.0..=u32::MAX as f32).contains(&whole) {
                return Err(error(
                    op,
                    format_args!("seed {seed} must be a number from 0 to 2^32 - 1"),
                ));
            }
            whole as u32
        }
    };
    Ok(LegacyRandom::new(seed))
}

/// The dtype attribute `dtype` names, `default` when absent; an error unless it is one of the
/// float types the generators produce.
pub(crate) fn float_dtype(
    op: &str,
    attributes: &Attributes<'_>,
    default: Option<DType>,
) -> KernelResult<DType> {
    let dtype = match attributes.get("dtype") {
        None => default.ok_or_else(|| {
            error(
                op,
                "the input is not a float tensor, so the 'dtype' attribute must name the output's float type",
            )
        })?,
        Some(_) => {
            let code = attributes.int("dtype", 0).map_err(|e| error(op, e))?;
            i32::try_from(code).map(DType).unwrap_or(DType::UNDEFINED)
        }
    };
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(error(
            op,
            format_args!("dtype {dtype} is not one the generator makes: f32, f64, f16 or bf16"),
        ));
    }
    Ok(dtype)
}

/// Writes `count` draws into `out` as `x·scale + shift` with numpy's rounding: the draw is
/// first rounded to the output's dtype, then each step is done in that dtype.
pub(crate) fn fill(
    out: TensorMut<'_>,
    mut draw: impl FnMut() -> f64,
    scale: f32,
    shift: f32,
) -> KernelResult<()> {
    match out.dtype() {
        DType::F64 => {
            let (scale, shift) = (f64::from(scale), f64::from(shift));
            for y in out.as_slice_mut::<f64>()? {
                *y = draw() * scale + shift;
            }
        }
        DType::F32 => {
            for y in out.f32_mut()? {
                *y = draw() as f32 * scale + shift;
            }
        }
        half => {
            use opal_kernel_support::half::{f32_to_bits, round_to};
            let (scale, shift) = (round_to(half, scale), round_to(half, shift));
            for y in out.bytes_mut().chunks_exact_mut(2) {
                let x = round_to(half, draw() as f32);
                let value = round_to(half, round_to(half, x * scale) + shift);
                y.copy_from_slice(&f32_to_bits(half, value).to_le_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::float_attr;

    // Expected values from numpy 2.4's `RandomState`.

    #[test]
    fn uniform_draws_match_numpy() {
        let mut rng = LegacyRandom::new(0);
        let draws: Vec<f64> = (0..4).map(|_| rng.uniform()).collect();
        assert_eq!(
            draws,
            [
                0.548_813_503_927_324_8,
                0.715_189_366_372_419_5,
                0.602_763_376_071_643_9,
                0.544_883_182_996_896_9
            ]
        );
    }

    #[test]
    fn normal_draws_match_numpy() {
        let mut rng = LegacyRandom::new(42);
        let draws: Vec<f64> = (0..5).map(|_| rng.gauss()).collect();
        let numpy = [
            0.496_714_153_011_232_7,
            -0.138_264_301_171_184_66,
            0.647_688_538_100_692_5,
            1.523_029_856_408_025_4,
            -0.234_153_374_723_335_97,
        ];
        for (a, b) in draws.iter().zip(numpy) {
            assert!((a - b).abs() < 1e-15, "{draws:?}");
        }
    }

    #[test]
    fn bernoulli_draws_match_numpy_binomial() {
        let mut rng = LegacyRandom::new(7);
        let p = [0.1, 0.5, 0.9, 0.0, 1.0, 0.3, 0.75, 0.5];
        let draws: Vec<u8> = p.iter().map(|&p| rng.bernoulli(p)).collect();
        assert_eq!(draws, [0, 1, 1, 0, 1, 0, 1, 0]);
    }

    #[test]
    fn seeds_are_whole_numbers_in_the_u32_range() {
        for bad in [-1.0, 5e9, f32::NAN] {
            let attrs = [float_attr("seed", bad)];
            let err = generator("RandomUniform", &Attributes::new(&attrs))
                .err()
                .unwrap();
            assert!(err.message().contains("must be a number from 0"), "{err}");
        }
        let attrs = [float_attr("seed", 7.9)];
        let mut rng = generator("RandomUniform", &Attributes::new(&attrs)).unwrap();
        assert_eq!(rng.bernoulli(0.5), LegacyRandom::new(7).bernoulli(0.5));
    }
}
