//! The trees of a `TreeEnsemble` node, read in place from its attributes: interior nodes
//! (`nodes_*`), leaves (`leaf_*`) and roots (`tree_roots`), checked once so that a walk from
//! a root always ends at a leaf, and walked per sample.

use crate::attributes::{missing, required_ints};
use opal_kernel_support::{check::error, float_values::Floats};
use opal_plugin_api::prelude::*;

const OP: &str = "TreeEnsemble";

/// How an interior node compares the sample's feature `x` with its split `s`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// `x <= s`
    Leq,
    /// `x < s`
    Lt,
    /// `x >= s`
    Gte,
    /// `x > s`
    Gt,
    /// `x == s`
    Eq,
    /// `x != s`
    Neq,
    /// `x` is one of the node's set of `membership_values`.
    Member,
}

impl Mode {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            _ => return None,
        })
    }
}

/// Where a branch of an interior node leads.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Branch {
    Node(usize),
    Leaf(usize),
}

/// The trees of one node, borrowing its attributes.
pub(crate) struct Forest<'a> {
    splits: Floats<'a>,
    modes: &'a [u8],
    features: &'a [i64],
    true_ids: &'a [i64],
    false_ids: &'a [i64],
    true_leafs: &'a [i64],
    false_leafs: &'a [i64],
    missing_tracks_true: Option<&'a [i64]>,
    leaf_targets: &'a [i64],
    leaf_weights: Floats<'a>,
    roots: &'a [i64],
    membership: Option<Floats<'a>>,
    targets: usize,
}

/// Required tensor attribute `name`.
fn required_tensor<'a>(attributes: &Attributes<'a>, name: &str) -> KernelResult<TensorRef<'a>> {
    optional_tensor(attributes, name)?.ok_or_else(|| missing(OP, name))
}

fn optional_tensor<'a>(
    attributes: &Attributes<'a>,
    name: &str,
) -> KernelResult<Option<TensorRef<'a>>> {
    Ok(attributes
        .tensor(name)
        .map_err(|e| error(OP, e))?
        .map(TensorRef::new))
}

/// Float tensor attribute `tensor`, named `what` in messages.
fn floats<'a>(what: &str, tensor: TensorRef<'a>) -> KernelResult<Floats<'a>> {
    Floats::new(OP, what, tensor)
}

impl<'a> Forest<'a> {
    /// The trees `attributes` describe; an error naming the attribute that is missing, of the
    /// wrong kind, of the wrong length, or pointing outside its lists. Does not check for
    /// cycles: see [`Forest::check_acyclic`].
    pub(crate) fn new(attributes: &Attributes<'a>) -> KernelResult<Self> {
        let splits_tensor = required_tensor(attributes, "nodes_splits")?;
        let modes_tensor = required_tensor(attributes, "nodes_modes")?;
        if modes_tensor.dtype() != DType::U8 {
            return Err(error(
                OP,
                format_args!(
                    "attribute 'nodes_modes' has dtype {}, expected u8",
                    modes_tensor.dtype()
                ),
            ));
        }
        let weights_tensor = required_tensor(attributes, "leaf_weights")?;
        let forest = Forest {
            splits: floats("attribute 'nodes_splits'", splits_tensor)?,
            modes: modes_tensor.bytes(),
            features: required_ints(OP, attributes, "nodes_featureids")?,
            true_ids: required_ints(OP, attributes, "nodes_truenodeids")?,
            false_ids: required_ints(OP, attributes, "nodes_falsenodeids")?,
            true_leafs: required_ints(OP, attributes, "nodes_trueleafs")?,
            false_leafs: required_ints(OP, attributes, "nodes_falseleafs")?,
            missing_tracks_true: attributes
                .ints("nodes_missing_value_tracks_true")
                .map_err(|e| error(OP, e))?,
            leaf_targets: required_ints(OP, attributes, "leaf_targetids")?,
            leaf_weights: floats("attribute 'leaf_weights'", weights_tensor)?,
            roots: required_ints(OP, attributes, "tree_roots")?,
            membership: optional_tensor(attributes, "membership_values")?
                .map(|t| floats("attribute 'membership_values'", t))
                .transpose()?,
            targets: 0,
        };
        forest.with_targets(attributes)
    }

