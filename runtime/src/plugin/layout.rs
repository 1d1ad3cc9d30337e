//! The layout check between the host's and a plugin's module types. The side with fewer prefix
//! fields is passed to abi_stable's checker as the interface, so a newer host accepts an older
//! plugin and an older host a newer one, while any changed field type is refused.

use abi_stable::{
    abi_stability::abi_checking::{check_layout_compatibility_with_globals, CheckingGlobals},
    type_layout::{TLData, TypeLayout},
};

/// Checks that `host` and `plugin` (layouts of the module reference type) are compatible.
pub(crate) fn check_module_layout(
    host: &'static TypeLayout,
    plugin: &'static TypeLayout,
) -> Result<(), String> {
    let (interface, implementation) = if prefix_fields(plugin) < prefix_fields(host) {
        (plugin, host)
    } else {
        (host, plugin)
    };
    // A fresh set of globals per check: the shared one would keep references into this plugin
    // after it is unloaded.
    let globals = CheckingGlobals::new();
    check_layout_compatibility_with_globals(interface, implementation, &globals)
        .map_err(|errors| errors.to_string())
}

/// The number of fields of the first prefix type reachable from `layout`.
fn prefix_fields(layout: &'static TypeLayout) -> usize {
    let mut stack = vec![layout];
    let mut seen = 0;
    while let Some(layout) = stack.pop() {
        if let TLData::PrefixType(prefix) = layout.data() {
            return prefix.fields.len();
        }
        seen += 1;
        if seen > 64 {
            break;
        }
        stack.extend(layout.shared_vars().type_layouts().iter().map(|get| get()));
    }
    0
}
