//! The fixed-horizon variants: their dynamics are the classic kernels (on the Gymnasium fixture
//! rows and along whole episodes), they never end before their horizon, and they are
//! registered.

use std::path::Path;

use gradgym_envs::classic::{
    CartPole, Dynamics, FixedHorizonCartPole, FixedHorizonMountainCar, MountainCar,
};
use gradgym_envs::conformance::{self, FixtureRow};
use gradgym_envs::registry::state_dim;
use gradgym_envs::{
    Actions, Autoreset, ClassicVecEnv, ENV_IDS, EnvOptions, Space, VecEnv, make, spec,
};

fn fixture_rows(env_id: &str) -> Vec<FixtureRow> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gymnasium-classic-control-transitions.csv");
    let text = std::fs::read_to_string(&path).expect("the fixture is committed");
    conformance::parse(&text, "fixture")
        .unwrap()
        .into_iter()
        .filter(|r| r.env_id == env_id)
        .collect()
}

/// Each row stepped once from its own state through the batched kernel of `dynamics`:
/// (next state, reward, terminated) per row.
fn step_rows<D: Dynamics<Action = i64>>(
    dynamics: D,
    rows: &[FixtureRow],
) -> Vec<(Vec<f64>, f64, bool)> {
    let options = EnvOptions {
        autoreset: Autoreset::Disabled,
        max_episode_steps: Some(0),
        ..EnvOptions::new(rows.len(), 0)
    };
    let mut env = ClassicVecEnv::new(dynamics, &options).unwrap();
    for (i, row) in rows.iter().enumerate() {
        env.set_state(i, &row.state).unwrap();
    }
    let actions: Vec<i64> = rows.iter().map(|r| r.action as i64).collect();
    env.step_typed(&actions).unwrap();
    (0..rows.len())
        .map(|i| (env.state(i).unwrap(), env.rewards()[i], env.terminated()[i]))
        .collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn fixed_horizon_cartpole_states_are_cartpoles_on_the_fixture_rows() {
    let rows = fixture_rows("CartPole-v1");
    let classic = step_rows(CartPole::default(), &rows);
    let fixed = step_rows(FixedHorizonCartPole::default(), &rows);
    let (mut inside, mut ended) = (0, 0);
    for ((row, c), f) in rows.iter().zip(&classic).zip(&fixed) {
        assert!(!f.2, "line {}: the fixed-horizon env terminated", row.line);
        if !row.terminated {
            inside += 1;
            // The same bits as CartPole-v1's kernel, and Gymnasium's state within 1e-12.
            assert_eq!(bits(&f.0), bits(&c.0), "line {}", row.line);
            for (g, x) in row.next_state.iter().zip(&f.0) {
                assert!((g - x).abs() < 1e-12, "line {}: {g} vs {x}", row.line);
            }
            assert_eq!(f.1, 1.0, "line {}: reward inside the bounds", row.line);
        } else {
            ended += 1;
            // Outside the bounds: no reward. Every fixture angle is within [-π, π], so the
            // state is still CartPole's.
            assert_eq!(f.1, 0.0, "line {}: reward outside the bounds", row.line);
            assert!(c.0[2].abs() <= std::f64::consts::PI);
            assert_eq!(bits(&f.0), bits(&c.0), "line {}", row.line);
        }
    }
    assert!(
        inside >= 200 && ended >= 50,
        "{inside} inside, {ended} ended"
    );
}

#[test]
fn fixed_horizon_mountain_car_states_are_mountain_cars_on_the_fixture_rows() {
    let rows = fixture_rows("MountainCar-v0");
    let classic = step_rows(MountainCar::default(), &rows);
    let fixed = step_rows(FixedHorizonMountainCar::default(), &rows);
    let car = MountainCar::default();
    let (mut moving, mut reaching, mut absorbed) = (0, 0, 0);
    for ((row, c), f) in rows.iter().zip(&classic).zip(&fixed) {
        assert!(!f.2, "line {}: the fixed-horizon env terminated", row.line);
        let start: [f64; 2] = [row.state[0], row.state[1]];
        if car.at_goal(&start) {
            // Only random rows can start in the goal set: there the car stays, paid 0.
            absorbed += 1;
            assert_eq!(bits(&f.0), bits(&row.state), "line {}", row.line);
            assert_eq!(f.1, 0.0, "line {}", row.line);
            continue;
        }
        moving += 1;
        reaching += row.terminated as usize;
        assert_eq!(bits(&f.0), bits(&c.0), "line {}", row.line);
        for (g, x) in row.next_state.iter().zip(&f.0) {
            assert!((g - x).abs() < 1e-12, "line {}: {g} vs {x}", row.line);
        }
        assert_eq!(f.1, -1.0, "line {}", row.line);
    }
    assert!(
        moving >= 500 && reaching >= 1,
        "{moving} moving, {reaching} reaching the goal, {absorbed} absorbed"
    );
}

/// A deterministic state-feedback policy over a whole batch.
fn act(id: &str, obs: ndarray::ArrayView2<'_, f32>) -> Vec<i64> {
    obs.rows()
        .into_iter()
        .map(|o| {
            if id.contains("CartPole") {
                // Push towards the side the pole leans to: balances for a while, then the cart
                // drifts off the track.
                (o[2] > 0.0) as i64
            } else {
                // Pump energy: accelerate with the velocity (reaches the flag in ~100 steps).
                if o[1] >= 0.0 { 2 } else { 0 }
            }
        })
        .collect()
}

/// Rewards, terminated and truncated of env `i` over `steps` steps of the policy above.
type Trace = Vec<(f64, bool, bool, Option<(f64, u32)>)>;

fn trace(id: &str, num_envs: usize, seed: u64, steps: usize) -> Vec<Trace> {
    let mut env = make(id, num_envs, seed).unwrap();
    let mut out = vec![Vec::new(); num_envs];
    for _ in 0..steps {
        let actions = act(id, env.observations());
        env.step(Actions::Discrete(&actions)).unwrap();
        for (i, trace) in out.iter_mut().enumerate() {
            let done = env.terminated()[i] || env.truncated()[i];
            trace.push((
                env.rewards()[i],
                env.terminated()[i],
                env.truncated()[i],
                done.then(|| (env.episode_returns()[i], env.episode_lengths()[i])),
            ));
        }
    }
    out
}

#[test]
fn fixed_horizon_envs_never_end_before_their_horizon() {
    for (id, horizon) in [
        ("FixedHorizonCartPole-v0", 500),
        ("FixedHorizonMountainCar-v0", 200),
    ] {
        assert_eq!(spec(id).unwrap().max_episode_steps, horizon);
        // The policy, and uniformly random actions from a fixed stream.
        let mut env = make(id, 40, 3).unwrap();
        let mut rng = gradgym_envs::rng::stream(3, "test-actions", 0);
        let n = match spec(id).unwrap().action_space {
            Space::Discrete { n } => n,
            Space::Box { .. } => unreachable!(),
        };
        let mut ended = 0;
        for t in 1..=3 * horizon as usize {
            let actions: Vec<i64> = if t % 2 == 0 {
                act(id, env.observations())
            } else {
                (0..40)
                    .map(|_| (gradgym_envs::rng::uniform01(&mut rng) * n as f64) as i64)
                    .collect()
            };
            env.step(Actions::Discrete(&actions)).unwrap();
            let at_horizon = t % horizon as usize == 0;
            for i in 0..40 {
                assert!(!env.terminated()[i], "{id} env {i} terminated at step {t}");
                assert_eq!(env.truncated()[i], at_horizon, "{id} env {i} step {t}");
            }
            if at_horizon {
                for (_, ret, len) in env.finished_episodes() {
                    ended += 1;
                    assert_eq!(len, horizon, "{id}");
                    assert!((-(horizon as f64)..=horizon as f64).contains(&ret), "{ret}");
                }
            }
        }
        assert_eq!(ended, 3 * 40, "{id}");
    }
}

#[test]
fn episodes_follow_the_classic_env_until_it_would_end() {
    // Same seed, same start states, same policy: the fixed-horizon trajectory is the classic
    // one until the classic episode ends; from there it goes on to the horizon.
    for (classic, fixed, horizon) in [
        ("CartPole-v1", "FixedHorizonCartPole-v0", 500usize),
        ("MountainCar-v0", "FixedHorizonMountainCar-v0", 200),
    ] {
        let a = trace(classic, 16, 11, horizon);
        let b = trace(fixed, 16, 11, horizon);
        let mut cut_short = 0;
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let end = a
                .iter()
                .position(|s| s.1 || s.2)
                .expect("ends by the horizon");
            let (classic_return, classic_length) = a[end].3.unwrap();
            assert_eq!(classic_length as usize, end + 1);
            let (fixed_return, fixed_length) = b[horizon - 1].3.expect("ends at the horizon");
            assert_eq!(fixed_length as usize, horizon, "{fixed} env {i}");
            assert!(b[..horizon - 1].iter().all(|s| s.3.is_none()), "{fixed}");
            if a[end].1 {
                cut_short += 1;
            }
            if classic == "CartPole-v1" {
                // Reward 1 on every step CartPole-v1 took but its terminating one (out of the
                // bounds: 0 here, 1 there).
                assert!(b[..end].iter().all(|s| s.0 == 1.0), "{fixed} env {i}");
                if a[end].1 {
                    assert_eq!(b[end].0, 0.0, "{fixed} env {i}");
                    assert!(fixed_return < horizon as f64);
                }
                assert!(fixed_return >= classic_return - 1.0);
            } else {
                // MountainCar's return is kept: −(steps to the goal), then 0 per step.
                assert_eq!(fixed_return, classic_return, "{fixed} env {i}");
                assert!(b[end + 1..].iter().all(|s| s.0 == 0.0), "{fixed} env {i}");
            }
        }
        assert!(
            cut_short >= 8,
            "{classic}: only {cut_short} of 16 episodes terminated"
        );
    }
}

