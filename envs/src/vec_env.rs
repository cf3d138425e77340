//! Batched environments.
//!
//! # Step semantics
//!
//! `step(actions)` advances every environment of the batch by one step and fills preallocated
//! buffers, all indexed by environment:
//!
//! - `observations()` `[num_envs, obs_dim]` float32 — after an episode ends, the first
//!   observation of the next episode (see autoreset below);
//! - `rewards()` `[num_envs]` float64 — as Gymnasium returns them (a float32 reward would be
//!   off by 4e-6 at MountainCarContinuous's +100);
//! - `terminated()` / `truncated()` `[num_envs]` — kept apart, as in Gymnasium: `terminated` is
//!   a true end of the MDP (do not bootstrap), `truncated` is the time limit (bootstrap from the
//!   final observation). Both can be true on the same step;
//! - for environments whose episode ended on this step (`terminated || truncated`):
//!   `final_observations()` holds the last observation of that episode, and
//!   `episode_returns()` / `episode_lengths()` its undiscounted return and length.
//!
//! # Autoreset: [`Autoreset::SameStep`]
//!
//! As Gymnasium 1.x's `AutoresetMode.SAME_STEP`: an environment whose episode ends is reset
//! inside the same `step` call, so `observations()` always holds observations the agent can act
//! on and no step is spent on a reset. [`Autoreset::Disabled`] leaves finished environments as
//! they are (the conformance check uses it to read raw transitions).
//!
//! # Randomness and threads
//!
//! Environment i draws its start states from its own stream `rng::stream(seed, "env", i)`, so
//! its trajectory under a fixed action sequence is the same whatever the batch size or the
//! thread count. `reset(Some(seed))` re-derives the streams; `reset(None)` continues them.

// Lane loops index several arrays in lockstep: the shape the vectoriser wants.
#![allow(clippy::needless_range_loop)]

use ndarray::ArrayView2;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::classic::{ActionValue, Dynamics, LANES, StateVec};
use crate::error::EnvError;
use crate::parallel::Gang;
use crate::rng::{self, Stream};
use crate::space::EnvSpec;

/// A batch of actions, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub enum Actions<'a> {
    /// One integer per environment.
    Discrete(&'a [i64]),
    /// `[num_envs, action_dim]` float32, row-major.
    Continuous(&'a [f32]),
}

impl Actions<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Actions::Discrete(_) => i64::KIND,
            Actions::Continuous(_) => f32::KIND,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Actions::Discrete(a) => a.len(),
            Actions::Continuous(a) => a.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happens to an environment whose episode has ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Autoreset {
    /// Reset within the same `step` call; the final observation is kept apart.
    #[default]
    SameStep,
    /// Never reset automatically. A step past an episode's end continues the dynamics (CartPole
    /// still pays 1, where Gymnasium pays 0 with a warning) and the episode's return, length and
    /// `truncated` keep counting: reset, or set each state, before stepping on.
    Disabled,
}

/// How to build a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvOptions {
    pub num_envs: usize,
    pub seed: u64,
    /// Threads for `step` (1 = the calling thread only): the calling thread and `threads - 1`
    /// workers owned by the batch (see [`crate::parallel`]) step fixed chunks of whole blocks.
    pub threads: usize,
    pub autoreset: Autoreset,
    /// Overrides the registered time limit (`Some(0)` = no time limit).
    pub max_episode_steps: Option<u32>,
    /// Which compiled variant of the step loop runs.
    pub kernel: Kernel,
}

/// The compiled variants of the step loop. All compute the same bits (a test checks it); the
/// choice only changes speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Kernel {
    /// The widest vector instructions this CPU has (AVX-512 or AVX2 on x86-64), chosen at run
    /// time.
    #[default]
    Auto,
    /// The build's baseline instruction set only (SSE2 on x86-64).
    Portable,
}

