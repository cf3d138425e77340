//! The reward model r̂(o, a; w): an ensemble of MLPs fitted to the synthetic human's labels
//! with the preference loss ([`crate::prefs::loss`]), computed natively in Rust (the MLP of
//! [`crate::nn::mlp`], Adam as libtorch computes it). `agents/tests/prefs_reward_model.rs`
//! checks the gradient against libtorch's autograd.
//!
//! - **Input**: the observation, then the action: one-hot for a discrete space, clipped to the
//!   bounds for a box (what the env applied).
//! - **Ensemble** (Christiano et al. 2017, section 2.2.3): M members, each trained on its own
//!   bootstrap resample. The resample is drawn online: each label, when it arrives, gets a
//!   Poisson(1) count per member (the limit of a bootstrap of n from n), so a member holds out
//!   the labels of count 0, on average 1/e of them, as the paper holds out 1/e for validation.
//! - **Regularisation**: L2 on every parameter, its strength adapted per member after each
//!   fit so that validation loss stays within `l2_band` × training loss (the paper's 1.1–1.5).
//! - **Prediction** (the paper's section 2.2.3): each member normalised on its own (zero mean,
//!   unit standard deviation over the rows of the most recent 128 labels, measured after each
//!   fit), then averaged, so that no member counts for more because its scale came out larger
//!   (the preference loss fixes a member's offset not at all and its scale only loosely). The
//!   loop normalises that average again over the same rows and scales it to `reward_std`
//!   before the learner sees it.

use gradgym_algorithms::reward_losses::top_share;
use gradgym_envs::Space;
use gradgym_envs::rng::{Stream, uniform01};

use crate::backend::native::Adam;
use crate::nn::init;
use crate::nn::mlp::Mlp;
use crate::prefs::loss::{preference_loss, probabilities};

/// How (observation, action) becomes the reward model's input row.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub obs_dim: usize,
    pub action: ActionEncoding,
    /// Per-component mean and standard deviation the observation is standardised with (then
    /// clipped to ±[`OBS_CLIP`]), fixed from the initial policy's rollout. A tanh network fed
    /// raw observations extrapolates arbitrarily where an env's state drifts without bound (the
    /// cart of FixedHorizonCartPole), and a policy finds those places.
    pub scale: Option<(Vec<f32>, Vec<f32>)>,
}

/// Standardised observations are clipped to ± this.
pub const OBS_CLIP: f32 = 5.0;

#[derive(Clone, Debug, PartialEq)]
pub enum ActionEncoding {
    /// One-hot over `n` actions.
    OneHot(usize),
    /// The action clipped to `[low, high]`.
    Clipped { low: Vec<f32>, high: Vec<f32> },
    /// No action: a state-only reward r̂(o).
    Ignored,
}

impl Features {
    pub fn new(obs_dim: usize, action_space: &Space) -> Self {
        let action = match action_space {
            Space::Discrete { n } => ActionEncoding::OneHot(*n as usize),
            Space::Box { low, high } => ActionEncoding::Clipped {
                low: low.clone(),
                high: high.clone(),
            },
        };
        Self {
            obs_dim,
            action,
            scale: None,
        }
    }

