//! Branch-free elementary functions for the batched kernels.
//!
//! `libm`'s `sin`/`cos` are opaque calls, so a loop that uses them cannot be vectorised. The
//! functions here are written with arithmetic and selects only, so LLVM vectorises the loops
//! that inline them, and they give the same bits on every lane width (no FMA contraction:
//! Rust never fuses `a * b + c` on its own).
//!
//! `sin_cos` reduces the argument by π/2 with the three-part Cody–Waite constants of fdlibm's
//! `e_rem_pio2.c` and evaluates fdlibm's `k_sin.c` / `k_cos.c` minimax polynomials on
//! [-π/4, π/4] (constants from FreeBSD msun; the polynomials are accurate to < 1 ulp there).
//! Valid for |x| < 2^20·π/2 ≈ 1.6e6; the tests compare it with `f64::sin_cos`.

// The constants below are copied digit for digit from fdlibm, so they can be checked against it.
#![allow(clippy::excessive_precision)]

use std::f64::consts::FRAC_2_PI;

/// 1.5 · 2^52: adding and subtracting it rounds a double to the nearest integer (ties to even)
/// for |x| < 2^51, and leaves that integer in the low mantissa bits of the sum.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

// π/2 split into three 33-bit pieces (fdlibm e_rem_pio2.c: pio2_1, pio2_2, pio2_3), so that
// n · PIO2_k is exact for |n| < 2^20.
const PIO2_1: f64 = 1.570_796_326_734_125_614_17e+00;
const PIO2_2: f64 = 6.077_100_506_303_965_976_60e-11;
const PIO2_3: f64 = 2.022_266_248_711_166_455_80e-21;

// fdlibm k_sin.c
const S1: f64 = -1.666_666_666_666_663_243_48e-01;
const S2: f64 = 8.333_333_333_322_489_461_24e-03;
const S3: f64 = -1.984_126_982_985_794_931_34e-04;
const S4: f64 = 2.755_731_370_707_006_767_89e-06;
const S5: f64 = -2.505_076_025_340_686_341_95e-08;
const S6: f64 = 1.589_690_995_211_550_102_21e-10;

// fdlibm k_cos.c
const C1: f64 = 4.166_666_666_666_660_190_37e-02;
const C2: f64 = -1.388_888_888_887_410_957_49e-03;
const C3: f64 = 2.480_158_728_947_672_941_78e-05;
const C4: f64 = -2.755_731_435_139_066_330_35e-07;
const C5: f64 = 2.087_572_321_298_174_827_90e-09;
const C6: f64 = -1.135_964_755_778_819_482_65e-11;

/// `(sin x, cos x)`, branch-free.
#[inline(always)]
pub fn sin_cos(x: f64) -> (f64, f64) {
    let t = x * FRAC_2_PI + ROUND_MAGIC;
    let quadrant = t.to_bits();
    let n = t - ROUND_MAGIC;
    let r = ((x - n * PIO2_1) - n * PIO2_2) - n * PIO2_3;

    let z = r * r;
    let sin_r = r + (z * r) * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))));
    let poly_c = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos_r = w + (((1.0 - w) - hz) + z * poly_c);

    // n mod 4 picks the quadrant: (s, c), (c, -s), (-s, -c), (-c, s).
    let swap = quadrant & 1 != 0;
    let sin_mag = if swap { cos_r } else { sin_r };
    let cos_mag = if swap { sin_r } else { cos_r };
    let sin_sign = (quadrant & 2) << 62;
    let cos_sign = (quadrant.wrapping_add(1) & 2) << 62;
    (
        f64::from_bits(sin_mag.to_bits() ^ sin_sign),
        f64::from_bits(cos_mag.to_bits() ^ cos_sign),
    )
}

/// `cos x`, branch-free (see [`sin_cos`]).
#[inline(always)]
pub fn cos(x: f64) -> f64 {
    sin_cos(x).1
}