impl EnvOptions {
    pub fn new(num_envs: usize, seed: u64) -> Self {
        Self {
            num_envs,
            seed,
            threads: 1,
            autoreset: Autoreset::SameStep,
            max_episode_steps: None,
            kernel: Kernel::Auto,
        }
    }
}

/// A batch of environments of one kind, stepped together. Object-safe: the registry hands
/// out `Box<dyn VecEnv>`.
pub trait VecEnv: Send {
    fn spec(&self) -> &EnvSpec;
    fn num_envs(&self) -> usize;
    /// Components of one observation.
    fn obs_dim(&self) -> usize;
    /// Starts a new episode in every environment; `Some(seed)` re-derives the random streams.
    fn reset(&mut self, seed: Option<u64>);
    /// Advances every environment by one step. Invalid actions are an error and leave the
    /// batch untouched.
    fn step(&mut self, actions: Actions<'_>) -> Result<(), EnvError>;
    /// `[num_envs, obs_dim]`: row i is env i's observation (a view of the batch's buffer).
    fn observations(&self) -> ArrayView2<'_, f32>;
    fn rewards(&self) -> &[f64];
    fn terminated(&self) -> &[bool];
    fn truncated(&self) -> &[bool];
    /// `[num_envs, obs_dim]`; row i is valid where env i's episode ended on the last step.
    fn final_observations(&self) -> ArrayView2<'_, f32>;
    /// Valid where the episode ended on the last step.
    fn episode_returns(&self) -> &[f64];
    /// Valid where the episode ended on the last step.
    fn episode_lengths(&self) -> &[u32];
    /// The physics state of environment `index` (float64, as Gymnasium stores it).
    fn state(&self, index: usize) -> Result<Vec<f64>, EnvError>;
    /// Puts environment `index` in `state` (its episode step counter is set to 0); a state of
    /// the wrong length or with a non-finite component is refused, leaving the env as it was.
    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError>;

    /// `(env index, return, length)` of every episode that ended on the last step.
    fn finished_episodes(&self) -> Vec<(usize, f64, u32)> {
        let (term, trunc) = (self.terminated(), self.truncated());
        (0..self.num_envs())
            .filter(|&i| term[i] || trunc[i])
            .map(|i| (i, self.episode_returns()[i], self.episode_lengths()[i]))
            .collect()
    }
}

/// A batch of one classic-control task, stored as blocks of [`LANES`] environments (the last
/// block padded with environments nobody observes).
pub struct ClassicVecEnv<D: Dynamics> {
    dynamics: D,
    spec: EnvSpec,
    num_envs: usize,
    time_limit: u32,
    autoreset: Autoreset,
    gang: Gang,
    kernel: Kernel,
    blocks: Vec<<D::State as StateVec>::Block>,
    // Everything below is padded to blocks.len() * LANES environments.
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    running_return: Vec<f64>,
    running_length: Vec<u32>,
    episode_return: Vec<f64>,
    episode_length: Vec<u32>,
    streams: Vec<Stream>,
}

/// Mutable views of one contiguous run of blocks, so a batch can be split between threads.
struct Lanes<'a, D: Dynamics> {
    blocks: &'a mut [<D::State as StateVec>::Block],
    /// The caller's actions for these lanes: not padded, so the last block may be short.
    actions: &'a [D::Action],
    obs: &'a mut [f32],
    final_obs: &'a mut [f32],
    rewards: &'a mut [f64],
    terminated: &'a mut [bool],
    truncated: &'a mut [bool],
    running_return: &'a mut [f64],
    running_length: &'a mut [u32],
    episode_return: &'a mut [f64],
    episode_length: &'a mut [u32],
    streams: &'a mut [Stream],
}

