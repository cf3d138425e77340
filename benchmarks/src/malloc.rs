//! How the `gradgym` binary sets up glibc's `malloc`: freed memory is kept for reuse instead
//! of going back to the kernel.
//!
//! libtorch allocates every tensor with `posix_memalign`, and a PPO update or a generation call
//! allocates and frees the same few megabytes (logits, MLP activations, KV caches, gradients)
//! over and over. By default glibc serves blocks above a threshold that it adjusts at run time
//! (128 KiB at first, at most 32 MiB) with `mmap`, and gives the top of its heaps back to the
//! kernel once more than twice that threshold is free there; every new block then comes back
//! as fresh pages, each zeroed by the kernel on its first touch. The binary fixes the `mmap`
//! threshold at glibc's ceiling, 32 MiB, and keeps up to 256 MiB free at the top of a heap.
//! Allocation changes no arithmetic: results are the same bits either way.
//!
//! Measured with `gradgym rlhf bench` here, four alternated runs of each (docs/rlhf.md,
//! Throughput): generation 98,700-109,300 tokens/s against 82,300-93,700 with glibc's
//! defaults, PPO 6,631-6,796 against 6,380-6,608, peak memory 538 MiB against 528-530, minor
//! page faults 95,600 against 173,600-202,000.
//! Both settings matter together: glibc turns its run-time threshold off once either is set,
//! so the trim threshold alone leaves every block above 128 KiB to `mmap` (PPO fell to
//! 3,650-3,770 tokens/s that way).
//!
//! A caller who tunes `malloc` keeps their choice: with any `glibc.malloc.*` entry in
//! `GLIBC_TUNABLES`, or any `MALLOC_*` variable set, the binary leaves `malloc` alone.

use std::sync::OnceLock;

/// The `mmap` threshold the binary sets: glibc's ceiling for it on 64-bit systems.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory kept at the top of a heap before glibc gives it back to the kernel.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// What [`keep_freed_memory`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The thresholds above are set.
    Kept,
    /// The environment tunes `malloc` itself; left as it says.
    CallersChoice,
    /// glibc refused a threshold, or this is not a glibc system: `malloc` is as it was.
    Unchanged,
}

static SETTING: OnceLock<Setting> = OnceLock::new();

/// Whether the environment tunes glibc's `malloc` (see the module doc).
fn caller_tunes_malloc() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    tunables.contains("glibc.malloc.")
        || std::env::vars_os().any(|(name, _)| name.to_string_lossy().starts_with("MALLOC_"))
}

/// Sets the thresholds, unless the caller tunes `malloc`: the first statement of `main`, before
/// libtorch or any thread allocates.
pub fn keep_freed_memory() {
    let setting = if caller_tunes_malloc() {
        Setting::CallersChoice
    } else {
        set_thresholds()
    };
    let _ = SETTING.set(setting);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> Setting {
    // SAFETY: mallopt only changes malloc's parameters; both values are within glibc's limits
    // (it returns 0 and changes nothing otherwise).
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    };
    if ok {
        Setting::Kept
    } else {
        Setting::Unchanged
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Setting {
    Setting::Unchanged
}

/// One line for `gradgym info` and `gradgym rlhf bench`.
pub fn describe() -> String {
    match SETTING.get().copied().unwrap_or(Setting::Unchanged) {
        Setting::Kept => format!(
            "freed memory kept for reuse (mmap threshold {} MiB, trim threshold {} MiB)",
            MMAP_THRESHOLD >> 20,
            TRIM_THRESHOLD >> 20
        ),
        Setting::CallersChoice => {
            "as the environment sets it (GLIBC_TUNABLES or MALLOC_*)".to_string()
        }
        Setting::Unchanged => "the system's defaults".to_string(),
    }
}
