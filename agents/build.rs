include!("../build/link_libtorch.rs");
include!("../build/git_revision.rs");

/// Build facts recorded in every run's manifest: the git revision of the source and the
/// libtorch version the binary links.
fn main() {
    link_libtorch();
    build_ops();
    // What a library user of this crate records; the `gradgym` binary records its own
    // (benchmarks/build.rs), since an edit to a crate above this one leaves this one's
    // build alone.
    git_revision(&["envs", "algorithms", "agents"]);
    let version = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| {
            std::fs::read_to_string(std::path::Path::new(&lib).join("../version.py")).ok()
        })
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(['\'', '"']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GRADGYM_LIBTORCH_VERSION={version}");
}

/// The C++ operators in `csrc/` (see `gelu_tanh.cpp`), built against the libtorch that torch-sys
/// links: the autograd function with libtorch's headers, and its vector body twice, for
/// AVX-512 and for AVX2 (chosen at run time by libtorch's own CPU capability). Only on x86-64
/// Linux, where their flags, OpenMP and libtorch's layout are known; elsewhere (and without
/// `cfg(gradgym_gelu_op)`) `nn::gelu` is libtorch's `gelu`.
fn build_ops() {
    println!("cargo:rustc-check-cfg=cfg(gradgym_gelu_op)");
    for f in ["gelu_tanh.cpp", "gelu_tanh_kernel.cpp"] {
        println!("cargo:rerun-if-changed=csrc/{f}");
    }
    for v in ["LIBTORCH_CXX11_ABI", "LIBTORCH_INCLUDE"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let target = |v: &str| std::env::var(v).unwrap_or_default();
    if target("CARGO_CFG_TARGET_ARCH") != "x86_64" || target("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("gradgym-agents: torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)");
    };
    // Where torch-sys takes the headers from, and its C++ ABI (scripts/setup-libtorch.sh
    // checks that the wheel uses the C++11 one, which .cargo/config.toml states).
    let include = std::env::var("LIBTORCH_INCLUDE")
        .map(|i| std::path::Path::new(&i).join("include"))
        .unwrap_or_else(|_| std::path::Path::new(&lib).join("../include"));
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    println!("cargo:rustc-cfg=gradgym_gelu_op");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .std("c++17")
            .include(&include)
            .flag("-ffp-contract=off");
        b
    };
    base()
        .file("csrc/gelu_tanh.cpp")
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .flag("-fopenmp")
        .compile("gradgym_ops");
    for (name, flags) in [
        (
            "gradgym_ops_avx512",
            &[
                "-mavx512f",
                "-mavx512dq",
                "-mavx512bw",
                "-mavx512vl",
                "-mfma",
            ][..],
        ),
        ("gradgym_ops_avx2", &["-mavx2", "-mfma"][..]),
    ] {
        let mut b = base();
        b.file("csrc/gelu_tanh_kernel.cpp");
        for f in flags {
            b.flag(*f);
        }
        b.compile(name);
    }
}