impl<'a, D: Dynamics> Lanes<'a, D> {
    fn split_at(self, blocks: usize) -> (Self, Self) {
        let lanes = blocks * LANES;
        let rows = lanes * D::OBS_DIM;
        let (b0, b1) = self.blocks.split_at_mut(blocks);
        let (a0, a1) = self.actions.split_at(lanes.min(self.actions.len()));
        let (o0, o1) = self.obs.split_at_mut(rows);
        let (f0, f1) = self.final_obs.split_at_mut(rows);
        let (r0, r1) = self.rewards.split_at_mut(lanes);
        let (t0, t1) = self.terminated.split_at_mut(lanes);
        let (u0, u1) = self.truncated.split_at_mut(lanes);
        let (rr0, rr1) = self.running_return.split_at_mut(lanes);
        let (rl0, rl1) = self.running_length.split_at_mut(lanes);
        let (er0, er1) = self.episode_return.split_at_mut(lanes);
        let (el0, el1) = self.episode_length.split_at_mut(lanes);
        let (s0, s1) = self.streams.split_at_mut(lanes);
        (
            Lanes {
                blocks: b0,
                actions: a0,
                obs: o0,
                final_obs: f0,
                rewards: r0,
                terminated: t0,
                truncated: u0,
                running_return: rr0,
                running_length: rl0,
                episode_return: er0,
                episode_length: el0,
                streams: s0,
            },
            Lanes {
                blocks: b1,
                actions: a1,
                obs: o1,
                final_obs: f1,
                rewards: r1,
                terminated: t1,
                truncated: u1,
                running_return: rr1,
                running_length: rl1,
                episode_return: er1,
                episode_length: el1,
                streams: s1,
            },
        )
    }

    /// Steps every block of this run with the widest vector instructions the CPU has (chosen
    /// at run time: the build itself assumes no CPU features).
    fn step(self, dynamics: &D, time_limit: u32, autoreset: Autoreset, kernel: Kernel) {
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Auto {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                unsafe { self.step_avx512(dynamics, time_limit, autoreset) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { self.step_avx2(dynamics, time_limit, autoreset) };
                return;
            }
        }
        let _ = kernel;
        self.step_portable(dynamics, time_limit, autoreset);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2")]
    unsafe fn step_avx512(self, dynamics: &D, time_limit: u32, autoreset: Autoreset) {
        self.step_portable(dynamics, time_limit, autoreset);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn step_avx2(self, dynamics: &D, time_limit: u32, autoreset: Autoreset) {
        self.step_portable(dynamics, time_limit, autoreset);
    }

    /// Steps every block of this run: physics, observations, episode accounting, autoreset.
    /// Inlined into each instruction-set variant above; no FMA contraction happens in Rust, so
    /// every variant computes the same bits.
    #[inline(always)]
    fn step_portable(self, dynamics: &D, time_limit: u32, autoreset: Autoreset) {
        let od = D::OBS_DIM;
        for (j, block) in self.blocks.iter_mut().enumerate() {
            let lanes = j * LANES..(j + 1) * LANES;
            let rewards: &mut [f64; LANES] = (&mut self.rewards[lanes.clone()]).try_into().unwrap();
            let terminated: &mut [bool; LANES] =
                (&mut self.terminated[lanes.clone()]).try_into().unwrap();
            let actions: [D::Action; LANES] = match self.actions.get(lanes.clone()) {
                Some(full) => full.try_into().unwrap(),
                None => std::array::from_fn(|l| {
                    self.actions
                        .get(lanes.start + l)
                        .copied()
                        .unwrap_or_default()
                }),
            };
            dynamics.step_block(block, &actions, rewards, terminated);
            let obs = &mut self.obs[lanes.start * od..lanes.end * od];
            dynamics.observe_block(block, obs);

            let running_return = &mut self.running_return[lanes.clone()];
            let running_length = &mut self.running_length[lanes.clone()];
            let truncated = &mut self.truncated[lanes.clone()];
            // Bit l set = the episode in lane l ended; walked by bit, not by a branch per lane.
            let mut done_lanes: u64 = 0;
            for l in 0..LANES {
                running_return[l] += rewards[l];
                running_length[l] += 1;
                truncated[l] = running_length[l] >= time_limit;
                done_lanes |= ((truncated[l] | terminated[l]) as u64) << l;
            }
            while done_lanes != 0 {
                let l = done_lanes.trailing_zeros() as usize;
                done_lanes &= done_lanes - 1;
                let i = lanes.start + l;
                let row = i * od..(i + 1) * od;
                self.final_obs[row.clone()].copy_from_slice(&self.obs[row.clone()]);
                self.episode_return[i] = running_return[l];
                self.episode_length[i] = running_length[l];
                if autoreset == Autoreset::SameStep {
                    running_return[l] = 0.0;
                    running_length[l] = 0;
                    let state = dynamics.initial_state(&mut self.streams[i]);
                    state.store(block, l);
                    dynamics.observe(&state, &mut self.obs[row]);
                }
            }
        }
    }
}

const _: () = assert!(LANES <= 64, "done lanes are tracked in a u64 bit mask");

/// `dynamics.check_actions(actions)`, compiled for AVX2 where the CPU has it (the baseline
/// x86-64 instruction set has no 64-bit compare, so the scan would not vectorise).
fn check_actions<D: Dynamics>(
    dynamics: &D,
    actions: &[D::Action],
    kernel: Kernel,
) -> Result<(), EnvError> {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Auto && std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<D: Dynamics>(d: &D, a: &[D::Action]) -> Result<(), EnvError> {
            d.check_actions(a)
        }
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2(dynamics, actions) };
    }
    let _ = kernel;
    dynamics.check_actions(actions)
}

