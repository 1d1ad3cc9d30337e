//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. One test
//! in its own binary, because the count is process-wide.

use opal_core_math::*;
use opal_plugin_api::{
    testing::{float_attr, int_attr, ints_attr, OwnedTensor, TestHost},
    Operator,
};

fn heap_allocations() -> u64 {
    OPAL_PLUGIN_DESCRIPTOR
        .module
        .heap_allocations()
        .map_or(0, |count| count())
}

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
    OwnedTensor::f32(shape, &values)
}

fn check<O: Operator>(inputs: &[OwnedTensor], attributes: &[opal_plugin_api::Attribute<'_>]) {
    for threads in [1, 2] {
        TestHost::new()
            .threads(threads)
            .heap_probe(heap_allocations)
            .run::<O>(inputs, attributes, 1)
            .unwrap_or_else(|e| panic!("{} with {threads} threads: {e}", O::OP_TYPE));
    }
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    // The probe works: this binary's allocations are counted.
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    let big = f32s(&[256, 300]);
    for (a, b) in [
        (f32s(&[2, 3]), f32s(&[2, 3])),
        (big.clone(), f32s(&[300])),
        (f32s(&[4, 1, 300]), f32s(&[3, 1])),
        (f32s(&[1]), big.clone()),
    ] {
        check::<Add>(&[a.clone(), b.clone()], &[]);
        check::<Sub>(&[a.clone(), b.clone()], &[]);
        check::<Mul>(&[a.clone(), b.clone()], &[]);
        check::<Div>(&[a, b], &[]);
    }
    check::<Relu>(std::slice::from_ref(&big), &[]);
    check::<Sigmoid>(std::slice::from_ref(&big), &[]);
    check::<Tanh>(std::slice::from_ref(&big), &[]);

    check::<MatMul>(&[f32s(&[130, 70]), f32s(&[70, 90])], &[]);
    check::<MatMul>(&[f32s(&[2, 3, 40, 70]), f32s(&[3, 70, 33])], &[]);
    check::<MatMul>(&[f32s(&[70]), f32s(&[70, 5])], &[]);
    check::<Gemm>(
        &[f32s(&[70, 130]), f32s(&[90, 70]), f32s(&[90])],
        &[
            int_attr("transA", 1),
            int_attr("transB", 1),
            float_attr("beta", 0.5),
        ],
    );
    check::<Gemm>(&[f32s(&[8, 9]), f32s(&[9, 10])], &[]);

    check::<Softmax>(std::slice::from_ref(&big), &[]);
    check::<Softmax>(&[f32s(&[64, 10, 200])], &[int_attr("axis", 1)]);
    check::<SoftmaxFlattened>(&[f32s(&[4, 5, 6])], &[]);

    check::<Reshape>(&[big.clone(), OwnedTensor::i64(&[3], &[0, -1, 10])], &[]);
    check::<Transpose>(
        &[f32s(&[2, 30, 40, 5])],
        &[ints_attr("perm", &[0, 2, 1, 3])],
    );
    check::<Transpose>(std::slice::from_ref(&big), &[]);
    check::<Identity>(&[big], &[]);
}
