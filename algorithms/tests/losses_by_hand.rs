//! Every loss of both twins — the tensor form of `losses` (autograd gives its gradient) and the
//! slice form of `loss_grads` (closed-form gradient), the latter in f32 and in f64 — against
//! values worked out by hand on small batches: the loss, its gradient, and PPO's ratio
//! statistics. The twins are also compared with each other (`loss_grads`' unit tests), but a
//! bug copied into both (a clip range of [1 − ε, 1 + 2ε], a wrong normalisation epsilon) passes
//! such a comparison; it fails here.
//!
//! Each case picks its inputs so that every branch of the loss is taken by some sample, and the
//! comments say which branch and why. The expected numbers are computed in f64 from the inputs
//! (ratios as exp(log π − log π_old)), with the branch chosen by hand, not by calling clamp or
//! max. Tolerances: 1e-6 (absolute and relative) for f32, 1e-12 for f64.

use gradgym_algorithms::{loss_grads, losses};
use tch::Tensor;

fn leaf(v: &[f32]) -> Tensor {
    Tensor::from_slice(v).set_requires_grad(true)
}

fn t(v: &[f32]) -> Tensor {
    Tensor::from_slice(v)
}

fn grad_of(x: &Tensor) -> Vec<f64> {
    Vec::<f32>::try_from(x.grad())
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `got` against `want`, entry by entry, within `tol · (1 + |want|)`.
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, worked out by hand {w}\n  got  {got:?}\n  want {want:?}"
        );
    }
}

const F32: f64 = 1e-6;
const F64: f64 = 1e-12;

/// The ratio exp(log π − log π_old) of the inputs, in f64.
fn ratios(new: &[f32], old: &[f32]) -> Vec<f64> {
    new.iter()
        .zip(old)
        .map(|(&n, &o)| (n as f64 - o as f64).exp())
        .collect()
}

/// `log π_old + ln ρ` for the wanted ratios, so that exp(log π − log π_old) ≈ ρ.
fn new_logprobs(old: &[f32], rho: &[f64]) -> Vec<f32> {
    old.iter()
        .zip(rho)
        .map(|(&o, r)| (o as f64 + r.ln()) as f32)
        .collect()
}

#[test]
fn policy_gradient_loss_by_hand() {
    let lp = [-0.5f32, -1.25, -2.0];
    let w = [2.0f32, -1.0, 0.5];
    // L = −⅓ Σ w_i log π_i = −⅓ (2·(−0.5) + (−1)·(−1.25) + 0.5·(−2)) = −⅓ (−0.75) = 0.25,
    // ∂L/∂log π_i = −w_i / 3.
    let (loss, grad) = (0.25, vec![-2.0 / 3.0, 1.0 / 3.0, -0.5 / 3.0]);

    let x = leaf(&lp);
    let l = losses::policy_gradient_loss(&x, &t(&w));
    l.backward();
    close("tensor L", &[l.double_value(&[])], &[loss], F32);
    close("tensor ∂L/∂log π", &grad_of(&x), &grad, F32);

    let mut g = [0.0f32; 3];
    let l = loss_grads::policy_gradient_loss(&lp, &w, &mut g);
    close("slice f32 L", &[l], &[loss], F32);
    close("slice f32 ∂L/∂log π", &wide(&g), &grad, F32);

    let mut g = [0.0f64; 3];
    let l = loss_grads::policy_gradient_loss(&wide(&lp), &wide(&w), &mut g);
    close("slice f64 L", &[l], &[loss], F64);
    close("slice f64 ∂L/∂log π", &g, &grad, F64);
}

/// The clipped surrogate's case of `ppo_clip_loss_by_hand`'s table: inputs, ratios, and each
/// sample's loss term with its branch chosen by hand.
struct ClipCase {
    old: [f32; 6],
    new: Vec<f32>,
    adv: [f32; 6],
    eps: f64,
    r: Vec<f64>,
    a: Vec<f64>,
    terms: [f64; 6],
}