    /// Fixes the observation scale from `obs` (`[n, obs_dim]`): each component's mean and
    /// standard deviation (at least 10⁻³).
    pub fn fit_scale(&mut self, obs: &[f32]) {
        let d = self.obs_dim;
        let n = (obs.len() / d).max(1) as f64;
        let mut mean = vec![0.0f64; d];
        for row in obs.chunks_exact(d) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += *x as f64 / n;
            }
        }
        let mut var = vec![0.0f64; d];
        for row in obs.chunks_exact(d) {
            for ((v, x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (*x as f64 - m).powi(2) / n;
            }
        }
        self.scale = Some((
            mean.iter().map(|&m| m as f32).collect(),
            var.iter().map(|&v| (v.sqrt() as f32).max(1e-3)).collect(),
        ));
    }

    fn push_obs(&self, obs: &[f32], out: &mut Vec<f32>) {
        match &self.scale {
            None => out.extend_from_slice(obs),
            Some((mean, std)) => out.extend(
                obs.iter()
                    .zip(mean.iter().zip(std))
                    .map(|(x, (m, s))| ((x - m) / s).clamp(-OBS_CLIP, OBS_CLIP)),
            ),
        }
    }

    /// The width of one input row.
    pub fn dim(&self) -> usize {
        self.obs_dim
            + match &self.action {
                ActionEncoding::OneHot(n) => *n,
                ActionEncoding::Clipped { low, .. } => low.len(),
                ActionEncoding::Ignored => 0,
            }
    }

    /// The same, without the action: r̂(o).
    pub fn state_only(mut self) -> Self {
        self.action = ActionEncoding::Ignored;
        self
    }

    /// Appends the row of (`obs`, discrete `action`).
    pub fn push_discrete(&self, obs: &[f32], action: i64, out: &mut Vec<f32>) {
        self.push_obs(obs, out);
        let n = match self.action {
            ActionEncoding::OneHot(n) => n,
            ActionEncoding::Ignored => return,
            ActionEncoding::Clipped { .. } => panic!("a discrete action for a box action space"),
        };
        out.extend((0..n).map(|j| if j as i64 == action { 1.0 } else { 0.0 }));
    }

    /// Appends the row of (`obs`, continuous `action`).
    pub fn push_continuous(&self, obs: &[f32], action: &[f32], out: &mut Vec<f32>) {
        self.push_obs(obs, out);
        let (low, high) = match &self.action {
            ActionEncoding::Clipped { low, high } => (low, high),
            ActionEncoding::Ignored => return,
            ActionEncoding::OneHot(_) => panic!("a continuous action for a discrete action space"),
        };
        out.extend(
            action
                .iter()
                .zip(low.iter().zip(high))
                .map(|(a, (l, h))| a.clamp(*l, *h)),
        );
    }
}

/// One answered query, as the reward model trains on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// `[K · segment_length, dim]`: segment 0's rows, then segment 1's, …
    pub rows: Vec<f32>,
    /// The human's answer μ over the K segments.
    pub mu: Vec<f64>,
    /// The preferred segment (None: a tie).
    pub choice: Option<usize>,
}

/// Losses and accuracy of one member on a set of labels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fit {
    pub loss: Option<f64>,
    /// The share of labels with a preferred segment whose argmax sum is that segment (1/k of a
    /// label whose preferred segment shares the top sum with k − 1 others).
    pub accuracy: Option<f64>,
}

/// The state of the ensemble after a fit, averaged over members.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitReport {
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    /// Held-out (out-of-bag) accuracy against the human's answers.
    pub val_accuracy: Option<f64>,
    pub l2: f64,
    /// Mean and standard deviation of the ensemble's prediction over the transitions of the
    /// most recent (up to 128) labelled queries: the normalisation the learner's reward uses
    /// until the next fit.
    pub norm: (f64, f64),
}

impl Default for FitReport {
    fn default() -> Self {
        Self {
            train_loss: None,
            val_loss: None,
            val_accuracy: None,
            l2: 0.0,
            norm: (0.0, 1.0),
        }
    }
}

/// One member: its parameters, optimiser, L2 strength and bootstrap counts.
#[derive(Clone, Debug)]
pub struct Member {
    pub params: Vec<f32>,
    pub l2: f64,
    adam: Adam,
    /// Every label index, repeated by its Poisson(1) count: minibatches draw from this.
    bag: Vec<u32>,
    /// The count of each label (0: held out).
    counts: Vec<u32>,
    /// The mean and standard deviation its raw output is normalised with in [`RewardModel::predict`]
    /// (0 and 1 until the first fit).
    pub norm: (f64, f64),
}

/// The ensemble r̂ = mean of M members.
#[derive(Clone, Debug)]
pub struct RewardModel {
    pub features: Features,
    pub mlp: Mlp,
    pub members: Vec<Member>,
    pub segment_length: usize,
    pub num_segments: usize,
    /// Every label so far, in arrival order.
    pub labels: Vec<Label>,
    l2_band: [f64; 2],
}

/// Reusable buffers of the forward and backward passes.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    acts: Vec<Vec<f32>>,
    d: Vec<f32>,
    tmp: Vec<f32>,
    grads: Vec<f32>,
}

/// Labels each loss evaluation looks at, at most (the most recent).
const EVAL_LABELS: usize = 128;

/// Adds one member's `out`, normalised with its `(mean, std)`, into `sum`.
fn add_normalised(sum: &mut [f64], out: &[f32], (mean, std): (f64, f64)) {
    for (a, b) in sum.iter_mut().zip(out) {
        *a += (*b as f64 - mean) / std;
    }
}

