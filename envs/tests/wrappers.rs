//! `HiddenRewardEnv`: the learner sees the supplied rewards, the logs and the oracle the true
//! ones, and any code written against `VecEnv` runs on it.

use gradgym_envs::rng;
use gradgym_envs::wrappers::{HiddenRewardEnv, Transitions};
use gradgym_envs::{Actions, EnvError, EnvOptions, VecEnv, make, make_with};

const N: usize = 5;

/// Batches that end episodes often: CartPole-v1 terminates, a 7-step limit truncates.
fn batch(id: &str) -> Box<dyn VecEnv> {
    make_with(
        id,
        &EnvOptions {
            max_episode_steps: Some(7),
            ..EnvOptions::new(N, 21)
        },
    )
    .unwrap()
}

fn random_actions(r: &mut rng::Stream, n: i64) -> Vec<i64> {
    (0..N)
        .map(|_| (rng::uniform01(r) * n as f64) as i64)
        .collect()
}

/// A reward that is not the env's: a function of the step index and the env.
fn made_up(t: usize, i: usize) -> f64 {
    (t * 10 + i) as f64 * 0.25 - 3.0
}

/// What a learner does with any VecEnv: step it and add up `rewards()` per env; also count
/// the episodes `finished_episodes()` reports.
fn learner_view(env: &mut dyn VecEnv, actions: &[i64]) -> (Vec<f64>, Vec<(usize, f64, u32)>) {
    env.step(Actions::Discrete(actions)).unwrap();
    (env.rewards().to_vec(), env.finished_episodes())
}

#[test]
fn supplied_rewards_reach_the_learner_while_returns_stay_true() {
    for id in ["CartPole-v1", "FixedHorizonMountainCar-v0"] {
        let mut plain = batch(id);
        let mut hidden = HiddenRewardEnv::new(batch(id));
        let mut r = rng::stream(5, "test-actions", 0);
        let mut supplied_sum = [0.0; N];
        let mut ended = 0;
        for t in 0..60 {
            let actions = random_actions(&mut r, if id.contains("Cart") { 2 } else { 3 });
            plain.step(Actions::Discrete(&actions)).unwrap();
            let (before_set, finished) = learner_view(&mut hidden, &actions);
            // Nothing supplied yet: the learner is paid 0, never the true reward.
            assert!(before_set.iter().all(|&x| x == 0.0), "{id} step {t}");
            let supplied: Vec<f64> = (0..N).map(|i| made_up(t, i)).collect();
            hidden.set_rewards(&supplied).unwrap();
            assert_eq!(hidden.rewards(), &supplied[..]);
            assert_eq!(hidden.true_rewards(), plain.rewards(), "{id} step {t}");
            assert_eq!(hidden.observations(), plain.observations());
            assert_eq!(hidden.terminated(), plain.terminated());
            assert_eq!(hidden.truncated(), plain.truncated());
            // The episodes the learner and the logs see end with their TRUE returns.
            assert_eq!(finished, plain.finished_episodes(), "{id} step {t}");
            assert_eq!(hidden.finished_episodes(), plain.finished_episodes());
            for i in 0..N {
                supplied_sum[i] += supplied[i];
            }
            for (i, true_return, _) in plain.finished_episodes() {
                ended += 1;
                assert_eq!(hidden.episode_returns()[i], true_return);
                assert!(
                    (hidden.supplied_episode_returns()[i] - supplied_sum[i]).abs() < 1e-9,
                    "{id} env {i} step {t}"
                );
                assert_ne!(hidden.supplied_episode_returns()[i], true_return);
                supplied_sum[i] = 0.0;
            }
        }
        assert!(ended >= 3 * N, "{id}: {ended} episodes");
    }
}

#[test]
fn a_reward_source_pays_the_learner_inside_step() {
    // r(o_t, a_t) = o_t[0] + 10·a_t, from the observations the actions were taken on.
    let source = |step: &Transitions<'_>, out: &mut [f64]| {
        let Actions::Discrete(a) = step.actions else {
            panic!("CartPole is discrete")
        };
        for (i, o) in step.observations.rows().into_iter().enumerate() {
            out[i] = o[0] as f64 + 10.0 * a[i] as f64;
        }
    };
    let mut plain = batch("CartPole-v1");
    let mut hidden = HiddenRewardEnv::with_source(batch("CartPole-v1"), Box::new(source));
    let mut r = rng::stream(6, "test-actions", 0);
    let mut learner_sum = [0.0f64; N];
    let mut checked = 0;
    for _ in 0..40 {
        let actions = random_actions(&mut r, 2);
        let before = plain.observations().to_owned();
        plain.step(Actions::Discrete(&actions)).unwrap();
        let (paid, finished) = learner_view(&mut hidden, &actions);
        for i in 0..N {
            assert_eq!(paid[i], before[[i, 0]] as f64 + 10.0 * actions[i] as f64);
            learner_sum[i] += paid[i];
        }
        assert_eq!(finished, plain.finished_episodes());
        for (i, _, _) in finished {
            assert!((hidden.supplied_episode_returns()[i] - learner_sum[i]).abs() < 1e-9);
            learner_sum[i] = 0.0;
            checked += 1;
        }
    }
    assert!(checked >= N);
}

