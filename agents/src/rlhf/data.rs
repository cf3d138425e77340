//! Preference data as JSONL, one comparison per line, in the field's usual form (TRL's explicit
//! prompt, `chosen`, `rejected`):
//!
//! ```text
//! {"prompt": "<bos> review of the phone positive : <sep>", "chosen": "the phone is great . <eos>", "rejected": "bad bad bad"}
//! {"prompt": "...", "chosen": "...", "rejected": "...", "tie": true}
//! {"prompt": "...", "responses": ["...", "...", "...", "..."], "best": 2}
//! {"prompt": "...", "responses": ["...", "...", "..."], "mu": [0.5, 0.5, 0.0]}
//! ```
//!
//! - Text is words of the review language separated by spaces. The prompt's `<bos>` and `<sep>`
//!   may be left out (they are added). A response is exactly the tokens generated: `<eos>`
//!   ends a finished response; one without it was cut at the maximum length.
//! - `tie: true` gives μ = (½, ½) (Christiano et al. 2017). The K-way form names the best of
//!   K responses (Ziegler et al. 2019) by its index, or gives the label distribution `mu`.
//! - A line that is not a JSON object, lacks a field, gives one twice, has an unknown one or one
//!   of the wrong type, holds a word outside the vocabulary, or a response longer than
//!   `rl.max_response` allows, is an error naming the file, the line and the field.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use gradgym_envs::text::{BOS, EOS, Grammar, PROMPT_LEN, SEP};
use serde_json::{Map, Value, json};

/// One labelled comparison: K responses to a prompt and the label distribution μ over them.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The prompt's tokens (`<bos>` … `<sep>`).
    pub prompt: Vec<u32>,
    /// K ≥ 2 responses (each at least one token).
    pub responses: Vec<Vec<u32>>,
    /// μ over the responses (sums to 1).
    pub mu: Vec<f64>,
}

/// How many of `total` comparisons are held out for accuracy at share `held_out`: the share
/// rounded, leaving at least one to train on.
pub fn held_out_count(total: usize, held_out: f64) -> usize {
    (((total as f64) * held_out).round() as usize).min(total.saturating_sub(1))
}

impl Comparison {
    /// Whether no single response holds the most label mass.
    pub fn is_tie(&self) -> bool {
        let top = self.mu.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        self.mu.iter().filter(|&&m| m == top).count() > 1
    }
}

/// A bad line of a preference file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: field `{field}`: {message}")]
pub struct DataError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// Reads a preference file. `max_response` is the longest response the model can score,
/// `rl.max_response`'s.
pub fn read_jsonl(path: &Path, grammar: &Grammar, max_response: usize) -> Result<Vec<Comparison>> {
    read_jsonl_within(path, grammar, max_response, "rl.max_response")
}

/// [`read_jsonl`] with the longest response named by `limit` in the error a longer one gets
/// (`rl.max_response`, or the context of the models that fit on the file).
pub fn read_jsonl_within(
    path: &Path,
    grammar: &Grammar,
    max_response: usize,
    limit: &str,
) -> Result<Vec<Comparison>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path.display().to_string();
    // A byte-order mark, as some editors write, is not part of the first line.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|e| DataError {
            file: file.clone(),
            line: i + 1,
            field: "(line)".into(),
            message: format!("not UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        })?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        // One inside the file (two files joined with `cat`, each with its mark) is named, not
        // left to read as "not JSON".
        if line.starts_with('\u{feff}') {
            return Err(DataError {
                file: file.clone(),
                line: i + 1,
                field: "(line)".into(),
                message: "starts with a byte-order mark (U+FEFF), which only a file's first line may; were two files joined?".into(),
            }
            .into());
        }
        out.push(parse_line(line, grammar, (max_response, limit)).map_err(
            |(field, message)| DataError {
                file: file.clone(),
                line: i + 1,
                field,
                message,
            },
        )?);
    }
    if out.is_empty() {
        anyhow::bail!("{file}: no comparisons (an empty preference file)");
    }
    Ok(out)
}

