//! Run configurations: the tuned files shipped in `benchmarks/configs/` and the layered
//! resolution shared by `gradgym train` and `gradgym sweep`.
//!
//! Later layers win: `TrainConfig::default()` (CleanRL's `ppo.py`) → the shipped file for
//! (env, algo), if any → the caller's layers in order. The result is validated.

use anyhow::Result;
use gradgym_agents::config::{Algo, TrainConfig};

/// `("<env>-<algo>", contents of benchmarks/configs/<env>-<algo>.toml)`.
macro_rules! shipped {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../configs/", $name, ".toml")))),*]
    };
}

/// The tuned configurations shipped with gradgym, by `<env id>-<algo>`.
pub const BUILTIN_CONFIGS: [(&str, &str); 8] = shipped!(
    "CartPole-v1-ppo",
    "CartPole-v1-a2c",
    "CartPole-v1-reinforce",
    "Acrobot-v1-ppo",
    "Acrobot-v1-a2c",
    "Acrobot-v1-reinforce",
    "Pendulum-v1-ppo",
    "Pendulum-v1-a2c",
);

/// The shipped config for (env, algo), if any, as (path in the repository, contents).
pub fn builtin_config(env_id: &str, algo: Algo) -> Option<(String, &'static str)> {
    let name = format!("{env_id}-{}", algo.name());
    BUILTIN_CONFIGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| (format!("benchmarks/configs/{n}.toml"), *text))
}

/// One layer of configuration: TOML text and where it came from (named in errors).
#[derive(Clone, Debug)]
pub struct Layer {
    pub source: String,
    pub text: String,
}

impl Layer {
    pub fn new(source: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            text: text.into(),
        }
    }
}

/// `key = value` as TOML: the value as written if it parses (numbers, booleans, arrays),
/// otherwise as a string.
pub fn toml_line(key: &str, value: &str) -> String {
    let literal = format!("{key} = {value}");
    if literal.parse::<toml::Table>().is_ok() {
        literal
    } else {
        format!("{key} = {value:?}")
    }
}

/// Defaults → shipped config for (env, algo) → `layers`, then `env_id` and `algo` pinned.
/// Returns the validated config and the sources applied, in order.
pub fn resolve(env_id: &str, algo: Algo, layers: &[Layer]) -> Result<(TrainConfig, Vec<String>)> {
    let mut sources = vec!["defaults".to_string()];
    let mut config = TrainConfig::default();
    if let Some((name, text)) = builtin_config(env_id, algo) {
        config = config
            .overlay_toml(text, &name)
            .map_err(anyhow::Error::msg)?;
        sources.push(name);
    }
    for layer in layers {
        config = config
            .overlay_toml(&layer.text, &layer.source)
            .map_err(anyhow::Error::msg)?;
        sources.push(layer.source.clone());
    }
    config.env_id = env_id.to_string();
    config.algo = algo;
    config.validate()?;
    Ok((config, sources))
}
