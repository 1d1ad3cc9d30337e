//! Records the cargo output directory of the build (`target/release` for `cargo build
//! --release` and maturin), where the workspace's plugins and the `opal` binary are, so the
//! package finds them without configuration.

fn main() {
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR lies three levels below the profile's directory");
    println!("cargo:rustc-env=OPAL_BUILD_DIR={}", profile_dir.display());
    println!("cargo:rerun-if-changed=build.rs");
}
