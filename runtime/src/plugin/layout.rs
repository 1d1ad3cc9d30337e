//! The layout check between the host's and a plugin's module types. The side with fewer prefix
//! fields is passed to abi_stable's checker as the interface, so a newer host accepts an older
//! plugin and an older host a newer one, while any changed field type is refused.

use std::collections::HashSet;

use abi_stable::{
    abi_stability::abi_checking::{
        check_layout_compatibility_with_globals, AbiInstabilityErrors, CheckingGlobals,
    },
    type_layout::{TLData, TLFieldOrFunction, TypeLayout},
};

/// How the plugin's module layout differs from the host's.
#[derive(Debug)]
pub(crate) struct LayoutDifference {
    /// One clause per differing field, e.g. "`version` is RStr<'a> in the host but u64 in the
    /// plugin", joined by "; ".
    pub(crate) summary: String,
    /// abi_stable's full report (both layouts, every error).
    pub(crate) report: String,
}

/// Checks that `host` and `plugin` (layouts of the module reference type) are compatible.
pub(crate) fn check_module_layout(
    host: &'static TypeLayout,
    plugin: &'static TypeLayout,
) -> Result<(), LayoutDifference> {
    let plugin_is_interface = prefix_fields(plugin) < prefix_fields(host);
    let (interface, implementation) = if plugin_is_interface {
        (plugin, host)
    } else {
        (host, plugin)
    };
    // A fresh set of globals per check: the shared one would keep references into this plugin
    // after it is unloaded.
    let globals = CheckingGlobals::new();
    check_layout_compatibility_with_globals(interface, implementation, &globals).map_err(|errors| {
        LayoutDifference {
            summary: summarize(&errors, plugin_is_interface),
            report: errors.to_string(),
        }
    })
}

/// The fields where the layouts differ, named by their path from the module and with the type
/// each side has. (abi_stable's own report says "expected" and "found" for interface and
/// implementation, which are host and plugin in either order here, and runs to hundreds of
/// lines.)
fn summarize(errors: &AbiInstabilityErrors, plugin_is_interface: bool) -> String {
    let mut clauses: Vec<String> = Vec::new();
    for error in errors.errors.iter() {
        let path: Vec<&str> = error
            .stack_trace
            .iter()
            .filter_map(|step| match &step.found {
                TLFieldOrFunction::Field(field) => Some(field.name()),
                TLFieldOrFunction::Function(_) => None,
            })
            // Positional fields of wrappers (`PluginModuleRef.0`) say nothing to a reader.
            .filter(|name| name.parse::<usize>().is_err())
            .collect();
        let Some(last) = error.stack_trace.last() else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let (interface_type, implementation_type) =
            (describe(&last.expected), describe(&last.found));
        let (host_type, plugin_type) = if plugin_is_interface {
            (implementation_type, interface_type)
        } else {
            (interface_type, implementation_type)
        };
        let path = path.join(".");
        let clause = if host_type == plugin_type {
            format!("`{path}` ({host_type}) differs")
        } else {
            format!("`{path}` is {host_type} in the host but {plugin_type} in the plugin")
        };
        if !clauses.contains(&clause) {
            clauses.push(clause);
        }
    }
    if clauses.is_empty() {
        "the module's type layout differs".to_owned()
    } else {
        clauses.join("; ")
    }
}

fn describe(item: &TLFieldOrFunction) -> String {
    match item {
        TLFieldOrFunction::Field(field) => field.full_type().to_string(),
        TLFieldOrFunction::Function(function) => function.to_string(),
    }
}

/// The fields of every prefix type reachable from `layout` (the module, operator and host
/// tables), summed. Every prefix type only grows from one ABI minor to the next, so the older
/// side has the smaller sum, and equal sums mean equal counts everywhere.
fn prefix_fields(layout: &'static TypeLayout) -> usize {
    let mut seen = HashSet::new();
    let mut stack = vec![layout];
    let mut total = 0;
    while let Some(layout) = stack.pop() {
        if !seen.insert(std::ptr::from_ref(layout)) {
            continue;
        }
        if let TLData::PrefixType(prefix) = layout.data() {
            total += prefix.fields.len();
        }
        stack.extend(layout.shared_vars().type_layouts().iter().map(|get| get()));
    }
    total
}
