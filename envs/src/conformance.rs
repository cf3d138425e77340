//! Conformance with Gymnasium: replay transitions recorded from Gymnasium through gradgym's
//! batched kernels and compare.
//!
//! The file format is the one of `tests/fixtures/gymnasium-classic-control-transitions.csv`
//! (documented in `tests/fixtures/README.md`): one row per call of the unwrapped environment's
//! `step`, with the state it was put in, the action, and what it answered. Every row is checked
//! from its own state: all rows of one env are loaded into one batch with [`VecEnv::set_state`]
//! and stepped once through [`ClassicVecEnv`] — the same code that trains agents — with
//! autoreset disabled so the raw next state can be read.

use crate::classic::{
    Acrobot, ActionValue, CartPole, Dynamics, FixedHorizonCartPole, FixedHorizonMountainCar,
    MountainCar, MountainCarContinuous, Pendulum, StateVec,
};
use crate::registry::{ENV_IDS, spec, state_dim};
use crate::vec_env::{Autoreset, ClassicVecEnv, EnvOptions, VecEnv};

/// Largest allowed absolute errors. `terminated` must match exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub state: f64,
    pub reward: f64,
    pub obs: f64,
}

impl Default for Tolerances {
    /// The tolerances of the fixture's README.
    fn default() -> Self {
        Self {
            state: 1e-6,
            reward: 1e-6,
            obs: 1e-5,
        }
    }
}

/// One recorded transition.
#[derive(Clone, Debug, PartialEq)]
pub struct FixtureRow {
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    pub env_id: &'static str,
    pub state: Vec<f64>,
    pub action: f64,
    pub next_state: Vec<f64>,
    pub obs: Vec<f64>,
    pub reward: f64,
    pub terminated: bool,
}

/// A malformed file: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{source_name}: line {line}{}: {message}", column.as_ref().map(|c| format!(", column `{c}`")).unwrap_or_default())]
pub struct FixtureError {
    pub source_name: String,
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
}

const FIXED_COLUMNS: [&str; 4] = ["env_id", "kind", "episode", "t"];

