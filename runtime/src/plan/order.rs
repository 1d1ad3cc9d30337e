//! The order nodes run in: a topological sort of the graph, with errors naming the node whose
//! input nobody produces, or a node on a cycle.

use crate::onnx::Model;
use std::collections::{HashMap, HashSet, VecDeque};

/// Why a graph cannot be ordered: the offending node's index and the reason.
pub(crate) type OrderError = (usize, String);

/// Node indices in an order where every node comes after the producers of its inputs. Ties keep
/// the file's order.
pub(crate) fn topological_order(model: &Model) -> Result<Vec<usize>, OrderError> {
    let mut producer = HashMap::new();
    for (index, node) in model.nodes.iter().enumerate() {
        for &out in node.outputs.iter().flatten() {
            if producer.insert(out, index).is_some() {
                return Err((
                    index,
                    format!(
                        "output '{}' is produced by two nodes",
                        model.value_name(out)
                    ),
                ));
            }
            if model.constants.contains_key(&out) || model.inputs.contains(&out) {
                return Err((
                    index,
                    format!(
                        "output '{}' is also a graph input or initializer",
                        model.value_name(out)
                    ),
                ));
            }
        }
    }
    let available: HashSet<usize> = model
        .inputs
        .iter()
        .chain(model.constants.keys())
        .copied()
        .collect();
    let mut waiting_on = vec![0usize; model.nodes.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); model.nodes.len()];
    for (index, node) in model.nodes.iter().enumerate() {
        for input in node.reads() {
            if available.contains(&input) {
                continue;
            }
            match producer.get(&input) {
                Some(&p) => {
                    waiting_on[index] += 1;
                    consumers[p].push(index);
                }
                None => {
                    return Err((
                        index,
                        format!(
                        "input '{}' is not produced by any node, nor a graph input or initializer",
                        model.value_name(input)
                    ),
                    ))
                }
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..model.nodes.len())
        .filter(|&i| waiting_on[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(model.nodes.len());
    while let Some(index) = ready.pop_front() {
        order.push(index);
        for &c in &consumers[index] {
            waiting_on[c] -= 1;
            if waiting_on[c] == 0 {
                ready.push_back(c);
            }
        }
    }
    if order.len() < model.nodes.len() {
        let stuck = (0..model.nodes.len())
            .find(|&i| waiting_on[i] > 0)
            .unwrap_or(0);
        return Err((
            stuck,
            "the graph has a cycle through this node; ONNX graphs must be acyclic".to_owned(),
        ));
    }
    Ok(order)
}
