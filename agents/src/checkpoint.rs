//! Trained policies kept: the actor-critic's weights as safetensors with a JSON config beside
//! them, loadable again by gradgym (`gradgym eval RUN_DIR`) and by Python's `safetensors`.
//!
//! ```text
//! <run>/policy.safetensors   the final weights
//! <run>/policy.json          what they are: env, observation size, head, hidden sizes, where
//!                            in training they were taken
//! <run>/checkpoints/iter-<NNNNNN>/policy.{safetensors,json}   every `checkpoint_every` iterations
//! ```
//!
//! Tensors are float32, named and shaped as PyTorch names a `Linear` stack, so a reader needs
//! no gradgym code: `actor.<i>.weight [outputs, inputs]`, `actor.<i>.bias [outputs]`, the same
//! for `critic.<i>`, and `log_std [dim]` for a Gaussian head. Layer i applies
//! `x Wᵀ + b`, followed by tanh except after the last layer. Loading checks every name and
//! shape against the JSON config and names the first that does not fit.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::nn::actor_critic::ActorCritic;
use crate::nn::mlp::Mlp;
use crate::nn::{Head, Policy};
use crate::run_folder::write_atomic;
use crate::safetensors_io::{read_f32_tensor, write_f32_safetensors};

/// `policy.json`: the architecture of the weights in `policy.safetensors`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Always `"gradgym-actor-critic-mlp"`.
    pub format: String,
    pub env_id: String,
    pub obs_dim: usize,
    /// `categorical` or `gaussian`.
    pub head: String,
    /// Actions (categorical) or action components (Gaussian).
    pub head_outputs: usize,
    /// Hidden widths, the same for the actor and the critic.
    pub hidden_sizes: Vec<usize>,
    /// The hidden layers' nonlinearity.
    pub activation: String,
    /// The iteration and env step after which the weights were taken.
    pub iteration: u64,
    pub global_step: u64,
}

const FORMAT: &str = "gradgym-actor-critic-mlp";

fn hidden_sizes(mlp: &Mlp) -> Vec<usize> {
    mlp.layers[..mlp.layers.len() - 1]
        .iter()
        .map(|l| l.outputs)
        .collect()
}

/// The named tensors of `policy`: `(name, shape, values)`, weights transposed to
/// `[outputs, inputs]`.
fn tensors(policy: &Policy) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for (name, mlp) in [("actor", &policy.actor), ("critic", &policy.critic)] {
        for (i, layer) in mlp.layers.iter().enumerate() {
            let m = layer.weight(&policy.params); // [inputs, outputs]
            let mut w = vec![0.0f32; m.len()];
            for r in 0..layer.inputs {
                for c in 0..layer.outputs {
                    w[c * layer.inputs + r] = m[r * layer.outputs + c];
                }
            }
            out.push((
                format!("{name}.{i}.weight"),
                vec![layer.outputs, layer.inputs],
                w,
            ));
            out.push((
                format!("{name}.{i}.bias"),
                vec![layer.outputs],
                layer.bias(&policy.params).to_vec(),
            ));
        }
    }
    if let Some(log_std) = &policy.log_std {
        out.push(("log_std".into(), vec![log_std.len()], log_std.clone()));
    }
    out
}

