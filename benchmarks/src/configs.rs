//! Run configurations: the tuned files shipped in `benchmarks/configs/` and the layered
//! resolution shared by `gradgym train` and `gradgym sweep`.
//!
//! Later layers win: `TrainConfig::default()` (CleanRL's `ppo.py`) → the shipped file for
//! (env, algo), if any → the caller's layers in order. The result is validated.

use std::collections::BTreeMap;

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
    /// Where each key of `text` (`prefs.labels` for a table's key) was written in the user's
    /// file (`FILE:LINE`), for a layer cut out of a larger file (a sweep's `config` or `grid`
    /// table), whose `text` is not the file; empty otherwise.
    pub lines: BTreeMap<String, String>,
}

impl Layer {
    pub fn new(source: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            text: text.into(),
            lines: BTreeMap::new(),
        }
    }

    /// The layer with where each of its keys was written ([`Layer::lines`]).
    pub fn with_lines(mut self, lines: BTreeMap<String, String>) -> Self {
        self.lines = lines;
        self
    }
}

/// Where every key under `path` in the TOML `text` is written: `FILE:LINE` (the key's own
/// line; `file` names the file) by the key's dotted path below `path` (`prefs.labels` for
/// `path.prefs.labels`). `path` steps into tables by key and into arrays of tables by index
/// (`["runs", "0", "config"]`). Empty where `text` does not parse or has nothing there.
pub fn key_lines(text: &str, file: &str, path: &[&str]) -> BTreeMap<String, String> {
    use toml::de::{DeTable, DeValue};
    fn collect(
        table: &DeTable<'_>,
        prefix: &str,
        line_of: &dyn Fn(usize) -> String,
        out: &mut BTreeMap<String, String>,
    ) {
        for (key, value) in table.iter() {
            let name = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            out.insert(name.clone(), line_of(key.span().start));
            if let DeValue::Table(inner) = value.get_ref() {
                collect(inner, &name, line_of, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let Ok(root) = DeTable::parse(text) else {
        return out;
    };
    let line_of = |offset: usize| {
        let line = text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        format!("{file}:{}", line + 1)
    };
    let root = DeValue::Table(root.into_inner());
    let mut at = &root;
    for step in path {
        let next = match at {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, _)| k.get_ref() == step)
                .map(|(_, v)| v.get_ref()),
            DeValue::Array(a) => step
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(|v| v.get_ref()),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return out,
        }
    }
    if let DeValue::Table(t) = at {
        collect(t, "", &line_of, &mut out);
    }
    out
}

/// Whether `value` is an integer that TOML cannot hold (it takes signed 64-bit integers).
fn integer_past_toml(value: &str) -> bool {
    let digits = value.trim().replace('_', "");
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(&digits);
    !unsigned.is_empty()
        && unsigned.chars().all(|c| c.is_ascii_digit())
        && digits.parse::<i64>().is_err()
}

/// Whether `value` is a number too large for a float64 (`1e999`): TOML cannot hold it, and
/// it would otherwise be read as a string.
fn float_past_toml(value: &str) -> bool {
    let v = value.trim().replace('_', "");
    v.chars().any(|c| c.is_ascii_digit()) && v.parse::<f64>().is_ok_and(f64::is_infinite)
}

/// Why `value`, written as a TOML array or inline table (`[…]`, `{…}`), is not one. `None`
/// where it parses or is not written so.
fn bad_toml_structure(value: &str) -> Option<String> {
    let v = value.trim_start();
    if !(v.starts_with('[') || v.starts_with('{')) {
        return None;
    }
    let e = format!("v = {value}").parse::<toml::Table>().err()?;
    Some(e.message().trim().to_string())
}

/// Why a flag's `value` (a config flag, `--set`) cannot be the TOML value it is written as:
/// an array or inline table that does not parse, an integer past TOML's 64 bits, or a float
/// past float64's range. Both would
/// otherwise be read as a string and refused as one, which misleads. `None` where it is fine.
pub fn flag_value_problem(value: &str) -> Option<String> {
    if let Some(why) = bad_toml_structure(value) {
        return Some(format!("not a TOML value: {why}"));
    }
    if float_past_toml(value) {
        return Some(format!(
            "a number past what a TOML config holds (a float64: at most about ±{:e})",
            f64::MAX
        ));
    }
    integer_past_toml(value).then(|| {
        format!(
            "an integer past what a TOML config holds ({} to {})",
            i64::MIN,
            i64::MAX
        )
    })
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
            .map_err(|e| located(e, layer))?;
        sources.push(layer.source.clone());
    }
    config.env_id = env_id.to_string();
    config.algo = algo;
    config
        .validate()
        .map_err(|e| match where_set(layers, e.field) {
            Some(at) => anyhow::anyhow!("{at}: {e}"),
            None => anyhow::Error::new(e),
        })?;
    Ok((config, sources))
}

/// The key a TOML error of the merged config is about: `in `prefs`` and `unknown field
/// `labls`` give `prefs.labls`; `in `gamma`` gives `gamma`.
fn field_of_toml_error(message: &str) -> Option<String> {
    let within = message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
        .map(String::from);
    let unknown = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(f, _)| f.to_string());
    match (within, unknown) {
        (Some(w), Some(u)) => Some(format!("{w}.{u}")),
        (w, u) => u.or(w),
    }
}