fn clip_case() -> ClipCase {
    let old = [-1.0f32, -0.5, -2.0, -0.25, -1.5, -0.75];
    let new = new_logprobs(&old, &[1.1, 1.3, 1.3, 0.7, 0.7, 1.5]);
    let adv = [2.0f32, 2.0, -1.0, 1.0, -1.0, 0.5];
    let eps = 0.2;
    let r = ratios(&new, &old);
    let a = wide(&adv);
    let terms = [
        -a[0] * r[0],
        -a[1] * (1.0 + eps),
        -a[2] * r[2],
        -a[3] * r[3],
        -a[4] * (1.0 - eps),
        -a[5] * (1.0 + eps),
    ];
    ClipCase {
        old,
        new,
        adv,
        eps,
        r,
        a,
        terms,
    }
}

/// PPO-clip with ε = 0.2 on six samples, one per branch:
///
/// | i | ρ   | A    | where ρ is     | min(ρA, clip(ρ)A) is | term −min | ∂/∂log π (×6) |
/// |---|-----|------|----------------|----------------------|-----------|---------------|
/// | 0 | 1.1 | 2    | inside         | either (equal)       | −2.2      | −2.2          |
/// | 1 | 1.3 | 2    | above 1 + ε    | clipped: 2.4 < 2.6   | −2.4      | 0             |
/// | 2 | 1.3 | −1   | above 1 + ε    | unclipped: −1.3      | 1.3       | 1.3           |
/// | 3 | 0.7 | 1    | below 1 − ε    | unclipped: 0.7       | −0.7      | −0.7          |
/// | 4 | 0.7 | −1   | below 1 − ε    | clipped: −0.8        | 0.8       | 0             |
/// | 5 | 1.5 | 0.5  | above 1 + 2ε   | clipped: 0.6         | −0.6      | 0             |
///
/// where the unclipped term's gradient is −Aρ. A clip range of [1 − ε, 1 + 2ε] takes sample 1
/// inside (term −2.6, gradient −2.6) and moves sample 5's clip to 1.4; [1 − 2ε, 1 + ε] takes
/// sample 4 inside.
#[test]
fn ppo_clip_loss_by_hand() {
    let ClipCase {
        old,
        new,
        adv,
        eps,
        r,
        a,
        terms,
    } = clip_case();
    let n = 6.0;
    let loss = terms.iter().sum::<f64>() / n;
    let grad = vec![
        -a[0] * r[0] / n,
        0.0,
        -a[2] * r[2] / n,
        -a[3] * r[3] / n,
        0.0,
        0.0,
    ];
    // The table's rounded numbers, as a check of the check.
    assert!((loss - (-2.2 - 2.4 + 1.3 - 0.7 + 0.8 - 0.6) / 6.0).abs() < 1e-6);
    let kl = r.iter().map(|r| (r - 1.0) - r.ln()).sum::<f64>() / n;
    let k1 = r.iter().map(|r| -r.ln()).sum::<f64>() / n;
    let clipfrac = 5.0 / 6.0;

    let x = leaf(&new);
    let (l, stats) = losses::ppo_clip_loss(&x, &t(&old), &t(&adv), eps);
    l.backward();
    close("tensor L^CLIP", &[l.double_value(&[])], &[loss], F32);
    close("tensor ∂L^CLIP/∂log π", &grad_of(&x), &grad, F32);
    close(
        "tensor stats",
        &[stats.approx_kl, stats.old_approx_kl, stats.clipfrac],
        &[kl, k1, clipfrac],
        F32,
    );

    let mut g = [0.0f32; 6];
    let (l, stats) = loss_grads::ppo_clip_loss(&new, &old, &adv, eps, &mut g);
    close("slice f32 L^CLIP", &[l], &[loss], F32);
    close("slice f32 ∂L^CLIP/∂log π", &wide(&g), &grad, F32);
    close(
        "slice f32 stats",
        &[stats.approx_kl, stats.old_approx_kl, stats.clipfrac],
        &[kl, k1, clipfrac],
        F32,
    );

    let mut g = [0.0f64; 6];
    let (l, stats) = loss_grads::ppo_clip_loss(&wide(&new), &wide(&old), &a, eps, &mut g);
    close("slice f64 L^CLIP", &[l], &[loss], F64);
    close("slice f64 ∂L^CLIP/∂log π", &g, &grad, F64);
    close(
        "slice f64 stats",
        &[stats.approx_kl, stats.old_approx_kl, stats.clipfrac],
        &[kl, k1, clipfrac],
        F64,
    );
}