/// Locks a mutex that only one thread at a time ever touches (poisoning cannot matter).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Chunks per thread when a step is shared: enough for a fast thread to take over a slow
/// one's share, few enough that claiming chunks costs nothing.
const CHUNKS_PER_THREAD: usize = 4;

/// Who steps which chunk: thread t owns chunks `t * per .. (t + 1) * per` (the last thread
/// the rest), claims its own front to back, then the others' back to front. A chunk is
/// claimed exactly once (an atomic swap per chunk).
struct ChunkClaims {
    claimed: Vec<AtomicBool>,
    threads: usize,
}

impl ChunkClaims {
    fn new(chunks: usize, threads: usize) -> Self {
        Self {
            claimed: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
            threads,
        }
    }

    fn owned(&self, t: usize) -> std::ops::Range<usize> {
        let n = self.claimed.len();
        (n * t / self.threads)..(n * (t + 1) / self.threads)
    }

    fn for_each(&self, t: usize, mut f: impl FnMut(usize)) {
        let mut claim = |c: usize| {
            if !self.claimed[c].swap(true, Ordering::AcqRel) {
                f(c);
            }
        };
        self.owned(t).for_each(&mut claim);
        for other in (1..self.threads).map(|k| (t + k) % self.threads) {
            self.owned(other).rev().for_each(&mut claim);
        }
    }
}

/// How many blocks each chunk of a shared step holds: contiguous runs, as equal as possible.
fn chunk_block_counts(blocks: usize, threads: usize) -> Vec<usize> {
    let chunks = (threads * CHUNKS_PER_THREAD).clamp(1, blocks.max(1));
    (0..chunks)
        .map(|c| blocks / chunks + usize::from(c < blocks % chunks))
        .collect()
}

