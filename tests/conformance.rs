//! Conformance with Gymnasium: every recorded transition, checked through the batched kernel;
//! the kernel against the pure step function; the checker against corrupted and malformed files.

mod common;

use gradgym::envs::classic::{
    Acrobot, ActionValue, CartPole, Dynamics, MountainCar, MountainCarContinuous, Pendulum,
};
use gradgym::envs::conformance::{self, FixtureRow, Tolerances};
use gradgym::envs::vec_env::Kernel;
use gradgym::envs::{Autoreset, ClassicVecEnv, EnvOptions, VecEnv};

#[test]
fn every_fixture_row_is_within_tolerance() {
    let rows = conformance::parse(&common::fixture_text(), "fixture").unwrap();
    assert_eq!(rows.len(), 7307);
    let reports = conformance::check(&rows, Tolerances::default());
    assert_eq!(reports.len(), 5, "all five envs are in the fixture");
    for r in &reports {
        assert!(
            r.passed(),
            "{}: {:?}",
            r.env_id,
            &r.failures[..r.failures.len().min(5)]
        );
        assert_eq!(r.terminated_mismatches, 0);
    }
    // Tighter than the README's tolerances: observations are bit-exact, states within 1e-12.
    for r in &reports {
        assert_eq!(r.max_obs_error, 0.0, "{} observations", r.env_id);
        assert!(
            r.max_state_error < 1e-12,
            "{} state error {}",
            r.env_id,
            r.max_state_error
        );
        assert!(
            r.max_reward_error < 1e-12,
            "{} reward error {}",
            r.env_id,
            r.max_reward_error
        );
    }
}

#[test]
fn a_nan_in_a_recorded_state_fails_and_is_reported_as_nan() {
    let mut rows = conformance::parse(&common::fixture_text(), "fixture").unwrap();
    let victim = rows.iter().position(|r| r.env_id == "Pendulum-v1").unwrap() + 5;
    rows[victim].next_state[0] = f64::NAN;
    let reports = conformance::check(&rows, Tolerances::default());
    let pendulum = reports.iter().find(|r| r.env_id == "Pendulum-v1").unwrap();
    assert!(!pendulum.passed());
    assert!(
        pendulum.max_state_error.is_nan(),
        "a NaN difference must not be reported as max |Δ| {}",
        pendulum.max_state_error
    );
}

#[test]
fn a_corrupted_row_is_caught_and_named() {
    let mut rows = conformance::parse(&common::fixture_text(), "fixture").unwrap();
    // Nudge one CartPole next-state value by 1e-5 (10× the tolerance).
    let victim = rows.iter().position(|r| r.env_id == "CartPole-v1").unwrap() + 17;
    rows[victim].next_state[1] += 1e-5;
    let line = rows[victim].line;
    // And flip one Acrobot termination flag.
    let flip = rows.iter().position(|r| r.env_id == "Acrobot-v1").unwrap() + 3;
    rows[flip].terminated = !rows[flip].terminated;
    let flip_line = rows[flip].line;

    let reports = conformance::check(&rows, Tolerances::default());
    let cartpole = reports.iter().find(|r| r.env_id == "CartPole-v1").unwrap();
    assert_eq!(cartpole.failures.len(), 1);
    assert_eq!(cartpole.failures[0].line, line);
    assert!(cartpole.failures[0].detail.starts_with("next_state_1"));
    let acrobot = reports.iter().find(|r| r.env_id == "Acrobot-v1").unwrap();
    assert_eq!(acrobot.terminated_mismatches, 1);
    assert_eq!(acrobot.failures[0].line, flip_line);
    for r in reports
        .iter()
        .filter(|r| !["CartPole-v1", "Acrobot-v1"].contains(&r.env_id))
    {
        assert!(r.passed());
    }
}

fn parse_error(text: &str) -> conformance::FixtureError {
    conformance::parse(text, "bad.csv").expect_err("the file is malformed")
}

