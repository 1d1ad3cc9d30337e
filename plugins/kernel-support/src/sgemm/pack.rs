//! Packing blocks of A and B into the micro-panels that the micro-kernels read: `MR`-row panels
//! of A and `NR`-column panels of B, each depth step's values consecutive, edges zero-padded.

use super::{Operand, PackRowsFn};

/// Rows of B copied together when packing row-major B.
const PACK_ROWS: usize = 8;
/// Depth steps of A copied together, row after row, when packing row-major A: a cache line of
/// each row.
const PACK_STEPS: usize = 16;

/// Packs rows `i..i + mc`, columns `p..p + kc` of A as `MR`-row micro-panels, each `kc` steps of
/// `MR` consecutive values (one per row); rows beyond `mc` are zero. `out` holds whole panels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn pack_a<const MR: usize>(
    pack_rows: Option<PackRowsFn>,
    a: &Operand<'_>,
    offset: usize,
    i: usize,
    mc: usize,
    p: usize,
    kc: usize,
    out: &mut [f32],
) {
    for (panel, out) in out.chunks_exact_mut(MR * kc).enumerate() {
        let r0 = i + panel * MR;
        let rows = MR.min(i + mc - r0);
        let (steps, _) = out.as_chunks_mut::<MR>();
        if let (1, Some(pack_rows)) = (a.col_stride, pack_rows) {
            let start = offset + r0 * a.row_stride + p;
            pack_rows(&a.data[start..], a.row_stride, rows, out);
        } else if a.col_stride == 1 {
            // Rows of A are contiguous: read a few steps of every row in turn, so that the reads
            // of all rows (from L3 or memory for a large A) are in flight together.
            for (q0, steps) in steps.chunks_mut(PACK_STEPS).enumerate() {
                let q0 = p + q0 * PACK_STEPS;
                for r in 0..MR {
                    if r < rows {
                        let start = offset + (r0 + r) * a.row_stride + q0;
                        let values = &a.data[start..start + steps.len()];
                        for (step, &v) in steps.iter_mut().zip(values) {
                            step[r] = v;
                        }
                    } else {
                        steps.iter_mut().for_each(|step| step[r] = 0.0);
                    }
                }
            }
        } else if a.row_stride == 1 {
            // Columns of A are contiguous: each step is a piece of one, of a fixed length (a
            // few vector moves, not a call to `memcpy`) in whole panels.
            let start = offset + p * a.col_stride + r0;
            if rows == MR {
                for (step, column) in steps.iter_mut().zip(a.data[start..].chunks(a.col_stride)) {
                    *step = *column.first_chunk::<MR>().expect("a whole panel's rows");
                }
            } else {
                for (step, column) in steps.iter_mut().zip(a.data[start..].chunks(a.col_stride)) {
                    step[..rows].copy_from_slice(&column[..rows]);
                    step[rows..].fill(0.0);
                }
            }
        } else {
            for (q, step) in steps.iter_mut().enumerate() {
                for (r, v) in step.iter_mut().enumerate() {
                    *v = if r < rows {
                        a.at(offset, r0 + r, p + q)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs rows `p..p + kc`, columns `j..j + nc` of B as `NR`-column micro-panels, each `kc` steps
/// of `NR` consecutive values (one per column); columns beyond `nc` are zero. `out` holds whole
/// panels.
#[inline(always)]
pub(super) fn pack_b<const NR: usize>(
    b: &Operand<'_>,
    offset: usize,
    p: usize,
    kc: usize,
    j: usize,
    nc: usize,
    out: &mut [f32],
) {
    if b.col_stride == 1 {
        // Rows of B are contiguous: copy a few rows at a time across all panels, so the reads
        // are a few sequential streams rather than one jump between rows per 16 values.
        let full = nc / NR;
        for q0 in (0..kc).step_by(PACK_ROWS) {
            let rows = PACK_ROWS.min(kc - q0);
            for (panel, out) in out.chunks_exact_mut(NR * kc).enumerate() {
                let c0 = j + panel * NR;
                let (steps, _) = out[q0 * NR..(q0 + rows) * NR].as_chunks_mut::<NR>();
                for (q, step) in steps.iter_mut().enumerate() {
                    let start = offset + (p + q0 + q) * b.row_stride + c0;
                    if panel < full {
                        step.copy_from_slice(&b.data[start..start + NR]);
                    } else {
                        let cols = j + nc - c0;
                        step[..cols].copy_from_slice(&b.data[start..start + cols]);
                        step[cols..].fill(0.0);
                    }
                }
            }
        }
        return;
    }
    for (panel, out) in out.chunks_exact_mut(NR * kc).enumerate() {
        let c0 = j + panel * NR;
        let cols = NR.min(j + nc - c0);
        let (steps, _) = out.as_chunks_mut::<NR>();
        if b.row_stride == 1 {
            // Columns of B are contiguous: read each along the depth.
            for x in 0..NR {
                if x < cols {
                    let start = offset + p + (c0 + x) * b.col_stride;
                    for (step, &v) in steps.iter_mut().zip(&b.data[start..start + kc]) {
                        step[x] = v;
                    }
                } else {
                    steps.iter_mut().for_each(|step| step[x] = 0.0);
                }
            }
        } else {
            for (q, step) in steps.iter_mut().enumerate() {
                for (x, v) in step.iter_mut().enumerate() {
                    *v = if x < cols {
                        b.at(offset, p + q, c0 + x)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
