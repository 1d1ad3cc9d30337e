//! The plugin exports the operators it promises, under the opset ranges it promises.

use opal_core_math::OPAL_PLUGIN_DESCRIPTOR;

#[test]
fn exports_every_operator_with_its_opset_range() {
    let module = OPAL_PLUGIN_DESCRIPTOR.module;
    assert_eq!(module.name().as_str(), "core-math");
    assert_eq!(module.version().as_str(), env!("CARGO_PKG_VERSION"));
    let operators = (module.operators())();
    let listed: Vec<(&str, &str, i64, i64, u64)> = operators
        .iter()
        .map(|op| {
            (
                op.domain().as_str(),
                op.op_type().as_str(),
                op.since_version(),
                op.until_version(),
                op.value_inputs(),
            )
        })
        .collect();
    let max = i64::MAX;
    assert_eq!(
        listed,
        [
            ("", "Add", 7, max, 0),
            ("", "Sub", 7, max, 0),
            ("", "Mul", 7, max, 0),
            ("", "Div", 7, max, 0),
            ("", "Relu", 1, max, 0),
            ("", "Sigmoid", 1, max, 0),
            ("", "Tanh", 1, max, 0),
            ("", "MatMul", 1, max, 0),
            ("", "Gemm", 7, max, 0),
            ("", "Softmax", 1, 12, 0),
            ("", "Softmax", 13, max, 0),
            ("", "Reshape", 5, max, 0b10),
            ("", "Transpose", 1, max, 0),
            ("", "Identity", 1, max, 0),
        ]
    );
}
