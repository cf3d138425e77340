// Shared by the build scripts of every crate whose binaries (tests included) link libtorch:
// `include!("../build/link_libtorch.rs")` from a build.rs, with `torch-sys` as a direct
// dependency so that Cargo sets DEP_TCH_LIBTORCH_LIB.
//
// - an rpath to libtorch's folder, so binaries run without LD_LIBRARY_PATH;
// - `--no-as-needed -ltorch`, so libtorch.so (and with it libtorch_cuda.so) stays linked even
//   though no symbol is taken from it directly: without it only libtorch_cpu is linked and
//   CUDA is never seen.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Resolve the `.libtorch` symlink, so a built binary keeps working if the clone moves.
        let lib = std::fs::canonicalize(&lib).map_or(lib, |p| p.display().to_string());
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
        }
    }
}
