//! The discrete Fourier transform of one line of complex values, in f64: an iterative radix-2
//! FFT when the length is a power of two, and Bluestein's algorithm otherwise (the transform
//! written as a convolution with a chirp, computed by radix-2 FFTs of a power-of-two length of
//! at least `2n - 1`), so every length costs O(n log n). The tables of a length come from the
//! host's scratch, once per kernel call; a transform works in place on split real and
//! imaginary buffers and allocates nothing.

use opal_plugin_api::prelude::*;
use std::f64::consts::PI;

/// The tables for transforms of one length `n`.
pub(crate) struct Fft<'a> {
    n: usize,
    /// The power-of-two length the radix-2 passes run at: `n`, or Bluestein's convolution length.
    m: usize,
    /// `cos` and `-sin` of `2πk/m` for `k < m/2`: the forward transform's twiddle factors.
    twiddle_re: &'a [f64],
    twiddle_im: &'a [f64],
    /// Bluestein only (empty when `n` is a power of two): the chirp `exp(-iπk²/n)` for `k < n`,
    /// and the transform of the convolution filter, the chirp's conjugate laid out circularly
    /// over `m` values.
    chirp_re: &'a [f64],
    chirp_im: &'a [f64],
    filter_re: &'a [f64],
    filter_im: &'a [f64],
}

impl<'a> Fft<'a> {
    /// The tables for transforms of length `n` (at least 1), in the kernel call's scratch.
    pub(crate) fn new(cx: &KernelContext<'a>, n: usize) -> KernelResult<Self> {
        if n == 0 {
            return Err(KernelError::new("a DFT needs a length of at least 1"));
        }
        let direct = n.is_power_of_two();
        let m = if direct {
            n
        } else {
            n.checked_mul(2)
                .and_then(|twice| (twice - 1).checked_next_power_of_two())
                .ok_or_else(|| KernelError::new(format!("a DFT of length {n} is too long")))?
        };
        let (chirp_len, filter_len) = if direct { (0, 0) } else { (n, m) };
        let tables = cx.scratch_unzeroed::<f64>(m / 2 * 2 + 2 * chirp_len + 2 * filter_len)?;
        let (twiddle_re, rest) = tables.split_at_mut(m / 2);
        let (twiddle_im, rest) = rest.split_at_mut(m / 2);
        let (chirp_re, rest) = rest.split_at_mut(chirp_len);
        let (chirp_im, rest) = rest.split_at_mut(chirp_len);
        let (filter_re, filter_im) = rest.split_at_mut(filter_len);
        for k in 0..m / 2 {
            let (sin, cos) = (2.0 * PI * k as f64 / m as f64).sin_cos();
            twiddle_re[k] = cos;
            twiddle_im[k] = -sin;
        }
        if !direct {
            // k² modulo 2n keeps the angle small, so it stays exact for long chirps.
            let modulus = 2 * n as u128;
            for k in 0..n {
                let turn = (k as u128 * k as u128 % modulus) as f64;
                let (sin, cos) = (PI * turn / n as f64).sin_cos();
                chirp_re[k] = cos;
                chirp_im[k] = -sin;
            }
            filter_re.fill(0.0);
            filter_im.fill(0.0);
            for k in 0..n {
                filter_re[k] = chirp_re[k];
                filter_im[k] = -chirp_im[k];
                if k > 0 {
                    filter_re[m - k] = chirp_re[k];
                    filter_im[m - k] = -chirp_im[k];
                }
            }
            radix2(filter_re, filter_im, twiddle_re, twiddle_im);
        }
        Ok(Fft {
            n,
            m,
            twiddle_re,
            twiddle_im,
            chirp_re,
            chirp_im,
            filter_re,
            filter_im,
        })
    }

    /// How many values each of the two buffers a transform works in must hold.
    pub(crate) fn buffer_len(&self) -> usize {
        self.m
    }

    /// Transforms the line held in the first `n` values of `re` and `im` (each at least
    /// [`buffer_len`](Self::buffer_len) long) in place: `X[k] = Σ x[t]·exp(∓2πi·kt/n)`, with
    /// the `+` sign and divided by `n` when `inverse`. Values past `n` are overwritten.
    #[inline(always)]
    pub(crate) fn transform(&self, re: &mut [f64], im: &mut [f64], inverse: bool) {
        let (n, m) = (self.n, self.m);
        let (re, im) = (&mut re[..m], &mut im[..m]);
        // The inverse transform is the conjugate of the forward transform of the conjugate.
        if inverse {
            im[..n].iter_mut().for_each(|v| *v = -*v);
        }
        if n == m {
            radix2(re, im, self.twiddle_re, self.twiddle_im);
        } else {
            self.bluestein(re, im);
        }
        if inverse {
            let scale = 1.0 / n as f64;
            re[..n].iter_mut().for_each(|v| *v *= scale);
            im[..n].iter_mut().for_each(|v| *v *= -scale);
        }
    }

