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
//! Freed memory stays with the process: its resident size stays near its peak instead of
//! shrinking after a large step, per arena (each thread that allocates may get one).
//!
//! A caller who sets one of these thresholds keeps their choice: with `glibc.malloc.
//! mmap_threshold`, `trim_threshold`, `top_pad` or `mmap_max` in `GLIBC_TUNABLES`, or one of
//! the variables `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_` and
//! `MALLOC_MMAP_MAX_`, the binary sets neither. Other malloc settings (`MALLOC_ARENA_MAX`, ...)
//! leave the thresholds to the binary. `GRADGYM_MALLOC=glibc` keeps glibc's own defaults;
//! `GRADGYM_MALLOC=keep` is the default; another value is an error.

use std::sync::OnceLock;

/// The `mmap` threshold the binary sets: glibc's ceiling for it on 64-bit systems.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory kept at the top of a heap before glibc gives it back to the kernel.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// The environment variable that chooses (see the module doc).
pub const VARIABLE: &str = "GRADGYM_MALLOC";

/// What [`keep_freed_memory`] did.
#[derive(Clone, Copy)]
pub enum Setting {
    /// The thresholds above are set.
    Kept,
    /// The environment sets a threshold itself; left as it says.
    CallersChoice,
    /// `GRADGYM_MALLOC=glibc`: glibc's defaults.
    GlibcDefaults,
    /// glibc refused a threshold, or this is not a glibc system: `malloc` is as it was.
    Unchanged,
}

static SETTING: OnceLock<Setting> = OnceLock::new();

/// glibc's names for the thresholds, as tunables and as environment variables.
const TUNABLES: [&str; 4] = [
    "glibc.malloc.mmap_threshold",
    "glibc.malloc.trim_threshold",
    "glibc.malloc.top_pad",
    "glibc.malloc.mmap_max",
];
const VARIABLES: [&str; 4] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
];

/// Whether the environment sets one of glibc's thresholds (see the module doc).
fn caller_sets_thresholds() -> bool {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    let tunables = tunables.to_string_lossy();
    TUNABLES.iter().any(|t| tunables.contains(&format!("{t}=")))
        || VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

/// Sets the thresholds unless the environment says otherwise (see the module doc): in `main`,
/// before libtorch starts its threads. A `GRADGYM_MALLOC` other than `keep` or `glibc` is an
/// error naming it, and nothing is set.
pub fn keep_freed_memory() -> Result<(), String> {
    let choice = std::env::var_os(VARIABLE);
    let setting = match choice.as_ref().map(|c| c.to_string_lossy()) {
        Some(c) if c == "glibc" => Setting::GlibcDefaults,
        Some(c) if c != "keep" => {
            return Err(format!(
                "{VARIABLE}={c:?}: expected `keep` (the default: freed memory kept for reuse) or \
                 `glibc` (glibc's own malloc thresholds)"
            ));
        }
        _ if caller_sets_thresholds() => Setting::CallersChoice,
        _ => set_thresholds(),
    };
    let _ = SETTING.set(setting);
    Ok(())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> Setting {
    // SAFETY: mallopt only changes malloc's parameters. Both values are within 64-bit glibc's
    // limits; where one is not (32-bit glibc caps the mmap threshold at 512 KiB), mallopt
    // returns 0 and changes nothing, and the trim threshold is then left alone too (setting
    // it alone would turn off glibc's run-time mmap threshold).
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
            "thresholds as the environment sets them (GLIBC_TUNABLES or MALLOC_*_)".to_string()
        }
        Setting::GlibcDefaults => format!("glibc's defaults ({VARIABLE}=glibc)"),
        Setting::Unchanged => "the system's defaults".to_string(),
    }
}
