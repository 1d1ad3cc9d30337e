//! The SGEMM against a reference product, on every instruction set this CPU runs.

use super::*;
use crate::testutil::{reference, values};
use opal_plugin_api::{
    testing::{assert_close, OwnedTensor, TestHost},
    Operator,
};

/// The instruction set named by the call's `isa` attribute, or the current one.
fn isa_attribute(cx: &KernelContext<'_>) -> KernelResult<Isa> {
    let name = cx.attributes().string("isa", "")?;
    if name.is_empty() {
        return Ok(isa::current(cx));
    }
    name.parse()
        .map_err(|e: isa::UnknownIsa| KernelError::new(e.to_string()))
}

/// Runs one product through `sgemm_on` inside a kernel call. Inputs: A, B, C (all flat), and
/// a 1-D tensor `[m, n, k, trans_a, trans_b]` as f32; attributes alpha, beta, `packed` (bit 1:
/// A is packed ahead with `pack_a_whole`, bit 2: B with `pack_b_whole`) and `isa` (the
/// instruction set's name).
struct Raw;

impl Operator for Raw {
    const OP_TYPE: &'static str = "RawSgemm";

    fn infer(
        cx: &opal_plugin_api::InferContext<'_>,
    ) -> KernelResult<Vec<opal_plugin_api::OutputType>> {
        let c = cx.input(2)?;
        Ok(vec![opal_plugin_api::OutputType::new(
            c.dtype,
            c.shape.to_vec(),
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let a = cx.input(0)?.f32()?;
        let b = cx.input(1)?.f32()?;
        let c0 = cx.input(2)?.f32()?;
        let dims = cx.input(3)?.f32()?;
        let [m, n, k, ta, tb] = [0, 1, 2, 3, 4].map(|i| dims[i] as usize);
        let alpha = cx.attributes().float("alpha", 1.0)?;
        let beta = cx.attributes().float("beta", 0.0)?;
        let isa = isa_attribute(cx)?;
        let c = cx.output(0)?.f32_mut()?;
        if beta != 0.0 {
            c.copy_from_slice(c0);
        }
        let a = if ta == 1 {
            Operand {
                data: a,
                row_stride: 1,
                col_stride: m,
            }
        } else {
            Operand {
                data: a,
                row_stride: k,
                col_stride: 1,
            }
        };
        let b = if tb == 1 {
            Operand {
                data: b,
                row_stride: 1,
                col_stride: k,
            }
        } else {
            Operand {
                data: b,
                row_stride: n,
                col_stride: 1,
            }
        };
        let packing = cx.attributes().int("packed", 0)?;
        let packed_a = if packing & 1 != 0 {
            let packed = cx.scratch::<f32>(packed_a_len(isa, m, k))?;
            pack_a_whole(isa, &a, m, k, packed);
            Some(PackedA {
                data: packed,
                batch_stride: 0,
                isa,
            })
        } else {
            None
        };
        let packed_b = if packing & 2 != 0 {
            let packed = cx.scratch::<f32>(packed_b_len(isa, k, n))?;
            pack_b_whole(isa, &b, k, n, packed);
            Some(PackedB {
                data: packed,
                batch_stride: 0,
                isa,
            })
        } else {
            None
        };
        let product = Product {
            m,
            n,
            k,
            alpha,
            beta,
            a,
            b,
            batches: 1,
            batch_offsets: &single_batch,
            packed_a,
            packed_b,
        };
        sgemm_on(cx, isa, &product, c)
    }
}

/// Batched products whose A is packed ahead, one per batch: inputs A (`batches x m x k`),
/// B (`batches x k x n`) and `[batches, m, n, k]` as f32; attribute `isa`.
struct PackedBatches;

impl Operator for PackedBatches {
    const OP_TYPE: &'static str = "RawPackedBatches";

    fn infer(
        cx: &opal_plugin_api::InferContext<'_>,
    ) -> KernelResult<Vec<opal_plugin_api::OutputType>> {
        let dims = cx.input(2)?;
        let dims = dims.value_as::<f32>()?.unwrap_or_default();
        let [batches, m, n] = [0, 1, 2].map(|i| dims[i] as i64);
        Ok(vec![opal_plugin_api::OutputType::new(
            opal_plugin_api::DType::F32,
            vec![batches, m, n],
        )])
    }

    const VALUE_INPUTS: &'static [usize] = &[2];

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let a = cx.input(0)?.f32()?;
        let b = cx.input(1)?.f32()?;
        let dims = cx.input(2)?.f32()?;
        let [batches, m, n, k] = [0, 1, 2, 3].map(|i| dims[i] as usize);
        let isa = isa_attribute(cx)?;
        // Packed for the instruction set `packed_for` names, the product's by default.
        let packed_for = match cx.attributes().string("packed_for", "")? {
            "" => isa,
            name => name
                .parse()
                .map_err(|e: isa::UnknownIsa| KernelError::new(e.to_string()))?,
        };
        let stride = packed_a_len(packed_for, m, k);
        let c = cx.output(0)?.f32_mut()?;
        let packed = cx.scratch::<f32>(batches * stride)?;
        for (batch, out) in packed.chunks_exact_mut(stride).enumerate() {
            let a = Operand {
                data: &a[batch * m * k..][..m * k],
                row_stride: k,
                col_stride: 1,
            };
            pack_a_whole(packed_for, &a, m, k, out);
        }
        let offsets = |batch: usize| (0, batch * k * n);
        let product = Product {
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            a: Operand {
                data: &[],
                row_stride: k,
                col_stride: 1,
            },
            b: Operand {
                data: b,
                row_stride: n,
                col_stride: 1,
            },
            batches,
            batch_offsets: &offsets,
            packed_a: Some(PackedA {
                data: packed,
                batch_stride: stride,
                isa: packed_for,
            }),
            packed_b: None,
        };
        sgemm_on(cx, isa, &product, c)
    }
}

#[test]
fn batches_with_their_own_packed_a_match_the_reference() {
    // Row counts that are not whole micro-panels, so the split across threads must start
    // pieces on a batch's panel.
    for (batches, m, n, k, threads) in [(3, 13, 40, 300, 2), (36, 7, 20, 33, 2), (2, 64, 64, 64, 3)]
    {
        let a = values(batches * m * k, 1);
        let b = values(batches * k * n, 2);
        let dims = [batches, m, n, k].map(|d| d as f32);
        let inputs = [
            OwnedTensor::f32(&[batches * m * k], &a),
            OwnedTensor::f32(&[batches * k * n], &b),
            OwnedTensor::f32(&[4], &dims),
        ];
        let zeros = vec![0.0; m * n];
        let expected: Vec<f32> = (0..batches)
            .flat_map(|batch| {
                reference(
                    m,
                    n,
                    k,
                    1.0,
                    &a[batch * m * k..][..m * k],
                    (k, 1),
                    &b[batch * k * n..][..k * n],
                    (n, 1),
                    0.0,
                    &zeros,
                )
            })
            .collect();
        for isa in Isa::available() {
            let attributes = [opal_plugin_api::testing::string_attr("isa", isa.name())];
            let y = TestHost::new()
                .threads(threads)
                .run::<PackedBatches>(&inputs, &attributes, 1)
                .unwrap();
            assert_close(y[0].as_slice(), &expected, 1e-5 * (k as f32).sqrt());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check(m: usize, n: usize, k: usize, ta: bool, tb: bool, alpha: f32, beta: f32, threads: usize) {
    let a = values(m * k, 1);
    let b = values(k * n, 2);
    let c = values(m * n, 3);
    let a_strides = if ta { (1, m) } else { (k, 1) };
    let b_strides = if tb { (1, k) } else { (n, 1) };
    let expected = reference(m, n, k, alpha, &a, a_strides, &b, b_strides, beta, &c);
    let dims = [m, n, k, ta as usize, tb as usize].map(|d| d as f32);
    let inputs = [
        OwnedTensor::f32(&[m * k], &a),
        OwnedTensor::f32(&[k * n], &b),
        OwnedTensor::f32(&[m * n], &c),
        OwnedTensor::f32(&[5], &dims),
    ];
    for isa in Isa::available() {
        for packed in [0, 1, 2, 3] {
            let attributes = [
                opal_plugin_api::testing::float_attr("alpha", alpha),
                opal_plugin_api::testing::float_attr("beta", beta),
                opal_plugin_api::testing::int_attr("packed", packed),
                opal_plugin_api::testing::string_attr("isa", isa.name()),
            ];
            let y = TestHost::new()
                .threads(threads)
                .run::<Raw>(&inputs, &attributes, 1)
                .unwrap();
            let tolerance = 1e-5 * (k as f32).sqrt().max(1.0);
            assert_close(y[0].as_slice(), &expected, tolerance);
        }
    }
}

#[test]
fn odd_sizes_match_the_reference() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (17, 33, 65),
        (5, 1, 300),
        (1, 40, 7),
        (3, 2000, 5),
    ] {
        check(m, n, k, false, false, 1.0, 0.0, 1);
    }
}

#[test]
fn transposed_operands_alpha_and_beta() {
    for (ta, tb) in [(false, true), (true, false), (true, true)] {
        check(17, 33, 65, ta, tb, 1.0, 0.0, 1);
        check(9, 20, 300, ta, tb, 0.5, 2.0, 2);
    }
    check(6, 7, 8, false, false, -1.5, 1.0, 1);
}

#[test]
fn few_rows_split_their_columns_across_threads() {
    check(10, 700, 300, false, false, 1.0, 0.0, 2);
    check(20, 1000, 64, true, true, 0.5, 2.0, 3);
    check(6, 2000, 100, false, true, 1.0, 1.0, 2);
    // Enough of a result that copying the blocks into place is split as well.
    check(8, 9000, 5, false, false, 1.0, 0.0, 2);
    // B packed ahead as one block of columns (`check` runs each product with B packed too):
    // each piece takes a run of its micro-panels in every depth block, the last run ending in
    // a partial panel; a transposed convolution's shape (49 positions, 512 channels).
    check(13, 1000, 600, false, false, 1.0, 0.0, 2);
    check(49, 512, 700, true, false, 1.0, 0.5, 2);
    check(20, 999, 300, false, true, 1.0, 0.0, 3);
}

#[test]
fn large_products_split_across_threads() {
    check(128, 256, 64, false, false, 1.0, 0.0, 3);
    check(130, 70, 600, true, true, 1.0, 0.5, 2);
}

#[test]
fn single_row_products_stream_b_in_either_layout() {
    // One row of A, with B stored either way: alpha and beta, enough columns to split over
    // threads, and depths that are not a multiple of the dot product's lanes or of the four
    // rows summed at a time.
    for tb in [false, true] {
        check(1, 1, 1, false, tb, 1.0, 0.0, 1);
        check(1, 3000, 257, false, tb, 0.5, 2.0, 2);
        check(1, 1000, 2051, true, tb, 1.0, 1.0, 3);
        check(1, 2500, 3, false, tb, -1.0, 0.0, 2);
    }
}

#[test]
fn empty_depth_scales_c() {
    check(3, 4, 0, false, false, 1.0, 0.5, 1);
    check(3, 4, 0, false, false, 1.0, 0.0, 1);
}

#[test]
fn every_edge_and_block_shape_matches_the_reference() {
    // Every bottom-edge row count and right-edge column count of every kernel's tile (up to
    // 14 x 32), with each way of reading C, and depths over one block.
    for m in 1..=29 {
        check(m, 37, 5, false, false, 1.0, 0.0, 1);
    }
    for n in [1, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 65] {
        check(7, n, 9, false, false, 1.0, 0.0, 1);
        check(15, n, 9, false, false, 0.5, 1.0, 1);
        check(3, n, 9, false, false, 1.5, 0.5, 1);
    }
    check(200, 40, 600, false, false, 1.0, 0.0, 1);
    check(13, 4100, 3, false, true, 1.0, 0.5, 1);
    check(175, 19, 257, true, false, 2.0, 1.0, 1);
    // More rows than one block of A on every kernel.
    check(530, 35, 20, false, false, 1.0, 0.0, 1);
}

#[test]
fn every_kernel_blocks_in_whole_tiles() {
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Baseline, Isa::Neon] {
        let (mr, nr) = tile_shape(isa);
        let kernel = kernel(isa);
        assert_eq!(kernel.mc % mr, 0, "{isa}");
        assert_eq!(kernel.nc % nr, 0, "{isa}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn each_instruction_set_packs_for_its_own_tile() {
    // AVX-512 tiles have 14 rows, AVX2 tiles 6: 13 rows pack into one panel of 14 or three of 6.
    assert_eq!(tile_shape(Isa::Avx512), (14, 32));
    assert_eq!(tile_shape(Isa::Avx2), (6, 16));
    let (m, k) = (13, 3);
    assert_eq!(packed_a_len(Isa::Avx512, m, k), 14 * k);
    assert_eq!(packed_a_len(Isa::Avx2, m, k), 18 * k);
    // A value per row and depth step: `row * 10 + step`.
    let a: Vec<f32> = (0..m * k).map(|i| (i / k * 10 + i % k) as f32).collect();
    let a = Operand {
        data: &a,
        row_stride: k,
        col_stride: 1,
    };
    for (isa, mr) in [(Isa::Avx512, 14), (Isa::Avx2, 6)] {
        let mut packed = vec![f32::NAN; packed_a_len(isa, m, k)];
        pack_a_whole(isa, &a, m, k, &mut packed);
        // The first panel's second depth step starts after `mr` values of the first.
        assert_eq!(packed[mr], 1.0, "{isa}");
        assert_eq!(packed[mr - 1], if mr > m { 0.0 } else { 50.0 }, "{isa}");
    }
}

/// One product of a 13 x 3 A packed for `packed_for`, run on `run_on`.
fn run_packed_for(packed_for: Isa, run_on: Isa) -> Result<Vec<f32>, String> {
    let (m, n, k) = (13, 5, 3);
    let a = values(m * k, 1);
    let b = values(k * n, 2);
    let dims = [1, m, n, k].map(|d| d as f32);
    let inputs = [
        OwnedTensor::f32(&[m * k], &a),
        OwnedTensor::f32(&[k * n], &b),
        OwnedTensor::f32(&[4], &dims),
    ];
    let attributes = [
        opal_plugin_api::testing::string_attr("isa", run_on.name()),
        opal_plugin_api::testing::string_attr("packed_for", packed_for.name()),
    ];
    TestHost::new()
        .run::<PackedBatches>(&inputs, &attributes, 1)
        .map(|y| y[0].to_vec::<f32>())
        .map_err(|e| e.to_string())
}

#[test]
fn a_packed_for_another_instruction_set_or_one_the_cpu_lacks_is_refused() {
    for isa in Isa::available() {
        assert!(run_packed_for(isa, isa).is_ok(), "{isa}");
        for other in Isa::available().filter(|&other| other != isa) {
            let error = run_packed_for(other, isa).unwrap_err();
            assert!(error.contains("packed for"), "{error}");
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let error = run_packed_for(Isa::Neon, Isa::Neon).unwrap_err();
        assert!(error.contains("does not run neon"), "{error}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_avx512_packing_of_row_major_a_matches_the_portable_one() {
    if !Isa::Avx512.is_available() {
        return;
    }
    const MR: usize = x86::AVX512_MR;
    let (m, k) = (40, 70);
    let data = values(m * (k + 1) + 3, 4);
    // Row-major with an offset, and rows further apart than they are long.
    for (offset, row_stride) in [(0, k), (3, k), (0, k + 1)] {
        let a = Operand {
            data: &data[..offset + (m - 1) * row_stride + k.min(row_stride)],
            row_stride,
            col_stride: 1,
        };
        for (i, mc) in [(0, 40), (5, 14), (26, 14), (39, 1), (2, 29)] {
            for (p, kc) in [(0, 70), (1, 16), (3, 17), (10, 15), (0, 1), (54, 16)] {
                let len = round_up(mc, MR) * kc;
                let mut fast = vec![f32::NAN; len];
                let mut portable = vec![f32::NAN; len];
                pack::pack_a::<MR>(
                    Some(x86::avx512_pack_rows),
                    &a,
                    offset,
                    i,
                    mc,
                    p,
                    kc,
                    &mut fast,
                );
                pack::pack_a::<MR>(None, &a, offset, i, mc, p, kc, &mut portable);
                assert_eq!(
                    fast, portable,
                    "rows {i}+{mc}, steps {p}+{kc}, stride {row_stride}"
                );
            }
        }
    }
}
