//! RLOO and GRPO on an enumerable token MDP (`gradgym_algorithms::token_mdp`): the exact
//! expectation of each estimator's first step, over every group of k responses, against the
//! exact gradient of the KL-penalised objective. RLOO must match it to rounding; GRPO must not,
//! and the tests say by how much.

use gradgym_algorithms::token_mdp::{
    GroupAlgo, Problem, TokenTree, expected_group_gradient, objective_gradient,
    objective_gradient_fd,
};
use ndarray::Array2;

/// Three tokens (1 is `<eos>`), responses of at most 3 tokens: 15 responses, 7 prefixes.
const TREE: TokenTree = TokenTree {
    vocab: 3,
    eos: 1,
    max_len: 3,
};

fn theta() -> Array2<f64> {
    Array2::from_shape_fn((TREE.prefixes(), 3), |(i, j)| {
        (0.7 * (i * 3 + j) as f64 + 0.3).sin()
    })
}

fn reference() -> Array2<f64> {
    Array2::from_shape_fn((TREE.prefixes(), 3), |(i, j)| {
        0.5 * (1.3 * (i * 3 + j) as f64 - 0.4).cos()
    })
}

/// Rewards content (token 0), penalises token 2, and prefers ending with `<eos>`: scores that
/// differ in length, so that averaging a sequence's tokens matters.
fn score(y: &[usize]) -> f64 {
    let zeros = y.iter().filter(|&&t| t == 0).count() as f64;
    let twos = y.iter().filter(|&&t| t == 2).count() as f64;
    zeros - 0.6 * twos
        + if y.last() == Some(&TREE.eos) {
            0.8
        } else {
            0.0
        }
}

fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn cosine(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let dot: f64 = a.iter().zip(b.iter()).map(|(x, y)| x * y).sum();
    let norm = |x: &Array2<f64>| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn problem<'a>(reference: &'a Array2<f64>, beta: f64) -> Problem<'a> {
    Problem {
        tree: TREE,
        reference,
        score: &score,
        beta,
    }
}

#[test]
fn the_exact_gradient_agrees_with_finite_differences() {
    let r = reference();
    let p = problem(&r, 0.3);
    let exact = objective_gradient(&p, &theta());
    let fd = objective_gradient_fd(&p, &theta(), 1e-5);
    assert!(max_abs(&exact) > 0.1, "a gradient worth testing");
    assert!(
        max_abs(&(&exact - &fd)) < 1e-8,
        "likelihood ratio {exact:?} vs finite differences {fd:?}"
    );
}

#[test]
fn rloo_is_unbiased_for_the_kl_penalised_objective() {
    let r = reference();
    for beta in [0.0, 0.3] {
        let p = problem(&r, beta);
        let truth = objective_gradient(&p, &theta());
        for k in [2, 3] {
            let expected = expected_group_gradient(&p, &theta(), GroupAlgo::Rloo, k);
            let err = max_abs(&(&expected - &truth)) / max_abs(&truth);
            assert!(
                err < 1e-12,
                "RLOO, k = {k}, β = {beta}: E[ĝ] is off ∇J_β by {err:e} (relative)"
            );
        }
    }
}

/// GRPO's standardisation within the group and its mean over each sequence's tokens bias its
/// step: with no KL term (β = 0) its expectation is not parallel to ∇J, at k = 2 or 3.
#[test]
fn grpo_is_biased_for_the_score_alone() {
    let r = reference();
    let p = problem(&r, 0.0);
    let truth = objective_gradient(&p, &theta());
    for k in [2, 3] {
        let expected = expected_group_gradient(&p, &theta(), GroupAlgo::Grpo, k);
        let cos = cosine(&expected, &truth);
        eprintln!("GRPO k = {k}: cosine to ∇J {cos:.6}");
        assert!(
            cos < 0.99,
            "GRPO, k = {k}: its expectation points along ∇J (cosine {cos}); the bias is gone"
        );
        // Still an ascent direction on this problem.
        assert!(cos > 0.0, "GRPO, k = {k}: cosine {cos}");
    }
}

/// GRPO's KL term (β times the k3 estimate per token, in the loss) does not follow the
/// gradient of −β KL(π‖p): with a constant score, the objective is −β KL alone, RLOO follows
/// it exactly, and GRPO's step does not.
#[test]
fn grpos_kl_term_is_not_the_gradient_of_the_kl_penalty() {
    let r = reference();
    let flat = |_: &[usize]| 1.0;
    let p = Problem {
        tree: TREE,
        reference: &r,
        score: &flat,
        beta: 0.3,
    };
    let truth = objective_gradient(&p, &theta());
    let rloo = expected_group_gradient(&p, &theta(), GroupAlgo::Rloo, 2);
    assert!(max_abs(&(&rloo - &truth)) / max_abs(&truth) < 1e-12);
    let grpo = expected_group_gradient(&p, &theta(), GroupAlgo::Grpo, 2);
    let err = max_abs(&(&grpo - &truth)) / max_abs(&truth);
    let cos = cosine(&grpo, &truth);
    eprintln!("GRPO's KL term: relative error {err:.4}, cosine {cos:.6}");
    assert!(
        err > 0.1 && cos < 0.99,
        "GRPO's KL step matches −β∇KL(π‖p) (relative error {err}, cosine {cos})"
    );
}