/// Mean and population standard deviation of `v` (1 where it is below 10⁻⁸).
fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, if var.sqrt() > 1e-8 { var.sqrt() } else { 1.0 })
}

/// The L2 strength after a fit with training loss `train` and validation loss `val`: ×1.5 when
/// `val` is above `band[1]` × `train` (overfitting), ÷1.5 when below `band[0]` × `train`, kept
/// within [`L2_RANGE`](crate::config::prefs::L2_RANGE); 0 (no L2) stays 0.
pub fn adapted_l2(l2: f64, train: f64, val: f64, band: [f64; 2]) -> f64 {
    let (lo, hi) = crate::config::prefs::L2_RANGE;
    if l2 == 0.0 {
        0.0
    } else if val > band[1] * train {
        (l2 * 1.5).clamp(lo, hi)
    } else if val < band[0] * train {
        (l2 / 1.5).clamp(lo, hi)
    } else {
        l2
    }
}

/// A Poisson(1) draw by inversion.
fn poisson1(rng: &mut Stream) -> u32 {
    let u = uniform01(rng);
    let mut k = 0u32;
    let mut p = (-1.0f64).exp();
    let mut cumulative = p;
    while u >= cumulative && k < 20 {
        k += 1;
        p /= k as f64;
        cumulative += p;
    }
    k
}