/// PPO-KL with β = 0.5: `L = 1/n Σ (−A_i ρ_i + β((ρ_i − 1) − ln ρ_i))` (the k3 estimate of
/// KL[π_old ‖ π]), `∂L/∂log π_i = (−A_i ρ_i + β(ρ_i − 1)) / n`, since ∂ρ/∂log π = ρ. ε = 0.2
/// enters only the clip fraction: ρ = 0.7 and 1.5 are outside, 1.1 is not.
#[test]
fn ppo_kl_loss_by_hand() {
    let old = [-1.0f32, -0.5, -2.0];
    let new = new_logprobs(&old, &[1.1, 0.7, 1.5]);
    let adv = [2.0f32, -1.0, 0.5];
    let (beta, eps) = (0.5, 0.2);
    let r = ratios(&new, &old);
    let a = wide(&adv);
    let n = 3.0;
    let loss = (0..3)
        .map(|i| -a[i] * r[i] + beta * ((r[i] - 1.0) - r[i].ln()))
        .sum::<f64>()
        / n;
    let grad: Vec<f64> = (0..3)
        .map(|i| (-a[i] * r[i] + beta * (r[i] - 1.0)) / n)
        .collect();
    // By hand: k3 = (0.1 − ln 1.1, −0.3 − ln 0.7, 0.5 − ln 1.5) ≈ (0.00469, 0.05667, 0.09453).
    let k3 = [0.1 - 1.1f64.ln(), -0.3 - 0.7f64.ln(), 0.5 - 1.5f64.ln()];
    let by_hand = (-2.2 + 0.7 - 0.75 + beta * (k3[0] + k3[1] + k3[2])) / 3.0;
    assert!((loss - by_hand).abs() < 1e-6, "{loss} vs {by_hand}");
    let kl = r.iter().map(|r| (r - 1.0) - r.ln()).sum::<f64>() / n;
    assert!((kl - k3.iter().sum::<f64>() / n).abs() < 1e-6);
    let k1 = r.iter().map(|r| -r.ln()).sum::<f64>() / n;
    let clipfrac = 2.0 / 3.0;

    let x = leaf(&new);
    let (l, stats) = losses::ppo_kl_loss(&x, &t(&old), &t(&adv), beta, eps);
    l.backward();
    close("tensor L^KLPEN", &[l.double_value(&[])], &[loss], F32);
    close("tensor ∂L^KLPEN/∂log π", &grad_of(&x), &grad, F32);
    close(
        "tensor stats",
        &[stats.approx_kl, stats.old_approx_kl, stats.clipfrac],
        &[kl, k1, clipfrac],
        F32,
    );

    let mut g = [0.0f32; 3];
    let (l, stats) = loss_grads::ppo_kl_loss(&new, &old, &adv, beta, eps, &mut g);
    close("slice f32 L^KLPEN", &[l], &[loss], F32);
    close("slice f32 ∂L^KLPEN/∂log π", &wide(&g), &grad, F32);
    close(
        "slice f32 stats",
        &[stats.approx_kl, stats.old_approx_kl, stats.clipfrac],
        &[kl, k1, clipfrac],
        F32,
    );

    let mut g = [0.0f64; 3];
    let (l, stats) = loss_grads::ppo_kl_loss(&wide(&new), &wide(&old), &a, beta, eps, &mut g);
    close("slice f64 L^KLPEN", &[l], &[loss], F64);
    close("slice f64 ∂L^KLPEN/∂log π", &g, &grad, F64);
    close(
        "slice f64 stats",
        &[stats.approx_kl, stats.old_approx_kl, stats.clipfrac],
        &[kl, k1, clipfrac],
        F64,
    );
}

