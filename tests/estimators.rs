//! Gradient estimators against exact gradients on random small MDPs.
//!
//! 1. Exact ∇J two ways (trajectory enumeration, policy-gradient theorem) agree with each other
//!    to 1e-9 and with central finite differences of J.
//! 2. Production estimators — the `policy_gradient_loss` of `gradgym-algorithms`, with θ in a
//!    tch tensor and the gradient from autodiff, and weights from its `reward_to_go` — are
//!    unbiased: K = 64 batch estimates, per-coordinate mean and standard error, accepted when
//!    |mean − exact| ≤ z·SE + slack, with z set for a family-wise false-alarm rate of 1e-6 per
//!    case (Bonferroni over the S·A coordinates) and a float32 slack (the loss averages in f32).
//! 3. A biased estimator (an action-dependent baseline used without correction) is caught.
//!
//! Cases are seeded, so a failure reproduces; GRADGYM_PROPTEST_CASES raises the case count.

use gradgym::algorithms::advantages::{Shape, reward_to_go};
use gradgym::algorithms::exact::{TabularMdp, softmax_policy};
use gradgym::algorithms::losses::policy_gradient_loss;
use gradgym::envs::rng::{self, Stream};
use proptest::prelude::*;
use tch::{Kind, Tensor};

fn cases(default: u32) -> u32 {
    std::env::var("GRADGYM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random MDP from `seed`: 2–5 states, 2–4 actions, horizon 1–5, γ ∈ [0.8, 1], random
/// transitions, rewards in [−1, 1], start distribution; and a random θ.
fn random_case(seed: u64, max_horizon: usize) -> (TabularMdp, Vec<f64>) {
    let mut r = rng::stream(seed, "mdp", 0);
    let pick = |r: &mut Stream, lo: usize, hi: usize| {
        lo + (rng::uniform01(r) * (hi - lo + 1) as f64) as usize
    };
    let (ns, na, h) = (
        pick(&mut r, 2, 5),
        pick(&mut r, 2, 4),
        pick(&mut r, 1, max_horizon),
    );
    let gamma = rng::uniform(&mut r, 0.8, 1.0);
    let simplex = |r: &mut Stream, n: usize| {
        let w: Vec<f64> = (0..n).map(|_| rng::uniform(r, 0.05, 1.0)).collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|x| x / s).collect::<Vec<_>>()
    };
    let transitions = (0..ns * na).flat_map(|_| simplex(&mut r, ns)).collect();
    let rewards = (0..ns * na)
        .map(|_| rng::uniform(&mut r, -1.0, 1.0))
        .collect();
    let start = simplex(&mut r, ns);
    let theta = (0..ns * na).map(|_| rng::standard_normal(&mut r)).collect();
    (
        TabularMdp {
            states: ns,
            actions: na,
            horizon: h,
            gamma,
            transitions,
            rewards,
            start,
        },
        theta,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn enumeration_and_policy_gradient_theorem_agree_with_finite_differences(seed in any::<u64>()) {
        let (mdp, theta) = random_case(seed, 5);
        let a = mdp.enumerate(&theta);
        let b = mdp.policy_gradient_theorem(&theta);
        prop_assert!((a.objective - b.objective).abs() <= 1e-9, "J: {} vs {}", a.objective, b.objective);
        for k in 0..theta.len() {
            prop_assert!((a.gradient[k] - b.gradient[k]).abs() <= 1e-9, "∇J[{k}]: {} vs {}", a.gradient[k], b.gradient[k]);
            // Central difference: truncation O(h²) ≈ 1e-10, rounding ≈ 1e-16 / h ≈ 1e-11.
            let h = 1e-5;
            let (mut plus, mut minus) = (theta.clone(), theta.clone());
            plus[k] += h;
            minus[k] -= h;
            let fd = (mdp.objective(&plus) - mdp.objective(&minus)) / (2.0 * h);
            prop_assert!((fd - b.gradient[k]).abs() <= 1e-7, "∇J[{k}]: exact {} vs finite difference {fd}", b.gradient[k]);
        }
    }
}

/// `M` trajectories of π_θ: `[H, M]` states, actions and rewards (row t holds step t).
fn sample(
    mdp: &TabularMdp,
    theta: &[f64],
    m: usize,
    r: &mut Stream,
) -> (Vec<usize>, Vec<i64>, Vec<f32>) {
    let (ns, na, h) = (mdp.states, mdp.actions, mdp.horizon);
    let pi = softmax_policy(theta, na);
    let draw = |r: &mut Stream, probs: &[f64]| {
        let u = rng::uniform01(r);
        let mut c = 0.0;
        for (k, p) in probs.iter().enumerate() {
            c += p;
            if u < c {
                return k;
            }
        }
        probs.len() - 1
    };
    let (mut states, mut actions, mut rewards) = (vec![0; h * m], vec![0; h * m], vec![0.0; h * m]);
    for i in 0..m {
        let mut s = draw(r, &mdp.start);
        for t in 0..h {
            let a = draw(r, &pi[s * na..(s + 1) * na]);
            states[t * m + i] = s;
            actions[t * m + i] = a as i64;
            rewards[t * m + i] = mdp.rewards[s * na + a] as f32;
            s = draw(
                r,
                &mdp.transitions[(s * na + a) * ns..(s * na + a + 1) * ns],
            );
        }
    }
    (states, actions, rewards)
}

/// The REINFORCE estimate `1/M Σ_i Σ_t w_{t,i} ∇log π(a_t|s_t)` from the production loss:
/// `policy_gradient_loss` averages over the H·M entries, so the estimate is `−H · ∇loss`.
fn estimate(
    mdp: &TabularMdp,
    theta: &[f64],
    states: &[usize],
    actions: &[i64],
    weights: &[f32],
) -> Vec<f64> {
    let (ns, na) = (mdp.states as i64, mdp.actions as i64);
    let theta_t = Tensor::from_slice(theta)
        .view([ns, na])
        .set_requires_grad(true);
    let idx: Vec<i64> = states
        .iter()
        .zip(actions)
        .map(|(&s, &a)| s as i64 * na + a)
        .collect();
    let logprobs = theta_t
        .log_softmax(1, Kind::Double)
        .view([-1])
        .index_select(0, &Tensor::from_slice(&idx));
    let loss = policy_gradient_loss(
        &logprobs,
        &Tensor::from_slice(weights).to_kind(Kind::Double),
    );
    loss.backward();
    let grad: Vec<f64> = Vec::try_from(theta_t.grad().view([-1])).unwrap();
    grad.into_iter()
        .map(|g| -(mdp.horizon as f64) * g)
        .collect()
}

/// Weights of an estimator for one batch: `[H, M]`.
type Weights = dyn Fn(&TabularMdp, &[usize], &[i64], &[f32], usize) -> Vec<f32>;

/// The discounted reward-to-go from step t, discounted from 0: `γ^t Σ_{l≥0} γ^l r_{t+l}` (the
/// production `reward_to_go` discounts from t; J discounts from 0).
fn discounted_from_zero(mdp: &TabularMdp, rewards: &[f32], m: usize) -> Vec<f32> {
    let shape = Shape {
        num_steps: mdp.horizon,
        num_envs: m,
    };
    let mut dones = vec![false; shape.len()];
    dones[(mdp.horizon - 1) * m..].fill(true);
    let rtg = reward_to_go(
        shape,
        rewards,
        &vec![0.0; shape.len()],
        &dones,
        mdp.gamma as f32,
    );
    rtg.iter()
        .enumerate()
        .map(|(k, g)| g * (mdp.gamma as f32).powi((k / m) as i32))
        .collect()
}

struct Verdict {
    /// Largest |mean − exact| / SE over coordinates.
    worst_z: f64,
    passed: bool,
    /// Per-coordinate standard errors.
    se: Vec<f64>,
}

/// One-sided upper tail of the standard normal, Q(z) = ½ erfc(z / √2) (Numerical Recipes'
/// `erfcc`, fractional error < 1.2e-7).
fn normal_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// z with a two-sided tail of `alpha`, by bisection.
fn z_for(alpha: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 40.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if 2.0 * normal_tail(mid) > alpha {
            lo = mid
        } else {
            hi = mid
        }
    }
    hi
}

/// Float32 slack: the loss averages f64 products in f32 (relative 6e-8 per entry), so a batch
/// estimate can be off by ~1e-6 of its scale; 1e-4 absolute covers that with a wide margin.
const SLACK: f64 = 1e-4;

/// A batch of M trajectories: `[H, M]` arrays, row t holds step t.
struct Sampled {
    m: usize,
    states: Vec<usize>,
    actions: Vec<i64>,
    rewards: Vec<f32>,
}

/// A gradient estimator: one estimate of ∇J(θ) from one batch sampled from the behaviour policy.
type Estimator<'a> = dyn Fn(&TabularMdp, &Sampled) -> Vec<f64> + 'a;

/// Tests `estimator` on batches sampled from `behaviour` against the exact ∇J(`target`).
fn check_estimator(
    mdp: &TabularMdp,
    target: &[f64],
    behaviour: &[f64],
    estimator: &Estimator,
    batches: usize,
    m: usize,
    seed: u64,
) -> Verdict {
    let exact = mdp.policy_gradient_theorem(target).gradient;
    let d = exact.len();
    let mut r = rng::stream(seed, "estimator-samples", 0);
    let estimates: Vec<Vec<f64>> = (0..batches)
        .map(|_| {
            let (states, actions, rewards) = sample(mdp, behaviour, m, &mut r);
            estimator(
                mdp,
                &Sampled {
                    m,
                    states,
                    actions,
                    rewards,
                },
            )
        })
        .collect();
    let z = z_for(1e-6 / d as f64);
    let mut worst_z: f64 = 0.0;
    let mut passed = true;
    let mut se = vec![0.0; d];
    for k in 0..d {
        let mean = estimates.iter().map(|e| e[k]).sum::<f64>() / batches as f64;
        let var =
            estimates.iter().map(|e| (e[k] - mean).powi(2)).sum::<f64>() / (batches - 1) as f64;
        se[k] = (var / batches as f64).sqrt();
        let err = (mean - exact[k]).abs();
        worst_z = worst_z.max(err / se[k].max(1e-300));
        passed &= err <= z * se[k] + SLACK;
    }
    Verdict {
        worst_z,
        passed,
        se,
    }
}

/// The REINFORCE-family estimator with `weights`, on samples of θ itself.
fn check(
    mdp: &TabularMdp,
    theta: &[f64],
    weights: &Weights,
    batches: usize,
    m: usize,
    seed: u64,
) -> Verdict {
    let estimator = |mdp: &TabularMdp, b: &Sampled| {
        estimate(
            mdp,
            theta,
            &b.states,
            &b.actions,
            &weights(mdp, &b.states, &b.actions, &b.rewards, b.m),
        )
    };
    check_estimator(mdp, theta, theta, &estimator, batches, m, seed)
}

fn total_return(mdp: &TabularMdp, _: &[usize], _: &[i64], rew: &[f32], m: usize) -> Vec<f32> {
    let g = discounted_from_zero(mdp, rew, m);
    // The whole return Σ_t γ^t r_t is the discounted-from-zero reward-to-go at t = 0.
    (0..mdp.horizon * m).map(|k| g[k % m]).collect()
}

fn reward_to_go_weights(
    mdp: &TabularMdp,
    _: &[usize],
    _: &[i64],
    rew: &[f32],
    m: usize,
) -> Vec<f32> {
    discounted_from_zero(mdp, rew, m)
}

/// An arbitrary state-dependent baseline b(s) = 2 sin(3s + 1), discounted like the return.
fn state_baseline(mdp: &TabularMdp, s: &[usize], a: &[i64], rew: &[f32], m: usize) -> Vec<f32> {
    let g = discounted_from_zero(mdp, rew, m);
    let _ = a;
    g.iter()
        .enumerate()
        .map(|(k, g)| {
            g - (mdp.gamma as f32).powi((k / m) as i32) * 2.0 * (3.0 * s[k] as f32 + 1.0).sin()
        })
        .collect()
}

/// Negative control (i): b(s, a) = 4·(a + 1), subtracted without correction. Biased:
/// E[b(s,a) ∇log π(a|s)] = Σ_a ∇π(a|s) b(s,a) ≠ 0 when b depends on a.
fn action_baseline(mdp: &TabularMdp, _: &[usize], a: &[i64], rew: &[f32], m: usize) -> Vec<f32> {
    let g = discounted_from_zero(mdp, rew, m);
    g.iter()
        .enumerate()
        .map(|(k, g)| g - (mdp.gamma as f32).powi((k / m) as i32) * 4.0 * (a[k] as f32 + 1.0))
        .collect()
}

#[test]
fn unbiased_estimators_pass_on_random_mdps() {
    let estimators: [(&str, &Weights); 3] = [
        ("total return", &total_return),
        ("reward-to-go", &reward_to_go_weights),
        ("state baseline", &state_baseline),
    ];
    for case in 0..cases(6) as u64 {
        let (mdp, theta) = random_case(1000 + case, 4);
        for (name, weights) in estimators {
            let v = check(&mdp, &theta, weights, 64, 128, case);
            assert!(
                v.passed,
                "{name} on case {case}: worst |mean − exact| / SE = {:.2}",
                v.worst_z
            );
        }
    }
}

#[test]
fn an_action_dependent_baseline_is_caught() {
    for case in 0..cases(4) as u64 {
        let (mdp, theta) = random_case(2000 + case, 4);
        // Power: the exact bias is Σ_t γ^t Σ_s d_t(s) Σ_a ∇π(a|s)·4(a+1); the check has power
        // when some coordinate's bias is well above z·SE + slack. Computed here, not assumed.
        let pi = softmax_policy(&theta, mdp.actions);
        let tables = mdp.tables(&pi);
        let na = mdp.actions;
        let mut bias = vec![0.0; theta.len()];
        for t in 0..mdp.horizon {
            for s in 0..mdp.states {
                for b in 0..na {
                    let mut g = 0.0;
                    for a in 0..na {
                        let ind = if a == b { 1.0 } else { 0.0 };
                        g += pi[s * na + a] * (ind - pi[s * na + b]) * 4.0 * (a as f64 + 1.0);
                    }
                    bias[s * na + b] -= mdp.gamma.powi(t as i32) * tables.d[t][s] * g;
                }
            }
        }
        let v = check(&mdp, &theta, &action_baseline, 64, 128, case);
        let z = z_for(1e-6 / theta.len() as f64);
        let detectable = bias
            .iter()
            .zip(&v.se)
            .any(|(b, se)| b.abs() > 2.0 * (z * se + SLACK));
        assert!(
            detectable,
            "case {case}: the bias {bias:?} is too small for this sample size to be a fair control"
        );
        assert!(
            !v.passed,
            "case {case}: the biased estimator passed (worst z {:.2})",
            v.worst_z
        );
    }
}

/// Negative control (iii): the reward-to-go discounted from t, `Σ_l γ^l r_{t+l}`, without the
/// γ^t that J's discounting puts in front: the common practical estimator, biased for
/// J = E[Σ_t γ^t r_t] when γ < 1.
fn undiscounted_weights(
    mdp: &TabularMdp,
    _: &[usize],
    _: &[i64],
    rew: &[f32],
    m: usize,
) -> Vec<f32> {
    let shape = Shape {
        num_steps: mdp.horizon,
        num_envs: m,
    };
    let mut dones = vec![false; shape.len()];
    dones[(mdp.horizon - 1) * m..].fill(true);
    reward_to_go(
        shape,
        rew,
        &vec![0.0; shape.len()],
        &dones,
        mdp.gamma as f32,
    )
}

#[test]
fn a_discount_missing_from_the_estimator_is_caught() {
    let mut tested = 0;
    for case in 0..cases(4) as u64 {
        let (mut mdp, theta) = random_case(3000 + case, 4);
        // γ = 0.8 and H = 4, so that late steps are over-weighted by up to 1/0.8³ ≈ 2.
        mdp.gamma = 0.8;
        mdp.horizon = 4;
        // Power: the exact bias is Σ_t (1 − γ^t) E_{d_t}[∇log π · Q_t]-type terms; compute the
        // estimator's exact expectation with γ^t removed and compare with z·SE.
        let pi = softmax_policy(&theta, mdp.actions);
        let tables = mdp.tables(&pi);
        let na = mdp.actions;
        let exact = mdp.policy_gradient_theorem(&theta).gradient;
        let mut expectation = vec![0.0; theta.len()];
        for t in 0..mdp.horizon {
            for s in 0..mdp.states {
                for b in 0..na {
                    let mut g = 0.0;
                    for a in 0..na {
                        let ind = if a == b { 1.0 } else { 0.0 };
                        g += pi[s * na + a] * (ind - pi[s * na + b]) * tables.q[t][s * na + a];
                    }
                    expectation[s * na + b] += tables.d[t][s] * g;
                }
            }
        }
        let v = check(&mdp, &theta, &undiscounted_weights, 64, 128, case);
        let z = z_for(1e-6 / theta.len() as f64);
        let detectable = expectation
            .iter()
            .zip(&exact)
            .zip(&v.se)
            .any(|((e, x), se)| (e - x).abs() > 2.0 * (z * se + SLACK));
        if !detectable {
            // Too little bias for this case's sample size: not a fair control, skip it.
            continue;
        }
        assert!(
            !v.passed,
            "case {case}: the undiscounted estimator passed (worst z {:.2})",
            v.worst_z
        );
        tested += 1;
    }
    // The control must have been exercised, not skipped on every case.
    assert!(
        tested * 2 >= cases(4) as usize,
        "only {tested} of {} cases had a detectable bias",
        cases(4)
    );
}

/// Weights from exact time-indexed tables: `γ^t · f(t, s_t, a_t)`.
fn table_weights(
    mdp: &TabularMdp,
    b: &Sampled,
    f: &dyn Fn(usize, usize, usize) -> f64,
) -> Vec<f32> {
    (0..mdp.horizon * b.m)
        .map(|k| {
            let t = k / b.m;
            (mdp.gamma.powi(t as i32) * f(t, b.states[k], b.actions[k] as usize)) as f32
        })
        .collect()
}

/// GAE(λ) with the exact V_t through the production `gae`, times γ^t.
fn gae_weights(mdp: &TabularMdp, b: &Sampled, v: &[Vec<f64>], lambda: f32) -> Vec<f32> {
    use gradgym::algorithms::advantages::gae;
    let shape = Shape {
        num_steps: mdp.horizon,
        num_envs: b.m,
    };
    let values: Vec<f32> = (0..shape.len())
        .map(|k| v[k / b.m][b.states[k]] as f32)
        .collect();
    let next_values: Vec<f32> = (0..shape.len())
        .map(|k| {
            if k / b.m + 1 < mdp.horizon {
                v[k / b.m + 1][b.states[k + b.m]] as f32
            } else {
                0.0
            }
        })
        .collect();
    let mut dones = vec![false; shape.len()];
    dones[(mdp.horizon - 1) * b.m..].fill(true);
    let (adv, _) = gae(
        shape,
        &b.rewards,
        &values,
        &next_values,
        &dones,
        mdp.gamma as f32,
        lambda,
    );
    adv.iter()
        .enumerate()
        .map(|(k, a)| a * (mdp.gamma as f32).powi((k / b.m) as i32))
        .collect()
}

/// An estimate from a PPO surrogate: `loss(new = log π_θ, old = log π_θ′, advantages = w)`,
/// rescaled like [`estimate`]. `theta_old` = None means θ′ = θ (old log-probs detached).
fn estimate_ppo(
    mdp: &TabularMdp,
    theta: &[f64],
    theta_old: Option<&[f64]>,
    b: &Sampled,
    weights: &[f32],
    kl: bool,
) -> Vec<f64> {
    use gradgym::algorithms::losses::{ppo_clip_loss, ppo_kl_loss};
    let (ns, na) = (mdp.states as i64, mdp.actions as i64);
    let idx = Tensor::from_slice(
        &b.states
            .iter()
            .zip(&b.actions)
            .map(|(&s, &a)| s as i64 * na + a)
            .collect::<Vec<_>>(),
    );
    let theta_t = Tensor::from_slice(theta)
        .view([ns, na])
        .set_requires_grad(true);
    let new = theta_t
        .log_softmax(1, Kind::Double)
        .view([-1])
        .index_select(0, &idx);
    let old = match theta_old {
        None => new.detach(),
        Some(o) => Tensor::from_slice(o)
            .view([ns, na])
            .log_softmax(1, Kind::Double)
            .view([-1])
            .index_select(0, &idx),
    };
    let adv = Tensor::from_slice(weights).to_kind(Kind::Double);
    let (loss, _) = if kl {
        ppo_kl_loss(&new, &old, &adv, 0.7, 0.2)
    } else {
        ppo_clip_loss(&new, &old, &adv, 0.2)
    };
    loss.backward();
    let grad: Vec<f64> = Vec::try_from(theta_t.grad().view([-1])).unwrap();
    grad.into_iter()
        .map(|g| -(mdp.horizon as f64) * g)
        .collect()
}

#[test]
fn critics_gae_importance_sampling_and_ppo_at_the_old_policy_are_unbiased() {
    for case in 0..cases(4) as u64 {
        let (mdp, theta) = random_case(4000 + case, 4);
        let pi = softmax_policy(&theta, mdp.actions);
        let tables = mdp.tables(&pi);
        let na = mdp.actions;
        let q = |t: usize, s: usize, a: usize| tables.q[t][s * na + a];
        let adv = |t: usize, s: usize, a: usize| tables.q[t][s * na + a] - tables.v[t][s];
        let mut estimators: Vec<(String, Box<Estimator>)> = vec![
            (
                "actor-critic, exact Q".into(),
                Box::new(|m: &TabularMdp, b: &Sampled| {
                    estimate(m, &theta, &b.states, &b.actions, &table_weights(m, b, &q))
                }),
            ),
            (
                "actor-critic, exact A".into(),
                Box::new(|m: &TabularMdp, b: &Sampled| {
                    estimate(m, &theta, &b.states, &b.actions, &table_weights(m, b, &adv))
                }),
            ),
            (
                "PPO clip at θ = θ′".into(),
                Box::new(|m: &TabularMdp, b: &Sampled| {
                    estimate_ppo(m, &theta, None, b, &table_weights(m, b, &adv), false)
                }),
            ),
            (
                "PPO KL at θ = θ′".into(),
                Box::new(|m: &TabularMdp, b: &Sampled| {
                    estimate_ppo(m, &theta, None, b, &table_weights(m, b, &adv), true)
                }),
            ),
        ];
        for lambda in [0.0f32, 0.5, 0.95, 1.0] {
            let (v, theta) = (&tables.v, &theta);
            estimators.push((
                format!("GAE(λ = {lambda}), exact V"),
                Box::new(move |m: &TabularMdp, b: &Sampled| {
                    estimate(
                        m,
                        theta,
                        &b.states,
                        &b.actions,
                        &gae_weights(m, b, v, lambda),
                    )
                }),
            ));
        }
        for (name, estimator) in &estimators {
            let v = check_estimator(&mdp, &theta, &theta, estimator.as_ref(), 64, 128, case);
            assert!(
                v.passed,
                "{name} on case {case}: worst |mean − exact| / SE = {:.2}",
                v.worst_z
            );
        }

        // Importance sampling: trajectories from θ′ ≠ θ, each weighted by Π_t π_θ/π_θ′.
        let behaviour: Vec<f64> = theta
            .iter()
            .enumerate()
            .map(|(k, x)| x + 0.3 * ((k as f64) * 1.7).sin())
            .collect();
        let pi_b = softmax_policy(&behaviour, na);
        let is = |m: &TabularMdp, b: &Sampled| {
            let g = discounted_from_zero(m, &b.rewards, b.m);
            let rho: Vec<f64> = (0..b.m)
                .map(|i| {
                    (0..m.horizon)
                        .map(|t| {
                            let k = t * b.m + i;
                            let sa = b.states[k] * na + b.actions[k] as usize;
                            pi[sa] / pi_b[sa]
                        })
                        .product()
                })
                .collect();
            let w: Vec<f32> = g
                .iter()
                .enumerate()
                .map(|(k, g)| (*g as f64 * rho[k % b.m]) as f32)
                .collect();
            estimate(m, &theta, &b.states, &b.actions, &w)
        };
        let v = check_estimator(&mdp, &theta, &behaviour, &is, 64, 256, case);
        assert!(
            v.passed,
            "importance sampling on case {case}: worst z {:.2}",
            v.worst_z
        );
    }
}

#[test]
fn ppo_clipping_far_from_the_old_policy_and_truncation_as_termination_are_caught() {
    for case in 0..cases(4) as u64 {
        let (mut mdp, theta) = random_case(5000 + case, 4);
        mdp.horizon = mdp.horizon.max(3);
        let na = mdp.actions;
        // (ii) The clipped surrogate at θ with samples from a θ′ far enough that most ratios
        // leave [0.8, 1.2]: clipped terms have zero gradient, so the estimate is not ∇J(θ).
        // Advantages are the exact A of the sampling policy, as in PPO.
        let old: Vec<f64> = theta
            .iter()
            .enumerate()
            .map(|(k, x)| x + 1.5 * ((k as f64) * 2.3 + 0.5).sin())
            .collect();
        let pi_old = softmax_policy(&old, na);
        let t_old = mdp.tables(&pi_old);
        let adv = |t: usize, s: usize, a: usize| t_old.q[t][s * na + a] - t_old.v[t][s];
        let clipped = |m: &TabularMdp, b: &Sampled| {
            estimate_ppo(m, &theta, Some(&old), b, &table_weights(m, b, &adv), false)
        };
        let v = check_estimator(&mdp, &theta, &old, &clipped, 64, 256, case);
        assert!(
            !v.passed,
            "case {case}: PPO's clipped surrogate far from θ′ passed as ∇J(θ) (worst z {:.2})",
            v.worst_z
        );

        // (iv) A time-limit cut treated as termination: the episode runs H steps, but the
        // estimator's returns stop at H − 1 with nothing bootstrapped.
        let cut = |m: &TabularMdp, b: &Sampled| {
            let mut rewards = b.rewards.clone();
            rewards[(m.horizon - 1) * b.m..].fill(0.0);
            let w = discounted_from_zero(m, &rewards, b.m);
            estimate(m, &theta, &b.states, &b.actions, &w)
        };
        let v = check_estimator(&mdp, &theta, &theta, &cut, 64, 256, case);
        assert!(
            !v.passed,
            "case {case}: returns cut at H − 1 passed as ∇J (worst z {:.2})",
            v.worst_z
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// GAE(λ = 1) = reward-to-go − V; GAE(λ = 0) = the TD residual; every step of an episode
    /// gets the episode's return, which is the reward-to-go at its first step.
    #[test]
    fn gae_and_return_identities(seed in any::<u64>(), steps in 1usize..12, envs in 1usize..4) {
        use gradgym::algorithms::advantages::{episode_return, gae};
        let mut r = rng::stream(seed, "identities", 0);
        let shape = Shape { num_steps: steps, num_envs: envs };
        let n = shape.len();
        let rewards: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r, -1.0, 1.0) as f32).collect();
        let values: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r, -2.0, 2.0) as f32).collect();
        let dones: Vec<bool> = (0..n).map(|_| rng::uniform01(&mut r) < 0.25).collect();
        let next_values: Vec<f32> = (0..n).map(|k| if dones[k] { 0.0 } else if k + envs < n { values[k + envs] } else { 0.7 }).collect();
        let gamma = 0.9f32;
        let (mc, _) = gae(shape, &rewards, &values, &next_values, &dones, gamma, 1.0);
        let rtg = reward_to_go(shape, &rewards, &next_values, &dones, gamma);
        for k in 0..n {
            prop_assert!((mc[k] - (rtg[k] - values[k])).abs() < 1e-4, "λ=1 at {k}: {} vs {}", mc[k], rtg[k] - values[k]);
        }
        let (td, _) = gae(shape, &rewards, &values, &next_values, &dones, gamma, 0.0);
        for k in 0..n {
            prop_assert!((td[k] - (rewards[k] + gamma * next_values[k] - values[k])).abs() < 1e-5);
        }
        let zeros = vec![0.0f32; n];
        let ret = episode_return(shape, &rewards, &zeros, &dones, gamma);
        let rtg0 = reward_to_go(shape, &rewards, &zeros, &dones, gamma);
        for i in 0..envs {
            let mut start = 0;
            for t in 0..steps {
                let k = t * envs + i;
                prop_assert!((ret[k] - rtg0[start * envs + i]).abs() < 1e-5);
                if dones[k] { start = t + 1; }
            }
        }
    }

    /// Importance weights π/π′ average to 1 under the behaviour policy π′.
    #[test]
    fn importance_weights_average_to_one_under_the_behaviour_policy(seed in any::<u64>()) {
        let mut r = rng::stream(seed, "is", 0);
        let n = 2 + (rng::uniform01(&mut r) * 5.0) as usize;
        let target: Vec<f64> = (0..n).map(|_| rng::standard_normal(&mut r)).collect();
        let behaviour: Vec<f64> = (0..n).map(|_| rng::standard_normal(&mut r)).collect();
        let (p, q) = (softmax_policy(&target, n), softmax_policy(&behaviour, n));
        let expectation: f64 = (0..n).map(|a| q[a] * p[a] / q[a]).sum();
        prop_assert!((expectation - 1.0).abs() < 1e-12);
    }
}
