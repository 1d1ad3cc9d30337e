//! Running one plugin operator on f32 tensors the way the engine does: inference, outputs
//! allocated by the host from the inferred shapes, then the kernel with the host's services.

use opal_plugin_api::{
    infer::InferInput,
    operator::{InferCall, KernelCall},
    tensor::{TensorView, TensorViewMut},
    DType,
};
use opal_runtime::{
    memory::{AlignedBuffer, MemoryTracker, ScratchArena},
    plugin::{CallHost, OperatorEntry},
};
use std::cell::RefCell;

/// An f32 tensor the test owns.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl F32Tensor {
    pub fn new(shape: &[usize], values: &[f32]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape {shape:?} does not hold {} values",
            values.len()
        );
        F32Tensor {
            shape: shape.to_vec(),
            values: values.to_vec(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }
}

/// Scratch the kernel may use per call.
const SCRATCH_LIMIT: usize = 64 << 20;

/// Runs `entry` on `inputs` and returns its `output_count` outputs, or the plugin's error
/// message (from inference or the kernel). Memory comes from a fresh [`MemoryTracker`], the
/// plugin's temporaries are accounted to an owner named after the plugin, and `parallel_for`
/// runs on the calling thread.
pub fn run_f32(
    entry: &OperatorEntry,
    inputs: &[F32Tensor],
    output_count: usize,
) -> Result<Vec<F32Tensor>, String> {
    let tracker = MemoryTracker::new();
    let tensors = tracker.owner("tensors");
    let plugin = tracker.owner(entry.plugin_name());
    let arena = RefCell::new(ScratchArena::new(tracker.owner("scratch"), SCRATCH_LIMIT));

    let input_data: Vec<AlignedBuffer> = inputs
        .iter()
        .map(|t| AlignedBuffer::copy_of(&t.to_bytes(), &tensors).expect("memory for an input"))
        .collect();
    let input_views: Vec<TensorView<'_>> = inputs
        .iter()
        .zip(&input_data)
        .map(|(t, data)| TensorView::new(DType::F32, &t.shape, data.as_slice()))
        .collect();

    let dims: Vec<Vec<i64>> = inputs
        .iter()
        .map(|t| t.shape.iter().map(|&d| d as i64).collect())
        .collect();
    let infer_inputs: Vec<InferInput<'_>> = input_views
        .iter()
        .zip(&dims)
        .enumerate()
        .map(|(i, (view, dims))| InferInput {
            dtype: DType::F32,
            shape: dims.as_slice().into(),
            value: entry.needs_value(i).then_some(*view).into(),
        })
        .collect();
    let infer_call = InferCall {
        inputs: infer_inputs.as_slice().into(),
        attributes: (&[][..]).into(),
        output_count,
    };
    let output_types = entry.infer(&infer_call)?;
    if output_types.len() != output_count {
        return Err(format!(
            "inference gave {} outputs, the node has {output_count}",
            output_types.len()
        ));
    }
    let mut output_shapes = Vec::with_capacity(output_count);
    for (i, ty) in output_types.iter().enumerate() {
        if ty.dtype != DType::F32 {
            return Err(format!("output {i} is {:?}, not f32", ty.dtype));
        }
        let shape = ty
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| format!("output {i} has an unknown shape {:?}", ty.shape))?;
        output_shapes.push(shape);
    }

    let mut output_data: Vec<AlignedBuffer> = output_shapes
        .iter()
        .map(|shape| {
            let bytes = shape.iter().product::<usize>() * std::mem::size_of::<f32>();
            AlignedBuffer::zeroed(bytes, &tensors).expect("memory for an output")
        })
        .collect();
    {
        let output_views: Vec<TensorViewMut<'_>> = output_shapes
            .iter()
            .zip(output_data.iter_mut())
            .map(|(shape, data)| TensorViewMut::new(DType::F32, shape, data.as_mut_slice()))
            .collect();
        let host = CallHost {
            plugin: &plugin,
            arena: &arena,
            threads: None,
            constant_inputs: 0,
            prepared: None,
            fusion: &[],
            isa: opal_plugin_api::Isa::from_environment(),
            subgraphs: None,
            shaped: None,
            engine: None,
            values_in: &[],
            values_out: None,
            subgraph_values: None,
            strings: None,
        };
        let mut call = KernelCall {
            inputs: input_views.as_slice().into(),
            outputs: output_views.as_slice().into(),
            attributes: (&[][..]).into(),
            host: host.services(),
        };
        let result = entry.compute(&mut call);
        arena.borrow_mut().reset();
        result?;
    }

    Ok(output_shapes
        .into_iter()
        .zip(&output_data)
        .map(|(shape, data)| F32Tensor {
            shape,
            values: data
                .as_slice()
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
        .collect())
}