/// Writes `policy.safetensors` and `policy.json` into `dir` (created if needed).
pub fn save(
    dir: &Path,
    policy: &Policy,
    env_id: &str,
    iteration: u64,
    global_step: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (head, head_outputs) = match policy.head {
        Head::Categorical { n } => ("categorical", n),
        Head::Gaussian { dim } => ("gaussian", dim),
    };
    let config = PolicyConfig {
        format: FORMAT.into(),
        env_id: env_id.into(),
        obs_dim: policy.obs_dim(),
        head: head.into(),
        head_outputs,
        hidden_sizes: hidden_sizes(&policy.actor),
        activation: "tanh".into(),
        iteration,
        global_step,
    };
    write_f32_safetensors(&dir.join("policy.safetensors"), &tensors(policy), FORMAT)?;
    write_atomic(
        &dir.join("policy.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )
}

/// Reads the policy saved in `dir` by [`save`], with its config.
pub fn load(dir: &Path) -> Result<(Policy, PolicyConfig)> {
    let json_path = dir.join("policy.json");
    if !dir.exists() {
        anyhow::bail!("{}: no such folder", dir.display());
    }
    if !json_path.exists() && !dir.join("policy.safetensors").exists() {
        // A transformer of `gradgym rlhf` (its own folder, or a run folder holding one).
        if let Some(model) = ["", "policy", "sft", "reward_model"]
            .iter()
            .map(|sub| {
                if sub.is_empty() {
                    dir.to_path_buf()
                } else {
                    dir.join(sub)
                }
            })
            .find(|d| d.join("model.json").is_file())
        {
            let json = model.join("model.json");
            let scalar = std::fs::read_to_string(&json)
                .ok()
                .and_then(|t| {
                    serde_json::from_str::<serde_json::Value>(t.trim_start_matches('\u{feff}')).ok()
                })
                .is_some_and(|v| v["scalar_head"] == serde_json::Value::Bool(true));
            if scalar {
                anyhow::bail!(
                    "{} holds a reward model of `gradgym rlhf` ({}), not a classic-control \
                     policy; it scores samples: `gradgym rlhf sample --sft SFT_DIR --rm {}`",
                    dir.display(),
                    json.display(),
                    model.display()
                );
            }
            anyhow::bail!(
                "{} holds a language model of `gradgym rlhf` ({}), not a classic-control \
                 policy; sample it with `gradgym rlhf sample --model {}`",
                dir.display(),
                json.display(),
                model.display()
            );
        }
        anyhow::bail!(
            "{} holds no saved policy (neither policy.safetensors nor policy.json): a failed run \
             saves none (its weights may not be finite), and neither did runs made before \
             gradgym saved policies (results/quick and results/classic-control)",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&json_path)
        .with_context(|| format!("cannot read {}", json_path.display()))?;
    // A byte-order mark, as some editors write one, is not part of the JSON (as for
    // model.json).
    let config: PolicyConfig = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .with_context(|| format!("{}: not a gradgym policy config", json_path.display()))?;
    ensure!(
        config.format == FORMAT,
        "{}: format `{}`, expected `{FORMAT}`",
        json_path.display(),
        config.format
    );
    ensure!(
        config.activation == "tanh",
        "{}: activation `{}` is not supported (tanh)",
        json_path.display(),
        config.activation
    );
    let head = match config.head.as_str() {
        "categorical" => Head::Categorical {
            n: config.head_outputs,
        },
        "gaussian" => Head::Gaussian {
            dim: config.head_outputs,
        },
        other => bail!(
            "{}: field `head`: `{other}` (expected categorical or gaussian)",
            json_path.display()
        ),
    };
    // Sizes first, and the file's shapes against them, before the network is allocated: a
    // policy.json of absurd sizes (or sizes another file's) is refused by field, not an
    // allocation of terabytes or a wrapped size.
    let most = crate::limits::MOST_SIZE;
    for (field, n) in std::iter::once(("obs_dim", config.obs_dim))
        .chain(std::iter::once(("head_outputs", config.head_outputs)))
        .chain(config.hidden_sizes.iter().map(|&h| ("hidden_sizes", h)))
    {
        ensure!(
            (1..=most).contains(&n),
            "{}: field `{field}`: {n} is outside 1 to {most}",
            json_path.display()
        );
    }
    let path = dir.join("policy.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = crate::safetensors_io::parse_safetensors(&bytes, &path)?;
    let expected = shapes(&config, head);
    for (name, shape) in &expected {
        let t = file
            .tensor(name)
            .map_err(|_| anyhow::anyhow!("{}: tensor `{name}` is missing", path.display()))?;
        ensure!(
            t.shape() == shape.as_slice(),
            "{}: tensor `{name}` is {:?}, but {} describes {shape:?}",
            path.display(),
            t.shape(),
            json_path.display()
        );
    }
    let net = ActorCritic::new(config.obs_dim, head, &config.hidden_sizes);
    let mut params = vec![0.0f32; net.len];
    for (name, shape) in &expected {
        let values = read_f32_tensor(&file, name, shape, &path)?;
        place(&net, name, &values, &mut params);
    }
    // A tensor the network has no place for means the weights and policy.json disagree (a
    // file of another run, or an edit): refused, not dropped.
    if let Some(extra) = file
        .names()
        .into_iter()
        .find(|n| !expected.iter().any(|(name, _)| name == *n))
    {
        bail!(
            "{}: tensor `{extra}` has no place in the network {} describes",
            path.display(),
            json_path.display()
        );
    }
    Ok((Policy::new(&net, params), config))
}

/// The tensors' names and shapes that `config` describes, as [`tensors`] writes them, from
/// its numbers alone (nothing allocated).
fn shapes(config: &PolicyConfig, head: Head) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let outputs = match head {
        Head::Categorical { n } => n,
        Head::Gaussian { dim } => dim,
    };
    for (name, last) in [("actor", outputs), ("critic", 1)] {
        let widths: Vec<usize> = std::iter::once(config.obs_dim)
            .chain(config.hidden_sizes.iter().copied())
            .chain(std::iter::once(last))
            .collect();
        for (i, io) in widths.windows(2).enumerate() {
            out.push((format!("{name}.{i}.weight"), vec![io[1], io[0]]));
            out.push((format!("{name}.{i}.bias"), vec![io[1]]));
        }
    }
    if let Head::Gaussian { dim } = head {
        out.push(("log_std".into(), vec![dim]));
    }
    out
}

/// Writes the tensor `name` (PyTorch's layout) into its slot of the flat `params`.
fn place(net: &ActorCritic, name: &str, values: &[f32], params: &mut [f32]) {
    if name == "log_std" {
        let at = net.log_std.expect("a Gaussian head");
        params[at..at + values.len()].copy_from_slice(values);
        return;
    }
    let mut parts = name.split('.');
    let (which, i, kind) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse::<usize>().unwrap(),
        parts.next().unwrap(),
    );
    let mlp = if which == "actor" {
        &net.actor
    } else {
        &net.critic
    };
    let layer = mlp.layers[i];
    if kind == "bias" {
        params[layer.b..layer.b + layer.outputs].copy_from_slice(values);
    } else {
        for r in 0..layer.inputs {
            for c in 0..layer.outputs {
                params[layer.w + r * layer.outputs + c] = values[c * layer.inputs + r];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradgym_envs::rng;

    fn random_policy(head: Head) -> Policy {
        let net = ActorCritic::new(3, head, &[5, 4]);
        let params = crate::nn::init::actor_critic(&net, -0.3, &mut rng::stream(9, "init", 0));
        Policy::new(&net, params)
    }

    #[test]
    fn a_checkpoint_round_trips_bit_for_bit() {
        for head in [Head::Categorical { n: 3 }, Head::Gaussian { dim: 2 }] {
            let dir = crate::scratch::Scratch::new("ckpt", &head.outputs().to_string());
            let policy = random_policy(head);
            save(&dir, &policy, "X-v0", 7, 896).unwrap();
            let (back, config) = load(&dir).unwrap();
            assert_eq!(back.params, policy.params);
            assert_eq!(back.head, policy.head);
            assert_eq!(
                (config.iteration, config.global_step, config.hidden_sizes),
                (7, 896, vec![5, 4])
            );
            // PyTorch's layout: weight [outputs, inputs].
            let bytes = std::fs::read(dir.join("policy.safetensors")).unwrap();
            let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            assert_eq!(file.tensor("actor.0.weight").unwrap().shape(), [5, 3]);
            assert_eq!(file.tensor("critic.2.weight").unwrap().shape(), [1, 4]);
        }
    }

    #[test]
    fn a_checkpoint_that_does_not_fit_its_config_is_named() {
        let dir = crate::scratch::Scratch::new("ckpt", "bad");
        save(
            &dir,
            &random_policy(Head::Categorical { n: 3 }),
            "X-v0",
            1,
            1,
        )
        .unwrap();
        let json = std::fs::read_to_string(dir.join("policy.json")).unwrap();
        std::fs::write(
            dir.join("policy.json"),
            json.replace("\"obs_dim\": 3", "\"obs_dim\": 4"),
        )
        .unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("actor.0.weight") && e.contains("[5, 4]"), "{e}");
        // A Gaussian policy's weights under a categorical config of as many outputs: every
        // tensor the config asks for fits, and `log_std` is left over: refused, not dropped.
        save(
            &dir,
            &random_policy(Head::Gaussian { dim: 3 }),
            "X-v0",
            1,
            1,
        )
        .unwrap();
        let json = std::fs::read_to_string(dir.join("policy.json")).unwrap();
        let categorical = json.replace("\"gaussian\"", "\"categorical\"");
        assert_ne!(categorical, json);
        std::fs::write(dir.join("policy.json"), categorical).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("tensor `log_std` has no place"), "{e}");
    }
}
