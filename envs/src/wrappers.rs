//! Wrappers around any `Box<dyn VecEnv>`.
//!
//! [`HiddenRewardEnv`] hides the true reward from the learner, for learning from preferences
//! (Christiano et al. 2017): the learner is paid rewards supplied from outside (a reward model's),
//! while the true reward keeps flowing to the logs and to the synthetic human
//! ([`crate::preference::oracle`]). It is itself a [`VecEnv`], so any learner runs on it
//! unchanged.
//!
//! # What each method returns
//!
//! | method | returns |
//! |---|---|
//! | `rewards()` | the **supplied** rewards of the last step: what the [`RewardSource`] wrote during `step`, or what [`HiddenRewardEnv::set_rewards`] set since; 0 for every env until one of them supplies a value (after `new`, `reset`, or a step without a source) |
//! | [`HiddenRewardEnv::true_rewards`] | the wrapped env's rewards of the last step (the true ones) |
//! | `episode_returns()`, `finished_episodes()` | the **true** undiscounted returns (and lengths) of the episodes that ended on the last step, as the wrapped env counts them: for the logs and the oracle |
//! | [`HiddenRewardEnv::supplied_episode_returns`] | the sums of the supplied rewards over those same episodes (valid where an episode ended on the last step; follows later `set_rewards` calls) |
//! | `observations()`, `terminated()`, `truncated()`, `final_observations()`, `episode_lengths()`, `spec()`, `num_envs()`, `obs_dim()`, `state()`, `set_state()` | the wrapped env's, unchanged |
//!
//! `step` steps the wrapped env; an invalid action is an error that leaves everything as it
//! was, wrapper included. Then, if a [`RewardSource`] was given, it is called once with the
//! step's [`Transitions`] (the observations the actions were taken on, the actions, what the
//! step returned; never the true rewards) and writes the supplied rewards; without one they
//! are 0 until `set_rewards` is called. The source's output is checked like `set_rewards`'
//! input: one finite reward per env. If the source fails or writes a non-finite reward, `step`
//! returns that error *after* the wrapped env has stepped, with the supplied rewards of the
//! step left at 0 (the caller may still `set_rewards`).

use ndarray::ArrayView2;

use crate::error::EnvError;
use crate::space::EnvSpec;
use crate::vec_env::{Actions, VecEnv};

/// One step of a batch, as a [`RewardSource`] sees it. No true reward in it.
#[derive(Clone, Copy, Debug)]
pub struct Transitions<'a> {
    /// `[num_envs, obs_dim]`: the observations the actions were taken on (o_t).
    pub observations: ArrayView2<'a, f32>,
    /// The actions of the step (a_t).
    pub actions: Actions<'a>,
    /// `[num_envs, obs_dim]`: the observations after the step, as `VecEnv::observations`
    /// (the next episode's first where an episode ended; see `final_observations`).
    pub next_observations: ArrayView2<'a, f32>,
    /// `[num_envs, obs_dim]`: valid where an episode ended on this step.
    pub final_observations: ArrayView2<'a, f32>,
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
}