    /// Checks the lists against each other and settles the number of targets: attribute
    /// `n_targets`, or one more than the largest leaf target when it is absent.
    fn with_targets(mut self, attributes: &Attributes<'_>) -> KernelResult<Self> {
        let nodes = self.modes.len();
        let node_lists: [(&str, usize); 7] = [
            ("nodes_splits", self.splits.len()),
            ("nodes_featureids", self.features.len()),
            ("nodes_truenodeids", self.true_ids.len()),
            ("nodes_falsenodeids", self.false_ids.len()),
            ("nodes_trueleafs", self.true_leafs.len()),
            ("nodes_falseleafs", self.false_leafs.len()),
            (
                "nodes_missing_value_tracks_true",
                self.missing_tracks_true.map_or(nodes, <[i64]>::len),
            ),
        ];
        for (name, len) in node_lists {
            if len != nodes {
                return Err(error(
                    OP,
                    format_args!(
                        "attribute '{name}' has {len} entries, but 'nodes_modes' has {nodes}: every nodes_* attribute needs one entry per node"
                    ),
                ));
            }
        }
        let leaves = self.leaf_targets.len();
        if self.leaf_weights.len() != leaves {
            return Err(error(
                OP,
                format_args!(
                    "attribute 'leaf_weights' has {} entries, but 'leaf_targetids' has {leaves}",
                    self.leaf_weights.len()
                ),
            ));
        }
        if let Some(i) = self
            .modes
            .iter()
            .position(|&m| Mode::from_code(m).is_none())
        {
            return Err(error(
                OP,
                format_args!("nodes_modes[{i}] is {}, expected 0 to 6", self.modes[i]),
            ));
        }
        if let Some(i) = self.features.iter().position(|&f| f < 0) {
            return Err(error(
                OP,
                format_args!("nodes_featureids[{i}] is negative ({})", self.features[i]),
            ));
        }
        for node in 0..nodes {
            for branch in [true, false] {
                let (ids, name) = if branch {
                    (self.true_ids, "nodes_truenodeids")
                } else {
                    (self.false_ids, "nodes_falsenodeids")
                };
                let (bound, what) = if self.is_leaf_branch(node, branch) {
                    (leaves, "leaves")
                } else {
                    (nodes, "nodes")
                };
                if usize::try_from(ids[node]).map_or(true, |id| id >= bound) {
                    return Err(error(
                        OP,
                        format_args!(
                            "{name}[{node}] is {}, outside the {bound} {what} it points into",
                            ids[node]
                        ),
                    ));
                }
            }
        }
        if self.roots.is_empty() {
            return Err(error(OP, "attribute 'tree_roots' lists no tree"));
        }
        if let Some(&root) = self
            .roots
            .iter()
            .find(|&&r| usize::try_from(r).map_or(true, |r| r >= nodes))
        {
            return Err(error(
                OP,
                format_args!("tree root {root} is outside the {nodes} nodes"),
            ));
        }
        let members = self
            .modes
            .iter()
            .filter(|&&m| Mode::from_code(m) == Some(Mode::Member))
            .count();
        let sets = self
            .membership
            .map_or(0, |m| (0..m.len()).filter(|&i| m.get(i).is_nan()).count());
        if sets != members {
            return Err(error(
                OP,
                format_args!(
                    "{members} nodes test set membership but 'membership_values' holds {sets} NaN-terminated sets"
                ),
            ));
        }
        let largest = self.leaf_targets.iter().copied().max().unwrap_or(-1);
        let targets = attributes
            .int("n_targets", largest.saturating_add(1))
            .map_err(|e| error(OP, e))?;
        self.targets = usize::try_from(targets)
            .map_err(|_| error(OP, format_args!("n_targets is negative ({targets})")))?;
        if let Some(i) = self
            .leaf_targets
            .iter()
            .position(|&t| usize::try_from(t).map_or(true, |t| t >= self.targets))
        {
            return Err(error(
                OP,
                format_args!(
                    "leaf_targetids[{i}] is {}, outside [0, {}) (n_targets)",
                    self.leaf_targets[i], self.targets
                ),
            ));
        }
        Ok(self)
    }

