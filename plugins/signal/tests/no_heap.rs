//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. The count
//! is the calling thread's, on which the test host runs every parallel piece.

use opal_plugin_api::{
    testing::{assert_no_heap, heap_allocations, int_attr, OwnedTensor},
    DType,
};
use opal_signal::*;

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
    OwnedTensor::f32(shape, &values)
}

fn scalar(value: i64) -> OwnedTensor {
    OwnedTensor::i64(&[], &[value])
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    // DFT: radix-2 and Bluestein lengths, an inner axis, a one-sided inverse, f64.
    assert_no_heap::<Dft20>(
        &[f32s(&[3, 64, 2]), OwnedTensor::absent(), scalar(1)],
        &[],
        1,
    );
    assert_no_heap::<Dft20>(
        &[f32s(&[2, 30, 5, 1]), scalar(40), scalar(1)],
        &[int_attr("onesided", 1)],
        1,
    );
    assert_no_heap::<Dft17>(
        &[f32s(&[4, 9, 2])],
        &[int_attr("inverse", 1), int_attr("onesided", 1)],
        1,
    );
    let f64s = OwnedTensor::new(&[2, 12, 1], &[0.5f64; 24]);
    assert_no_heap::<Dft17>(&[f64s], &[int_attr("axis", -2)], 1);

    // STFT with and without a window, one-sided or not.
    assert_no_heap::<Stft>(&[f32s(&[2, 100, 1]), scalar(10), f32s(&[20])], &[], 1);
    assert_no_heap::<Stft>(
        &[
            f32s(&[1, 64, 2]),
            scalar(7),
            OwnedTensor::absent(),
            scalar(16),
        ],
        &[int_attr("onesided", 0)],
        1,
    );

    assert_no_heap::<HannWindow>(&[scalar(33)], &[], 1);
    assert_no_heap::<HammingWindow>(&[scalar(10)], &[int_attr("periodic", 0)], 1);
    assert_no_heap::<BlackmanWindow>(
        &[scalar(10)],
        &[int_attr("output_datatype", i64::from(DType::F16.0))],
        1,
    );
    assert_no_heap::<MelWeightMatrix>(
        &[
            scalar(20),
            scalar(512),
            scalar(16000),
            OwnedTensor::f32(&[], &[20.0]),
            OwnedTensor::f32(&[], &[8000.0]),
        ],
        &[],
        1,
    );
}
