//! The coefficient β of a KL penalty.
//!
//! - Fixed β.
//! - Adaptive β (Schulman et al. 2017, section 4): after each update, with d the measured
//!   KL[π_old ‖ π], halve β if d < d_target / 1.5 and double it if d > d_target · 1.5.
//! - [`ReferenceKl`], the β of the KL to a frozen reference in RLHF: fixed, or Ziegler et al.
//!   2019's proportional controller, e = clip(KL / target − 1, −0.2, 0.2),
//!   β ← β · (1 + e · n / horizon), n the samples of the batch (as lm-human-preferences'
//!   `AdaptiveKLController` and TRL's do).

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

/// The β of R(x, y) = r(x, y) − β log π(y|x)/p(y|x).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReferenceKl {
    Fixed {
        beta: f64,
    },
    /// Ziegler et al. 2019, section 2.2: aims the KL per sequence at `target` with a
    /// proportional error clipped to ±0.2, at a rate set by `horizon` (samples).
    Adaptive {
        beta: f64,
        target: f64,
        horizon: f64,
    },
}

impl ReferenceKl {
    pub fn beta(&self) -> f64 {
        match *self {
            ReferenceKl::Fixed { beta } | ReferenceKl::Adaptive { beta, .. } => beta,
        }
    }

    /// Updates β from the mean KL per sequence of a batch of `samples` sequences.
    pub fn update(&mut self, measured_kl: f64, samples: usize) {
        if let ReferenceKl::Adaptive {
            beta,
            target,
            horizon,
        } = self
        {
            let error = (measured_kl / *target - 1.0).clamp(-0.2, 0.2);
            *beta *= 1.0 + error * samples as f64 / *horizon;
        }
    }

    /// The settings' problems for updates of `samples` sequences, naming the field: β < 0, a
    /// target or horizon that is not positive; for the adaptive controller also a β of 0
    /// (which it multiplies, so it stays 0) and a horizon of at most 0.2 · `samples`, where
    /// the factor 1 + e · samples/horizon, e ∈ [−0.2, 0.2], can reach 0 or below.
    pub fn validate(&self, samples: usize) -> Result<(), (&'static str, String)> {
        let beta = self.beta();
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(("beta", format!("must be a number ≥ 0, got {beta}")));
        }
        if let ReferenceKl::Adaptive {
            target, horizon, ..
        } = *self
        {
            if !(target.is_finite() && target > 0.0) {
                return Err(("kl_target", format!("must be positive, got {target:?}")));
            }
            if !(horizon.is_finite() && horizon > 0.0) {
                return Err(("kl_horizon", format!("must be positive, got {horizon:?}")));
            }
            if beta == 0.0 {
                return Err((
                    "beta",
                    "is 0, and the adaptive controller (kl_target set) multiplies β, so it \
                     would stay 0: give the starting β > 0"
                        .into(),
                ));
            }
            let least = 0.2 * samples as f64;
            if horizon <= least {
                return Err((
                    "kl_horizon",
                    format!(
                        "must be above 0.2 × the {samples} sequences of an update = {least}, \
                         got {horizon:?}: β's factor 1 + e · {samples}/horizon, with the error e \
                         clipped to ±0.2, would reach 0 or below and make β negative"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zieglers_controller_follows_its_formula() {
        let mut c = ReferenceKl::Adaptive {
            beta: 0.1,
            target: 6.0,
            horizon: 10_000.0,
        };
        // KL 9 against 6: error 0.5, clipped to 0.2; 512 samples: β · (1 + 0.2 · 512 / 10⁴).
        c.update(9.0, 512);
        assert!((c.beta() - 0.1 * (1.0 + 0.2 * 0.0512)).abs() < 1e-15);
        let b = c.beta();
        // KL 5.4: error −0.1, within the clip.
        c.update(5.4, 512);
        assert!((c.beta() - b * (1.0 - 0.1 * 0.0512)).abs() < 1e-15);
        let b = c.beta();
        // KL 0: error −1, clipped to −0.2.
        c.update(0.0, 1000);
        assert!((c.beta() - b * (1.0 - 0.2 * 0.1)).abs() < 1e-15);
        // At the target β stays.
        let b = c.beta();
        c.update(6.0, 512);
        assert_eq!(c.beta(), b);
        let mut f = ReferenceKl::Fixed { beta: 0.05 };
        f.update(100.0, 512);
        assert_eq!(f.beta(), 0.05);
        assert_eq!(
            ReferenceKl::Fixed { beta: -0.1 }
                .validate(64)
                .unwrap_err()
                .0,
            "beta"
        );
        let adaptive = |beta, target, horizon| ReferenceKl::Adaptive {
            beta,
            target,
            horizon,
        };
        assert_eq!(
            adaptive(0.1, 0.0, 1e4).validate(64).unwrap_err().0,
            "kl_target"
        );
        // A β of 0 would stay 0.
        assert_eq!(adaptive(0.0, 6.0, 1e4).validate(64).unwrap_err().0, "beta");
        assert!(ReferenceKl::Fixed { beta: 0.0 }.validate(64).is_ok());
        // The factor 1 − 0.2 · 64/horizon reaches 0 at horizon 12.8: refused there and below,
        // and above it β stays positive at the worst error.
        let e = adaptive(0.1, 6.0, 12.8).validate(64).unwrap_err();
        assert_eq!(e.0, "kl_horizon", "{}", e.1);
        assert!(e.1.contains("12.8"), "{}", e.1);
        let mut ok = adaptive(0.1, 6.0, 12.9);
        ok.validate(64).unwrap();
        for _ in 0..100 {
            ok.update(0.0, 64);
            assert!(ok.beta() > 0.0);
        }
        // (What the check prevents: a factor 1 − 0.2 · 64/1 < 0.)
        let mut negative = adaptive(0.1, 100.0, 1.0);
        negative.update(0.0, 64);
        assert!(negative.beta() < 0.0);
    }

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