/// A type or unknown-key error of one layer, with the line of the key where the layer is a
/// file (`FILE:LINE: config field `gamma`: invalid type ...`); as it came otherwise.
pub fn located(message: String, layer: &Layer) -> anyhow::Error {
    let prefix = format!("{}: ", layer.source);
    if let (Some(field), Some(rest)) =
        (field_of_toml_error(&message), message.strip_prefix(&prefix))
    {
        // The first line says what is wrong; `in `key`` is said by naming the field.
        let what = rest.lines().next().unwrap_or(rest);
        let at = where_set(std::slice::from_ref(layer), &field).unwrap_or(layer.source.clone());
        return if what.starts_with("unknown field") {
            // The key with its table: `prefs.labls`.
            let leaf = field.rsplit('.').next().unwrap_or(&field);
            let what = what.replacen(&format!("`{leaf}`"), &format!("`{field}`"), 1);
            anyhow::anyhow!("{at}: {what}")
        } else {
            anyhow::anyhow!("{at}: config field `{field}`: {what}")
        };
    }
    anyhow::Error::msg(message)
}

/// Where the last of `layers` that sets `field` (`prefs.labels` for a table's key) sets it:
/// `SOURCE:LINE`, or the source alone where the line cannot be told.
fn where_set(layers: &[Layer], field: &str) -> Option<String> {
    let path: Vec<&str> = field.split('.').collect();
    layers.iter().rev().find_map(|layer| {
        if let Some(at) = layer.lines.get(field) {
            return Some(at.clone());
        }
        let table: toml::Table = layer.text.parse().ok()?;
        let mut at = &table;
        for key in &path[..path.len() - 1] {
            at = at.get(*key)?.as_table()?;
        }
        at.get(*path.last()?)?;
        // The line of `key =` under the key's own `[table]` header (the top level for a
        // top-level key), or of `table.key =` or `table = {…}` at the top level.
        let key = *path.last()?;
        let table_name = path[..path.len() - 1].join(".");
        let sets = |l: &str, k: &str| {
            l.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        let mut section = String::new();
        let line = layer.text.lines().position(|l| {
            let l = l.trim_start();
            if let Some(header) = l.strip_prefix('[') {
                section = header
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                // A key that is itself a table (`[foo]`, `[[foo]]`, or `[foo.bar]` that makes
                // it): its header's line.
                return section == field || section.starts_with(&format!("{field}."));
            }
            if section == table_name {
                sets(l, key)
            } else {
                section.is_empty()
                    && (sets(l, field) || (!table_name.is_empty() && sets(l, &table_name)))
            }
        });
        // A file's line; the flags' layer is not a file the user wrote.
        Some(match line {
            Some(i) if layer.source.ends_with(".toml") => format!("{}:{}", layer.source, i + 1),
            _ => layer.source.clone(),
        })
    })
}

/// One command-line flag per [`TrainConfig`] field, made from [`TrainConfig::FIELDS`]: the
/// field `num_envs` is `--num-envs VALUE` (`--num_envs` is accepted too), its help is the
/// field's doc comment and its default the CleanRL default. A value is read as TOML where it
/// parses (numbers, booleans, arrays like `[64, 64]`) and as a string otherwise, then goes
/// through the same layer as a config file, so a bad value is named like a bad key.
#[derive(Clone, Debug, Default)]
pub struct ConfigFlags {
    /// `(field, value as given)`, in [`TrainConfig::FIELDS`] order.
    pub values: Vec<(&'static str, String)>,
}

impl ConfigFlags {
    /// The value given for `field`, if any.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }

    /// The flags as a config layer (`key = value` lines).
    pub fn layer(&self, source: &str) -> Layer {
        let lines: Vec<String> = self
            .values
            .iter()
            .map(|(field, value)| toml_line(field, value))
            .collect();
        Layer::new(source, lines.join("\n"))
    }
}

/// `num_envs` → `num-envs`.
fn kebab(name: &str) -> String {
    name.replace('_', "-")
}

/// The default of `field` as the help shows it.
fn default_text(field: &str) -> String {
    let table = toml::Table::try_from(TrainConfig::default()).expect("the defaults serialise");
    match table.get(field) {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "none".into(),
    }
}

/// Whether `field`'s default is an integer (else a float, a string, a list or unset).
fn default_is_integer(field: &str) -> bool {
    let table = toml::Table::try_from(TrainConfig::default()).expect("the defaults serialise");
    matches!(table.get(field), Some(toml::Value::Integer(_)))
}

/// Flags that are more than a config field's name, by field.
const ALIASES: [(&str, &str); 1] = [("env_id", "env")];

impl clap::FromArgMatches for ConfigFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ConfigFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for field in TrainConfig::FIELDS {
            if let Some(v) = matches.get_one::<String>(field.name) {
                let mut v = v.clone();
                // A float field takes a long integer as the float it is (1e20 written out).
                if integer_past_toml(&v) && !default_is_integer(field.name) {
                    v = format!("{}.0", v.trim().replace('_', ""));
                }
                if let Some(why) = flag_value_problem(&v) {
                    return Err(clap::Error::raw(
                        clap::error::ErrorKind::ValueValidation,
                        format!("--{} {v}: {why}", kebab(field.name)),
                    ));
                }
                self.values.retain(|(f, _)| *f != field.name);
                self.values.push((field.name, v));
            }
        }
        Ok(())
    }
}

