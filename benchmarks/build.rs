include!("../build/link_libtorch.rs");
include!("../build/git_revision.rs");

/// The libtorch link step, and the git revision the `gradgym` binary records in manifests
/// (reran when any crate's source changes, so an unstaged edit reads `-dirty`).
fn main() {
    link_libtorch();
    git_revision(&["envs", "algorithms", "agents", "benchmarks"]);
}
