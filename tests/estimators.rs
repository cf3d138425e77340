//! Gradient estimators against exact gradients on random small MDPs.
//!
//! 1. Exact ∇J two ways (trajectory enumeration, policy-gradient theorem) agree with each other
//!    to 1e-9 and with central finite differences of J.
//! 2. **Exact expectations by enumeration.** On MDPs with short horizons every trajectory τ is
//!    enumerated with its probability p(τ) under the sampling policy (θ′ for importance
//!    sampling and for PPO away from θ′, θ otherwise), and each production estimator's exact
//!    expectation Σ_τ p(τ)·ĝ(τ) is computed, ĝ(τ) being the estimate from τ alone. Every
//!    unbiased estimator's must equal ∇J to 1e-9; every negative control's must differ from ∇J
//!    by more than 1e-6 and equal its own bias, derived independently, to 1e-9. Deterministic:
//!    no sampling, so a bias of any size above rounding fails.
//!
//!    Precision: 1e-9 needs f64 throughout. The tensor losses of `losses` reduce in f32
//!    (`mean(Kind::Float)`, as the learners run them), so these tests take the estimator's
//!    f64 path, `Estimator::estimate_f64`: the same weights — the same `Estimator::surrogate`
//!    code, through the production `reward_to_go` and `gae`, which are generic over f32/f64 —
//!    and the slice-form twins of the losses from `loss_grads` (the native backend's, with
//!    closed-form gradients) in f64, chained through ∂log π/∂θ by hand. The tensor path that
//!    the study measures (`Estimator::estimate`, autodiff) is checked by the same enumeration
//!    at float32 tolerance, on a smaller MDP. The twins' agreement is checked in `loss_grads`'
//!    unit tests, and each twin on its own against hand-worked values in
//!    `algorithms/tests/losses_by_hand.rs`.
//! 3. Every unbiased estimator — production losses, θ in a tch tensor, gradients by autodiff —
//!    passes the sampled check: K = 64 batch estimates, per-coordinate mean and standard error,
//!    |mean − exact| ≤ z·SE + float32 slack, z for a family-wise false-alarm rate of 1e-6 per
//!    case (Bonferroni over the S·A coordinates).
//! 4. Biased estimators are caught by the sampled check too: an action-dependent baseline, a
//!    missing γ^t, PPO's clipped surrogate far from the sampling policy, a time-limit cut
//!    treated as termination. Each test computes that its bias is well above what the sample
//!    size can resolve.
//! 5. Algebraic identities as properties.
//!
//! Cases are seeded, so a failure reproduces; GRADGYM_PROPTEST_CASES raises the case counts.