/// Parses a transitions file. `source_name` is used in error messages.
pub fn parse(text: &str, source_name: &str) -> Result<Vec<FixtureRow>, FixtureError> {
    let err = |line: usize, column: Option<&str>, message: String| FixtureError {
        source_name: source_name.to_string(),
        line,
        column: column.map(str::to_string),
        message,
    };
    // A byte-order mark, as some spreadsheet programs write, is not part of the first column's
    // name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let (_, header_line) = lines
        .next()
        .ok_or_else(|| err(1, None, "the file is empty (no header)".into()))?;
    let header: Vec<&str> = header_line.split(',').map(str::trim).collect();
    if let Some((k, dup)) = header
        .iter()
        .enumerate()
        .find(|(k, h)| header[..*k].contains(h))
    {
        return Err(err(
            1,
            Some(dup),
            format!("column {} repeats column `{dup}`", k + 1),
        ));
    }
    let column_index = |name: &str| header.iter().position(|h| *h == name);

    let mut required: Vec<String> = FIXED_COLUMNS.iter().map(|s| s.to_string()).collect();
    required.extend((0..4).map(|k| format!("state_{k}")));
    required.push("action".into());
    required.extend((0..4).map(|k| format!("next_state_{k}")));
    required.extend((0..6).map(|k| format!("obs_{k}")));
    required.extend(["reward".into(), "terminated".into()]);
    let missing: Vec<&str> = required
        .iter()
        .filter(|c| column_index(c).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(err(
            1,
            None,
            format!("header lacks column(s) {}", missing.join(", ")),
        ));
    }
    // A column the check does not read (an `obs_6` meant for a wider env, a misspelt
    // duplicate) would be passed over in silence: named instead.
    if let Some(extra) = header.iter().find(|h| !required.iter().any(|r| r == *h)) {
        return Err(err(
            1,
            Some(extra),
            format!(
                "column `{extra}` is not one of a transitions file's: {}",
                required.join(", ")
            ),
        ));
    }
    let col = |name: &str| column_index(name).expect("checked above");

    let mut rows = Vec::new();
    for (line, text) in lines {
        if text.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() != header.len() {
            return Err(err(
                line,
                None,
                format!(
                    "{} fields where the header has {} (a truncated or malformed row)",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        let raw_id = fields[col("env_id")];
        let env_id = *ENV_IDS.iter().find(|id| **id == raw_id).ok_or_else(|| {
            err(
                line,
                Some("env_id"),
                format!(
                    "unknown env id `{raw_id}`; valid ids: {}",
                    ENV_IDS.join(", ")
                ),
            )
        })?;
        let number = |name: &str| -> Result<f64, FixtureError> {
            let value = fields[col(name)];
            if value.is_empty() {
                return Err(err(
                    line,
                    Some(name),
                    format!("empty, but {env_id} needs a value here"),
                ));
            }
            let x = value
                .parse::<f64>()
                .map_err(|_| err(line, Some(name), format!("`{value}` is not a number")))?;
            // Gymnasium's recorded states, observations, actions and rewards are finite
            // float32s: anything else is a damaged file, not a mismatch of the kernels.
            if !(x as f32).is_finite() {
                return Err(err(
                    line,
                    Some(name),
                    format!("`{value}` is not a finite float32"),
                ));
            }
            Ok(x)
        };
        let numbers = |prefix: &str, count: usize| -> Result<Vec<f64>, FixtureError> {
            (0..count)
                .map(|k| number(&format!("{prefix}_{k}")))
                .collect()
        };
        let kind = fields[col("kind")];
        if !["random", "rollout"].contains(&kind) {
            return Err(err(
                line,
                Some("kind"),
                format!("`{kind}` is not a kind of row: random or rollout"),
            ));
        }
        for name in ["episode", "t"] {
            let value = fields[col(name)];
            if value.parse::<u64>().is_err() {
                return Err(err(
                    line,
                    Some(name),
                    format!("`{value}` is not a non-negative integer"),
                ));
            }
        }
        let env_spec = spec(env_id).expect("registered id");
        let sd = state_dim(env_id).expect("registered id");
        let action = number("action")?;
        if let crate::Space::Discrete { n } = env_spec.action_space
            && (i64::from_f64(action).is_none() || !(0.0..n as f64).contains(&action))
        {
            return Err(err(
                line,
                Some("action"),
                format!(
                    "{action} is not an action of {env_id} (Discrete({n}): 0 to {})",
                    n - 1
                ),
            ));
        }
        let terminated = match fields[col("terminated")] {
            "0" | "False" | "false" => false,
            "1" | "True" | "true" => true,
            other => {
                return Err(err(
                    line,
                    Some("terminated"),
                    format!("`{other}` is not 0 or 1 (or Python's False or True)"),
                ));
            }
        };
        // Columns past this env's state and observation are empty in Gymnasium's recording:
        // a value there is a damaged or misread file, not one to pass over in silence.
        let obs_dim = env_spec.observation_space.dim();
        for (prefix, from, to) in [("state", sd, 4), ("next_state", sd, 4), ("obs", obs_dim, 6)] {
            for k in from..to {
                let name = format!("{prefix}_{k}");
                let value = fields[col(&name)];
                if !value.is_empty() {
                    return Err(err(
                        line,
                        Some(&name),
                        format!(
                            "`{value}`, but {env_id}'s {} has {from} entries: this column must be empty",
                            if prefix == "obs" {
                                "observation"
                            } else {
                                "state"
                            }
                        ),
                    ));
                }
            }
        }
        rows.push(FixtureRow {
            line,
            env_id,
            state: numbers("state", sd)?,
            action,
            next_state: numbers("next_state", sd)?,
            obs: numbers("obs", obs_dim)?,
            reward: number("reward")?,
            terminated,
        });
    }
    if rows.is_empty() {
        return Err(err(1, None, "the file has a header but no rows".into()));
    }
    Ok(rows)
}

/// A row outside the tolerances.
#[derive(Clone, Debug, PartialEq)]
pub struct RowFailure {
    pub line: usize,
    pub env_id: &'static str,
    /// What differs, with the recorded and the computed value.
    pub detail: String,
}

/// Per-env outcome of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvReport {
    pub env_id: &'static str,
    pub rows: usize,
    /// Largest |Δ| seen; NaN once a NaN difference was seen (`f64::max` would skip it).
    pub max_state_error: f64,
    pub max_obs_error: f64,
    pub max_reward_error: f64,
    pub terminated_mismatches: usize,
    pub failures: Vec<RowFailure>,
}

impl EnvReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks every row; one report per env present in `rows`, in registry order.
/// Raises `max` to `e`, and makes it NaN for good once `e` is NaN, so that a NaN state is
/// never reported as a largest error of 0.
fn track_max(max: &mut f64, e: f64) {
    if e.is_nan() || e > *max {
        *max = e;
    }
}

pub fn check(rows: &[FixtureRow], tolerances: Tolerances) -> Vec<EnvReport> {
    ENV_IDS
        .iter()
        .filter_map(|&id| {
            let env_rows: Vec<&FixtureRow> = rows.iter().filter(|r| r.env_id == id).collect();
            if env_rows.is_empty() {
                return None;
            }
            Some(match id {
                "CartPole-v1" => check_env(CartPole::default(), &env_rows, tolerances),
                "Acrobot-v1" => check_env(Acrobot::default(), &env_rows, tolerances),
                "MountainCar-v0" => check_env(MountainCar::default(), &env_rows, tolerances),
                "MountainCarContinuous-v0" => {
                    check_env(MountainCarContinuous::default(), &env_rows, tolerances)
                }
                "Pendulum-v1" => check_env(Pendulum::default(), &env_rows, tolerances),
                // Not Gymnasium's (the Gymnasium fixture has no rows of them), but a file may
                // hold rows recorded elsewhere, e.g. from seals.
                "FixedHorizonCartPole-v0" => {
                    check_env(FixedHorizonCartPole::default(), &env_rows, tolerances)
                }
                "FixedHorizonMountainCar-v0" => {
                    check_env(FixedHorizonMountainCar::default(), &env_rows, tolerances)
                }
                _ => unreachable!("ENV_IDS and this match list the same ids"),
            })
        })
        .collect()
}

/// An error beyond the tolerance; NaN counts as beyond.
fn outside(error: f64, tolerance: f64) -> bool {
    error.is_nan() || error > tolerance
}

fn check_env<D: Dynamics>(dynamics: D, rows: &[&FixtureRow], tol: Tolerances) -> EnvReport {
    let env_id = dynamics.spec().id;
    let options = EnvOptions {
        autoreset: Autoreset::Disabled,
        max_episode_steps: Some(0),
        ..EnvOptions::new(rows.len(), 0)
    };
    let mut env = ClassicVecEnv::new(dynamics, &options).expect("valid options");
    let mut actions = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        env.set_state(i, &row.state)
            .expect("parse checked the state length");
        actions.push(D::Action::from_f64(row.action).expect("parse checked the action"));
    }
    // Discrete actions were range-checked by `parse`; continuous ones may be non-finite.
    let mut report = EnvReport {
        env_id,
        rows: rows.len(),
        max_state_error: 0.0,
        max_obs_error: 0.0,
        max_reward_error: 0.0,
        terminated_mismatches: 0,
        failures: Vec::new(),
    };
    if let Err(e) = env.step_typed(&actions) {
        report.failures.push(RowFailure {
            line: rows[0].line,
            env_id,
            detail: e.to_string(),
        });
        return report;
    }
    for (i, row) in rows.iter().enumerate() {
        let mut fail = |what: String, expected: f64, got: f64| {
            report.failures.push(RowFailure {
                line: row.line,
                env_id,
                detail: format!(
                    "{what}: Gymnasium {expected:e}, gradgym {got:e} (|Δ| = {:.3e})",
                    (expected - got).abs()
                ),
            })
        };
        let state = env.state(i).expect("in range");
        debug_assert_eq!(state.len(), D::State::DIM);
        for (k, (&expected, &got)) in row.next_state.iter().zip(&state).enumerate() {
            let e = (expected - got).abs();
            track_max(&mut report.max_state_error, e);
            if outside(e, tol.state) {
                fail(format!("next_state_{k}"), expected, got);
            }
        }
        let obs = env.observations();
        for (k, (&expected, &got)) in row.obs.iter().zip(obs.row(i)).enumerate() {
            let e = (expected - got as f64).abs();
            track_max(&mut report.max_obs_error, e);
            if outside(e, tol.obs) {
                fail(format!("obs_{k}"), expected, got as f64);
            }
        }
        let reward = env.rewards()[i];
        let e = (row.reward - reward).abs();
        track_max(&mut report.max_reward_error, e);
        if outside(e, tol.reward) {
            fail("reward".into(), row.reward, reward);
        }
        let terminated = env.terminated()[i];
        if terminated != row.terminated {
            report.terminated_mismatches += 1;
            fail(
                "terminated".into(),
                row.terminated as u8 as f64,
                terminated as u8 as f64,
            );
        }
    }
    report
}
