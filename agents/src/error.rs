//! The error a gradient step can end a run with. A leaf module: the backends, which detect a
//! non-finite loss, and the learners, which pass it on, both import it from here.

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