fn parse_line(
    line: &str,
    grammar: &Grammar,
    (max_response, limit): (usize, &str),
) -> Result<Comparison, (String, String)> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        // The line is the file's line, named beside this: serde's own "line 1" is dropped.
        let text = e.to_string();
        let what = text
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&text);
        let message = if !e.is_eof() {
            format!("not JSON: {what} at column {}", e.column())
        } else if matches!(line.trim(), "{" | "[") {
            // A pretty-printed JSON file opens its object or array alone on its first line.
            "not JSON: an opening bracket alone (one JSON object per line: JSONL, not a \
             pretty-printed JSON file)"
                .into()
        } else {
            format!(
                "not JSON: the line ends inside a value ({what}, after {} characters): cut \
                 short?",
                line.chars().count()
            )
        };
        ("(line)".to_string(), message)
    })?;
    let Value::Object(mut obj) = value else {
        return Err((
            "(line)".into(),
            format!("expected a JSON object, got {}", kind(&value)),
        ));
    };
    // JSON parsers keep the last of two equal keys; a line with two is refused instead, since
    // which one the writer meant is unknown.
    if let Err(e) = serde_json::from_str::<UniqueKeys>(line) {
        let message = e.to_string();
        let key = message
            .strip_prefix("duplicate field `")
            .and_then(|m| m.split('`').next())
            .unwrap_or("(line)");
        return Err((key.to_string(), "given twice on the line".into()));
    }
    // A misspelt field is named before the field it misses is said to be missing.
    let known = [
        "prompt",
        "chosen",
        "rejected",
        "tie",
        "responses",
        "best",
        "mu",
    ];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err((
            k.clone(),
            format!("unknown field (known: {})", known.join(", ")),
        ));
    }
    // A null is a gap (a table of mixed pairwise, tie and K-way rows written out, as pandas
    // writes a column's gaps): the field counts as not given. The prompt is always needed.
    obj.retain(|k, v| k == "prompt" || !v.is_null());
    let prompt = prompt_field(&obj, grammar)?;
    let response = |field: &str, v: &Value| -> Result<Vec<u32>, (String, String)> {
        let Value::String(s) = v else {
            return Err((field.into(), format!("expected a string, got {}", kind(v))));
        };
        let tokens = grammar
            .vocab
            .encode(s)
            .map_err(|e| (field.to_string(), e.to_string()))?;
        if tokens.is_empty() {
            return Err((field.into(), "an empty response".into()));
        }
        // The prompt repeated at the head of the response (TRL's implicit-prompt form, or a
        // `prompt` column copied out without being cut from the responses) would be scored as
        // prompt + prompt + response. The review language's responses never begin with a
        // prompt's words (`review of the ...`).
        let words = &prompt[1..prompt.len() - 1];
        if tokens
            .strip_prefix(&[BOS])
            .unwrap_or(&tokens)
            .starts_with(words)
        {
            return Err((
                field.into(),
                "begins with the line's prompt (TRL's implicit-prompt form, or a prompt not \
                 cut from the responses); give the response alone"
                    .into(),
            ));
        }
        // A response is what the model generated, and generation stops at `<eos>`: tokens
        // after it (padding, in many exports) would move the reward model's read-out off the
        // response's last real token. Any other token, special ones included, is a token the
        // model can sample.
        if let Some(at) = tokens.iter().position(|&t| t == EOS)
            && at + 1 < tokens.len()
        {
            return Err((
                field.into(),
                format!(
                    "{} token(s) after `<eos>`; it must be the response's last token",
                    tokens.len() - at - 1
                ),
            ));
        }
        if tokens.len() > max_response {
            return Err((
                field.into(),
                format!(
                    "{} tokens; {limit} allows at most {max_response}",
                    tokens.len()
                ),
            ));
        }
        Ok(tokens)
    };
    if obj.contains_key("responses") {
        for f in ["chosen", "rejected", "tie"] {
            if obj.contains_key(f) {
                return Err((
                    f.into(),
                    "the K-way form (`responses`) does not take it".into(),
                ));
            }
        }
        let Some(Value::Array(items)) = obj.get("responses") else {
            return Err(("responses".into(), "expected an array of strings".into()));
        };
        if items.len() < 2 {
            return Err(("responses".into(), "a comparison needs at least 2".into()));
        }
        let responses = items
            .iter()
            .enumerate()
            .map(|(j, v)| response(&format!("responses[{j}]"), v))
            .collect::<Result<Vec<_>, _>>()?;
        let k = responses.len();
        let mu = match (obj.get("best"), obj.get("mu")) {
            (Some(b), None) => {
                // An integer written as a float (`1.0`, as pandas writes a column with
                // gaps) is that index.
                let index = b.as_u64().or_else(|| {
                    b.as_f64()
                        .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < k as f64)
                        .map(|x| x as u64)
                });
                let j = index.filter(|&j| (j as usize) < k).ok_or((
                    "best".to_string(),
                    format!("expected an index in 0..{k}, got {b}"),
                ))?;
                (0..k)
                    .map(|i| if i as u64 == j { 1.0 } else { 0.0 })
                    .collect()
            }
            (None, Some(Value::Array(m))) => {
                let mu: Option<Vec<f64>> = m.iter().map(|x| x.as_f64()).collect();
                let mu = mu
                    .filter(|mu| mu.len() == k && mu.iter().all(|&x| x >= 0.0))
                    .ok_or(("mu".to_string(), format!("expected {k} numbers ≥ 0")))?;
                let s: f64 = mu.iter().sum();
                if (s - 1.0).abs() > 1e-6 {
                    return Err(("mu".into(), format!("sums to {s}, not 1")));
                }
                // Within 1e-6 of 1: made to sum to 1, so that no share passes 1. A sum within
                // rounding of 1 (1e-12: a few ulps, as any μ written by a program sums) is kept
                // bit for bit, so that labels read back as they were written.
                if (s - 1.0).abs() > 1e-12 {
                    mu.iter().map(|x| x / s).collect()
                } else {
                    mu
                }
            }
            (None, Some(v)) => {
                return Err(("mu".into(), format!("expected an array, got {}", kind(v))));
            }
            (Some(_), Some(_)) => {
                return Err(("mu".into(), "give `best` or `mu`, not both".into()));
            }
            (None, None) => return Err(("best".into(), "missing (or give `mu`)".into())),
        };
        return Ok(Comparison {
            prompt,
            responses,
            mu,
        });
    }
    let chosen = response("chosen", obj.get("chosen").ok_or(missing("chosen"))?)?;
    let rejected = response("rejected", obj.get("rejected").ok_or(missing("rejected"))?)?;
    for f in ["best", "mu"] {
        if obj.contains_key(f) {
            return Err((
                f.into(),
                "only the K-way form (`responses`) takes it".into(),
            ));
        }
    }
    let tie = match obj.get("tie") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err((
                "tie".into(),
                format!("expected true or false, got {}", kind(v)),
            ));
        }
    };
    Ok(Comparison {
        prompt,
        responses: vec![chosen, rejected],
        mu: if tie { vec![0.5, 0.5] } else { vec![1.0, 0.0] },
    })
}