impl RewardModel {
    /// M members of `hidden` widths, initialised from `rng` (orthogonal weights, gain √2 for
    /// hidden layers and 1 for the output, zero biases).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        features: Features,
        hidden: &[usize],
        members: usize,
        segment_length: usize,
        num_segments: usize,
        learning_rate: f64,
        l2: f64,
        l2_band: [f64; 2],
        rng: &mut Stream,
    ) -> Self {
        let mut sizes = vec![features.dim()];
        sizes.extend_from_slice(hidden);
        sizes.push(1);
        let mut len = 0;
        let mlp = Mlp::new(&sizes, &mut len);
        let members = (0..members)
            .map(|_| {
                let mut params = vec![0.0; len];
                init::mlp(&mlp, &mut params, 1.0, rng);
                Member {
                    params,
                    l2,
                    adam: Adam::new(len, learning_rate, 1e-8),
                    bag: Vec::new(),
                    counts: Vec::new(),
                    norm: (0.0, 1.0),
                }
            })
            .collect();
        Self {
            features,
            mlp,
            members,
            segment_length,
            num_segments,
            labels: Vec::new(),
            l2_band,
        }
    }

    /// A copy of the layout and members, without the labels (what the learner is paid by).
    pub fn clone_without_labels(&self) -> RewardModel {
        RewardModel {
            features: self.features.clone(),
            mlp: self.mlp.clone(),
            members: self.members.clone(),
            segment_length: self.segment_length,
            num_segments: self.num_segments,
            labels: Vec::new(),
            l2_band: self.l2_band,
        }
    }

    /// Parameters of one member.
    pub fn num_params(&self) -> usize {
        self.members[0].params.len()
    }

    /// Adds labels; each member draws its bootstrap count for each from `rng`.
    pub fn add_labels(&mut self, labels: impl IntoIterator<Item = Label>, rng: &mut Stream) {
        let rows = self.num_segments * self.segment_length * self.features.dim();
        for label in labels {
            assert_eq!(label.rows.len(), rows, "a label's rows are [K · k, dim]");
            assert_eq!(label.mu.len(), self.num_segments, "one μ per segment");
            let index = self.labels.len() as u32;
            for m in &mut self.members {
                let count = poisson1(rng);
                m.counts.push(count);
                m.bag.extend(std::iter::repeat_n(index, count as usize));
            }
            self.labels.push(label);
        }
    }

    /// Raw outputs of member `m` for `n` rows of `x`, into `out`.
    pub fn member_predict(
        &self,
        m: usize,
        x: &[f32],
        n: usize,
        scratch: &mut Scratch,
        out: &mut Vec<f32>,
    ) {
        self.mlp
            .forward(&self.members[m].params, x, n, &mut scratch.acts);
        out.clear();
        out.extend_from_slice(&scratch.acts[self.mlp.layers.len()][..n]);
    }

    /// The ensemble r̂ for `n` rows of `x`: the mean of the members' outputs, each normalised
    /// with its own [`Member::norm`].
    pub fn predict(&self, x: &[f32], n: usize, scratch: &mut Scratch) -> Vec<f32> {
        let mut sum = vec![0.0f64; n];
        let mut out = Vec::new();
        for m in 0..self.members.len() {
            self.member_predict(m, x, n, scratch, &mut out);
            add_normalised(&mut sum, &out, self.members[m].norm);
        }
        self.average(&sum)
    }

    /// The members' sum of normalised outputs as their mean, r̂.
    fn average(&self, sum: &[f64]) -> Vec<f32> {
        let scale = 1.0 / self.members.len() as f64;
        sum.iter().map(|a| (a * scale) as f32).collect()
    }

    /// Segment sums `[B, K]` of member `m` over `batch`, from its last forward pass.
    fn sums(&self, out: &[f32], batch: usize) -> Vec<f64> {
        let k = self.segment_length;
        (0..batch * self.num_segments)
            .map(|s| out[s * k..(s + 1) * k].iter().map(|&r| r as f64).sum())
            .collect()
    }

    /// Stacks the rows of `batch` into `scratch.x`; returns the number of rows.
    fn stack(&self, batch: &[u32], scratch: &mut Scratch) -> usize {
        scratch.x.clear();
        for &i in batch {
            scratch.x.extend_from_slice(&self.labels[i as usize].rows);
        }
        batch.len() * self.num_segments * self.segment_length
    }

    /// The mean preference loss of `params` over the labels `batch` and its gradient with
    /// respect to `params` (no L2 term), written into `scratch`'s gradient buffer and returned
    /// as a slice.
    pub fn loss_and_gradient<'s>(
        &self,
        params: &[f32],
        batch: &[u32],
        scratch: &'s mut Scratch,
    ) -> (f64, &'s [f32]) {
        let n = self.stack(batch, scratch);
        let x = std::mem::take(&mut scratch.x);
        self.mlp.forward(params, &x, n, &mut scratch.acts);
        scratch.x = x;
        let sums = self.sums(&scratch.acts[self.mlp.layers.len()], batch.len());
        let kk = self.num_segments;
        let mut loss = 0.0;
        let mut g = vec![0.0; kk];
        scratch.d.clear();
        scratch.d.resize(n, 0.0);
        let inv = 1.0 / batch.len() as f64;
        for (b, &i) in batch.iter().enumerate() {
            loss += preference_loss(
                &sums[b * kk..(b + 1) * kk],
                &self.labels[i as usize].mu,
                &mut g,
            );
            for (j, gj) in g.iter().enumerate() {
                let start = (b * kk + j) * self.segment_length;
                scratch.d[start..start + self.segment_length].fill((gj * inv) as f32);
            }
        }
        scratch.grads.clear();
        scratch.grads.resize(params.len(), 0.0);
        let mut d = std::mem::take(&mut scratch.d);
        self.mlp.backward(
            params,
            &scratch.acts,
            n,
            &mut d,
            &mut scratch.tmp,
            &mut scratch.grads,
        );
        scratch.d = d;
        (loss * inv, &scratch.grads)
    }

    /// `steps` Adam steps of every member on minibatches of `batch` labels drawn (with
    /// replacement) from its bootstrap resample, then the L2 strengths adapted. Returns the
    /// fit's losses and held-out accuracy.
    pub fn fit(
        &mut self,
        steps: usize,
        batch: usize,
        rng: &mut Stream,
        scratch: &mut Scratch,
    ) -> FitReport {
        for m in 0..self.members.len() {
            if self.members[m].bag.is_empty() {
                continue;
            }
            for _ in 0..steps {
                let bag = &self.members[m].bag;
                let picks: Vec<u32> = (0..batch)
                    .map(|_| {
                        bag[gradgym_envs::preference::segments::uniform_below(rng, bag.len() as u64)
                            as usize]
                    })
                    .collect();
                let params = std::mem::take(&mut self.members[m].params);
                let (_, grads) = self.loss_and_gradient(&params, &picks, scratch);
                let l2 = self.members[m].l2 as f32;
                let mut grads = grads.to_vec();
                for (g, p) in grads.iter_mut().zip(&params) {
                    *g += l2 * p;
                }
                let member = &mut self.members[m];
                member.params = params;
                member.adam.update(&mut member.params, &grads);
            }
        }
        self.adapt_l2(scratch)
    }

    /// Loss and accuracy of member `m` on the labels `which`.
    pub fn evaluate(&self, m: usize, which: &[u32], scratch: &mut Scratch) -> Fit {
        if which.is_empty() {
            return Fit::default();
        }
        let n = self.stack(which, scratch);
        let x = std::mem::take(&mut scratch.x);
        self.mlp
            .forward(&self.members[m].params, &x, n, &mut scratch.acts);
        scratch.x = x;
        let sums = self.sums(&scratch.acts[self.mlp.layers.len()], which.len());
        let kk = self.num_segments;
        let mut g = vec![0.0; kk];
        let (mut loss, mut right, mut decided) = (0.0, 0f64, 0usize);
        for (b, &i) in which.iter().enumerate() {
            let s = &sums[b * kk..(b + 1) * kk];
            let label = &self.labels[i as usize];
            loss += preference_loss(s, &label.mu, &mut g);
            if let Some(c) = label.choice {
                decided += 1;
                // A tie at the top is a coin flip among the tied segments.
                right += top_share(s, c);
            }
        }
        Fit {
            loss: Some(loss / which.len() as f64),
            accuracy: (decided > 0).then(|| right / decided as f64),
        }
    }

    /// The most recent (up to 128) labels member `m` trains on, and those it holds out.
    fn split(&self, m: usize) -> (Vec<u32>, Vec<u32>) {
        let counts = &self.members[m].counts;
        let mut train = Vec::new();
        let mut held = Vec::new();
        for i in (0..counts.len()).rev() {
            let side = if counts[i] > 0 { &mut train } else { &mut held };
            if side.len() < EVAL_LABELS {
                side.push(i as u32);
            }
        }
        (train, held)
    }

    /// Each member's training and validation loss; its L2 strength ×1.5 when validation loss
    /// is above the band × training loss, ÷1.5 when below it.
    fn adapt_l2(&mut self, scratch: &mut Scratch) -> FitReport {
        let [lo, hi] = self.l2_band;
        let mut train = Vec::new();
        let mut val = Vec::new();
        let mut acc = Vec::new();
        for m in 0..self.members.len() {
            let (t, h) = self.split(m);
            let ft = self.evaluate(m, &t, scratch);
            let fv = self.evaluate(m, &h, scratch);
            if let (Some(a), Some(b)) = (ft.loss, fv.loss) {
                let member = &mut self.members[m];
                member.l2 = adapted_l2(member.l2, a, b, [lo, hi]);
            }
            train.extend(ft.loss);
            val.extend(fv.loss);
            acc.extend(fv.accuracy);
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        FitReport {
            train_loss: mean(&train),
            val_loss: mean(&val),
            val_accuracy: mean(&acc),
            l2: self.members.iter().map(|m| m.l2).sum::<f64>() / self.members.len() as f64,
            norm: self.normalise(scratch),
        }
    }

    /// Measures the normalisations over the rows of the most recent (up to 128) labels, in one
    /// forward pass of each member: sets each member's [`Member::norm`] to the mean and
    /// standard deviation (1 where it is below 10⁻⁸) of its raw output, and returns the same
    /// of the ensemble's prediction r̂ made with them ((0, 1) before any label).
    pub fn normalise(&mut self, scratch: &mut Scratch) -> (f64, f64) {
        let recent: Vec<u32> = (0..self.labels.len() as u32)
            .rev()
            .take(EVAL_LABELS)
            .collect();
        if recent.is_empty() {
            return (0.0, 1.0);
        }
        let n = self.stack(&recent, scratch);
        let x = std::mem::take(&mut scratch.x);
        let (mut sum, mut out) = (vec![0.0f64; n], Vec::new());
        for m in 0..self.members.len() {
            self.member_predict(m, &x, n, scratch, &mut out);
            let norm = mean_std(&out);
            self.members[m].norm = norm;
            add_normalised(&mut sum, &out, norm);
        }
        scratch.x = x;
        mean_std(&self.average(&sum))
    }

    /// How much the members disagree about a query whose K segments' rows are `rows`
    /// (`[K · k, dim]`): the variance across members of p̂ⱼ, summed over j.
    pub fn disagreement(&self, rows: &[f32], scratch: &mut Scratch) -> f64 {
        let n = self.num_segments * self.segment_length;
        let mut out = Vec::new();
        let probs: Vec<Vec<f64>> = (0..self.members.len())
            .map(|m| {
                self.member_predict(m, rows, n, scratch, &mut out);
                probabilities(&self.sums(&out, 1))
            })
            .collect();
        let mm = probs.len() as f64;
        (0..self.num_segments)
            .map(|j| {
                let mean = probs.iter().map(|p| p[j]).sum::<f64>() / mm;
                probs.iter().map(|p| (p[j] - mean).powi(2)).sum::<f64>() / mm
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradgym_envs::rng;

    #[test]
    fn l2_rises_when_validation_loss_runs_away_and_falls_when_it_does_not() {
        let band = [1.1, 1.5];
        assert_eq!(adapted_l2(1e-3, 0.4, 0.8, band), 1.5e-3);
        assert!((adapted_l2(1e-3, 0.4, 0.41, band) - 1e-3 / 1.5).abs() < 1e-15);
        assert_eq!(adapted_l2(1e-3, 0.4, 0.5, band), 1e-3);
        assert_eq!(adapted_l2(0.9, 0.1, 1.0, band), 1.0);
    }

    #[test]
    fn each_member_holds_out_about_one_label_in_e() {
        let mut r = rng::stream(3, "test/poisson", 0);
        let n = 20_000;
        let draws: Vec<u32> = (0..n).map(|_| poisson1(&mut r)).collect();
        let zeros = draws.iter().filter(|&&k| k == 0).count() as f64 / n as f64;
        let ones = draws.iter().filter(|&&k| k == 1).count() as f64 / n as f64;
        let mean = draws.iter().map(|&k| k as f64).sum::<f64>() / n as f64;
        // P(0) = P(1) = 1/e; the mean is 1. Standard errors are about 0.0034 and 0.007.
        assert!((zeros - (-1.0f64).exp()).abs() < 0.015, "{zeros}");
        assert!((ones - (-1.0f64).exp()).abs() < 0.015, "{ones}");
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        // Through the model: labels of count 0 are a member's held-out set.
        let features = Features::new(1, &Space::Discrete { n: 2 });
        let mut m = RewardModel::new(features, &[4], 3, 1, 2, 1e-3, 0.0, [1.1, 1.5], &mut r);
        let labels = (0..3000).map(|i| Label {
            rows: vec![i as f32, 1.0, 0.0, 0.0, 0.0, 1.0],
            mu: vec![1.0, 0.0],
            choice: Some(0),
        });
        m.add_labels(labels, &mut r);
        for member in 0..3 {
            let held = m.members[member].counts.iter().filter(|&&c| c == 0).count() as f64;
            assert!(
                (held / 3000.0 - (-1.0f64).exp()).abs() < 0.04,
                "member {member}: {held}"
            );
            let bag = m.members[member].bag.len() as f64;
            assert!(
                (bag / 3000.0 - 1.0).abs() < 0.08,
                "member {member}: bag of {bag}"
            );
        }
        // The members' resamples differ.
        assert_ne!(m.members[0].counts, m.members[1].counts);
    }

    /// Christiano et al. 2017, section 2.2.3: each member is normalised on its own before the
    /// average, so a member whose output came out ten times larger does not count for more.
    #[test]
    fn members_are_normalised_each_on_its_own_before_they_are_averaged() {
        let mut r = rng::stream(4, "test/member-norm", 0);
        let features = Features::new(2, &Space::Discrete { n: 2 });
        let mut m = RewardModel::new(features, &[8], 3, 3, 2, 1e-3, 0.0, [1.1, 1.5], &mut r);
        let labels: Vec<Label> = (0..200)
            .map(|i| Label {
                rows: (0..24)
                    .map(|j| ((i * 37 + j * 5) % 23) as f32 / 9.0 - 1.0)
                    .collect(),
                mu: vec![1.0, 0.0],
                choice: Some(0),
            })
            .collect();
        m.add_labels(labels, &mut r);
        let mut scratch = Scratch::default();
        m.normalise(&mut scratch);
        let rows: Vec<f32> = m.labels[..20].iter().flat_map(|l| l.rows.clone()).collect();
        let n = rows.len() / 4;
        let before = m.predict(&rows, n, &mut scratch);
        // Member 0's output layer (weight and bias) ×10, then 3 added to its bias: its raw
        // output becomes 10·r + 3.
        let last = *m.mlp.layers.last().unwrap();
        let p = &mut m.members[0].params;
        for v in &mut p[last.w..last.b + last.outputs] {
            *v *= 10.0;
        }
        p[last.b] += 3.0;
        m.normalise(&mut scratch);
        let after = m.predict(&rows, n, &mut scratch);
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // Each member alone is centred and scaled over the recent labels' rows.
        let recent: Vec<f32> = m.labels[72..].iter().flat_map(|l| l.rows.clone()).collect();
        let mut out = Vec::new();
        m.member_predict(0, &recent, recent.len() / 4, &mut scratch, &mut out);
        let (mean, std) = m.members[0].norm;
        let z: Vec<f32> = out
            .iter()
            .map(|&v| ((v as f64 - mean) / std) as f32)
            .collect();
        let (zm, zs) = mean_std(&z);
        assert!(zm.abs() < 1e-5 && (zs - 1.0).abs() < 1e-5, "{zm} {zs}");
    }

    /// A member whose every segment sums alike is a coin flip: 1/K of each decided label,
    /// whichever segment the label prefers.
    #[test]
    fn a_tie_at_the_top_earns_a_share_of_the_accuracy() {
        let mut r = rng::stream(5, "test/tie-accuracy", 0);
        for k in [2usize, 3] {
            let features = Features::new(2, &Space::Discrete { n: 2 });
            let mut m = RewardModel::new(features, &[8], 1, 3, k, 1e-3, 0.0, [1.1, 1.5], &mut r);
            let labels: Vec<Label> = (0..40)
                .map(|i| {
                    let c = (i % (k + 1)).min(k - 1);
                    Label {
                        rows: (0..4 * 3 * k)
                            .map(|j| ((i * 37 + j * 5) % 23) as f32 / 9.0 - 1.0)
                            .collect(),
                        mu: (0..k).map(|j| if j == c { 1.0 } else { 0.0 }).collect(),
                        choice: Some(c),
                    }
                })
                .collect();
            m.add_labels(labels, &mut r);
            let mut scratch = Scratch::default();
            let all: Vec<u32> = (0..40).collect();
            let fitted = m.evaluate(0, &all, &mut scratch).accuracy.unwrap();
            assert!(fitted != 1.0 / k as f64, "K = {k}: {fitted}");
            // The output layer's weights to zero: every row scores the bias alone.
            let last = *m.mlp.layers.last().unwrap();
            m.members[0].params[last.w..last.b].fill(0.0);
            let flat = m.evaluate(0, &all, &mut scratch).accuracy.unwrap();
            assert!((flat - 1.0 / k as f64).abs() < 1e-12, "K = {k}: {flat}");
        }
    }

    #[test]
    fn the_normalisation_is_the_ensembles_mean_and_spread_over_recent_queries() {
        let mut r = rng::stream(4, "test/norm", 0);
        let features = Features::new(2, &Space::Discrete { n: 2 });
        let mut m = RewardModel::new(features, &[8], 3, 3, 2, 1e-3, 0.0, [1.1, 1.5], &mut r);
        let labels: Vec<Label> = (0..200)
            .map(|i| Label {
                rows: (0..24)
                    .map(|j| ((i * 24 + j) % 17) as f32 / 7.0 - 1.0)
                    .collect(),
                mu: vec![0.5, 0.5],
                choice: None,
            })
            .collect();
        m.add_labels(labels, &mut r);
        let mut scratch = Scratch::default();
        let (mean, std) = m.normalise(&mut scratch);
        // By hand over the most recent 128 labels' rows.
        let rows: Vec<f32> = m.labels[72..].iter().flat_map(|l| l.rows.clone()).collect();
        let p = m.predict(&rows, rows.len() / 4, &mut scratch);
        let hand_mean = p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
        let hand_var = p
            .iter()
            .map(|&v| (v as f64 - hand_mean).powi(2))
            .sum::<f64>()
            / p.len() as f64;
        assert!((mean - hand_mean).abs() < 1e-9, "{mean} vs {hand_mean}");
        assert!(
            (std - hand_var.sqrt()).abs() < 1e-9,
            "{std} vs {}",
            hand_var.sqrt()
        );
        assert!(std > 1e-3);
    }
}