    fn is_leaf_branch(&self, node: usize, branch: bool) -> bool {
        let flags = if branch {
            self.true_leafs
        } else {
            self.false_leafs
        };
        flags[node] != 0
    }

    fn branch(&self, node: usize, branch: bool) -> Branch {
        let id = if branch {
            self.true_ids[node]
        } else {
            self.false_ids[node]
        } as usize;
        if self.is_leaf_branch(node, branch) {
            Branch::Leaf(id)
        } else {
            Branch::Node(id)
        }
    }

    /// Fails if a walk from some root could go round a cycle of interior nodes.
    pub(crate) fn check_acyclic(&self) -> KernelResult<()> {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.modes.len()];
        let mut stack: Vec<(usize, bool)> = Vec::new();
        for &root in self.roots {
            let root = root as usize;
            if state[root] != NEW {
                continue;
            }
            state[root] = OPEN;
            stack.push((root, true));
            while let Some((node, branch)) = stack.pop() {
                if !branch {
                    // Both branches of `node` were explored.
                    state[node] = DONE;
                    continue;
                }
                stack.push((node, false));
                for side in [true, false] {
                    if let Branch::Node(next) = self.branch(node, side) {
                        match state[next] {
                            OPEN => {
                                return Err(error(
                                    OP,
                                    format_args!(
                                        "the trees loop: node {node} leads back to node {next}"
                                    ),
                                ))
                            }
                            NEW => {
                                state[next] = OPEN;
                                stack.push((next, true));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// How many targets each sample gets a value for.
    pub(crate) fn targets(&self) -> usize {
        self.targets
    }

    pub(crate) fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.roots.iter().map(|&r| r as usize)
    }

    pub(crate) fn node_count(&self) -> usize {
        self.modes.len()
    }

    /// The largest feature index a node reads, if any node exists.
    pub(crate) fn max_feature(&self) -> Option<usize> {
        self.features.iter().map(|&f| f as usize).max()
    }

    /// Leaf `leaf`'s target and weight.
    pub(crate) fn leaf(&self, leaf: usize) -> (usize, f64) {
        (
            self.leaf_targets[leaf] as usize,
            self.leaf_weights.get(leaf),
        )
    }

    /// For each node, the range of `membership_values` holding its set (empty for the nodes
    /// that do not test membership), written into `starts` and `ends`: the sets follow the
    /// order of the membership nodes in `nodes_modes`, each ended by a NaN.
    pub(crate) fn member_sets(&self, starts: &mut [u64], ends: &mut [u64]) {
        let Some(values) = self.membership else {
            return;
        };
        let mut at = 0;
        for (node, &mode) in self.modes.iter().enumerate() {
            if Mode::from_code(mode) != Some(Mode::Member) {
                continue;
            }
            let start = at;
            while at < values.len() && !values.get(at).is_nan() {
                at += 1;
            }
            (starts[node], ends[node]) = (start as u64, at as u64);
            at += 1;
        }
    }

    /// The leaf a sample reaches from `root`, or `None` if the walk takes more steps than there
    /// are nodes (which [`Forest::check_acyclic`] rules out). `sets` is what
    /// [`Forest::member_sets`] wrote.
    pub(crate) fn walk(
        &self,
        root: usize,
        sample: impl Fn(usize) -> f64,
        (starts, ends): (&[u64], &[u64]),
    ) -> Option<usize> {
        let mut node = root;
        for _ in 0..=self.modes.len() {
            let x = sample(self.features[node] as usize);
            let split = self.splits.get(node);
            let goes_true = match Mode::from_code(self.modes[node])? {
                Mode::Leq => x <= split,
                Mode::Lt => x < split,
                Mode::Gte => x >= split,
                Mode::Gt => x > split,
                Mode::Eq => x == split,
                Mode::Neq => x != split,
                Mode::Member => {
                    let values = self.membership?;
                    (starts[node]..ends[node]).any(|i| values.get(i as usize) == x)
                }
            } || (x.is_nan()
                && self
                    .missing_tracks_true
                    .is_some_and(|flags| flags[node] != 0));
            match self.branch(node, goes_true) {
                Branch::Leaf(leaf) => return Some(leaf),
                Branch::Node(next) => node = next,
            }
        }
        None
    }
}