/// A JSON object whose keys are checked to be distinct (the values are skipped).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(UniqueKeys)
            }
        }
        d.deserialize_map(Keys)
    }
}

fn missing(field: &str) -> (String, String) {
    (field.into(), "missing".into())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn prompt_field(obj: &Map<String, Value>, grammar: &Grammar) -> Result<Vec<u32>, (String, String)> {
    let v = obj.get("prompt").ok_or(missing("prompt"))?;
    let Value::String(s) = v else {
        return Err((
            "prompt".into(),
            format!("expected a string, got {}", kind(v)),
        ));
    };
    let mut tokens = grammar
        .vocab
        .encode(s)
        .map_err(|e| ("prompt".to_string(), e.to_string()))?;
    if tokens.first() != Some(&BOS) {
        tokens.insert(0, BOS);
    }
    if tokens.last() != Some(&SEP) {
        tokens.push(SEP);
    }
    if tokens.len() != PROMPT_LEN || grammar.parse_prompt(&tokens).is_none() {
        return Err((
            "prompt".into(),
            format!(
                "`{}` is not a prompt of the review language (`review of the SUBJECT positive|negative :`)",
                gradgym_envs::text::vocab::shortened(s)
            ),
        ));
    }
    Ok(tokens)
}

/// One comparison as a JSONL line: the pairwise form (`chosen`, `rejected`, `tie`) where it
/// says all of the label (K = 2 with μ one-hot or (½, ½)), else the K-way form, with `best`
/// for a one-hot μ and `mu` itself otherwise (a soft two-way label stays soft).
pub fn to_json(c: &Comparison, grammar: &Grammar) -> Value {
    let text = |t: &[u32]| grammar.vocab.decode(t).expect("tokens of the vocabulary");
    let pairwise = c.responses.len() == 2
        && (c.mu[0] == c.mu[1] || c.mu.contains(&1.0) && c.mu.contains(&0.0));
    if pairwise {
        let (w, l) = if c.mu[1] > c.mu[0] { (1, 0) } else { (0, 1) };
        let mut v = json!({
            "prompt": text(&c.prompt),
            "chosen": text(&c.responses[w]),
            "rejected": text(&c.responses[l]),
        });
        if c.mu[0] == c.mu[1] {
            v["tie"] = json!(true);
        }
        v
    } else {
        let responses: Vec<String> = c.responses.iter().map(|r| text(r)).collect();
        let one_hot = c.mu.iter().filter(|&&m| m == 1.0).count() == 1;
        if one_hot {
            let best = c.mu.iter().position(|&m| m == 1.0).unwrap();
            json!({"prompt": text(&c.prompt), "responses": responses, "best": best})
        } else {
            json!({"prompt": text(&c.prompt), "responses": responses, "mu": c.mu})
        }
    }
}

/// Writes comparisons as JSONL (atomically).
pub fn write_jsonl(path: &Path, comparisons: &[Comparison], grammar: &Grammar) -> Result<()> {
    let mut buf = Vec::new();
    for c in comparisons {
        writeln!(buf, "{}", to_json(c, grammar))?;
    }
    crate::run_folder::write_atomic(path, &buf)
}
