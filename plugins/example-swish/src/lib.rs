//! An opal plugin with one custom operator: `com.example:Swish`, y = x · sigmoid(beta · x).
use opal_plugin_api::prelude::*;

/// Swish activation; the output has the input's shape (the default inference).
pub struct Swish;

impl Operator for Swish {
    const DOMAIN: &'static str = "com.example";
    const OP_TYPE: &'static str = "Swish";

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?.f32()?;
        let beta = cx.attributes().float("beta", 1.0)?;
        let y = cx.output(0)?.f32_mut()?;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x / (1.0 + (-beta * x).exp());
        }
        Ok(())
    }
}

opal_plugin_api::export_plugin! {
    name: "example-swish",
    version: env!("CARGO_PKG_VERSION"),
    operators: [Swish],
}