impl<D: Dynamics> ClassicVecEnv<D> {
    pub fn new(dynamics: D, options: &EnvOptions) -> Result<Self, EnvError> {
        if options.num_envs == 0 {
            return Err(EnvError::InvalidOption(
                "num_envs must be at least 1".into(),
            ));
        }
        if options.threads == 0 {
            return Err(EnvError::InvalidOption("threads must be at least 1".into()));
        }
        let spec = dynamics.spec();
        let time_limit = match options.max_episode_steps {
            None => spec.max_episode_steps,
            Some(0) => u32::MAX,
            Some(steps) => steps,
        };
        let gang = Gang::new(options.threads).map_err(|e| {
            EnvError::InvalidOption(format!("cannot start {} threads: {e}", options.threads))
        })?;
        let num_blocks = options.num_envs.div_ceil(LANES);
        let padded = num_blocks * LANES;
        let mut env = Self {
            spec,
            num_envs: options.num_envs,
            time_limit,
            autoreset: options.autoreset,
            gang,
            kernel: options.kernel,
            blocks: vec![D::State::zero_block(); num_blocks],
            obs: vec![0.0; padded * D::OBS_DIM],
            final_obs: vec![0.0; padded * D::OBS_DIM],
            rewards: vec![0.0; padded],
            terminated: vec![false; padded],
            truncated: vec![false; padded],
            running_return: vec![0.0; padded],
            running_length: vec![0; padded],
            episode_return: vec![0.0; padded],
            episode_length: vec![0; padded],
            streams: Vec::new(),
            dynamics,
        };
        env.reset(Some(options.seed));
        Ok(env)
    }

    pub fn dynamics(&self) -> &D {
        &self.dynamics
    }

    /// Steps with typed actions (no conversion from [`Actions`]).
    pub fn step_typed(&mut self, actions: &[D::Action]) -> Result<(), EnvError> {
        if actions.len() != self.num_envs {
            return Err(EnvError::WrongActionCount {
                expected: self.num_envs,
                given: actions.len(),
                num_envs: self.num_envs,
                dim: 1,
            });
        }
        let (time_limit, autoreset, kernel) = (self.time_limit, self.autoreset, self.kernel);
        let dynamics = &self.dynamics;
        let lanes = Lanes::<D> {
            blocks: &mut self.blocks,
            actions,
            obs: &mut self.obs,
            final_obs: &mut self.final_obs,
            rewards: &mut self.rewards,
            terminated: &mut self.terminated,
            truncated: &mut self.truncated,
            running_return: &mut self.running_return,
            running_length: &mut self.running_length,
            episode_return: &mut self.episode_return,
            episode_length: &mut self.episode_length,
            streams: &mut self.streams,
        };
        if self.gang.threads() == 1 {
            check_actions(dynamics, actions, kernel)?;
            lanes.step(dynamics, time_limit, autoreset, kernel);
            return Ok(());
        }
        // Two phases, so that an invalid action anywhere leaves every environment untouched:
        // validate all actions, then, if all are valid, step. The batch is cut into fixed
        // chunks of whole blocks, a few per thread. Each thread steps its own chunks first, so
        // its data stays in its core's cache from step to step, and then takes what is left of
        // the others' from their far end, so a thread on a slower core does less. Which thread
        // steps a chunk never changes a result.
        let threads = self.gang.threads();
        let counts = chunk_block_counts(lanes.blocks.len(), threads);
        let starts: Vec<usize> = counts
            .iter()
            .scan(0, |start, count| {
                let s = *start;
                *start += count * LANES;
                Some(s)
            })
            .collect();
        let verdicts: Vec<Mutex<Result<(), EnvError>>> =
            counts.iter().map(|_| Mutex::new(Ok(()))).collect();
        let claims = ChunkClaims::new(counts.len(), threads);
        self.gang.run(&|t| {
            claims.for_each(t, |c| {
                let lo = starts[c].min(actions.len());
                let hi = (starts[c] + counts[c] * LANES).min(actions.len());
                *lock(&verdicts[c]) =
                    check_actions(dynamics, &actions[lo..hi], kernel).map_err(|e| e.offset(lo));
            })
        });
        for verdict in &verdicts {
            lock(verdict).clone()?;
        }
        let mut rest = Some(lanes);
        let chunks: Vec<Mutex<Option<Lanes<'_, D>>>> = counts
            .iter()
            .map(|&count| {
                let (head, tail) = rest.take().expect("one run per chunk").split_at(count);
                rest = Some(tail);
                Mutex::new(Some(head))
            })
            .collect();
        let claims = ChunkClaims::new(counts.len(), threads);
        self.gang.run(&|t| {
            claims.for_each(t, |c| {
                if let Some(chunk) = lock(&chunks[c]).take() {
                    chunk.step(dynamics, time_limit, autoreset, kernel);
                }
            })
        });
        Ok(())
    }