#[test]
fn fixed_horizon_envs_are_registered() {
    for (id, classic) in [
        ("FixedHorizonCartPole-v0", "CartPole-v1"),
        ("FixedHorizonMountainCar-v0", "MountainCar-v0"),
    ] {
        assert!(ENV_IDS.contains(&id));
        let s = spec(id).unwrap();
        let c = spec(classic).unwrap();
        assert_eq!(s.id, id);
        assert_eq!(s.action_space, c.action_space);
        assert_eq!(s.observation_space.dim(), c.observation_space.dim());
        assert_eq!(s.reward_threshold, None, "{id}");
        assert_eq!(state_dim(id).unwrap(), state_dim(classic).unwrap());
        let env = make(id, 3, 0).unwrap();
        assert_eq!(env.spec(), &s);
        // The same start states as the classic env for the same seed.
        assert_eq!(
            env.observations(),
            make(classic, 3, 0).unwrap().observations()
        );
    }
    let Space::Box { high, .. } = spec("FixedHorizonCartPole-v0").unwrap().observation_space else {
        panic!()
    };
    assert_eq!(
        high,
        vec![f32::MAX, f32::MAX, std::f32::consts::PI, f32::MAX]
    );
}

/// The batched kernel (both compiled variants) gives the bits of the pure step on `states`.
fn kernel_matches_pure_step<D: Dynamics<Action = i64>>(dynamics: D, states: &[Vec<f64>]) {
    use gradgym_envs::Kernel;
    use gradgym_envs::classic::StateVec;
    for kernel in [Kernel::Auto, Kernel::Portable] {
        let options = EnvOptions {
            autoreset: Autoreset::Disabled,
            max_episode_steps: Some(0),
            kernel,
            ..EnvOptions::new(states.len(), 0)
        };
        let mut env = ClassicVecEnv::new(dynamics.clone(), &options).unwrap();
        for (i, s) in states.iter().enumerate() {
            env.set_state(i, s).unwrap();
        }
        let actions: Vec<i64> = (0..states.len() as i64).map(|i| i % 2).collect();
        env.step_typed(&actions).unwrap();
        for (i, s) in states.iter().enumerate() {
            let t = dynamics.step(D::State::from_slice(s), actions[i]);
            let id = dynamics.spec().id;
            assert_eq!(
                bits(&env.state(i).unwrap()),
                bits(t.state.as_slice()),
                "{id} {s:?}"
            );
            assert_eq!(env.rewards()[i].to_bits(), t.reward.to_bits(), "{id} {s:?}");
            assert!(!env.terminated()[i]);
        }
    }
}

#[test]
fn batched_kernels_give_the_bits_of_the_pure_step() {
    let mut cartpole: Vec<Vec<f64>> = fixture_rows("CartPole-v1")
        .into_iter()
        .map(|r| r.state)
        .collect();
    // Angles far outside [-π, π] (the wrap path) and near ±π.
    let mut r = gradgym_envs::rng::stream(5, "test-states", 0);
    for _ in 0..200 {
        let mut u = |lo: f64, hi: f64| gradgym_envs::rng::uniform(&mut r, lo, hi);
        cartpole.push(vec![
            u(-5.0, 5.0),
            u(-3.0, 3.0),
            u(-40.0, 40.0),
            u(-8.0, 8.0),
        ]);
    }
    let pi = std::f64::consts::PI;
    cartpole.extend([vec![0.0, 0.0, pi, 0.0], vec![0.0, 0.0, -pi, -1.0]]);
    kernel_matches_pure_step(FixedHorizonCartPole::default(), &cartpole);
    let car: Vec<Vec<f64>> = fixture_rows("MountainCar-v0")
        .into_iter()
        .map(|r| r.state)
        .collect();
    kernel_matches_pure_step(FixedHorizonMountainCar::default(), &car);
}