/// Computes the learner's rewards for one step, e.g. a reward model r(o, a).
pub trait RewardSource: Send {
    /// Writes one reward per env (`out.len() == num_envs`, filled with 0 on entry).
    fn rewards(&mut self, step: &Transitions<'_>, out: &mut [f64]) -> Result<(), EnvError>;
}

impl<F> RewardSource for F
where
    F: FnMut(&Transitions<'_>, &mut [f64]) + Send,
{
    fn rewards(&mut self, step: &Transitions<'_>, out: &mut [f64]) -> Result<(), EnvError> {
        self(step, out);
        Ok(())
    }
}

/// A batch whose learner-facing rewards are supplied from outside, the true ones kept apart.
/// See the [module docs](self) for what every method returns.
pub struct HiddenRewardEnv {
    inner: Box<dyn VecEnv>,
    source: Option<Box<dyn RewardSource>>,
    /// `[num_envs, obs_dim]` o_t, copied before each step (only with a source).
    before: Vec<f32>,
    /// The supplied rewards of the last step.
    supplied: Vec<f64>,
    /// Per env: the sum of the supplied rewards of its current episode before the last step.
    base: Vec<f64>,
    /// Per env: the next step starts a new episode (the last one ended, or a reset).
    fresh: Vec<bool>,
    /// `base + supplied`, kept for `supplied_episode_returns`.
    supplied_return: Vec<f64>,
}

impl HiddenRewardEnv {
    /// Wraps `inner`; the learner's rewards are 0 until [`Self::set_rewards`] supplies them.
    pub fn new(inner: Box<dyn VecEnv>) -> Self {
        let n = inner.num_envs();
        Self {
            inner,
            source: None,
            before: Vec::new(),
            supplied: vec![0.0; n],
            base: vec![0.0; n],
            fresh: vec![true; n],
            supplied_return: vec![0.0; n],
        }
    }

    /// Wraps `inner`; `source` supplies the learner's rewards inside every `step`.
    pub fn with_source(inner: Box<dyn VecEnv>, source: Box<dyn RewardSource>) -> Self {
        Self {
            source: Some(source),
            ..Self::new(inner)
        }
    }

    /// The wrapped env's rewards of the last step: the true ones.
    pub fn true_rewards(&self) -> &[f64] {
        self.inner.rewards()
    }

    /// Sets the learner's rewards of the last step (one finite value per env), replacing what
    /// a source or an earlier call supplied. Invalid input is an error and changes nothing.
    pub fn set_rewards(&mut self, rewards: &[f64]) -> Result<(), EnvError> {
        check_rewards(rewards, self.inner.num_envs())?;
        self.supplied.copy_from_slice(rewards);
        self.refresh_returns();
        Ok(())
    }

    /// Per env, the sum of the supplied rewards over the episode that ended on the last step
    /// (valid where `terminated || truncated`, as `episode_returns`).
    pub fn supplied_episode_returns(&self) -> &[f64] {
        &self.supplied_return
    }

    /// The wrapped env.
    pub fn inner(&self) -> &dyn VecEnv {
        &*self.inner
    }

    pub fn into_inner(self) -> Box<dyn VecEnv> {
        self.inner
    }

    fn refresh_returns(&mut self) {
        for ((r, b), s) in self
            .supplied_return
            .iter_mut()
            .zip(&self.base)
            .zip(&self.supplied)
        {
            *r = b + s;
        }
    }

    fn restart_accounting(&mut self) {
        self.supplied.fill(0.0);
        self.base.fill(0.0);
        self.fresh.fill(true);
        self.supplied_return.fill(0.0);
    }
}

fn check_rewards(rewards: &[f64], num_envs: usize) -> Result<(), EnvError> {
    if rewards.len() != num_envs {
        return Err(EnvError::WrongRewardCount {
            given: rewards.len(),
            num_envs,
        });
    }
    match rewards.iter().position(|r| !r.is_finite()) {
        Some(env_index) => Err(EnvError::NonFiniteReward {
            env_index,
            value: rewards[env_index],
        }),
        None => Ok(()),
    }
}

impl VecEnv for HiddenRewardEnv {
    fn spec(&self) -> &EnvSpec {
        self.inner.spec()
    }
    fn num_envs(&self) -> usize {
        self.inner.num_envs()
    }
    fn obs_dim(&self) -> usize {
        self.inner.obs_dim()
    }

    /// Resets the wrapped env; the supplied rewards and their running sums start again at 0.
    fn reset(&mut self, seed: Option<u64>) {
        self.inner.reset(seed);
        self.restart_accounting();
    }

    fn step(&mut self, actions: Actions<'_>) -> Result<(), EnvError> {
        if self.source.is_some() {
            self.before.clear();
            self.before
                .extend(self.inner.observations().iter().copied());
        }
        self.inner.step(actions)?;
        for i in 0..self.supplied.len() {
            self.base[i] = if self.fresh[i] {
                0.0
            } else {
                self.base[i] + self.supplied[i]
            };
        }
        self.supplied.fill(0.0);
        let (term, trunc) = (self.inner.terminated(), self.inner.truncated());
        for (f, (t, u)) in self.fresh.iter_mut().zip(term.iter().zip(trunc)) {
            *f = *t || *u;
        }
        let mut result = Ok(());
        if let Some(source) = self.source.as_mut() {
            let (n, d) = (self.inner.num_envs(), self.inner.obs_dim());
            let step = Transitions {
                observations: ArrayView2::from_shape((n, d), &self.before)
                    .expect("copied from a [num_envs, obs_dim] view"),
                actions,
                next_observations: self.inner.observations(),
                final_observations: self.inner.final_observations(),
                terminated: self.inner.terminated(),
                truncated: self.inner.truncated(),
            };
            result = source
                .rewards(&step, &mut self.supplied)
                .and_then(|()| check_rewards(&self.supplied, n));
            if result.is_err() {
                self.supplied.fill(0.0);
            }
        }
        self.refresh_returns();
        result
    }

    fn observations(&self) -> ArrayView2<'_, f32> {
        self.inner.observations()
    }
    /// The supplied rewards of the last step (see the module docs).
    fn rewards(&self) -> &[f64] {
        &self.supplied
    }
    fn terminated(&self) -> &[bool] {
        self.inner.terminated()
    }
    fn truncated(&self) -> &[bool] {
        self.inner.truncated()
    }
    fn final_observations(&self) -> ArrayView2<'_, f32> {
        self.inner.final_observations()
    }
    /// The true returns (the wrapped env's).
    fn episode_returns(&self) -> &[f64] {
        self.inner.episode_returns()
    }
    fn episode_lengths(&self) -> &[u32] {
        self.inner.episode_lengths()
    }
    fn state(&self, index: usize) -> Result<Vec<f64>, EnvError> {
        self.inner.state(index)
    }
    /// As the wrapped env's; env `index`'s supplied-reward sum starts again at its next step.
    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError> {
        self.inner.set_state(index, state)?;
        self.fresh[index] = true;
        Ok(())
    }
}
