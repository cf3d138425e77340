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

/// Runs `f`, turning a panic (libtorch and tch panic on some errors) into an error.
pub fn catch_panics<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
        Err(anyhow::anyhow!("panic: {message}"))
    })
}

/// A loss that is not a finite number: training stops with this.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("non-finite {what} ({value}) in gradient step {step} of this update")]
pub struct NonFiniteLoss {
    pub what: &'static str,
    pub value: f64,
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