#[test]
fn bad_input_is_an_error_that_changes_nothing() {
    let mut hidden = HiddenRewardEnv::new(make("Acrobot-v1", N, 0).unwrap());
    hidden.step(Actions::Discrete(&[1; N])).unwrap();
    hidden.set_rewards(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let obs = hidden.observations().to_owned();
    assert!(matches!(
        hidden.step(Actions::Discrete(&[1, 1, 7, 1, 1])),
        Err(EnvError::ActionOutOfRange { env_index: 2, .. })
    ));
    assert_eq!(hidden.observations(), obs);
    assert_eq!(hidden.rewards(), &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let e = hidden.set_rewards(&[1.0; 4]).unwrap_err();
    assert_eq!(
        e,
        EnvError::WrongRewardCount {
            given: 4,
            num_envs: N
        }
    );
    let e = hidden
        .set_rewards(&[0.0, 0.0, f64::NAN, 0.0, 0.0])
        .unwrap_err();
    assert!(
        matches!(e, EnvError::NonFiniteReward { env_index: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("env 2"), "{e}");
    assert_eq!(hidden.rewards(), &[1.0, 2.0, 3.0, 4.0, 5.0]);

    // A source that writes a non-finite reward: the step happened, the learner is paid 0.
    let mut broken = HiddenRewardEnv::with_source(
        make("Acrobot-v1", N, 0).unwrap(),
        Box::new(|_: &Transitions<'_>, out: &mut [f64]| out[1] = f64::INFINITY),
    );
    let e = broken.step(Actions::Discrete(&[1; N])).unwrap_err();
    assert!(matches!(e, EnvError::NonFiniteReward { env_index: 1, .. }));
    assert_eq!(broken.rewards(), &[0.0; N]);
}

#[test]
fn reset_and_set_state_restart_the_supplied_sums() {
    let mut hidden = HiddenRewardEnv::new(batch("MountainCar-v0"));
    for _ in 0..3 {
        hidden.step(Actions::Discrete(&[2; N])).unwrap();
        hidden.set_rewards(&[1.0; N]).unwrap();
    }
    hidden.reset(Some(3));
    assert_eq!(hidden.rewards(), &[0.0; N]);
    assert_eq!(
        hidden.observations(),
        make_with(
            "MountainCar-v0",
            &EnvOptions {
                max_episode_steps: Some(7),
                ..EnvOptions::new(N, 3)
            }
        )
        .unwrap()
        .observations()
    );
    for t in 1..=7 {
        hidden.step(Actions::Discrete(&[2; N])).unwrap();
        if t == 4 {
            // Env 0 starts afresh from here: its sum restarts at its next step.
            hidden.set_state(0, &[-0.5, 0.0]).unwrap();
        }
        hidden.set_rewards(&[1.0; N]).unwrap();
    }
    assert!(hidden.truncated()[1]);
    assert_eq!(hidden.supplied_episode_returns()[1], 7.0);
    assert_eq!(hidden.episode_returns()[1], -7.0);
    // Env 0's episode restarted by set_state at step 4 has run 3 steps.
    assert!(!hidden.truncated()[0]);
    hidden.step(Actions::Discrete(&[2; N])).unwrap();
    hidden.set_rewards(&[1.0; N]).unwrap();
    hidden.step(Actions::Discrete(&[2; N])).unwrap();
    hidden.set_rewards(&[1.0; N]).unwrap();
    hidden.step(Actions::Discrete(&[2; N])).unwrap();
    hidden.set_rewards(&[1.0; N]).unwrap();
    hidden.step(Actions::Discrete(&[2; N])).unwrap();
    hidden.set_rewards(&[1.0; N]).unwrap();
    assert!(hidden.truncated()[0]);
    assert_eq!(hidden.supplied_episode_returns()[0], 7.0);
    assert_eq!(hidden.episode_returns()[0], -7.0);
}
