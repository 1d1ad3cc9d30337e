//! What a plugin library exports: a frozen descriptor naming the ABI version and pointing at the
//! plugin's module, a prefix-type table that later ABI versions only append to.

use crate::operator::OperatorRef;
use abi_stable::{
    library::AbiHeader,
    std_types::{RStr, RVec},
    type_layout::TypeLayout,
    StableAbi,
};

/// The symbol under which a plugin exports its [`PluginDescriptor`].
pub const DESCRIPTOR_SYMBOL: &[u8] = b"OPAL_PLUGIN_DESCRIPTOR\0";

/// The magic bytes at the start of every descriptor.
pub const DESCRIPTOR_MAGIC: [u8; 16] = *b"opal-plugin-abi\0";

/// The ABI major version: plugins and hosts of different majors never load each other.
pub const ABI_MAJOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR"));
/// The ABI minor version: a minor adds prefix fields at the end, so any minors of one major
/// load each other; fields the other side lacks read as absent.
pub const ABI_MINOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MINOR"));

const fn parse_u32(s: &str) -> u32 {
    let bytes = s.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// The plugin's module: metadata and operators. Fields are only ever appended after the last
/// one, and never before `last_prefix_field`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
pub struct PluginModule {
    /// The plugin's name, by which deployments refer to it.
    pub name: RStr<'static>,
    /// The plugin's semver version.
    pub version: RStr<'static>,
    /// The operators the plugin provides.
    #[sabi(last_prefix_field)]
    pub operators: extern "C" fn() -> RVec<OperatorRef>,
    /// Since ABI 1.1: heap allocations the plugin made through its own global allocator.
    pub heap_allocations: extern "C" fn() -> u64,
}

/// The first thing a host reads from a plugin library. Its layout is frozen for all versions:
/// a host checks the magic, the opal ABI version and abi_stable's header before it trusts
/// `layout` and `module`.
#[repr(C)]
pub struct PluginDescriptor {
    pub magic: [u8; 16],
    pub abi_major: u32,
    pub abi_minor: u32,
    /// abi_stable's own version header, so `layout` is only read by a compatible abi_stable.
    pub abi_stable: AbiHeader,
    /// The layout of [`PluginModuleRef`] as the plugin was compiled.
    pub layout: &'static TypeLayout,
    pub module: PluginModuleRef,
}

// SAFETY: the descriptor is immutable data (bytes, integers and references to immutable statics).
unsafe impl Sync for PluginDescriptor {}

impl PluginDescriptor {
    /// The descriptor for `module`, built against this crate's ABI version.
    pub const fn new(module: PluginModuleRef) -> Self {
        PluginDescriptor {
            magic: DESCRIPTOR_MAGIC,
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            abi_stable: AbiHeader::VALUE,
            layout: <PluginModuleRef as StableAbi>::LAYOUT,
            module,
        }
    }
}
