//! The errors a run can end with. A leaf module: the backends, which detect a non-finite
//! loss, and the learners, which pass it on, both import it from here, as do the two run
//! loops (`train`, `rlhf::pipeline`) for an interruption and a panic turned into an error.

/// The run was stopped from outside (SIGINT, SIGTERM).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal {during}")]
pub struct Interrupted {
    /// Where: `after iteration 12`, `at sft step 40/300`, …
    pub during: String,
}

/// `Err(Interrupted)`, saying `during()`, once `flag` (set by a signal handler) is set.
pub fn check_interrupt(
    flag: Option<&std::sync::atomic::AtomicBool>,
    during: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if flag.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) {
        return Err(Interrupted { during: during() }.into());
    }
    Ok(())
}

/// The `status` a run that ended with `e` is sealed with: `interrupted` or `failed`.
pub fn ended_status(e: &anyhow::Error) -> &'static str {
    if e.is::<Interrupted>() {
        "interrupted"
    } else {
        "failed"
    }
}

/// Runs `f`, turning a panic (libtorch and tch panic on some errors) into an error, its text
/// shortened by [`panic_text`].
pub fn catch_panics<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    out.unwrap_or_else(|panic| Err(Panicked(panic_text(panic.as_ref())).into()))
}

thread_local! {
    /// How many [`catch_panics`] calls this thread is inside.
    static CATCHING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether a panic on this thread now would be caught by [`catch_panics`] and become the
/// run's error (a panic hook may then leave the telling to the run).
pub fn panic_is_caught() -> bool {
    CATCHING.with(|c| c.get() > 0)
}

/// Whether [`panic_text`]'s words are a failed allocation's.
pub fn is_out_of_memory(text: &str) -> bool {
    text.starts_with("out of memory")
}

/// A panic caught by [`catch_panics`], as [`panic_text`] words it: the caller may say where
/// it happened, which the panic itself (deep in libtorch) cannot.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Panicked(pub String);

/// What a panic says, for a person: `panic: MESSAGE`, where a libtorch error keeps its first
/// lines and loses the C++ stack frames that follow them (`frame #0: …`, dozens of lines of
/// addresses); a tensor libtorch could not allocate becomes `out of memory: …` with its size
/// and what to lower.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    shorten_panic(message)
}

/// [`panic_text`] of a panic's message.
pub fn shorten_panic(message: &str) -> String {
    if let Some(bytes) = allocation_failure(message) {
        return format!(
            "out of memory: libtorch could not allocate a tensor of {} ({bytes} bytes); lower a batch size or the model's size",
            human_bytes(bytes)
        );
    }
    if message.contains("CUDA out of memory") {
        // `CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; …`
        let size = message
            .split("Tried to allocate ")
            .nth(1)
            .map(|rest| {
                let size: Vec<&str> = rest.split_whitespace().take(2).collect();
                size.join(" ").trim_end_matches(['.', ';', ',']).to_string()
            })
            .filter(|s| !s.is_empty());
        return format!(
            "out of memory on the GPU{}; lower a batch size or the model's size",
            size.map(|s| format!(": libtorch could not allocate a tensor of {s}"))
                .unwrap_or_default()
        );
    }
    // tch writes a libtorch error as `Torch("…")` with its newlines escaped, then the C++
    // frames; a plain message may hold real newlines before them.
    let cut = [
        "\\nframe #0",
        "\nframe #0",
        "\\nException raised from",
        "\nException raised from",
    ]
    .iter()
    .filter_map(|m| message.find(m))
    .min();
    match cut {
        Some(at) => format!("panic: {} [libtorch's C++ frames left out]", &message[..at]),
        None => format!("panic: {message}"),
    }
}

/// The size libtorch's CPU allocator says it could not allocate:
/// `DefaultCPUAllocator: can't allocate memory: you tried to allocate 7936000000 bytes`.
fn allocation_failure(message: &str) -> Option<u64> {
    let rest = message
        .split("can't allocate memory: you tried to allocate ")
        .nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// `bytes` in the largest binary unit that leaves at least 1: `7.4 GiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut x = bytes as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < units.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{x:.1} {}", units[unit])
    }
}

/// A loss that is not a finite number: training stops with this.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("non-finite {what} ({value}) in gradient step {} of this update (counting from 1)", .step + 1)]
pub struct NonFiniteLoss {
    pub what: &'static str,
    pub value: f64,
    /// The gradient step's index in the update, from 0.
    pub step: usize,
}

/// `value` if it is finite, else the [`NonFiniteLoss`] of `what` in gradient step `step`.
pub(crate) fn finite(what: &'static str, value: f64, step: usize) -> Result<f64, NonFiniteLoss> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(NonFiniteLoss { what, value, step })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_loss_names_its_step_counting_from_one() {
        let e = finite("policy loss", f64::NAN, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "non-finite policy loss (NaN) in gradient step 1 of this update (counting from 1)"
        );
        assert_eq!(finite("x", 2.0, 0), Ok(2.0));
    }

    #[test]
    fn libtorch_panics_are_shortened() {
        // What tch panics with when libtorch's CPU allocator fails (under `ulimit -v`).
        let oom = r#"called `Result::unwrap()` on an `Err` value: Torch("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 7936000000 bytes. Error code 12 (Cannot allocate memory)\nframe #0: c10::ThrowEnforceNotMet(char const*, int) + 0x6a (0x7f7 in libc10.so)\nframe #1: c10::alloc_cpu(unsigned long) + 0x365")"#;
        assert_eq!(
            shorten_panic(oom),
            "out of memory: libtorch could not allocate a tensor of 7.4 GiB (7936000000 bytes); lower a batch size or the model's size"
        );
        let cuda = r#"called `Result::unwrap()` on an `Err` value: Torch("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total capacity; 78.90 GiB already allocated)\nException raised from malloc at CUDACachingAllocator.cpp:1 (most recent call first):\nframe #0: c10::Error::Error")"#;
        assert_eq!(
            shorten_panic(cuda),
            "out of memory on the GPU: libtorch could not allocate a tensor of 20.00 MiB; lower a batch size or the model's size"
        );
        // libtorch 2.x's wording.
        let cuda2 = r#"called `Result::unwrap()` on an `Err` value: Torch("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.15 GiB of which 3.06 MiB is free.\nException raised from malloc at CUDACachingAllocator.cpp:1 (most recent call first):\nframe #0: c10::Error::Error")"#;
        assert_eq!(
            shorten_panic(cuda2),
            "out of memory on the GPU: libtorch could not allocate a tensor of 20.00 MiB; lower a batch size or the model's size"
        );
        let other = r#"called `Result::unwrap()` on an `Err` value: Torch("shape '[2, 3]' is invalid for input of size 7\nException raised from infer_size_impl at InferSize.h:1 (most recent call first):\nframe #0: c10::Error::Error(c10::SourceLocation) + 0x9")"#;
        let short = shorten_panic(other);
        assert!(
            short.starts_with("panic: called `Result::unwrap()`"),
            "{short}"
        );
        assert!(short.contains("is invalid for input of size 7"), "{short}");
        assert!(
            !short.contains("frame #0") && !short.contains("Exception raised"),
            "{short}"
        );
        assert_eq!(
            shorten_panic("index out of bounds"),
            "panic: index out of bounds"
        );
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
