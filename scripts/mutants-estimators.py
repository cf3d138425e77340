#!/usr/bin/env python3
"""Hand-written mutants of the estimators and losses, each run against the tests that guard them.

For each mutant: apply its textual patch (every `(file, old, new)` must match exactly once),
run the algorithms crate's tests and `tests/estimators.rs`, record which tests fail, and
restore the files. A mutant is *caught* when at least one test fails (a compile error counts as
"did not build", not as caught). The files are restored even when the script is interrupted.

    LIBTORCH=... python3 scripts/mutants-estimators.py            # every mutant
    LIBTORCH=... python3 scripts/mutants-estimators.py is-cap-1.5  # the named ones

Each mutant rebuilds the algorithms crate and everything above it (a minute or two apiece).
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = "algorithms/src/study.rs"
LOSSES = "algorithms/src/losses.rs"
GRADS = "algorithms/src/loss_grads.rs"
ADV = "algorithms/src/advantages.rs"

IS_WEIGHT = "F::from_f64(g[[t, i]].to_f64() * rho[i])"

MUTANTS = [
    ("is-cap-1.5", "importance weight capped at 1.5",
     [(STUDY, IS_WEIGHT, "F::from_f64(g[[t, i]].to_f64() * rho[i].min(1.5))")]),
    ("is-cap-10", "importance weight capped at 10",
     [(STUDY, IS_WEIGHT, "F::from_f64(g[[t, i]].to_f64() * rho[i].min(10.0))")]),
    ("is-one-weight-5pct", "5% bias on the importance weight of one sample (entry [0, 0])",
     [(STUDY, IS_WEIGHT,
       "F::from_f64(g[[t, i]].to_f64() * rho[i] * if (t, i) == (0, 0) { 1.05 } else { 1.0 })")]),
    ("autodiff-one-weight-5pct", "5% bias on one sample's weight in the autodiff path (entry 0)",
     [(STUDY,
       "Tensor::from_slice(&weights.iter().copied().collect::<Vec<_>>()).to_kind(Kind::Double)",
       "Tensor::from_slice(&weights.iter().enumerate().map(|(k, &w)| if k == 0 { w * 1.05 } "
       "else { w }).collect::<Vec<_>>()).to_kind(Kind::Double)")]),
    ("is-behaviour-mismatch", "importance weights computed against θ instead of θ′",
     [(STUDY, "let pi_b = softmax_policy(&self.behaviour(theta));", "let pi_b = softmax_policy(theta);")]),
    ("table-discount-off-by-one", "γ^(t+1) instead of γ^t in the exact-table weights",
     [(STUDY, "F::from_f64(mdp.gamma.powi(t as i32) * f(",
       "F::from_f64(mdp.gamma.powi(t as i32 + 1) * f(")]),
    ("rtg-missing-discount", "reward-to-go weights without γ^t",
     [(STUDY, "        let d = discount::<F>(mdp, t);\n        row.mapv_inplace(|g| g * d);",
       "        let d = discount::<F>(mdp, t);\n        row.mapv_inplace(|g| g * d / d);")]),
    ("learned-baseline-by-action", "the learned baseline indexed by the action",
     [(STUDY, "F::from_f64(v[batch.states[[t, i]]])",
       "F::from_f64(v[batch.actions[[t, i]] % v.len()])")]),
    ("gae-no-gamma-in-trace", "GAE's trace decays by λ instead of γλ",
     [(ADV, "                gamma * lambda * *run", "                lambda * *run")]),
    ("ppo-clip-upper-2eps", "PPO clip range [1 − ε, 1 + 2ε] in both twins",
     [(LOSSES, "ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)",
       "ratio.clamp(1.0 - clip_coef, 1.0 + 2.0 * clip_coef)"),
      (GRADS, "F::from_f64(1.0 + clip_coef));", "F::from_f64(1.0 + 2.0 * clip_coef));")]),
    ("ppo-clip-lower-2eps", "PPO clip range [1 − 2ε, 1 + ε] in both twins",
     [(LOSSES, "ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)",
       "ratio.clamp(1.0 - 2.0 * clip_coef, 1.0 + clip_coef)"),
      (GRADS, "(F::from_f64(1.0 - clip_coef), ", "(F::from_f64(1.0 - 2.0 * clip_coef), ")]),
    ("norm-eps-1e-5", "advantage normalisation epsilon 1e-5 in both twins",
     [(LOSSES, "(std + 1e-8)", "(std + 1e-5)"), (GRADS, "var.sqrt() + 1e-8", "var.sqrt() + 1e-5")]),
    ("norm-eps-1e-9", "advantage normalisation epsilon 1e-9 in both twins",
     [(LOSSES, "(std + 1e-8)", "(std + 1e-9)"), (GRADS, "var.sqrt() + 1e-8", "var.sqrt() + 1e-9")]),
    ("norm-biased-std", "biased (1/n) standard deviation in both twins",
     [(LOSSES, "advantages.std(true)", "advantages.std(false)"),
      (GRADS, ".sum::<f64>() / (n - 1.0);", ".sum::<f64>() / n;")]),
    ("kl-k3-sign", "k3 written (ρ − 1) + log ρ in both twins' PPO-KL loss (gradient to match)",
     [(LOSSES, "let kl = ((&ratio - 1.0) - &log_ratio).mean(Kind::Float);",
       "let kl = ((&ratio - 1.0) + &log_ratio).mean(Kind::Float);"),
      (GRADS, "kl += ((ratio - F::ONE) - log_ratio[i]).to_f64();",
       "kl += ((ratio - F::ONE) + log_ratio[i]).to_f64();"),
      (GRADS, "beta_f * (ratio - F::ONE)", "beta_f * (ratio + F::ONE)")]),
    ("value-clip-2eps", "value clip ±2ε in both twins",
     [(LOSSES, "(new_values - &old).clamp(-eps, eps)", "(new_values - &old).clamp(-2.0 * eps, 2.0 * eps)"),
      (GRADS, "let eps = F::from_f64(eps);", "let eps = F::from_f64(2.0 * eps);")]),
]

COMMANDS = [
    ["cargo", "test", "--release", "--no-fail-fast", "-p", "gradgym-algorithms"],
    ["cargo", "test", "--release", "--no-fail-fast", "--test", "estimators"],
]


def run_mutant(name, what, patches):
    originals = {}
    try:
        for path, old, new in patches:
            p = ROOT / path
            text = originals.setdefault(path, p.read_text())
            current = p.read_text()
            if current.count(old) != 1:
                raise SystemExit(f"{name}: {path}: the patch matches {current.count(old)} times")
            p.write_text(current.replace(old, new))
        failed, built = [], True
        for cmd in COMMANDS:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            log = out.stdout + out.stderr
            if "could not compile" in log:
                built = False
            failed += re.findall(r"^test (\S+) \.\.\. FAILED", log, re.M)
        verdict = "DID NOT BUILD" if not built else ("caught" if failed else "MISSED")
        print(f"{name:28} {verdict:14} {what}")
        for t in failed:
            print(f"{'':28}   fails: {t}")
        sys.stdout.flush()
        return verdict
    finally:
        for path, text in originals.items():
            (ROOT / path).write_text(text)


def main():
    chosen = sys.argv[1:]
    unknown = set(chosen) - {m[0] for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutants: {sorted(unknown)}")
    verdicts = [run_mutant(*m) for m in MUTANTS if not chosen or m[0] in chosen]
    print(f"\n{verdicts.count('caught')} of {len(verdicts)} caught")


if __name__ == "__main__":
    main()
