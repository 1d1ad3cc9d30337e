//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call.

use opal_plugin_api::testing::{
    assert_no_heap, float_attr, heap_allocations, string_attr, OwnedTensor,
};
use opal_training::*;

fn f32s(len: usize, offset: f32) -> OwnedTensor {
    let values: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.25 + offset).collect();
    OwnedTensor::f32(&[len], &values)
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );
    let r = OwnedTensor::f32(&[], &[0.01]);
    let t = OwnedTensor::i64(&[], &[3]);
    let two = |offset| [f32s(100, offset), f32s(30, offset)];
    let [x1, x2] = two(0.0);
    let [g1, g2] = two(-0.5);
    let [s1, s2] = two(1.0);
    let common = [r.clone(), t.clone(), x1, x2, g1, g2];
    let with = |state: &[OwnedTensor]| [&common[..], state].concat();
    assert_no_heap::<Adagrad>(&with(&[s1.clone(), s2.clone()]), &[], 4);
    assert_no_heap::<Adam>(
        &with(&[s1.clone(), s2.clone(), s1.clone(), s2.clone()]),
        &[],
        6,
    );
    let momentum = [
        float_attr("alpha", 0.9),
        float_attr("beta", 0.5),
        float_attr("norm_coefficient", 0.0),
        string_attr("mode", "nesterov"),
    ];
    assert_no_heap::<Momentum>(&with(&[s1, s2]), &momentum, 4);
}