    fn check_index(&self, index: usize) -> Result<(), EnvError> {
        if index < self.num_envs {
            Ok(())
        } else {
            Err(EnvError::EnvIndexOutOfRange {
                index,
                num_envs: self.num_envs,
            })
        }
    }

    fn write_obs(&mut self, index: usize) {
        let state = D::State::load(&self.blocks[index / LANES], index % LANES);
        let od = D::OBS_DIM;
        self.dynamics
            .observe(&state, &mut self.obs[index * od..(index + 1) * od]);
    }
}

impl<D: Dynamics> VecEnv for ClassicVecEnv<D> {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }
    fn num_envs(&self) -> usize {
        self.num_envs
    }
    fn obs_dim(&self) -> usize {
        D::OBS_DIM
    }

    fn reset(&mut self, seed: Option<u64>) {
        let padded = self.blocks.len() * LANES;
        if let Some(seed) = seed {
            self.streams = (0..padded as u64)
                .map(|i| rng::stream(seed, "env", i))
                .collect();
        }
        for i in 0..padded {
            let state = self.dynamics.initial_state(&mut self.streams[i]);
            state.store(&mut self.blocks[i / LANES], i % LANES);
            self.write_obs(i);
        }
        self.rewards.fill(0.0);
        self.terminated.fill(false);
        self.truncated.fill(false);
        self.running_return.fill(0.0);
        self.running_length.fill(0);
    }

    fn step(&mut self, actions: Actions<'_>) -> Result<(), EnvError> {
        let typed = D::Action::from_actions(actions).ok_or(EnvError::WrongActionKind {
            env_id: self.spec.id,
            expected: D::Action::KIND,
            given: actions.kind(),
        })?;
        self.step_typed(typed)
    }

    fn observations(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape(
            (self.num_envs, D::OBS_DIM),
            &self.obs[..self.num_envs * D::OBS_DIM],
        )
        .expect("the buffer holds num_envs rows")
    }
    fn rewards(&self) -> &[f64] {
        &self.rewards[..self.num_envs]
    }
    fn terminated(&self) -> &[bool] {
        &self.terminated[..self.num_envs]
    }
    fn truncated(&self) -> &[bool] {
        &self.truncated[..self.num_envs]
    }
    fn final_observations(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape(
            (self.num_envs, D::OBS_DIM),
            &self.final_obs[..self.num_envs * D::OBS_DIM],
        )
        .expect("the buffer holds num_envs rows")
    }
    fn episode_returns(&self) -> &[f64] {
        &self.episode_return[..self.num_envs]
    }
    fn episode_lengths(&self) -> &[u32] {
        &self.episode_length[..self.num_envs]
    }

    fn state(&self, index: usize) -> Result<Vec<f64>, EnvError> {
        self.check_index(index)?;
        let state = D::State::load(&self.blocks[index / LANES], index % LANES);
        Ok(state.as_slice().to_vec())
    }

    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError> {
        self.check_index(index)?;
        if state.len() != D::State::DIM {
            return Err(EnvError::WrongStateLength {
                env_id: self.spec.id,
                expected: D::State::DIM,
                given: state.len(),
            });
        }
        // A NaN state never terminates (every comparison with a threshold is false) and pays
        // reward on every step: refused, as a NaN action is.
        if let Some((component, &value)) = state.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(EnvError::NonFiniteState {
                env_id: self.spec.id,
                component,
                value,
            });
        }
        D::State::from_slice(state).store(&mut self.blocks[index / LANES], index % LANES);
        self.running_return[index] = 0.0;
        self.running_length[index] = 0;
        self.write_obs(index);
        Ok(())
    }
}