impl clap::Args for ConfigFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for field in TrainConfig::FIELDS {
            let doc: Vec<&str> = field.doc.lines().map(str::trim).collect();
            let summary = doc.join(" ");
            // clap keeps `&'static str`s; the flag names are made once per process.
            let long: &'static str = Box::leak(kebab(field.name).into_boxed_str());
            let mut arg = clap::Arg::new(field.name)
                .long(long)
                .value_name("VALUE")
                .help(format!("{summary} [default: {}]", default_text(field.name)))
                .allow_negative_numbers(true)
                .allow_hyphen_values(true)
                .help_heading("Config (one flag per field; see --print-config)");
            if long != field.name {
                arg = arg.alias(field.name);
            }
            for (f, alias) in ALIASES {
                if f == field.name {
                    arg = arg.visible_alias(alias);
                }
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod integer_tests {
    use super::integer_past_toml;

    #[test]
    fn integers_past_tomls_are_told_from_strings_and_from_integers_it_holds() {
        for v in [
            "9223372036854775808",
            "-9223372036854775809",
            "1_000_000_000_000_000_000_000",
        ] {
            assert!(integer_past_toml(v), "{v}");
        }
        assert!(integer_past_toml(&"9".repeat(60)));
        assert!(super::bad_toml_structure("[9223372036854775808]").is_some());
        assert!(super::bad_toml_structure("{ labels = 18446744073709551616 }").is_some());
        assert!(super::bad_toml_structure("[64, 64]").is_none());
        assert!(super::bad_toml_structure("cuda").is_none());
        for v in [
            "9223372036854775807",
            "-9223372036854775808",
            "0",
            "1e30",
            "cuda",
            "[1, 2]",
            "",
            "+-5",
        ] {
            assert!(!integer_past_toml(v), "{v}");
        }
    }
}