#[test]
fn malformed_files_get_errors_naming_line_and_column() {
    let text = common::fixture_text();
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines[0];

    // A truncated last row.
    let truncated = format!("{}\n{}\n{}", header, lines[1], &lines[2][..40]);
    let e = parse_error(&truncated);
    assert_eq!((e.line, e.column.as_deref()), (3, None));
    assert!(
        e.to_string().contains("line 3") && e.to_string().contains("fields"),
        "{e}"
    );

    // A value that is not a number.
    let state_2 = header.split(',').position(|h| h == "state_2").unwrap();
    let mut fields: Vec<&str> = lines[5].split(',').collect();
    fields[state_2] = "zero";
    let bad = fields.join(",");
    lines[5] = &bad;
    let e = parse_error(&lines[..8].join("\n"));
    assert_eq!((e.line, e.column.as_deref()), (6, Some("state_2")));
    assert!(e.to_string().contains("`zero` is not a number"), "{e}");

    // An unknown env id.
    let unknown = lines[1].replacen("CartPole-v1", "CartPole-v9", 1);
    let e = parse_error(&format!("{header}\n{unknown}"));
    assert_eq!((e.line, e.column.as_deref()), (2, Some("env_id")));
    assert!(e.to_string().contains("CartPole-v9") && e.to_string().contains("Pendulum-v1"));

    // A discrete action outside the space.
    let mut fields: Vec<&str> = lines[1].split(',').collect();
    let action_col = header.split(',').position(|h| h == "action").unwrap();
    fields[action_col] = "2";
    let e = parse_error(&format!("{header}\n{}", fields.join(",")));
    assert_eq!(e.column.as_deref(), Some("action"));

    // A recorded value that is not a finite float32 (NaN, inf, 1e308): a damaged file, named
    // as bad input, not reported as the kernels' mismatch.
    for value in ["NaN", "inf", "1e308"] {
        let mut fields: Vec<&str> = lines[1].split(',').collect();
        fields[state_2] = value;
        let e = parse_error(&format!("{header}\n{}", fields.join(",")));
        assert_eq!(
            (e.line, e.column.as_deref()),
            (2, Some("state_2")),
            "{value}"
        );
        assert!(e.to_string().contains("not a finite float32"), "{e}");
    }

    // A column given twice (the second used to be ignored).
    let e = parse_error(&format!("{header},state_0\n{},999", lines[1]));
    assert_eq!((e.line, e.column.as_deref()), (1, Some("state_0")));

    // A column the check does not read (it was passed over), and a kind of row that is
    // neither of the recording's.
    let e = parse_error(&format!("{header},obs_6\n{},1.5", lines[1]));
    assert_eq!((e.line, e.column.as_deref()), (1, Some("obs_6")));
    assert!(
        e.to_string().contains("is not one of a transitions file's"),
        "{e}"
    );
    let bogus = lines[1].replacen(",random,", ",bogus,", 1);
    assert_ne!(bogus, lines[1]);
    let e = parse_error(&format!("{header}\n{bogus}"));
    assert_eq!((e.line, e.column.as_deref()), (2, Some("kind")));
    assert!(e.to_string().contains("random or rollout"), "{e}");

    // A missing column, and an empty file.
    let e = parse_error(&header.replace("reward", "rewrd"));
    assert!(e.to_string().contains("reward"), "{e}");
    assert_eq!(parse_error("").line, 1);
}

/// Runs the batched kernel (the given variant) on every fixture state of one env and checks it
/// gives the same bits as the pure step function.
fn kernel_matches_pure_step<D: Dynamics>(rows: &[FixtureRow], kernel: Kernel) {
    let dynamics = D::default();
    let id = dynamics.spec().id;
    let rows: Vec<&FixtureRow> = rows.iter().filter(|r| r.env_id == id).collect();
    let options = EnvOptions {
        autoreset: Autoreset::Disabled,
        max_episode_steps: Some(0),
        kernel,
        ..EnvOptions::new(rows.len(), 0)
    };
    let mut env = ClassicVecEnv::new(dynamics.clone(), &options).unwrap();
    let actions: Vec<D::Action> = rows
        .iter()
        .map(|r| D::Action::from_f64(r.action).unwrap())
        .collect();
    for (i, r) in rows.iter().enumerate() {
        env.set_state(i, &r.state).unwrap();
    }
    env.step_typed(&actions).unwrap();
    for (i, r) in rows.iter().enumerate() {
        use gradgym::envs::classic::StateVec;
        let t = dynamics.step(D::State::from_slice(&r.state), actions[i]);
        let batched = env.state(i).unwrap();
        let pure: Vec<u64> = t.state.as_slice().iter().map(|x| x.to_bits()).collect();
        let got: Vec<u64> = batched.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, pure, "{id} line {}: state", r.line);
        assert_eq!(
            env.rewards()[i].to_bits(),
            t.reward.to_bits(),
            "{id} line {}: reward",
            r.line
        );
        assert_eq!(env.terminated()[i], t.terminated, "{id} line {}", r.line);
        let mut obs = vec![0.0f32; D::OBS_DIM];
        dynamics.observe(&t.state, &mut obs);
        let od = D::OBS_DIM;
        assert_eq!(
            env.observations().row(i).to_vec(),
            &obs[..od],
            "{id} line {}: obs",
            r.line
        );
    }
}

#[test]
fn batched_kernels_give_the_bits_of_the_pure_step_on_every_fixture_state() {
    let rows = conformance::parse(&common::fixture_text(), "fixture").unwrap();
    for kernel in [Kernel::Auto, Kernel::Portable] {
        kernel_matches_pure_step::<CartPole>(&rows, kernel);
        kernel_matches_pure_step::<Acrobot>(&rows, kernel);
        kernel_matches_pure_step::<MountainCar>(&rows, kernel);
        kernel_matches_pure_step::<MountainCarContinuous>(&rows, kernel);
        kernel_matches_pure_step::<Pendulum>(&rows, kernel);
    }
}

#[test]
fn acrobot_wraps_angles_that_need_many_turns_like_gymnasium() {
    // Gymnasium's `wrap` subtracts 2π repeatedly; the batched kernel does two passes inline and
    // finishes the rest per lane. This state's integrated angle needs more than two passes.
    use std::f64::consts::PI;
    let dynamics = Acrobot::default();
    let state = [3.0, -3.0, 20.0, -80.0];
    let raw = dynamics.rk4(state, 1.0);
    assert!(
        raw[1].abs() > 5.0 * PI,
        "the test state must need > 2 wrap passes: {raw:?}"
    );
    let mut expected = raw[1];
    while expected > PI {
        expected -= 2.0 * PI;
    }
    while expected < -PI {
        expected += 2.0 * PI;
    }
    let pure = dynamics.step(state, 2);
    assert_eq!(pure.state[1], expected);

    let mut env = ClassicVecEnv::new(
        dynamics.clone(),
        &EnvOptions {
            autoreset: Autoreset::Disabled,
            ..EnvOptions::new(3, 0)
        },
    )
    .unwrap();
    env.set_state(1, &state).unwrap();
    env.step_typed(&[0, 2, 1]).unwrap();
    assert_eq!(env.state(1).unwrap(), pure.state.to_vec());
}
