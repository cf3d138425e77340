// Shared by the build scripts that record the source's git revision: `include!` it from a
// build.rs beside `link_libtorch.rs`, then call `git_revision()`.
//
// It sets `GRADGYM_GIT_REVISION` to `git rev-parse HEAD`, with `-dirty` when a tracked file
// differs from it. The script reruns when HEAD or the index moves and when any source the
// binary is built from changes (the crates' `src/`, the C++ operators, the build helpers, the
// manifests and the lock file): an edit that is not yet staged changes the binary, so its
// revision must say `-dirty` too, which watching the index alone did not.

fn git_revision() {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    println!(
        "cargo:rustc-env=GRADGYM_GIT_REVISION={git}{}",
        if dirty { "-dirty" } else { "" }
    );
    for watched in [
        ".git/HEAD",
        ".git/index",
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "build",
        "envs/Cargo.toml",
        "envs/src",
        "algorithms/Cargo.toml",
        "algorithms/src",
        "agents/Cargo.toml",
        "agents/src",
        "agents/csrc",
        "benchmarks/Cargo.toml",
        "benchmarks/src",
    ] {
        println!("cargo:rerun-if-changed=../{watched}");
    }
}