    /// The forward transform by Bluestein's chirp convolution: with `kt = (k² + t² - (k-t)²)/2`,
    /// `X[k] = w[k]·Σ (x[t]·w[t])·conj(w[k-t])` where `w[k] = exp(-iπk²/n)`.
    #[inline(always)]
    fn bluestein(&self, re: &mut [f64], im: &mut [f64]) {
        let (n, m) = (self.n, self.m);
        for k in 0..n {
            let (a, b) = (re[k], im[k]);
            let (c, d) = (self.chirp_re[k], self.chirp_im[k]);
            re[k] = a * c - b * d;
            im[k] = a * d + b * c;
        }
        re[n..].fill(0.0);
        im[n..].fill(0.0);
        radix2(re, im, self.twiddle_re, self.twiddle_im);
        // Multiply by the filter's transform and conjugate, so that the next forward pass is
        // the inverse transform (conjugated once more below).
        for k in 0..m {
            let (a, b) = (re[k], im[k]);
            let (c, d) = (self.filter_re[k], self.filter_im[k]);
            re[k] = a * c - b * d;
            im[k] = -(a * d + b * c);
        }
        radix2(re, im, self.twiddle_re, self.twiddle_im);
        let scale = 1.0 / m as f64;
        for k in 0..n {
            let (a, b) = (re[k] * scale, -im[k] * scale);
            let (c, d) = (self.chirp_re[k], self.chirp_im[k]);
            re[k] = a * c - b * d;
            im[k] = a * d + b * c;
        }
    }
}

/// The forward transform of `re` and `im` in place; their length is a power of two, and
/// `twiddle_re` and `twiddle_im` hold `cos` and `-sin` of `2πk/len` for `k < len/2`.
#[inline(always)]
fn radix2(re: &mut [f64], im: &mut [f64], twiddle_re: &[f64], twiddle_im: &[f64]) {
    let len = re.len();
    if len <= 1 {
        return;
    }
    // Bit-reversed order first, then butterflies of growing span.
    let mut j = 0;
    for i in 1..len {
        let mut bit = len >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut span = 2;
    while span <= len {
        let half = span / 2;
        let stride = len / span;
        for start in (0..len).step_by(span) {
            let (lo_re, hi_re) = re[start..start + span].split_at_mut(half);
            let (lo_im, hi_im) = im[start..start + span].split_at_mut(half);
            for k in 0..half {
                let (wr, wi) = (twiddle_re[k * stride], twiddle_im[k * stride]);
                let (xr, xi) = (hi_re[k], hi_im[k]);
                let (vr, vi) = (xr * wr - xi * wi, xr * wi + xi * wr);
                let (ur, ui) = (lo_re[k], lo_im[k]);
                lo_re[k] = ur + vr;
                lo_im[k] = ui + vi;
                hi_re[k] = ur - vr;
                hi_im[k] = ui - vi;
            }
        }
        span *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    /// The textbook O(n²) transform, for comparison.
    fn direct(re: &[f64], im: &[f64], inverse: bool) -> (Vec<f64>, Vec<f64>) {
        let n = re.len();
        let sign = if inverse { 1.0 } else { -1.0 };
        let scale = if inverse { 1.0 / n as f64 } else { 1.0 };
        (0..n)
            .map(|k| {
                let (mut sr, mut si) = (0.0, 0.0);
                for t in 0..n {
                    let turn = (k * t % n) as f64;
                    let (s, c) = (sign * 2.0 * PI * turn / n as f64).sin_cos();
                    sr += re[t] * c - im[t] * s;
                    si += re[t] * s + im[t] * c;
                }
                (sr * scale, si * scale)
            })
            .unzip()
    }

    /// Transforms a line of each length through a kernel context (for its scratch) and
    /// compares it with the direct transform: output 0 holds the largest difference.
    struct Compare;

    impl Operator for Compare {
        const OP_TYPE: &'static str = "Compare";

        fn infer(_cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
            Ok(vec![OutputType::fixed(DType::F64, &[1])])
        }

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let lengths = cx.input(0)?.as_slice::<i64>()?;
            let mut worst = 0.0f64;
            for &n in lengths {
                let n = n as usize;
                let fft = Fft::new(cx, n)?;
                let re: Vec<f64> = (0..n).map(|t| ((t * 7 % 13) as f64) - 6.0).collect();
                let im: Vec<f64> = (0..n).map(|t| ((t * 5 % 11) as f64) * 0.5).collect();
                for inverse in [false, true] {
                    let (want_re, want_im) = direct(&re, &im, inverse);
                    let mut got_re = re.clone();
                    let mut got_im = im.clone();
                    got_re.resize(fft.buffer_len(), f64::NAN);
                    got_im.resize(fft.buffer_len(), f64::NAN);
                    fft.transform(&mut got_re, &mut got_im, inverse);
                    let norm = want_re
                        .iter()
                        .chain(&want_im)
                        .fold(1.0f64, |a, v| a.max(v.abs()));
                    for k in 0..n {
                        let diff = (got_re[k] - want_re[k])
                            .abs()
                            .max((got_im[k] - want_im[k]).abs());
                        worst = worst.max(diff / norm);
                    }
                }
            }
            cx.output(0)?.as_slice_mut::<f64>()?[0] = worst;
            Ok(())
        }
    }

    #[test]
    fn every_length_matches_the_direct_transform() {
        let lengths: Vec<i64> = (1..=70)
            .chain([96, 100, 127, 128, 400, 512, 1000])
            .collect();
        let lengths = OwnedTensor::i64(&[lengths.len()], &lengths);
        let worst = run_operator::<Compare>(&[lengths], &[], 1).unwrap()[0].to_vec::<f64>()[0];
        assert!(worst < 1e-12, "largest relative difference {worst}");
    }
}
