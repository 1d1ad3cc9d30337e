//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. The count
//! is the calling thread's, on which the test host runs every parallel piece.

use opal_core_math::*;
use opal_plugin_api::{
    testing::{
        assert_no_heap, float_attr, heap_allocations, int_attr, ints_attr, string_attr,
        OwnedTensor, TestHost,
    },
    DType, Element, Operator,
};

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
    OwnedTensor::f32(shape, &values)
}

/// `shape` filled with small values of `T` (through f64, so every numeric type works).
fn typed<T: Element>(shape: &[usize], from: fn(f64) -> T) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<T> = (0..len).map(|i| from((i % 13) as f64 - 4.0)).collect();
    OwnedTensor::new(shape, &values)
}

fn bools(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<bool> = (0..len).map(|i| i % 3 == 0).collect();
    OwnedTensor::new(shape, &values)
}

fn check<O: Operator>(inputs: &[OwnedTensor], attributes: &[opal_plugin_api::Attribute<'_>]) {
    assert_no_heap::<O>(inputs, attributes, 1);
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
    check::<Identity>(std::slice::from_ref(&big), &[]);

    // Arithmetic on other dtypes, half floats included (computed in f32 scratch).
    let half = |shape: &[usize]| {
        let mut t = f32s(shape);
        t = TestHost::new()
            .run::<Cast>(&[t], &[int_attr("to", i64::from(DType::F16.0))], 1)
            .unwrap()
            .remove(0);
        t
    };
    let (ia, ib) = (
        typed::<i32>(&[64, 300], |v| v as i32),
        typed::<i32>(&[300], |v| v as i32 + 9),
    );
    for inputs in [
        [ia.clone(), ib.clone()],
        [half(&[64, 300]), half(&[300])],
        [
            typed::<f64>(&[4, 1, 30], |v| v),
            typed::<f64>(&[3, 1], |v| v + 0.5),
        ],
    ] {
        check::<Add>(&inputs, &[]);
        check::<Div>(&inputs, &[]);
        check::<Mod>(&inputs, &[]);
        check::<Max>(&inputs, &[]);
        check::<Equal>(&inputs, &[]);
        check::<Less>(&inputs, &[]);
    }
    check::<Mod>(&[ia.clone(), ib.clone()], &[int_attr("fmod", 1)]);
    check::<Pow>(&[big.clone(), f32s(&[300])], &[]);
    check::<Pow>(&[ia.clone(), f32s(&[1])], &[]);
    check::<PRelu>(&[big.clone(), f32s(&[300])], &[]);
    for variadic in [
        vec![big.clone()],
        vec![f32s(&[3, 1]), f32s(&[4, 1, 5]), f32s(&[5])],
    ] {
        check::<Sum>(&variadic, &[]);
        check::<Mean>(&variadic, &[]);
        check::<Min>(&variadic, &[]);
    }
    let (ba, bb) = (bools(&[64, 300]), bools(&[300]));
    check::<And>(&[ba.clone(), bb.clone()], &[]);
    check::<Or>(&[ba.clone(), bb.clone()], &[]);
    check::<Xor>(&[ba.clone(), bb.clone()], &[]);
    check::<Not>(std::slice::from_ref(&ba), &[]);
    check::<Equal>(&[ba.clone(), bb], &[]);
    let (ua, ub) = (
        typed::<u8>(&[64, 300], |v| v as u8),
        typed::<u8>(&[300], |v| (v as u8) % 8),
    );
    check::<BitShift>(
        &[ua.clone(), ub.clone()],
        &[string_attr("direction", "LEFT")],
    );
    check::<BitwiseAnd>(&[ua.clone(), ub.clone()], &[]);
    check::<BitwiseOr>(&[ua.clone(), ub.clone()], &[]);
    check::<BitwiseXor>(&[ua.clone(), ub], &[]);
    check::<BitwiseNot>(std::slice::from_ref(&ua), &[]);

    // Unary functions and activations, f32, f64 and f16.
    for x in [
        big.clone(),
        typed::<f64>(&[50, 7], |v| v * 0.1),
        half(&[50, 7]),
    ] {
        let one = std::slice::from_ref(&x);
        check::<Relu>(one, &[]);
        check::<Sigmoid>(one, &[]);
        check::<Exp>(one, &[]);
        check::<Erf>(one, &[]);
        check::<Round>(one, &[]);
        check::<Abs>(one, &[]);
        check::<Sign>(one, &[]);
        check::<IsNaN>(one, &[]);
        check::<IsInf>(one, &[int_attr("detect_negative", 0)]);
        check::<LeakyRelu>(one, &[float_attr("alpha", 0.2)]);
        check::<Elu>(one, &[]);
        check::<Selu>(one, &[]);
        check::<HardSwish>(one, &[]);
        check::<Gelu>(one, &[string_attr("approximate", "tanh")]);
        check::<Gelu>(one, &[]);
        check::<Mish>(one, &[]);
        check::<Shrink>(one, &[]);
        check::<Swish>(one, &[]);
        check::<ClipAttributes>(one, &[float_attr("min", -0.5)]);
        check::<Softmax>(one, &[int_attr("axis", 0)]);
        check::<LogSoftmax>(one, &[]);
        check::<HardmaxFlattened>(one, &[]);
        check::<ReduceMean>(one, &[ints_attr("axes", &[1])]);
        check::<ReduceLogSumExp>(one, &[int_attr("keepdims", 0)]);
        check::<ArgMax>(one, &[int_attr("axis", 1)]);
        check::<Cast>(one, &[int_attr("to", i64::from(DType::I32.0))]);
        check::<Cast>(one, &[int_attr("to", i64::from(DType::BF16.0))]);
        check::<CastLike>(&[x.clone(), bools(&[1])], &[]);
    }
    check::<MatMul>(&[half(&[3, 40, 70]), half(&[70, 33])], &[]);
    check::<MatMul>(
        &[
            typed::<f64>(&[2, 3, 4], |v| v),
            typed::<f64>(&[4, 5], |v| v),
        ],
        &[],
    );
    check::<Clip>(
        &[
            ia.clone(),
            typed::<i32>(&[], |_| -2),
            typed::<i32>(&[], |_| 3),
        ],
        &[],
    );
    check::<Neg>(std::slice::from_ref(&ia), &[]);
    check::<Cast>(
        std::slice::from_ref(&ia),
        &[int_attr("to", i64::from(DType::F16.0))],
    );
    check::<Cast>(
        std::slice::from_ref(&ba),
        &[int_attr("to", i64::from(DType::F32.0))],
    );
    check::<BitCast>(
        std::slice::from_ref(&ia),
        &[int_attr("to", i64::from(DType::F32.0))],
    );
    check::<BitCast>(
        &[OwnedTensor::from_bytes(DType::I4, &[3], &[0xf8, 7, 0])],
        &[int_attr("to", i64::from(DType::U4.0))],
    );

    // The random generators, seeded and not.
    check::<RandomUniform>(
        &[],
        &[ints_attr("shape", &[40, 30]), float_attr("seed", 5.0)],
    );
    check::<RandomNormal>(&[], &[ints_attr("shape", &[33]), int_attr("dtype", 10)]);
    check::<RandomUniformLike>(std::slice::from_ref(&ia), &[int_attr("dtype", 11)]);
    check::<RandomNormalLike>(&[f32s(&[7, 9])], &[float_attr("seed", 1.0)]);
    let probabilities = OwnedTensor::f32(&[50], &[0.25; 50]);
    check::<Bernoulli>(
        std::slice::from_ref(&probabilities),
        &[float_attr("seed", 2.0)],
    );
    check::<Bernoulli>(
        &[probabilities],
        &[int_attr("dtype", i64::from(DType::BOOL.0))],
    );

    // Reductions, scans, Einsum.
    let axes = OwnedTensor::i64(&[2], &[0, 2]);
    let cube = f32s(&[6, 7, 8]);
    check::<ReduceSum>(&[cube.clone(), axes.clone()], &[]);
    check::<ReduceMax>(&[cube.clone(), axes.clone()], &[int_attr("keepdims", 0)]);
    check::<ReduceL2>(&[cube.clone(), axes.clone()], &[]);
    check::<ReduceProd>(std::slice::from_ref(&ia), &[]);
    check::<ReduceMin>(std::slice::from_ref(&ba), &[ints_attr("axes", &[1])]);
    check::<ArgMin>(
        std::slice::from_ref(&ia),
        &[int_attr("select_last_index", 1)],
    );
    check::<CumSum>(
        &[cube.clone(), OwnedTensor::i64(&[], &[1])],
        &[int_attr("reverse", 1)],
    );
    check::<CumProd>(
        &[ia, OwnedTensor::i64(&[], &[0])],
        &[int_attr("exclusive", 1)],
    );
    check::<Einsum>(
        &[f32s(&[2, 5, 6]), f32s(&[2, 6, 3])],
        &[string_attr("equation", "bij,bjk->bik")],
    );
    check::<Einsum>(
        &[f32s(&[4, 5, 5])],
        &[string_attr("equation", "...ii->...i")],
    );
}
