//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. The count
//! is the calling thread's, on which the test host runs every parallel piece.

use opal_plugin_api::{
    testing::{
        assert_no_heap, float_attr, heap_allocations, int_attr, ints_attr, string_attr, OwnedTensor,
    },
    Element,
};
use opal_transformer::*;

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
    OwnedTensor::f32(shape, &values)
}

fn ints<T: Element>(shape: &[usize], from: fn(usize) -> T) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<T> = (0..len).map(from).collect();
    OwnedTensor::new(shape, &values)
}

fn u8s(shape: &[usize]) -> OwnedTensor {
    ints(shape, |i| (i * 7 % 251) as u8)
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    // Attention: 4-D with a mask, past cache and every output; 3-D grouped-query, causal.
    let mask = f32s(&[4, 10]);
    assert_no_heap::<Attention>(
        &[
            f32s(&[2, 3, 4, 8]),
            f32s(&[2, 3, 6, 8]),
            f32s(&[2, 3, 6, 5]),
            mask,
            f32s(&[2, 3, 4, 8]),
            f32s(&[2, 3, 4, 5]),
        ],
        &[
            int_attr("qk_matmul_output_mode", 2),
            float_attr("softcap", 2.0),
        ],
        4,
    );
    assert_no_heap::<Attention>(
        &[f32s(&[2, 40, 96]), f32s(&[2, 70, 32]), f32s(&[2, 70, 32])],
        &[
            int_attr("q_num_heads", 6),
            int_attr("kv_num_heads", 2),
            int_attr("is_causal", 1),
        ],
        1,
    );

    assert_no_heap::<RotaryEmbedding>(
        &[
            f32s(&[2, 4, 3, 8]),
            f32s(&[50, 4]),
            f32s(&[50, 4]),
            ints(&[2, 3], |i| (i * 5 % 50) as i64),
        ],
        &[int_attr("interleaved", 1)],
        1,
    );

    // LinearAttention: gated delta rule, grouped-query heads, a past state, per-key decay.
    assert_no_heap::<LinearAttention>(
        &[
            f32s(&[2, 3, 4 * 8]),
            f32s(&[2, 3, 2 * 8]),
            f32s(&[2, 3, 2 * 6]),
            f32s(&[2, 2, 8, 6]),
            f32s(&[2, 3, 2 * 8]),
            f32s(&[2, 3, 2]),
        ],
        &[int_attr("q_num_heads", 4), int_attr("kv_num_heads", 2)],
        2,
    );
    // FlexAttention without modifier subgraphs: grouped-query heads in f32, and f64.
    assert_no_heap::<FlexAttention>(
        &[
            f32s(&[2, 6, 40, 16]),
            f32s(&[2, 3, 70, 16]),
            f32s(&[2, 3, 70, 8]),
        ],
        &[float_attr("scale", 0.2)],
        1,
    );
    let f64s = |shape: &[usize]| ints(shape, |i| (i % 13) as f64 * 0.1 - 0.6);
    assert_no_heap::<FlexAttention>(
        &[
            f64s(&[1, 2, 3, 4]),
            f64s(&[1, 1, 5, 4]),
            f64s(&[1, 1, 5, 2]),
        ],
        &[],
        1,
    );
    assert_no_heap::<CausalConvWithState>(
        &[
            f32s(&[2, 3, 5]),
            f32s(&[3, 1, 4]),
            f32s(&[3]),
            f32s(&[2, 3, 3]),
        ],
        &[string_attr("activation", "silu")],
        2,
    );
    assert_no_heap::<SwiGLU>(&[f32s(&[3, 7]), f32s(&[3, 7])], &[], 1);
    assert_no_heap::<TensorScatter>(
        &[
            f32s(&[2, 3, 6, 4]),
            f32s(&[2, 3, 2, 4]),
            ints(&[2], |i| i as i64 * 5),
        ],
        &[string_attr("mode", "circular")],
        1,
    );

    let scale = OwnedTensor::f32(&[3], &[0.5, 0.25, 2.0]);
    let zero = ints(&[3], |i| (i * 10) as u8);
    assert_no_heap::<QuantizeLinear>(
        &[f32s(&[2, 3, 4]), scale.clone(), zero.clone()],
        &[int_attr("axis", 1)],
        1,
    );
    assert_no_heap::<DequantizeLinear>(&[u8s(&[2, 3, 4]), scale, zero], &[], 1);
    assert_no_heap::<DynamicQuantizeLinear>(&[f32s(&[5, 7])], &[], 3);

    let one_zero = ints(&[1], |_| 3u8);
    assert_no_heap::<MatMulInteger>(
        &[
            u8s(&[2, 5, 7]),
            u8s(&[7, 3]),
            one_zero.clone(),
            one_zero.clone(),
        ],
        &[],
        1,
    );
    let unit = OwnedTensor::f32(&[1], &[0.05]);
    assert_no_heap::<QLinearMatMul>(
        &[
            u8s(&[5, 7]),
            unit.clone(),
            one_zero.clone(),
            u8s(&[7, 3]),
            unit.clone(),
            one_zero.clone(),
            unit.clone(),
            one_zero.clone(),
        ],
        &[],
        1,
    );
    let pads = [1, 1, 1, 1];
    let scalar_zero = ints(&[], |_| 2u8);
    assert_no_heap::<ConvInteger>(
        &[u8s(&[1, 2, 5, 5]), u8s(&[4, 2, 3, 3]), scalar_zero.clone()],
        &[ints_attr("pads", &pads)],
        1,
    );
    let scalar = OwnedTensor::f32(&[], &[0.05]);
    assert_no_heap::<QLinearConv>(
        &[
            u8s(&[1, 2, 5, 5]),
            scalar.clone(),
            scalar_zero.clone(),
            u8s(&[4, 1, 3, 3]),
            scalar.clone(),
            scalar_zero.clone(),
            scalar,
            scalar_zero,
        ],
        &[ints_attr("pads", &pads), int_attr("group", 2)],
        1,
    );
}
