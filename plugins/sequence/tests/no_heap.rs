//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call, in which
//! the test host gives appended elements the memory of the first call's. SequenceMap runs its
//! body through the real host only; the integration tests run it.

use opal_plugin_api::{
    testing::{heap_allocations, int_attr, ints_attr, OwnedTensor, TestHost, TestValue},
    DType, Operator, ValueKind,
};
use opal_sequence::*;

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
    OwnedTensor::f32(shape, &values)
}

fn sequence() -> TestValue {
    TestValue::Sequence(
        DType::F32,
        vec![f32s(&[2, 3]), f32s(&[2, 1]), f32s(&[2, 3])],
    )
}

fn scalar(value: i64) -> TestValue {
    TestValue::Tensor(OwnedTensor::i64(&[], &[value]))
}

fn assert_no_heap<O: Operator>(
    inputs: &[TestValue],
    attributes: &[opal_plugin_api::Attribute<'_>],
) {
    TestHost::new()
        .heap_probe(heap_allocations)
        .run_values::<O>(inputs, attributes, 1)
        .unwrap_or_else(|e| panic!("{}: {e}", O::OP_TYPE));
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );
    let x = TestValue::Tensor(f32s(&[4, 3]));
    assert_no_heap::<SequenceEmpty>(&[], &[]);
    assert_no_heap::<SequenceConstruct>(&[x.clone(), x.clone()], &[]);
    assert_no_heap::<SequenceInsert>(
        &[sequence(), TestValue::Tensor(f32s(&[2, 2])), scalar(1)],
        &[],
    );
    assert_no_heap::<SequenceErase>(&[sequence(), scalar(0)], &[]);
    assert_no_heap::<SequenceAt>(&[sequence(), scalar(-1)], &[]);
    assert_no_heap::<SequenceLength>(&[sequence()], &[]);
    assert_no_heap::<SplitToSequence>(&[x.clone(), scalar(3)], &[int_attr("axis", 1)]);
    assert_no_heap::<SplitToSequence>(std::slice::from_ref(&x), &[int_attr("keepdims", 0)]);
    assert_no_heap::<ConcatFromSequence>(&[sequence()], &[int_attr("axis", 1)]);
    assert_no_heap::<Optional>(std::slice::from_ref(&x), &[]);
    assert_no_heap::<Optional>(&[], &[ints_attr("type", &[0, 1])]);
    let some = TestValue::some(x);
    assert_no_heap::<OptionalHasElement>(std::slice::from_ref(&some), &[]);
    assert_no_heap::<OptionalGetElement>(&[some], &[]);
    assert_no_heap::<OptionalHasElement>(
        &[TestValue::None(ValueKind::OPTIONAL_TENSOR, DType::F32)],
        &[],
    );
}