/// `sin x`, branch-free (see [`sin_cos`]).
#[inline(always)]
pub fn sin(x: f64) -> f64 {
    sin_cos(x).0
}

/// `floor x`, branch-free, for |x| < 2^51 (the round-to-nearest trick, then a step down where
/// rounding went up). Exact: the integer is representable and the comparison is exact.
#[inline(always)]
pub fn floor(x: f64) -> f64 {
    let nearest = (x + ROUND_MAGIC) - ROUND_MAGIC;
    if nearest > x { nearest - 1.0 } else { nearest }
}

/// Python's / NumPy's floating `a % b` for b > 0: the result has the sign of `b`.
///
/// NumPy computes `fmod` (exact) and then adds `b` to a negative remainder. Here the quotient
/// comes from a branch-free floor, which gives the same bits whenever |a| < 3b (the product
/// `q·b` is exact for q ∈ {-1, 0, 1, 2}); beyond that it can differ by a few ulps.
#[inline(always)]
pub fn py_mod(a: f64, b: f64) -> f64 {
    let q = floor(a / b);
    let r = a - q * b;
    // a / b can round across an integer; bring r back into [0, b).
    let r = if r < 0.0 { r + b } else { r };
    if r >= b { r - b } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic sequence for sampling arguments (no dependency on the env RNG).
    fn points(count: usize, scale: f64) -> impl Iterator<Item = f64> {
        let mut s: u64 = 0x1234_5678_9abc_def0;
        (0..count).map(move |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            (2.0 * u - 1.0) * scale
        })
    }

    #[test]
    fn sin_cos_matches_libm_to_an_ulp_on_the_physics_range() {
        for scale in [0.25, 1.0, 4.0, 100.0] {
            for x in points(200_000, scale) {
                let (s, c) = sin_cos(x);
                let (es, ec) = x.sin_cos();
                assert!((s - es).abs() <= 2.3e-16, "sin({x}) = {s}, libm {es}");
                assert!((c - ec).abs() <= 2.3e-16, "cos({x}) = {c}, libm {ec}");
            }
        }
    }

    #[test]
    fn sin_cos_stays_accurate_far_from_zero() {
        for x in points(100_000, 1.0e5) {
            let (s, c) = sin_cos(x);
            let (es, ec) = x.sin_cos();
            assert!((s - es).abs() < 1e-12 && (c - ec).abs() < 1e-12, "x = {x}");
        }
    }

    #[test]
    fn sin_cos_exact_at_special_points() {
        assert_eq!(sin_cos(0.0), (0.0, 1.0));
        let (s, c) = sin_cos(std::f64::consts::FRAC_PI_2);
        // Near a zero of cos the three-part reduction leaves an absolute error of ~1e-31.
        assert!((c - std::f64::consts::FRAC_PI_2.cos()).abs() < 1e-30);
        assert_eq!(s, 1.0);
        assert!(sin_cos(f64::NAN).0.is_nan());
    }

    #[test]
    fn floor_matches_std() {
        for x in points(100_000, 1.0e6).chain([-1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.5, -2.5]) {
            assert_eq!(floor(x), x.floor(), "floor({x})");
        }
    }

    #[test]
    fn py_mod_matches_numpy_semantics() {
        let tau = std::f64::consts::TAU;
        for a in points(100_000, 2.9 * tau) {
            let fmod = a % tau;
            let numpy = if fmod != 0.0 && fmod < 0.0 {
                fmod + tau
            } else {
                fmod
            };
            assert_eq!(py_mod(a, tau), numpy, "{a} mod tau");
        }
        for a in points(100_000, 1.0e3) {
            let numpy = {
                let m = a % tau;
                if m < 0.0 { m + tau } else { m }
            };
            assert!((py_mod(a, tau) - numpy).abs() < 1e-12);
            assert!((0.0..tau).contains(&py_mod(a, tau)));
        }
    }
}
