// Shared by the build scripts that record the source's git revision: `include!` it from a
// build.rs beside `link_libtorch.rs`, then call `git_revision(crates)`.
//
// It sets `GRADGYM_GIT_REVISION` to `git rev-parse HEAD`, with `-dirty` when a tracked file
// differs from it. The script reruns when HEAD or the index moves and when a source of the
// crates named changes (their manifests, `src/` and, for agents, `csrc/`; the root's
// manifests, lock file, `src/` and build helpers): an edit that is not yet staged changes the
// binary, so its revision must say `-dirty` too, which watching the index alone did not. A
// crate names itself and those below it, so an edit above it does not rebuild it.

fn git_revision(crates: &[&str]) {
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
    for watched in [".git/HEAD", ".git/index", "Cargo.toml", "Cargo.lock", "src", "build"] {
        println!("cargo:rerun-if-changed=../{watched}");
    }
    for c in crates {
        for part in ["Cargo.toml", "src", "csrc"] {
            if std::path::Path::new(&format!("../{c}/{part}")).exists() {
                println!("cargo:rerun-if-changed=../{c}/{part}");
            }
        }
    }
}
