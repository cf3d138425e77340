//! The coefficient β of a KL penalty.
//!
//! - Fixed β.
//! - Adaptive β (Schulman et al. 2017, section 4): after each update, with d the measured
//!   KL[π_old ‖ π], halve β if d < d_target / 1.5 and double it if d > d_target · 1.5.

use serde::{Deserialize, Serialize};

/// How β evolves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KlController {
    Fixed { beta: f64 },
    Adaptive { beta: f64, target: f64 },
}

impl KlController {
    pub fn beta(&self) -> f64 {
        match *self {
            KlController::Fixed { beta } | KlController::Adaptive { beta, .. } => beta,
        }
    }

    /// Updates β from the KL measured over the last update.
    pub fn update(&mut self, measured_kl: f64) {
        if let KlController::Adaptive { beta, target } = self {
            if measured_kl < *target / 1.5 {
                *beta /= 2.0;
            } else if measured_kl > *target * 1.5 {
                *beta *= 2.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_beta_halves_and_doubles() {
        let mut c = KlController::Adaptive {
            beta: 1.0,
            target: 0.01,
        };
        c.update(0.001);
        assert_eq!(c.beta(), 0.5);
        c.update(0.1);
        assert_eq!(c.beta(), 1.0);
        c.update(0.011);
        assert_eq!(c.beta(), 1.0);
        let mut f = KlController::Fixed { beta: 0.3 };
        f.update(10.0);
        assert_eq!(f.beta(), 0.3);
    }
}