/// Checks `value_loss` of both twins (clip `clip`) against `loss` and `grad`.
fn value_loss_twins(
    values: &[f32],
    returns: &[f32],
    old: &[f32],
    clip: Option<f64>,
    loss: f64,
    grad: &[f64],
) {
    let x = leaf(values);
    let l = losses::value_loss(&x, &t(returns), &t(old), clip);
    l.backward();
    close(
        &format!("tensor L^V {clip:?}"),
        &[l.double_value(&[])],
        &[loss],
        F32,
    );
    close(&format!("tensor ∂L^V/∂V {clip:?}"), &grad_of(&x), grad, F32);

    let mut g = vec![0.0f32; values.len()];
    let l = loss_grads::value_loss(values, returns, old, clip, &mut g);
    close(&format!("slice f32 L^V {clip:?}"), &[l], &[loss], F32);
    close(&format!("slice f32 ∂L^V/∂V {clip:?}"), &wide(&g), grad, F32);

    let mut g = vec![0.0f64; values.len()];
    let l = loss_grads::value_loss(&wide(values), &wide(returns), &wide(old), clip, &mut g);
    close(&format!("slice f64 L^V {clip:?}"), &[l], &[loss], F64);
    close(&format!("slice f64 ∂L^V/∂V {clip:?}"), &g, grad, F64);
}

#[test]
fn value_loss_by_hand() {
    // ½ mean((V − R)²) = ½ (4 + 4 + 0) / 3 = 4/3; ∂/∂V_i = (V_i − R_i) / 3. Old values do not
    // enter the unclipped loss.
    value_loss_twins(
        &[2.0, -1.0, 0.5],
        &[0.0, 1.0, 0.5],
        &[9.0, 9.0, 9.0],
        None,
        4.0 / 3.0,
        &[2.0 / 3.0, -2.0 / 3.0, 0.0],
    );
}

/// The clipped value loss with ε = 0.2 on five samples, V_c = V_old + clip(V − V_old, ±ε):
///
/// | i | V_old | V   | R  | V_c | (V − R)² | (V_c − R)² | larger    | ∂/∂V (×5)          |
/// |---|-------|-----|----|-----|----------|------------|-----------|--------------------|
/// | 0 | 0     | 2   | 0  | 0.2 | 4        | 0.04       | unclipped | V − R = 2          |
/// | 1 | 0     | 2   | 3  | 0.2 | 1        | 7.84       | clipped   | 0 (V_c is constant)|
/// | 2 | 1     | 1.1 | 0  | 1.1 | 1.21     | 1.21       | equal     | V − R = 1.1        |
/// | 3 | 1     | 0.5 | 2  | 0.8 | 2.25     | 1.44       | unclipped | V − R = −1.5       |
/// | 4 | 1     | 0.5 | −1 | 0.8 | 2.25     | 3.24       | clipped   | 0                  |
///
/// Sample 2 is inside the clip range, where both terms have the same gradient.
#[test]
fn clipped_value_loss_by_hand() {
    let old = [0.0f32, 0.0, 1.0, 1.0, 1.0];
    let values = [2.0f32, 2.0, 1.1, 0.5, 0.5];
    let returns = [0.0f32, 3.0, 0.0, 2.0, -1.0];
    let (v, r, o) = (wide(&values), wide(&returns), wide(&old));
    let n = 5.0;
    let eps = 0.2;
    let squares = [
        (v[0] - r[0]).powi(2),
        (o[1] + eps - r[1]).powi(2),
        (v[2] - r[2]).powi(2),
        (v[3] - r[3]).powi(2),
        (o[4] - eps - r[4]).powi(2),
    ];
    let loss = 0.5 * squares.iter().sum::<f64>() / n;
    assert!((loss - 0.5 * (4.0 + 7.84 + 1.21 + 2.25 + 3.24) / 5.0).abs() < 1e-6);
    let grad = [
        (v[0] - r[0]) / n,
        0.0,
        (v[2] - r[2]) / n,
        (v[3] - r[3]) / n,
        0.0,
    ];
    value_loss_twins(&values, &returns, &old, Some(eps), loss, &grad);
}

