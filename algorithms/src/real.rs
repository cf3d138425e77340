//! The float type of the slice-form code: `f32` in training, `f64` where the tests compare an
//! estimator's exact expectation with ∇J to 1e-9.
//!
//! [`crate::advantages`] and [`crate::loss_grads`] are generic over [`Real`]. Each method is the
//! inherent method of the same name, and a conversion `from_f64` is an `as` cast, so the `f32`
//! instances compute exactly what the `f32`-only code did, operation for operation.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// `f32` or `f64`.
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + Send
    + Sync
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// `x as Self`.
    fn from_f64(x: f64) -> Self;
    /// `n as Self`.
    fn from_usize(n: usize) -> Self;
    /// `self as f64`.
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn sin(self) -> Self;
    fn powi(self, n: i32) -> Self;
    fn max(self, other: Self) -> Self;
    fn clamp(self, lo: Self, hi: Self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn from_usize(n: usize) -> Self {
                n as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn powi(self, n: i32) -> Self {
                <$t>::powi(self, n)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn clamp(self, lo: Self, hi: Self) -> Self {
                <$t>::clamp(self, lo, hi)
            }
        }
    };
}

real!(f32);
real!(f64);