use gradgym::algorithms::Real;
use gradgym::algorithms::advantages::{Shape, episode_return, gae, reward_to_go};
use gradgym::algorithms::exact::{TabularMdp, softmax_policy};
use gradgym::algorithms::study::{
    self, Batch, Context, Estimator, FAMILY_WISE_ALPHA, PpoLoss, SLACK, discounted_from_zero,
    expectation_by_enumeration, fit_state_values, measure, measure_on, pg_estimate,
    pg_estimate_f64, ppo_estimate, ppo_estimate_f64, random_case, sample, student_t_tail,
    summarise, t_for, table_weights, z_for,
};
use gradgym::envs::rng;
use ndarray::{Array1, Array2};
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("GRADGYM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn enumeration_and_policy_gradient_theorem_agree_with_finite_differences(seed in any::<u64>()) {
        let (mdp, theta) = random_case(seed, 5);
        let a = mdp.enumerate(&theta);
        let b = mdp.policy_gradient_theorem(&theta);
        prop_assert!((a.objective - b.objective).abs() <= 1e-9, "J: {} vs {}", a.objective, b.objective);
        for (k, _) in theta.indexed_iter() {
            prop_assert!((a.gradient[k] - b.gradient[k]).abs() <= 1e-9, "∇J[{k:?}]: {} vs {}", a.gradient[k], b.gradient[k]);
            // Central difference: truncation O(h²) ≈ 1e-10, rounding ≈ 1e-16 / h ≈ 1e-11.
            let h = 1e-5;
            let (mut plus, mut minus) = (theta.clone(), theta.clone());
            plus[k] += h;
            minus[k] -= h;
            let fd = (mdp.objective(&plus) - mdp.objective(&minus)) / (2.0 * h);
            prop_assert!((fd - b.gradient[k]).abs() <= 1e-7, "∇J[{k:?}]: exact {} vs finite difference {fd}", b.gradient[k]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exact expectations by enumeration.

/// Tolerance of an exact expectation against its exact value (f64 rounding is about 1e-15).
const EXACT: f64 = 1e-9;
/// A negative control's expectation must be at least this far from ∇J.
const CONTROL_GAP: f64 = 1e-6;

/// max_k |a_k − b_k|.
fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The number of trajectories of an MDP, (S·A)^H (all have positive probability in
/// `random_case`).
fn trajectory_count(mdp: &TabularMdp) -> usize {
    (mdp.states() * mdp.actions()).pow(mdp.horizon as u32)
}

/// The MDPs of the exact tests: the benchmark set and random cases (H ≤ 4), keeping those with
/// at most 2000 trajectories so that the suite stays fast: horizons 1 to 4, 2 to 4 states and
/// actions.
fn enumeration_cases() -> Vec<(String, TabularMdp, Array2<f64>)> {
    let mut v: Vec<_> = study::benchmark_cases();
    for seed in 1..=8u64 {
        let (mdp, theta) = random_case(seed, 4);
        v.push((format!("random-{seed}"), mdp, theta));
    }
    v.retain(|(_, mdp, _)| trajectory_count(mdp) <= 2000);
    v
}

/// The exact tables of θ and, when `learned`, the production critic fitted on its own sample.
fn context(mdp: &TabularMdp, theta: &Array2<f64>, learned: bool) -> Context {
    Context {
        tables: mdp.tables(&softmax_policy(theta)),
        learned_values: if learned {
            fit_state_values(mdp, theta, 11)
        } else {
            Array1::zeros(0)
        },
    }
}

/// `Σ_t Σ_s d′_t(s) Σ_a π′(a|s) f(t, s, a, ρ) ∇_θ log π_θ(a|s)` with `d′`, `π′` the state
/// distributions and policy of `sampling` and ρ = π_θ(a|s) / π′(a|s): the expectation of a
/// per-step weight times the score of θ, by dynamic programming over states rather than by
/// trajectories. With `sampling` = θ, `Σ_a π f ∇log π = Σ_a ∇π f`.
fn score_expectation(
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    sampling: &Array2<f64>,
    f: &dyn Fn(usize, usize, usize, f64) -> f64,
) -> Array2<f64> {
    let (pi, pi_s) = (softmax_policy(theta), softmax_policy(sampling));
    let d = mdp.tables(&pi_s).d;
    let mut out = Array2::zeros(theta.raw_dim());
    for t in 0..mdp.horizon {
        for s in 0..mdp.states() {
            for a in 0..mdp.actions() {
                let w = d[[t, s]] * pi_s[[s, a]] * f(t, s, a, pi[[s, a]] / pi_s[[s, a]]);
                for c in 0..mdp.actions() {
                    let score = if a == c { 1.0 } else { 0.0 } - pi[[s, c]];
                    out[[s, c]] += w * score;
                }
            }
        }
    }
    out
}

/// A policy away from θ, for PPO's clipped surrogate: far enough that many ratios leave
/// [0.8, 1.2].
fn far_old_policy(theta: &Array2<f64>) -> Array2<f64> {
    let na = theta.ncols();
    let mut old = theta.clone();
    for ((s, a), x) in old.indexed_iter_mut() {
        *x += 1.5 * (((s * na + a) as f64) * 2.3 + 0.5).sin();
    }
    old
}

/// The discounted-from-zero reward-to-go of a batch whose last step's reward is dropped: an
/// episode cut by a time limit at H − 1, treated as terminated (nothing bootstrapped).
fn cut_returns<F: Real>(mdp: &TabularMdp, b: &Batch) -> Array2<F> {
    let mut rewards = b.rewards_as::<F>();
    rewards.row_mut(mdp.horizon - 1).fill(F::ZERO);
    discounted_from_zero(mdp, &rewards)
}

/// The exact advantages `A^{θ′}_t(s, a)` of the old policy θ′, what PPO weights with
/// (`table_weights` multiplies them by γ^t).
fn old_advantage(
    mdp: &TabularMdp,
    old: &Array2<f64>,
) -> impl Fn(usize, usize, usize) -> f64 + use<> {
    let tables = mdp.tables(&softmax_policy(old));
    move |t, s, a| tables.q[[t, s, a]] - tables.v[[t, s]]
}

/// The exact expectation of PPO's clipped surrogate gradient at θ with samples and advantages
/// from θ′, worked out entry by entry without the production clip. With A′ = γ^t A^{θ′}_t, the
/// gradient of −min(ρA′, clip(ρ, 0.8, 1.2)A′) is −A′ρ∇log π_θ when the unclipped term is the
/// minimum —
/// always inside [0.8, 1.2]; above 1.2 only when A′ < 0; below 0.8 only when A′ > 0 — and 0
/// otherwise. The estimate is minus the loss gradient times H, so its expectation is
/// E_{θ′}[Σ_t A′_t ρ_t ∇log π_θ · 1[unclipped active]].
fn ppo_far_expectation(mdp: &TabularMdp, theta: &Array2<f64>, old: &Array2<f64>) -> Array2<f64> {
    let adv = old_advantage(mdp, old);
    score_expectation(mdp, theta, old, &|t, s, a, rho| {
        let a_old = mdp.gamma.powi(t as i32) * adv(t, s, a);
        let active = if rho > 1.2 {
            a_old < 0.0
        } else if rho < 0.8 {
            a_old > 0.0
        } else {
            true
        };
        if active { a_old * rho } else { 0.0 }
    })
}

/// The exact expectations of the negative controls, derived without the estimators:
/// `(name, sampling policy, per-trajectory estimate in f64, its expectation)`.
type Control<'a> = (
    &'static str,
    Array2<f64>,
    Box<dyn Fn(&Batch) -> Array2<f64> + 'a>,
    Array2<f64>,
);

fn negative_controls<'a>(
    mdp: &'a TabularMdp,
    theta: &'a Array2<f64>,
    ctx: &'a Context,
) -> Vec<Control<'a>> {
    let exact = mdp.policy_gradient_theorem(theta).gradient;
    let gamma_t = |t: usize| mdp.gamma.powi(t as i32);
    // (i) b(s, a) = 4(a + 1), discounted like the return: its bias is −E[Σ_t γ^t b ∇log π].
    let action_baseline = &exact
        - &score_expectation(mdp, theta, theta, &|t, _, a, _| {
            gamma_t(t) * 4.0 * (a as f64 + 1.0)
        });
    // (iii) Without γ^t the weight at t is G_t, whose conditional mean is Q_t.
    let tables = &ctx.tables;
    let missing_discount = score_expectation(mdp, theta, theta, &|t, s, a, _| tables.q[[t, s, a]]);
    // (iv) Cut at H − 1: by causality, the gradient of the horizon-(H − 1) problem.
    let mut short = mdp.clone();
    short.horizon -= 1;
    let cut = short.policy_gradient_theorem(theta).gradient;
    // (ii) PPO's clipped surrogate far from its sampling policy θ′.
    let old = far_old_policy(theta);
    let ppo_far = ppo_far_expectation(mdp, theta, &old);
    let adv = old_advantage(mdp, &old);
    let old_for_estimate = old.clone();
    vec![
        (
            "biased_action_baseline",
            theta.clone(),
            Box::new(move |b: &Batch| Estimator::ActionBaseline.estimate_f64(mdp, theta, ctx, b)),
            action_baseline,
        ),
        (
            "biased_missing_discount",
            theta.clone(),
            Box::new(move |b: &Batch| Estimator::MissingDiscount.estimate_f64(mdp, theta, ctx, b)),
            missing_discount,
        ),
        (
            "truncation_as_termination",
            theta.clone(),
            Box::new(move |b: &Batch| pg_estimate_f64(mdp, theta, b, &cut_returns(mdp, b))),
            cut,
        ),
        (
            "ppo_clip_far_from_old_policy",
            old,
            Box::new(move |b: &Batch| {
                ppo_estimate_f64(
                    mdp,
                    theta,
                    Some(&old_for_estimate),
                    b,
                    &table_weights(mdp, b, &adv),
                    PpoLoss::Clip,
                )
            }),
            ppo_far,
        ),
    ]
}

#[test]
fn trajectories_are_every_path_with_its_probability() {
    for (name, mdp, theta) in enumeration_cases() {
        let pi = softmax_policy(&theta);
        let taus = mdp.trajectories(&pi);
        assert_eq!(taus.len(), trajectory_count(&mdp), "{name}");
        let total: f64 = taus.iter().map(|t| t.probability).sum();
        assert!((total - 1.0).abs() < 1e-12, "{name}: Σ p(τ) = {total}");
        // The likelihood-ratio estimator G(τ) Σ_t ∇log π over these trajectories is ∇J.
        let ctx = context(&mdp, &theta, false);
        let e = Estimator::TotalReturn.exact_expectation(&mdp, &theta, &ctx);
        let exact = mdp.enumerate(&theta).gradient;
        assert!(max_diff(&e, &exact) <= EXACT, "{name}");
    }
}

#[test]
fn every_unbiased_estimator_has_expectation_exactly_grad_j() {
    let cases = enumeration_cases();
    assert!(cases.len() >= 7, "only {} cases", cases.len());
    for (name, mdp, theta) in &cases {
        let exact = mdp.policy_gradient_theorem(theta).gradient;
        let ctx = context(mdp, theta, true);
        for estimator in Estimator::all().into_iter().filter(|e| !e.biased()) {
            let e = estimator.exact_expectation(mdp, theta, &ctx);
            let err = max_diff(&e, &exact);
            assert!(
                err <= EXACT,
                "{} on {name}: max |E[ĝ] − ∇J| = {err:.3e}\n  E[ĝ] {e}\n  ∇J   {exact}",
                estimator.name()
            );
        }
    }
}

#[test]
fn every_negative_control_has_exactly_its_own_bias() {
    let mut tested = 0;
    for (name, mdp, theta) in &enumeration_cases() {
        // The cut and the missing discount need two steps at least.
        if mdp.horizon < 2 {
            continue;
        }
        tested += 1;
        let exact = mdp.policy_gradient_theorem(theta).gradient;
        let ctx = context(mdp, theta, false);
        for (control, sampling, estimate, expected) in negative_controls(mdp, theta, &ctx) {
            let e = expectation_by_enumeration(mdp, &sampling, estimate);
            let err = max_diff(&e, &expected);
            assert!(
                err <= EXACT,
                "{control} on {name}: max |E[ĝ] − its derived expectation| = {err:.3e}\n  E[ĝ]     \
                 {e}\n  expected {expected}"
            );
            let gap = max_diff(&e, &exact);
            assert!(
                gap > CONTROL_GAP,
                "{control} on {name}: within {gap:.3e} of ∇J, not a control"
            );
        }
    }
    assert!(tested >= 4, "only {tested} cases with H ≥ 2");
}

/// The study's own path — f32 weights, tensor losses, autodiff — by the same enumeration, on a
/// small MDP (2 states, 2 actions, H = 2: 16 trajectories; the autodiff path costs a tensor
/// graph per trajectory). Float32 weights and f32 averaging inside the losses limit it to about
/// 1e-7 relative: 1e-5 here.
#[test]
fn the_autodiff_path_of_the_study_has_the_same_exact_expectations() {
    const F32: f64 = 1e-5;
    let (mut mdp, theta) = random_case(38, 4);
    (mdp.horizon, mdp.gamma) = (2, 0.9);
    assert_eq!(trajectory_count(&mdp), 16);
    let exact = mdp.policy_gradient_theorem(&theta).gradient;
    let ctx = context(&mdp, &theta, true);
    for estimator in Estimator::all() {
        let e = expectation_by_enumeration(&mdp, &estimator.behaviour(&theta), |b| {
            estimator.estimate(&mdp, &theta, &ctx, b)
        });
        let f64_path = estimator.exact_expectation(&mdp, &theta, &ctx);
        let err = max_diff(&e, &f64_path);
        assert!(
            err <= F32,
            "{}: autodiff {e} vs f64 {f64_path} ({err:.3e})",
            estimator.name()
        );
        if !estimator.biased() {
            assert!(max_diff(&e, &exact) <= F32, "{}", estimator.name());
        }
    }
    let old = far_old_policy(&theta);
    let adv = old_advantage(&mdp, &old);
    let ppo_far = expectation_by_enumeration(&mdp, &old, |b| {
        ppo_estimate(
            &mdp,
            &theta,
            Some(&old),
            b,
            &table_weights(&mdp, b, &adv),
            PpoLoss::Clip,
        )
    });
    let expected = ppo_far_expectation(&mdp, &theta, &old);
    assert!(
        max_diff(&ppo_far, &expected) <= F32,
        "{ppo_far} vs {expected}"
    );
    assert!(max_diff(&ppo_far, &exact) > 1e-3);
    let cut = expectation_by_enumeration(&mdp, &theta, |b| {
        pg_estimate(&mdp, &theta, b, &cut_returns(&mdp, b))
    });
    let mut short = mdp.clone();
    short.horizon -= 1;
    let expected = short.policy_gradient_theorem(&theta).gradient;
    assert!(max_diff(&cut, &expected) <= F32, "{cut} vs {expected}");
}

/// The production importance-sampling estimator (replacing a test that checked Σ q·p/q = 1, a
/// property of softmax normalisation that never called it). On an MDP with a 5-step horizon,
/// sampled from the study's behaviour policy θ′, some trajectories have a likelihood ratio
/// ρ(τ) = Π_t π_θ(a_t|s_t)/π_θ′(a_t|s_t) above 10:
///
/// - on each of the 7776 trajectories, its estimate is ρ(τ) (computed here from the two
///   policies) times the reward-to-go estimate of the same trajectory;
/// - its exact expectation under θ′ is ∇J(θ) to 1e-9;
/// - and that check has the power to see a cap on the weight: capping ρ at 10 (or at 1.5)
///   would move the expectation by more than 1e-8 (1e-2), computed from the decomposition.
#[test]
fn importance_sampling_reweights_each_trajectory_by_its_likelihood_ratio() {
    let (mut mdp, theta) = random_case(13, 4);
    mdp.horizon = 5;
    assert_eq!((mdp.states(), mdp.actions()), (2, 3));
    let is = Estimator::ImportanceSampling;
    let behaviour = is.behaviour(&theta);
    assert!(max_diff(&behaviour, &theta) > 0.2, "θ′ = θ");
    let (pi, pi_b) = (softmax_policy(&theta), softmax_policy(&behaviour));
    let ctx = context(&mdp, &theta, false);
    let mut expectation = Array2::zeros(theta.raw_dim());
    let (mut capped_10, mut capped_1_5) = (expectation.clone(), expectation.clone());
    let mut max_rho: f64 = 0.0;
    for tau in mdp.trajectories(&pi_b) {
        let rho: f64 = (0..mdp.horizon)
            .map(|t| {
                let (s, a) = (tau.states[t], tau.actions[t]);
                pi[[s, a]] / pi_b[[s, a]]
            })
            .product();
        max_rho = max_rho.max(rho);
        let b = Batch::of(&mdp, std::slice::from_ref(&tau));
        let g_is = is.estimate_f64(&mdp, &theta, &ctx, &b);
        let g_rtg = Estimator::RewardToGo.estimate_f64(&mdp, &theta, &ctx, &b);
        let want = &g_rtg * rho;
        assert!(
            max_diff(&g_is, &want) <= 1e-12 * (1.0 + rho),
            "{tau:?}: ρ = {rho}\n  IS {g_is}\n  ρ·reward-to-go {want}"
        );
        expectation.scaled_add(tau.probability, &g_is);
        capped_10.scaled_add(tau.probability * rho.min(10.0), &g_rtg);
        capped_1_5.scaled_add(tau.probability * rho.min(1.5), &g_rtg);
    }
    assert!(max_rho > 10.0, "max ρ = {max_rho}");
    let exact = mdp.policy_gradient_theorem(&theta).gradient;
    let err = max_diff(&expectation, &exact);
    assert!(err <= EXACT, "E[ĝ_IS] − ∇J: {err:.3e}");
    assert!(max_diff(&capped_10, &exact) > 1e-8);
    assert!(max_diff(&capped_1_5, &exact) > 1e-2);

    // The autodiff path gives the same per-trajectory estimate, to float32, on a few of them.
    for tau in mdp.trajectories(&pi_b).iter().step_by(997) {
        let b = Batch::of(&mdp, std::slice::from_ref(tau));
        let f64_path = is.estimate_f64(&mdp, &theta, &ctx, &b);
        let autodiff = is.estimate(&mdp, &theta, &ctx, &b);
        let scale = f64_path.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        assert!(max_diff(&autodiff, &f64_path) <= 1e-5 * scale, "{tau:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sampled statistics.

/// The case a review found (`gradgym estimators` with `samples = [16]`, `random_mdps = 1024`,
/// seed 1: random MDP 342, exact advantage): state 0's second action has probability 0.0019 and
/// the 1,024 trajectories never draw it, so the 64 batch estimates of θ[0, ·] agree to 4e-8
/// while their mean misses ∇J by 4.5e-4. Judged on every coordinate, the unbiased estimator
/// fails by |mean − exact|/SE above 10,000; the check leaves that state's coordinates out and
/// counts them.
#[test]
fn coordinates_of_an_action_the_sample_cannot_draw_are_left_out_and_counted() {
    let (mdp, theta) = random_case(rng::derive_seed(1, "study-mdp-342"), 4);
    // The study numbers its cases after the four benchmark MDPs: random-342 is case 346.
    let seed = rng::derive_seed(1, "study-346-5-16");
    let every = |d: &Array2<f64>| Array2::from_elem(d.raw_dim(), true);
    let judged_all = measure_on(
        "random-342",
        &mdp,
        &theta,
        Estimator::ExactAdvantage,
        64,
        16,
        seed,
        every,
    );
    assert!(
        !judged_all.passes && judged_all.bias_z > 1000.0 && judged_all.unchecked == 0,
        "{judged_all:?}"
    );
    let checked = measure(
        "random-342",
        &mdp,
        &theta,
        Estimator::ExactAdvantage,
        64,
        16,
        seed,
    );
    let actions = theta.ncols();
    assert!(
        checked.passes && checked.unchecked >= actions && checked.unchecked % actions == 0,
        "{checked:?}"
    );
    assert!(checked.bias_z < 10.0, "{checked:?}");
    let draws = study::expected_draws(&mdp, &softmax_policy(&theta), 64 * 16);
    assert!(draws[[0, 1]] < study::MIN_EXPECTED_DRAWS, "{draws:?}");
}

#[test]
fn every_unbiased_estimator_passes_on_random_mdps() {
    for case in 0..cases(4) as u64 {
        let (mdp, theta) = random_case(1000 + case, 4);
        for estimator in Estimator::all().into_iter().filter(|e| !e.biased()) {
            // Importance weights have heavier tails: more trajectories per batch.
            let m = if estimator == Estimator::ImportanceSampling {
                256
            } else {
                128
            };
            let v = measure("random", &mdp, &theta, estimator, 64, m, case);
            assert!(
                v.passes,
                "{} on case {case}: worst |mean − exact| / SE = {:.2}",
                v.estimator, v.bias_z
            );
        }
    }
}

#[test]
fn a_learned_state_value_baseline_reduces_variance() {
    // The point of a baseline: same expectation, less variance. On the benchmark MDPs, with the
    // critic fitted on an independent sample, the variance trace must drop below plain
    // REINFORCE's (measured: about a quarter of it at M = 256).
    for (name, mdp, theta) in study::benchmark_cases() {
        let plain = measure(&name, &mdp, &theta, Estimator::TotalReturn, 64, 256, 7);
        let learned = measure(&name, &mdp, &theta, Estimator::LearnedBaseline, 64, 256, 7);
        assert!(
            learned.passes,
            "{name}: the learned baseline is biased (z {:.2})",
            learned.bias_z
        );
        assert!(
            learned.variance_trace < 0.8 * plain.variance_trace,
            "{name}: variance {} vs plain {}",
            learned.variance_trace,
            plain.variance_trace
        );
    }
}

/// The check's quantile is Student's t with K − 1 degrees of freedom: figures from SciPy 1.16
/// (`scipy.stats.t.isf` and `.sf`), the Cauchy tail in closed form, and the normal limit.
#[test]
fn the_check_uses_student_t_quantiles() {
    let close = |got: f64, want: f64, rel: f64| {
        assert!((got - want).abs() <= rel * want.abs(), "{got} vs {want}");
    };
    close(t_for(0.05, 10.0), 2.228_138_851_986_275_3, 1e-9);
    // K = 64, with 48 coordinates.
    close(t_for(1e-6 / 48.0, 63.0), 6.412_905_269_231_833, 1e-8);
    close(t_for(1e-6 / 24.0, 7.0), 25.011_264_924_174_15, 1e-8);
    close(t_for(1e-6 / 24.0, 1.0), 15_278_874.536_821_933, 1e-8);
    close(student_t_tail(3.0, 5.0), 0.015_049_623_948_731_293, 1e-10);
    close(student_t_tail(40.0, 3.0), 1.719_034_039_457_925_3e-5, 1e-9);
    for t in [0.3, 1.0, 7.0, 1e4] {
        close(
            student_t_tail(t, 1.0),
            0.5 - t.atan() / std::f64::consts::PI,
            1e-10,
        );
    }
    close(t_for(1e-6, 1e9), z_for(1e-6), 1e-6);
    // At K = 64 the normal quantile (5.60) is 13% narrower than t's (6.41).
    assert!(t_for(1e-6 / 48.0, 63.0) > 1.14 * z_for(1e-6 / 48.0));
}

/// Power: a control is fair when some coordinate's exact bias is at least twice what the check
/// tolerates at this sample size (z·SE + slack, SE measured).
fn detectable(bias: &Array2<f64>, se: &Array2<f64>) -> bool {
    // The controls measure with K = 64 batches.
    let z = t_for(FAMILY_WISE_ALPHA / bias.len() as f64, 63.0);
    bias.iter()
        .zip(se)
        .any(|(b, s)| b.abs() > 2.0 * (z * s + SLACK))
}

#[test]
fn an_action_dependent_baseline_is_caught() {
    for case in 0..cases(4) as u64 {
        let (mdp, theta) = random_case(2000 + case, 4);
        // Bias = −E[Σ_t γ^t b(s_t, a_t) ∇log π] with b = 4(a + 1).
        let bias = -score_expectation(&mdp, &theta, &theta, &|t, _, a, _| {
            mdp.gamma.powi(t as i32) * 4.0 * (a as f64 + 1.0)
        });
        let v = measure(
            "random",
            &mdp,
            &theta,
            Estimator::ActionBaseline,
            64,
            128,
            case,
        );
        assert!(
            detectable(&bias, &v.se),
            "case {case}: bias {bias} too small to be a fair control"
        );
        assert!(
            !v.passes,
            "case {case}: the biased estimator passed (worst z {:.2})",
            v.bias_z
        );
    }
}

#[test]
fn a_discount_missing_from_the_estimator_is_caught() {
    let mut tested = 0;
    for case in 0..cases(4) as u64 {
        let (mut mdp, theta) = random_case(3000 + case, 4);
        // γ = 0.8 and H = 4, so that late steps are over-weighted by up to 1/0.8³ ≈ 2.
        mdp.gamma = 0.8;
        mdp.horizon = 4;
        let tables = mdp.tables(&softmax_policy(&theta));
        // The estimator's expectation is Σ_t E_{d_t}[∇log π Q_t] (no γ^t).
        let expected = score_expectation(&mdp, &theta, &theta, &|t, s, a, _| tables.q[[t, s, a]]);
        let exact = mdp.policy_gradient_theorem(&theta).gradient;
        let bias = &expected - &exact;
        let v = measure(
            "random",
            &mdp,
            &theta,
            Estimator::MissingDiscount,
            64,
            128,
            case,
        );
        if !detectable(&bias, &v.se) {
            continue;
        }
        assert!(
            !v.passes,
            "case {case}: the undiscounted estimator passed (worst z {:.2})",
            v.bias_z
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

/// K estimates from a custom estimator on samples of `behaviour`, against ∇J(`theta`).
fn measure_custom(
    mdp: &TabularMdp,
    theta: &Array2<f64>,
    behaviour: &Array2<f64>,
    m: usize,
    seed: u64,
    f: &dyn Fn(&Batch) -> Array2<f64>,
) -> study::Measurement {
    let exact = mdp.policy_gradient_theorem(theta).gradient;
    let mut r = rng::stream(seed, "estimator-samples", 0);
    let estimates: Vec<Array2<f64>> = (0..64)
        .map(|_| f(&sample(mdp, behaviour, m, &mut r)))
        .collect();
    let draws = study::expected_draws(mdp, &softmax_policy(behaviour), 64 * m);
    summarise(
        "random",
        "custom",
        m,
        &exact,
        &estimates,
        &study::checkable(&draws),
    )
}

#[test]
fn ppo_clipping_far_from_the_old_policy_and_truncation_as_termination_are_caught() {
    // Cases whose exact bias is too small for the sample size are skipped (not a fair
    // control); at least half of the cases must exercise each control.
    let (mut tested_clip, mut tested_cut) = (0, 0);
    for case in 0..cases(4) as u64 {
        let (mut mdp, theta) = random_case(5000 + case, 4);
        mdp.horizon = mdp.horizon.max(3);
        let exact = mdp.policy_gradient_theorem(&theta).gradient;
        // (ii) The clipped surrogate at θ with samples from a θ′ far enough that most ratios
        // leave [0.8, 1.2]: clipped terms have zero gradient, so the estimate is not ∇J(θ).
        // Advantages are the exact A of the sampling policy, as in PPO.
        let old = far_old_policy(&theta);
        let adv = old_advantage(&mdp, &old);
        let v = measure_custom(&mdp, &theta, &old, 256, case, &|b| {
            ppo_estimate(
                &mdp,
                &theta,
                Some(&old),
                b,
                &table_weights(&mdp, b, &adv),
                PpoLoss::Clip,
            )
        });
        // Power: the estimate's exact expectation (see `ppo_far_expectation`).
        let bias = &ppo_far_expectation(&mdp, &theta, &old) - &exact;
        if detectable(&bias, &v.se) {
            assert!(
                !v.passes,
                "case {case}: PPO's clipped surrogate far from θ′ passed as ∇J(θ) (worst z {:.2})",
                v.bias_z
            );
            tested_clip += 1;
        }

        // (iv) A time-limit cut treated as termination: the episode runs H steps, but the
        // estimator's returns stop at H − 1 with nothing bootstrapped.
        let v = measure_custom(&mdp, &theta, &theta, 256, case, &|b| {
            pg_estimate(&mdp, &theta, b, &cut_returns(&mdp, b))
        });
        // Power: by causality the cut estimator's expectation is ∇J of the horizon-(H − 1)
        // problem, so its bias is ∇J_{H−1} − ∇J_H, computed exactly.
        let mut short = mdp.clone();
        short.horizon -= 1;
        let bias = &short.policy_gradient_theorem(&theta).gradient - &exact;
        if detectable(&bias, &v.se) {
            assert!(
                !v.passes,
                "case {case}: returns cut at H − 1 passed as ∇J (worst z {:.2})",
                v.bias_z
            );
            tested_cut += 1;
        }
    }
    let n = cases(4) as usize;
    assert!(
        tested_clip * 2 >= n,
        "only {tested_clip} of {n} cases exercised the clipping control"
    );
    assert!(
        tested_cut * 2 >= n,
        "only {tested_cut} of {n} cases exercised the truncation control"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// GAE(λ = 1) = reward-to-go − V; GAE(λ = 0) = the TD residual; every step of an episode
    /// gets the episode's return, which is the reward-to-go at its first step.
    #[test]
    fn gae_and_return_identities(seed in any::<u64>(), steps in 1usize..12, envs in 1usize..4) {
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
}