/// `(A − mean A) / (std A + 1e-8)` with the unbiased std, on a batch whose spread is small
/// enough that the epsilon moves the result by 2% (std = 5e-7), and on an ordinary one.
#[test]
fn advantage_normalisation_by_hand() {
    for adv in [[0.0f32, 0.0, 0.0, 1e-6], [1.0, 2.0, 3.0, 10.0]] {
        let a = wide(&adv);
        let mean = a.iter().sum::<f64>() / 4.0;
        let std = (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        let want: Vec<f64> = a.iter().map(|x| (x - mean) / (std + 1e-8)).collect();
        if adv[0] == 0.0 {
            // By hand: mean 2.5e-7, std √(3·(2.5e-7)² + (7.5e-7)²)/√3 = 5e-7, so the last entry
            // is 7.5e-7 / 5.1e-7 = 1.4706 (1.5 without the epsilon).
            assert!((want[3] - 7.5 / 5.1).abs() < 1e-4, "{want:?}");
        }

        let got = Vec::<f32>::try_from(losses::normalize_advantages(&t(&adv))).unwrap();
        close("tensor normalised", &wide(&got), &want, F32);

        let mut got = adv;
        loss_grads::normalize_advantages(&mut got);
        close("slice f32 normalised", &wide(&got), &want, F32);

        let mut got = a.clone();
        loss_grads::normalize_advantages(&mut got);
        close("slice f64 normalised", &got, &want, F64);
    }
}

/// RLOO's and GRPO's clipped surrogate with a weight per token: `L = Σ w_i max(−A_i ρ_i,
/// −A_i clip(ρ_i))`, on `clip_case` as `ppo_clip_loss_by_hand` but summed with the weights,
/// `∂L/∂log π_i = −w_i A_i ρ_i` where the unclipped term decides, else 0. GRPO's penalty toward
/// the reference, `Σ w_i (e^{d_i} − d_i − 1)`, `d_i = log p_i − log π_i`, has
/// `∂/∂log π_i = w_i (1 − e^{d_i})`.
#[test]
fn weighted_clip_loss_and_reference_penalty_by_hand() {
    let ClipCase {
        old,
        new,
        adv,
        eps,
        r,
        a,
        terms,
    } = clip_case();
    let w = [0.5f32, 0.25, 0.125, 0.125, 1.0, 2.0];
    let wd = wide(&w);
    let loss: f64 = terms.iter().zip(&wd).map(|(t, w)| t * w).sum();
    let unclipped = [true, false, true, true, false, false];
    let grad: Vec<f64> = (0..6)
        .map(|i| {
            if unclipped[i] {
                -wd[i] * a[i] * r[i]
            } else {
                0.0
            }
        })
        .collect();
    let x = leaf(&new);
    let (l, stats) = losses::weighted_clip_loss_trl(&x, &t(&old), &t(&adv), &t(&w), eps);
    l.backward();
    close("weighted L^CLIP", &[l.double_value(&[])], &[loss], F32);
    close("∂ weighted L^CLIP/∂log π", &grad_of(&x), &grad, F32);
    // TRL's clip fraction: the clipped term decides in samples 2, 5 and 6.
    close("clipfrac", &[stats.clipfrac], &[0.5], F32);

    let reference = [-1.2f32, -0.4, -2.5, -0.3, -1.0, -0.9];
    let d: Vec<f64> = (0..6)
        .map(|i| reference[i] as f64 - new[i] as f64)
        .collect();
    let penalty: f64 = (0..6).map(|i| wd[i] * (d[i].exp() - d[i] - 1.0)).sum();
    let pgrad: Vec<f64> = (0..6).map(|i| wd[i] * (1.0 - d[i].exp())).collect();
    let x = leaf(&new);
    let p = losses::reference_k3_penalty(&x, &t(&reference), &t(&w));
    p.backward();
    close("reference k3", &[p.double_value(&[])], &[penalty], F32);
    close("∂ reference k3/∂log π", &grad_of(&x), &pgrad, F32);
}
