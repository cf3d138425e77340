//! `gradgym rlhf` end to end on a tiny config: the stages alone (sft → rm with the user's
//! `--data` → rl and bon on those files → sample), the run folder's files, and bad input
//! refused with exit 2 naming the file, line or field before anything is written.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{gradgym, partial, summary, text};

fn scratch(name: &str) -> common::Scratch {
    common::scratch("cli-rlhf", name)
}

const TINY: &str = r#"
threads = 1
[model]
context = 24
width = 32
[pretrain]
steps = 30
[sft]
steps = 20
[labels]
comparisons = 40
[reward_model]
epochs = 1
normalize_samples = 16
[rl]
updates = 2
batch_size = 8
max_response = 16
[eval]
prompts = 8
every = 1
best_of_n = [1, 2, 4]
samples_per_prompt = 4
"#;

fn config(dir: &Path, extra: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("config.toml");
    fs::write(&path, format!("{TINY}\n{extra}")).unwrap();
    path
}

fn run(args: &[&str]) -> std::process::Output {
    let mut all = vec!["rlhf"];
    all.extend_from_slice(args);
    gradgym(&all)
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", text(o));
}

/// An `sft` run and an `rm` run on it, with the config `c`, into `dir/sft` and `dir/rm`.
fn sft_and_rm(dir: &Path, c: &str) -> (PathBuf, PathBuf) {
    let (sft, rm) = (dir.join("sft"), dir.join("rm"));
    let (s, r) = (sft.to_str().unwrap(), rm.to_str().unwrap());
    ok(&run(&["sft", "--config", c, "--out", s, "--quiet"]));
    ok(&run(&[
        "rm", "--config", c, "--sft", s, "--out", r, "--quiet",
    ]));
    (sft, rm)
}

const GOOD: &str = r#"{"prompt": "review of the phone positive :", "chosen": "the phone is great . <eos>", "rejected": "the phone is awful . <eos>"}"#;

#[test]
fn each_stage_runs_alone_on_the_files_of_the_one_before_and_a_users_data() {
    let dir = scratch("stages");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let sft = dir.join("sft-run");
    ok(&run(&[
        "sft",
        "--config",
        c,
        "--out",
        sft.to_str().unwrap(),
        "--quiet",
    ]));
    for f in [
        "sft/model.safetensors",
        "sft/model.json",
        "pretrain/model.json",
        "lm.csv",
    ] {
        assert!(sft.join(f).exists(), "{f}");
    }
    // A user's preference file, with a tie and a K-way line.
    let data = dir.join("prefs.jsonl");
    fs::write(
        &data,
        format!(
            "{GOOD}\n{}\n{}\n",
            r#"{"prompt": "<bos> review of the phone negative : <sep>", "chosen": "the phone is awful . <eos>", "rejected": "the phone is simple . <eos>", "tie": true}"#,
            r#"{"prompt": "review of the phone negative :", "responses": ["bad . <eos>", "the phone is awful . <eos>", "great"], "best": 1}"#
        )
        .repeat(5),
    )
    .unwrap();
    let rm = dir.join("rm-run");
    ok(&run(&[
        "rm",
        "--config",
        c,
        "--sft",
        sft.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        rm.to_str().unwrap(),
        "--quiet",
    ]));
    let labels = fs::read_to_string(rm.join("labels.jsonl")).unwrap();
    let held = fs::read_to_string(rm.join("held_out.jsonl")).unwrap();
    assert_eq!(labels.lines().count() + held.lines().count(), 15);
    assert!(labels.contains("\"tie\":true") || held.contains("\"tie\":true"));
    assert!(labels.contains("\"best\":1") || held.contains("\"best\":1"));
    let manifest = fs::read_to_string(rm.join("manifest.json")).unwrap();
    assert!(manifest.contains("prefs.jsonl"), "{manifest}");
    // `rl` on that SFT model and the reward model `rm_dir`, into `dest`.
    let rl_on = |rm_dir: &Path, extra: &[&str], dest: &Path| {
        let (s, r) = (sft.to_str().unwrap(), rm_dir.to_str().unwrap());
        let mut args = vec!["rl", "--config", c, "--sft", s, "--rm", r];
        args.extend_from_slice(extra);
        args.extend(["--out", dest.to_str().unwrap(), "--quiet"]);
        run(&args)
    };
    let rl_stage = |extra: &[&str], dest: &Path| ok(&rl_on(&rm, extra, dest));
    // A reward model's two files, from folder `from` into folder `to`.
    let copy_model = |from: &Path, to: &Path| {
        fs::create_dir_all(to).unwrap();
        for f in ["model.json", "model.safetensors"] {
            fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    let rl = dir.join("rl-run");
    rl_stage(&[], &rl);
    let metrics = fs::read_to_string(rl.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    for col in [
        "objective/scores",
        "objective/gold_scores",
        "objective/kl",
        "objective/kl_k3",
        "objective/entropy",
        "response_length",
        "eos_fraction",
        "beta",
        "policy/clipfrac_avg",
        "policy/approxkl_avg",
        "val/error",
    ] {
        assert!(
            header.split(',').any(|h| h == col),
            "{col} missing: {header}"
        );
    }
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    assert!(rl.join("policy/model.safetensors").exists());
    // Online rounds on a reward model from another run start from that run's labels.
    // (Nothing held out of round 2's labels: an empty held_out_round2.jsonl.)
    let online = dir.join("rl-online");
    rl_stage(
        &["--set", "rl.rounds=2", "--set", "labels.held_out=0"],
        &online,
    );
    assert_eq!(
        fs::read_to_string(online.join("held_out_round2.jsonl")).unwrap(),
        ""
    );
    let online_summary = summary(&online);
    let new = fs::read_to_string(online.join("labels_round2.jsonl")).unwrap();
    assert_eq!(
        online_summary["rm_comparisons_round1"],
        labels.lines().count()
    );
    assert_eq!(
        online_summary["rm_comparisons_round2"],
        labels.lines().count() + new.lines().count()
    );
    // That run keeps the labels it started from, and its round-2 reward model brings them and
    // round 2's to the next run's refits.
    assert_eq!(
        fs::read_to_string(online.join("labels.jsonl")).unwrap(),
        labels
    );
    let again = dir.join("rl-online-again");
    ok(&rl_on(
        &online.join("reward_model_round2"),
        &["--set", "rl.rounds=2"],
        &again,
    ));
    let again_summary = summary(&again);
    assert_eq!(
        again_summary["rm_comparisons_round1"],
        labels.lines().count() + new.lines().count()
    );
    // And it records what that round's model was fitted on and how it scored, not round 1's.
    assert_eq!(
        again_summary["reward_model_comparisons"],
        online_summary["rm_comparisons_round2"]
    );
    assert_eq!(
        again_summary["reward_model_rm_gold_accuracy"],
        online_summary["rm_gold_accuracy_round2"]
    );
    assert_eq!(
        summary(&online)["reward_model_comparisons"],
        labels.lines().count()
    );
    // The refits score those labels with the reward model, so its context bounds them, not
    // a shorter `rl.max_response` of the policy (round 2's responses run to 16 tokens).
    let longest = new
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ["chosen", "rejected"].map(|k| v[k].as_str().map_or(0, |r| r.split(' ').count()))
        })
        .max()
        .unwrap();
    assert!(longest > 5, "{new}");
    // The online run itself as --rm: its reward models are per round, and the last is named.
    let o = rl_on(&online, &[], &dir.join("rl-on-online"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "last round's reward model (--rm) is in {}",
            online.join("reward_model_round2").display()
        )),
        "{}",
        text(&o)
    );
    // A reward model of a wider context (the committed study's, 32) than the SFT model's (24):
    // the refits build on the SFT body, so its context bounds the labels, and the committed
    // labels of up to 24 tokens are refused before the run, naming that bound (they made the
    // refit panic after round 1).
    let wide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/rlhf/rm-labels2000");
    let o = rl_on(
        &wide,
        &["--set", "rl.rounds=2"],
        &dir.join("rl-online-wide"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            "the context of the SFT body the refits build on (24) less the 8-token prompt allows \
             at most 16"
        ),
        "{}",
        text(&o)
    );
    assert!(!dir.join("rl-online-wide").exists());
    let short = dir.join("rl-online-short");
    ok(&rl_on(
        &online.join("reward_model_round2"),
        &["--set", "rl.rounds=2", "--set", "rl.max_response=5"],
        &short,
    ));
    assert_eq!(
        summary(&short)["rm_comparisons_round1"],
        labels.lines().count() + new.lines().count()
    );
    // A label file gone from that run is caught by the count its summary.json keeps.
    let (old, round2) = (dir.join("rl-online-old"), "reward_model_round2");
    copy_model(&online.join(round2), &old.join(round2));
    for f in [
        "manifest.json",
        "summary.json",
        "labels_round2.jsonl",
        "held_out.jsonl",
        "held_out_round2.jsonl",
    ] {
        fs::copy(online.join(f), old.join(f)).unwrap();
    }
    let o = rl_on(
        &old.join(round2),
        &["--set", "rl.rounds=2"],
        &dir.join("rl-mismatch"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("rm_comparisons_round2"), "{}", text(&o));
    // A held-out file gone from a run's folder is named (the run writes one, even empty).
    fs::copy(online.join("labels.jsonl"), old.join("labels.jsonl")).unwrap();
    fs::remove_file(old.join("held_out_round2.jsonl")).unwrap();
    let o = rl_on(
        &old.join(round2),
        &["--set", "rl.rounds=2"],
        &dir.join("rl-no-held-out"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            "held_out_round2.jsonl is missing: the reward model of round 2 was measured on it"
        ),
        "{}",
        text(&o)
    );
    // So is a label gone from an `rm` stage's folder, whose summary.json counts its labels as
    // `comparisons`; and a summary.json cut short is named, not passed over.
    let short = dir.join("rm-short");
    copy_model(&rm.join("reward_model"), &short.join("reward_model"));
    for f in ["manifest.json", "summary.json", "held_out.jsonl"] {
        fs::copy(rm.join(f), short.join(f)).unwrap();
    }
    let first: Vec<&str> = labels.lines().skip(1).collect();
    fs::write(short.join("labels.jsonl"), first.join("\n") + "\n").unwrap();
    let o = rl_on(&short, &["--set", "rl.rounds=2"], &dir.join("rl-short"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("(comparisons)"), "{}", text(&o));
    fs::write(short.join("labels.jsonl"), &labels).unwrap();
    fs::write(short.join("summary.json"), "{\"status\": ").unwrap();
    let o = rl_on(&short, &[], &dir.join("rl-cut"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("summary.json is not valid JSON"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("rl-cut.partial").exists() && !dir.join("rl-cut").exists());
    // Copied out of its run folder, a round's reward model has no labels beside it: noted.
    let lone = dir.join("lone").join(round2);
    copy_model(&online.join(round2), &lone);
    let alone = dir.join("rl-lone");
    ok(&rl_on(&lone, &["--set", "rl.rounds=2"], &alone));
    assert_eq!(summary(&alone)["rm_comparisons_round1"], 0);
    // That run wrote its round's labels alone (no labels.jsonl, so no held_out.jsonl): its
    // round-2 reward model brings them to the next run.
    assert!(!alone.join("labels.jsonl").exists() && !alone.join("held_out.jsonl").exists());
    let after = dir.join("rl-after-lone");
    ok(&rl_on(
        &alone.join(round2),
        &["--set", "rl.rounds=2"],
        &after,
    ));
    assert_eq!(
        summary(&after)["rm_comparisons_round1"],
        summary(&alone)["rm_comparisons_round2"]
    );
    // `bon` on the SFT and reward models, into `dest`.
    let bon_stage = |extra: &[&str], dest: &Path| {
        let (s, r) = (sft.to_str().unwrap(), rm.to_str().unwrap());
        let mut args = vec!["bon", "--config", c, "--sft", s, "--rm", r];
        args.extend_from_slice(extra);
        args.extend(["--out", dest.to_str().unwrap()]);
        run(&args)
    };
    let bon = dir.join("bon-run");
    ok(&bon_stage(&["--quiet"], &bon));
    let table = fs::read_to_string(bon.join("best_of_n.csv")).unwrap();
    assert!(
        table.starts_with("n,proxy,gold,gold_ci,kl,kl_bound"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 4);
    let sample = dir.join("sample-run");
    let o = run(&[
        "sample",
        "--config",
        c,
        "--model",
        rl.to_str().unwrap(),
        "--rm",
        rm.to_str().unwrap(),
        "--samples",
        "3",
        "--out",
        sample.to_str().unwrap(),
    ]);
    ok(&o);
    // A stage that prints no progress line still names its run, once, before its end.
    let t = text(&o);
    let header = format!(
        "gradgym rlhf sample: seed 1, 3 samples → {}",
        sample.display()
    );
    assert_eq!(t.matches(&header).count(), 1, "{t}");
    assert!(t.find(&header) < t.find("done in"), "{t}");
    let samples = fs::read_to_string(sample.join("samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 3);
    // The manifest names the model sampled.
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(sample.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"], rl.to_str().unwrap(), "{manifest}");
    for line in samples.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["gold"].is_number() && v["proxy"].is_number(), "{line}");
    }
    // `[sample]` reaches the sampler: top-k 1 is greedy, so two seeds write the same texts
    // (without it they do not), and the run's config.toml records it.
    let texts = |seed: &str, extra: &[&str]| {
        let out = dir.join(format!("sample-{seed}-{}", extra.len()));
        let mut args = vec![
            "sample",
            "--config",
            c,
            "--model",
            rl.to_str().unwrap(),
            "--samples",
            "8",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        args.extend(extra);
        ok(&run(&args));
        let responses: Vec<String> = fs::read_to_string(out.join("samples.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["response"].to_string())
            .collect();
        (
            responses,
            fs::read_to_string(out.join("config.toml")).unwrap(),
        )
    };
    let greedy = ["--set", "sample.top_k=1"];
    let (a, config_a) = texts("2", &greedy);
    let (b, _) = texts("3", &greedy);
    assert_eq!(a, b, "greedy sampling depended on the seed");
    assert!(
        config_a.contains("[sample]") && config_a.contains("top_k = 1"),
        "{config_a}"
    );
    let (c2, config_c) = texts("2", &[]);
    let (c3, _) = texts("3", &[]);
    assert_ne!(c2, c3, "two seeds sampled the same texts");
    assert!(!config_c.contains("[sample]"), "{config_c}");
    // A stage that does not read `[sample]` says so rather than seeming to take it.
    let o = bon_stage(&["--set", "sample.top_k=1"], &dir.join("bon-greedy"));
    ok(&o);
    assert!(
        text(&o).contains("[sample] is read by `gradgym rlhf sample` alone"),
        "{}",
        text(&o)
    );
    // `rl.kl_coef` under the clipped surrogate is PPO-KL's, unread: TRL's `kl_coef` (the KL
    // to the reference) brought over is pointed at `rl.beta`. Under PPO-KL it is read, quietly.
    let kl_note = "rl.kl_coef = 0.05 is PPO-KL's penalty toward the old policy, read only by \
                   rl.algo = \"ppo\" with rl.ppo_loss = \"kl\"; the KL penalty toward the SFT \
                   reference is rl.beta";
    for (extra, noted) in [
        (&[][..], true),
        (&["--set", "rl.ppo_loss=\"kl\""][..], false),
    ] {
        let (s, r) = (sft.to_str().unwrap(), rm.to_str().unwrap());
        let out = dir.join(format!("rl-kl-coef-{noted}"));
        let mut args = vec!["rl", "--config", c, "--sft", s, "--rm", r];
        args.extend(["--set", "rl.kl_coef=0.05", "--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = run(&args);
        ok(&o);
        assert_eq!(text(&o).contains(kl_note), noted, "{}", text(&o));
    }
    fs::remove_dir_all(dir).ok();
}

/// Runs `rlhf rm` on `lines` and returns its (exit code, text); nothing may be written.
fn bad_data(name: &str, lines: &str) -> (Option<i32>, String, PathBuf) {
    let dir = scratch(name);
    let cfg = config(&dir, "");
    let data = dir.join("bad.jsonl");
    fs::write(&data, lines).unwrap();
    let out = dir.join("out");
    let o = run(&[
        "rm",
        "--config",
        cfg.to_str().unwrap(),
        "--sft",
        dir.join("no-sft-needed-to-fail").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    // Nor may it announce a run (the header's "→ OUT") that never started.
    assert!(!text(&o).contains('→'), "{}", text(&o));
    (o.status.code(), text(&o), data)
}

#[test]
fn a_bad_preference_line_is_named_by_file_line_and_field() {
    for (name, second, want) in [
        (
            "array",
            "[1, 2]",
            "field `(line)`: expected a JSON object, got an array",
        ),
        (
            "no-chosen",
            r#"{"prompt": "review of the phone positive :", "rejected": "bad . <eos>"}"#,
            "field `chosen`: missing",
        ),
        (
            "unknown-word",
            r#"{"prompt": "review of the phone positive :", "chosen": "the phone is splendiferous", "rejected": "bad"}"#,
            "field `chosen`",
        ),
        (
            "padding",
            r#"{"prompt": "review of the phone positive :", "chosen": "the phone is great . <eos> <pad>", "rejected": "bad . <eos>"}"#,
            "field `chosen`: 1 token(s) after `<eos>`",
        ),
        (
            "twice",
            r#"{"prompt": "review of the phone positive :", "chosen": "good . <eos>", "chosen": "bad . <eos>", "rejected": "bad . <eos>"}"#,
            "field `chosen`: given twice on the line",
        ),
        (
            "after-eos",
            r#"{"prompt": "review of the phone positive :", "chosen": "great . <eos>", "rejected": "bad . <eos> bad"}"#,
            "field `rejected`: 1 token(s) after `<eos>`",
        ),
        (
            "bad-prompt",
            r#"{"prompt": "tell me a story", "chosen": "bad", "rejected": "bad"}"#,
            "field `prompt`",
        ),
        (
            "implicit-prompt",
            r#"{"prompt": "review of the phone positive :", "chosen": "review of the phone positive : the phone is great . <eos>", "rejected": "bad . <eos>"}"#,
            "field `chosen`: begins with the line's prompt",
        ),
        // A line cut short (what a killed exporter leaves) is said to be, not taken for a
        // pretty-printed file; a misspelt field is named, not the field it misses.
        (
            "cut-short",
            r#"{"prompt": "review of the phone positive :", "chosen": "the phone is gr"#,
            "field `(line)`: not JSON: the line ends inside a value",
        ),
        (
            "misspelt",
            r#"{"promt": "review of the phone positive :", "chosen": "great . <eos>", "rejected": "bad . <eos>"}"#,
            "field `promt`: unknown field",
        ),
        (
            "implicit-prompt-bos",
            r#"{"prompt": "review of the phone positive :", "chosen": "great . <eos>", "rejected": "<bos> review of the phone positive : <sep> bad . <eos>"}"#,
            "field `rejected`: begins with the line's prompt",
        ),
    ] {
        let (code, t, data) = bad_data(name, &format!("{GOOD}\n{second}\n"));
        assert_eq!(code, Some(2), "{name}: {t}");
        let at = format!("{}:2: {want}", data.display());
        assert!(t.contains(&at), "{name}: expected `{at}` in {t}");
        if name == "unknown-word" {
            assert!(t.contains("splendiferous"), "{t}");
        }
    }
    // A file that is not there, or a folder, is named by its flag.
    let dir = scratch("no-data");
    let cfg = config(&dir, "");
    for (data, want) in [
        (dir.join("missing.jsonl"), "cannot read it"),
        (dir.clone(), "not a file"),
    ] {
        let o = run(&[
            "rm",
            "--config",
            cfg.to_str().unwrap(),
            "--sft",
            dir.join("no-sft-needed-to-fail").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.join("out").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let at = format!("error: --data {}: {want}", data.display());
        assert!(text(&o).contains(&at), "expected `{at}` in {}", text(&o));
    }
    // A negative seed is named by its flag, not taken for one.
    let o = run(&["sft", "--seed", "-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("invalid value '-1' for '--seed <SEED>'"),
        "{}",
        text(&o)
    );
    fs::remove_dir_all(dir).ok();
}

#[test]
fn a_context_too_short_and_a_negative_beta_are_refused_naming_the_field() {
    for (name, extra, field) in [
        ("context", ("context = 24", "context = 20"), "model.context"),
        ("beta", ("[rl]\n", "[rl]\nbeta = -0.5\n"), "rl.beta"),
        ("typo", ("[rl]\n", "[rl]\nbetta = 0.5\n"), "betta"),
    ] {
        refused_config(name, &TINY.replace(extra.0, extra.1), field, "");
    }
}

/// `gradgym rlhf` on the config `body` exits 2 naming `field` (with `says`) and config.toml,
/// and writes no run folder.
fn refused_config(name: &str, body: &str, field: &str, says: &str) {
    let dir = scratch(name);
    let cfg = dir.join("config.toml");
    fs::create_dir_all(&dir).unwrap();
    fs::write(&cfg, body).unwrap();
    let out = dir.join("out");
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("`{field}`")) && t.contains(says) && t.contains("config.toml"),
        "{name}: {t}"
    );
    assert!(!out.exists(), "{name}");
}

/// RLOO and GRPO: `num_generations` must split `batch_size` into groups of at least 2, and is
/// refused under an algorithm that samples one response per prompt; a value-function field
/// set under them is named as unread; a run writes its groups' spread and no value columns.
#[test]
fn rloo_and_grpo_check_their_groups_and_say_what_they_do_not_read() {
    for (name, extra, field, says) in [
        (
            "k1",
            "algo = \"grpo\"\nnum_generations = 1",
            "rl.num_generations",
            "at least 2",
        ),
        (
            "k3",
            "algo = \"rloo\"\nnum_generations = 3",
            "rl.num_generations",
            "multiple",
        ),
        (
            // Even at its default value, 4: it is not read there.
            "ppo-k",
            "num_generations = 4",
            "rl.num_generations",
            "one per prompt",
        ),
        ("algo", "algo = \"nlpo\"", "rl.algo", "rloo, grpo"),
        (
            "scale",
            "algo = \"rloo\"\nscale_rewards = \"none\"",
            "rl.scale_rewards",
            "GRPO's",
        ),
    ] {
        let body = TINY.replace("[rl]\n", &format!("[rl]\n{extra}\n"));
        refused_config(&format!("group-{name}"), &body, field, says);
    }
    let dir = scratch("group-run");
    let cfg = config(&dir, "");
    let out = dir.join("grpo");
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "rl.algo=\"grpo\"",
        "--set",
        "rl.norm_adv=false",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        text(&o).contains(
            "advantages within each group of rl.num_generations responses: rl.norm_adv is not read"
        ),
        "{}",
        text(&o)
    );
    let metrics = fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    assert!(
        header.contains("reward_std,frac_reward_zero_std") && !header.contains(",val/"),
        "{header}"
    );
    let config = fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("algo = \"grpo\""), "{config}");
    fs::remove_dir_all(dir).ok();
}

/// SFT keeps the demonstrations that fit in `rl.max_response`: below the shortest (6 tokens)
/// it would redraw forever, so the stages that fine-tune refuse it before writing anything.
#[test]
fn a_max_response_that_holds_no_demonstration_is_refused_where_sft_runs() {
    let dir = scratch("max-response");
    fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    fs::write(&cfg, TINY.replace("max_response = 16", "max_response = 5")).unwrap();
    for stage in [None, Some("sft")] {
        let out = dir.join(format!("out-{}", stage.unwrap_or("all")));
        let mut args: Vec<&str> = stage.into_iter().collect();
        args.extend([
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{stage:?}: {}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("`rl.max_response`") && t.contains("shortest is 6"),
            "{t}"
        );
        assert!(!out.exists() && !dir.join(format!("{}.partial", out.display())).exists());
    }
}

/// The models a stage is given are checked before its folder exists: each failure is an exit 2
/// naming the flag, and leaves neither the run nor a `.partial` folder behind.
#[test]
fn input_models_and_flags_are_checked_before_anything_is_written() {
    let dir = scratch("inputs");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let (sft, rm) = sft_and_rm(&dir, c);
    let s = sft.to_str().unwrap();
    let r = rm.to_str().unwrap();
    // Fewer than 10 steps: the reported loss is still a number (the last step's, at least).
    let short = dir.join("short");
    ok(&run(&[
        "sft",
        "--config",
        c,
        "--set",
        "pretrain.steps=5",
        "--set",
        "sft.steps=5",
        "--out",
        short.to_str().unwrap(),
        "--quiet",
    ]));
    let summary = summary(&short);
    for key in ["pretrain_loss", "sft_loss"] {
        assert!(summary[key].is_number(), "{key}: {summary}");
    }
    // An SFT model of context 32, for responses of 24 tokens.
    let sft32 = dir.join("sft32");
    let s32 = sft32.to_str().unwrap();
    let long = ["--set", "model.context=32", "--set", "rl.max_response=24"];
    let mut args = vec!["sft", "--config", c, "--out", s32, "--quiet"];
    args.extend(long);
    ok(&run(&args));
    let rm_model = rm.join("reward_model");
    let rm_model = rm_model.to_str().unwrap();
    let wide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/rlhf/rm-labels2000");
    let wide = wide.to_str().unwrap();
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    // Paths that hold no model are named as what they are.
    fs::create_dir_all(dir.join("empty")).unwrap();
    let (empty, missing, file) = (
        dir.join("empty").display().to_string(),
        dir.join("missing").display().to_string(),
        cfg.display().to_string(),
    );
    let no_model = format!("{empty}/sft/model.json exists");
    // A model.json that is a folder is named as one (before: said not to exist).
    fs::create_dir_all(dir.join("json-folder/model.json")).unwrap();
    let json_folder = dir.join("json-folder").display().to_string();
    let not_a_file = format!("{json_folder}/model.json is not a file");
    // The SFT model with one field of its model.json set to `value`, in folder `name`.
    let sft_with = |name: &str, field: &str, value: u64| {
        let at = dir.join(name);
        fs::create_dir_all(at.join("sft")).unwrap();
        let weights = "sft/model.safetensors";
        fs::copy(sft.join(weights), at.join(weights)).unwrap();
        let json = fs::read_to_string(sft.join("sft/model.json")).unwrap();
        let mut shape: serde_json::Value = serde_json::from_str(&json).unwrap();
        shape[field] = value.into();
        fs::write(at.join("sft/model.json"), shape.to_string()).unwrap();
        at.display().to_string()
    };
    // One whose model.json is not a model's shape: named by that file, not the config.
    let odd = sft_with("odd-shape", "heads", 3);
    // And one whose context is past gradgym's cap.
    let huge = sft_with("huge-context", "context", 1 << 25);
    for (args, want) in [
        (
            vec!["rm", "--sft", &odd],
            "sft/model.json: field `heads`: 3 heads do not divide",
        ),
        (
            vec!["rm", "--sft", &huge],
            "sft/model.json: field `context`: 33554432 is more than gradgym allows",
        ),
        (vec!["rm", "--sft", &missing], "no such folder"),
        (
            vec!["bon", "--sft", s, "--rm", r, "--set", "eval.best_of_n=[]"],
            "field `eval.best_of_n`: empty",
        ),
        (vec!["rm", "--sft", &file], "not a folder"),
        (vec!["rm", "--sft", &empty], no_model.as_str()),
        (vec!["rm", "--sft", &json_folder], not_a_file.as_str()),
        (vec!["rl", "--sft", rm_model, "--rm", r], "--sft"),
        (vec!["rl", "--sft", s, "--rm", s], "--rm"),
        (
            vec!["rl", "--sft", s, "--rm", &format!("{s}/sft")],
            "not a reward model",
        ),
        (vec!["sample", "--model", rm_model], "a reward model"),
        // An `sft` run given where a policy's run is wanted: says what it holds.
        (
            vec!["sample", "--model", s],
            "it holds the SFT model (--sft)",
        ),
        // The reward model's context (24) is too short for these responses (before: a panic).
        (
            vec![
                "rl", "--sft", s32, "--rm", r, long[0], long[1], long[2], long[3],
            ],
            "--rm",
        ),
        (vec!["sft", "--rm", r], "does not read --rm"),
        (
            vec!["rl", "--sft", s, "--rm", r, "--data", c],
            "does not read --data",
        ),
        (
            vec!["rm", "--sft", s, "--samples", "3"],
            "does not read --samples",
        ),
        (vec!["sample", "--sft", s, "--samples", "0"], "--samples 0"),
        (vec!["sample", "--sft", s, "--samples", "9"], "--samples 9"),
        (vec!["sample"], "needs --model DIR or --sft DIR"),
        // Both: one of them would be ignored.
        (
            vec!["sample", "--model", s, "--sft", s],
            "give --model DIR or --sft DIR, not both",
        ),
        (
            vec!["rm", "--sft", s, "--set", "labels.comparisons=0"],
            "`labels.comparisons`",
        ),
        // A flag and a --set of one field that disagree (before: the flag won, unsaid).
        (
            vec!["sft", "--seed", "3", "--set", "seed=5"],
            "--seed 3 and --set seed=5 disagree",
        ),
        (
            vec!["sft", "--device", "cpu", "--set", "device=\"cuda\""],
            "--device cpu and --set device=\"cuda\" disagree",
        ),
        // Online rounds with nothing to label (before: round 2 refitted the same labels).
        (
            vec![
                "rl",
                "--sft",
                s,
                "--rm",
                r,
                "--set",
                "rl.rounds=2",
                "--set",
                "labels.comparisons=0",
            ],
            "field `labels.comparisons`: 0, so online rounds 2 to 2",
        ),
        // A size that would overflow an allocation (before: a capacity-overflow panic).
        (
            vec!["rl", "--set", "rl.batch_size=9223372036854775807"],
            "`rl.batch_size`: 9223372036854775807 is more than gradgym allows",
        ),
        (
            vec!["rl", "--set", "rl.bta=1"],
            "--set rl.bta=1: field `rl.bta`: unknown field",
        ),
        (
            vec!["sft", "--device", "gpu"],
            "--device gpu: unknown device",
        ),
        // Online rounds read the reward model's labels: checked before the folder, too (the
        // committed study's, of up to 24 tokens, past what this SFT body's context holds).
        (
            vec!["rl", "--sft", s, "--rm", wide, "--set", "rl.rounds=2"],
            "labels.jsonl",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--config", c, "--out", o]);
        let result = run(&all);
        let t = text(&result);
        assert_eq!(result.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: expected `{want}` in {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
        assert!(!t.contains('→'), "{args:?} announced a run: {t}");
        assert!(
            !out.exists() && !dir.join("out.partial").exists(),
            "{args:?} wrote {}",
            out.display()
        );
    }
    // A --set that agrees with its flag in another spelling is no disagreement.
    ok(&run(&[
        "sft",
        "--config",
        c,
        "--seed",
        "1000",
        "--set",
        "seed=1_000",
        "--device",
        "cpu",
        "--set",
        "device='cpu'",
        "--out",
        dir.join("agreeing").to_str().unwrap(),
        "--quiet",
    ]));
    // A language model's own shape is the run's [model], whatever the config file says...
    let c16 = dir.join("width16.toml");
    fs::write(
        &c16,
        fs::read_to_string(c)
            .unwrap()
            .replace("width = 32", "width = 16"),
    )
    .unwrap();
    let c16 = c16.to_str().unwrap();
    // ...but a --set written for this run that asks for another shape is refused, not
    // overruled in silence.
    let asked = run(&[
        "sample",
        "--config",
        c16,
        "--sft",
        s,
        "--set",
        "model.width=16",
        "--out",
        o,
    ]);
    assert_eq!(asked.status.code(), Some(2), "{}", text(&asked));
    assert!(
        text(&asked).contains("--set model.width=16: field `model.width`: the input model")
            && text(&asked).contains("has width = 32"),
        "{}",
        text(&asked)
    );
    assert!(!out.exists());
    let adopted = run(&[
        "sample",
        "--config",
        c16,
        "--sft",
        s,
        "--samples",
        "2",
        "--out",
        o,
    ]);
    ok(&adopted);
    let written = fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(written.contains("width = 32"), "{written}");
    // ...and the run says so.
    assert!(
        text(&adopted).contains("width 32")
            && text(&adopted).contains("instead of the config's [model]"),
        "{}",
        text(&adopted)
    );
    // ...before the config is checked: the config's context (24) is too short for responses
    // of 24 tokens, the model's (32) is not.
    let out32 = dir.join("out32");
    ok(&run(&[
        "sample",
        "--config",
        c,
        "--sft",
        s32,
        "--set",
        "rl.max_response=24",
        "--samples",
        "2",
        "--out",
        out32.to_str().unwrap(),
        "--quiet",
    ]));
    // A --set that a later one corrects is not blamed.
    let fixed = dir.join("fixed");
    ok(&run(&[
        "sample",
        "--config",
        c,
        "--sft",
        s,
        "--set",
        "eval.prompts=\"x\"",
        "--set",
        "eval.prompts=8",
        "--samples",
        "2",
        "--out",
        fixed.to_str().unwrap(),
        "--quiet",
    ]));
    // --overwrite replaces a run folder, never a folder of other files.
    let precious = dir.join("precious");
    fs::create_dir_all(&precious).unwrap();
    fs::write(precious.join("notes.txt"), "mine").unwrap();
    let refused = run(&[
        "sample",
        "--config",
        c,
        "--sft",
        s,
        "--out",
        precious.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("not a gradgym run folder"));
    assert_eq!(
        fs::read_to_string(precious.join("notes.txt")).unwrap(),
        "mine"
    );
    ok(&run(&[
        "sample",
        "--config",
        c,
        "--sft",
        s,
        "--out",
        o,
        "--overwrite",
        "--quiet",
    ]));
    fs::remove_dir_all(dir).ok();
}

#[test]
fn device_and_seed_flags_override_the_config_file_before_it_is_checked() {
    let dir = scratch("device-override");
    // A config written for a machine with eight GPUs: refused here as it stands...
    let cfg = config(&dir, "").to_string_lossy().into_owned();
    let body = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("device = \"cuda:7\"\nseed = 3\n{body}")).unwrap();
    let refused = run(&[
        "sft",
        "--config",
        &cfg,
        "--out",
        dir.join("a").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("`device`"), "{}", text(&refused));
    // ...and run on the CPU with --device cpu, under the seed of --seed.
    let out = dir.join("b");
    ok(&run(&[
        "sft",
        "--config",
        &cfg,
        "--device",
        "cpu",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["device"], "Cpu");
    assert_eq!(manifest["seed"], 5);
    // A seed or a --set integer past TOML's 64-bit integers is named as such (it used to be
    // read as a string and refused as "invalid type: string").
    for args in [
        ["--seed", "9223372036854775808"],
        ["--set", "seed=99999999999999999999999"],
        ["--set", "rl.beta=1e999"],
    ] {
        let out = dir.join("c");
        let mut all = vec!["sft", "--config", &cfg];
        all.extend(args);
        all.extend(["--out", out.to_str().unwrap()]);
        let o = run(&all);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        let range = if args[1].ends_with("e999") {
            "a float64: at most about ±1.7976931348623157e308"
        } else {
            "9223372036854775807"
        };
        assert!(t.contains(range) && !t.contains("string"), "{t}");
        assert!(!out.exists());
    }
}

/// MKL promises bit-identical results from run to run only in its reproducibility mode
/// (`MKL_CBWR`), so the binary turns it on, with the code path MKL would pick anyway, unless
/// the caller chose a mode. `MKL_VERBOSE=1` makes MKL print each call with the mode it ran in.
#[test]
fn runs_put_libtorchs_mkl_in_its_reproducible_mode_unless_told_another() {
    let dir = scratch("mkl-cbwr");
    let cfg = config(&dir, "").to_string_lossy().into_owned();
    let modes = |name: &str, cbwr: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"));
        command
            .args(["rlhf", "sft", "--config", &cfg])
            .args([
                "--set",
                "pretrain.steps=2",
                "--set",
                "sft.steps=1",
                "--quiet",
            ])
            .args(["--out", dir.join(name).to_str().unwrap()])
            .env("MKL_VERBOSE", "1")
            .env_remove("MKL_CBWR");
        if let Some(mode) = cbwr {
            command.env("MKL_CBWR", mode);
        }
        let o = command.output().unwrap();
        ok(&o);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let calls = stdout.lines().filter(|l| l.contains("GEMM(")).count();
        let mut modes: Vec<String> = stdout
            .split_whitespace()
            .filter(|w| w.starts_with("CNR:"))
            .map(str::to_owned)
            .collect();
        modes.sort();
        modes.dedup();
        (calls, modes)
    };
    let (calls, default) = modes("default", None);
    if calls == 0 {
        eprintln!("skipped: this libtorch makes no MKL calls (built without MKL)");
        return;
    }
    assert_eq!(default, ["CNR:AUTO"], "{calls} MKL calls");
    let (_, chosen) = modes("chosen", Some("COMPATIBLE"));
    assert_eq!(chosen, ["CNR:COMPATIBLE"]);
    // The manifest records the mode and the native passes' products, which set the bits
    // beyond the config.
    let manifest = |name: &str| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.join(name).join("manifest.json")).unwrap())
            .unwrap()
    };
    assert_eq!(manifest("default")["mkl_cbwr"], "AUTO");
    assert_eq!(manifest("chosen")["mkl_cbwr"], "COMPATIBLE");
    assert_eq!(manifest("default")["sgemm"], "mkl");
    let products = |name: &str, choice: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"))
            .args(["rlhf", "sft", "--config", &cfg, "--quiet"])
            .args(["--set", "pretrain.steps=2", "--set", "sft.steps=1"])
            .args(["--out", dir.join(name).to_str().unwrap()])
            .env("GRADGYM_SGEMM", choice)
            .output()
            .unwrap()
    };
    ok(&products("matrixmultiply", "matrixmultiply"));
    assert_eq!(manifest("matrixmultiply")["sgemm"], "matrixmultiply");
    // A misspelt choice is refused before anything runs, not ignored.
    let o = products("misspelt", "matrixmultiplY");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("GRADGYM_SGEMM=matrixmultiplY: not `mkl` (the default) or `matrixmultiply`"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("misspelt").exists() && !partial(&dir.join("misspelt")).exists());
    fs::remove_dir_all(dir).ok();
}
/// The binary keeps freed memory in the process for reuse (benchmarks/src/malloc.rs) unless told
/// otherwise: a short bench on the libtorch backend (whose operators allocate and free their
/// outputs; the native backend pools its own buffers) then takes far fewer page faults than
/// with glibc's own thresholds
/// (`GRADGYM_MALLOC=glibc`; about 90,000 against 135,000 here), and says which setting it ran
/// under; a caller's own threshold is left alone, an unrelated malloc setting is not, and a
/// misspelt `GRADGYM_MALLOC` is exit 2 naming it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn runs_keep_freed_memory_for_reuse_unless_told_otherwise() {
    use std::io::Read;
    let command = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"));
        command.args(args).env_remove("GLIBC_TUNABLES");
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("MALLOC_") || name == "GRADGYM_MALLOC" {
                command.env_remove(&*name);
            }
        }
        command.envs(env.iter().copied());
        command
    };
    // Page faults (minor and major) of a short bench, and its malloc line.
    let bench = |env: &[(&str, &str)]| -> (i64, String) {
        let mut command = command(
            &[
                "rlhf",
                "bench",
                "--reps",
                "1",
                "--threads",
                "2",
                "--backend",
                "libtorch",
            ],
            env,
        );
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Reaped by wait4 below, which also reads its resource use.
        #[allow(clippy::zombie_processes)]
        let mut child = command.spawn().unwrap();
        let (mut stdout, mut stderr) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let mut status = 0;
        // SAFETY: rusage is plain data, for which all-zero bytes are a valid value.
        let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
        // SAFETY: a child of this process, not yet reaped; two valid out-pointers.
        let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as libc::pid_t);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{stdout}{stderr}"
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("malloc: "))
            .unwrap_or_else(|| panic!("no malloc line in\n{stdout}"))
            .to_owned();
        (usage.ru_minflt + usage.ru_majflt, line)
    };
    let (kept, kept_line) = bench(&[]);
    let (glibcs, glibcs_line) = bench(&[("GRADGYM_MALLOC", "glibc")]);
    assert!(
        kept_line.contains("freed memory kept for reuse"),
        "{kept_line}"
    );
    assert!(glibcs_line.contains("glibc's defaults"), "{glibcs_line}");
    assert!(
        (kept as f64) < 0.8 * glibcs as f64,
        "page faults: {kept} with freed memory kept, {glibcs} with glibc's thresholds"
    );
    // Which environments leave the thresholds to the caller, as `gradgym info` reports it.
    let info = |env: &[(&str, &str)]| {
        let o = command(&["info"], env).output().unwrap();
        (o.status.code(), text(&o))
    };
    for (env, expected) in [
        (("MALLOC_ARENA_MAX", "2"), "freed memory kept for reuse"),
        (
            ("GLIBC_TUNABLES", "glibc.malloc.arena_max=4"),
            "freed memory kept for reuse",
        ),
        (
            ("MALLOC_TRIM_THRESHOLD_", "1000000"),
            "as the environment sets them",
        ),
        (
            ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
            "as the environment sets them",
        ),
        (("GRADGYM_MALLOC", "keep"), "freed memory kept for reuse"),
    ] {
        let (code, out) = info(&[env]);
        assert_eq!(code, Some(0), "{env:?}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("malloc: "))
            .unwrap_or("");
        assert!(line.contains(expected), "{env:?}: {line}");
    }
    let (code, out) = info(&[("GRADGYM_MALLOC", "glib")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("GRADGYM_MALLOC=\"glib\""), "{out}");
}

#[test]
fn bench_prints_throughput_and_memory_for_the_bench_model_or_a_configs_model() {
    let dir = scratch("bench");
    let cfg = config(&dir, "");
    for (args, shape) in [
        (
            vec!["bench", "--reps", "1", "--threads", "1"],
            "vocab 512, context 64, width 128",
        ),
        (
            vec![
                "bench",
                "--reps",
                "1",
                "--threads",
                "1",
                "--config",
                cfg.to_str().unwrap(),
            ],
            "vocab 290, context 24, width 32",
        ),
    ] {
        let o = run(&args);
        ok(&o);
        let t = text(&o);
        assert!(t.contains(shape), "{t}");
        let ppo = if args.len() == 5 {
            "PPO end to end (4 epochs, 1 minibatch):"
        } else {
            // The config's own: rl.num_minibatches defaults to 4.
            "PPO end to end (4 epochs, 4 minibatches):"
        };
        for line in ["generation (KV cache", ppo, "peak memory"] {
            assert!(t.contains(line), "`{line}` missing: {t}");
        }
        let rate = |label: &str| -> f64 {
            let l = t
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap();
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "tokens/s").unwrap();
            words[at - 1].parse().unwrap()
        };
        assert!(rate("generation") > 0.0 && rate("PPO") > 0.0, "{t}");
        // The default backend on the CPU is the native one (rl.backend = auto).
        assert!(
            t.contains("backend of the PPO updates: native (rl.backend = \"auto\", the default"),
            "{t}"
        );
        // Where the update's time went: three positive parts, which with one timed update
        // are parts of that update, so they add up to no more than its time.
        let parts: Vec<f64> = t
            .lines()
            .find(|l| l.trim_start().starts_with("per update:"))
            .expect(&t)
            .split(" ms")
            .filter_map(|p| p.split_whitespace().last()?.parse().ok())
            .collect();
        assert_eq!(parts.len(), 3, "{t}");
        assert!(parts.iter().all(|&p| p > 0.0), "{t}");
        if args.len() == 5 {
            let update_ms = 64.0 * 24.0 / rate("PPO") * 1e3;
            assert!(
                parts.iter().sum::<f64>() <= update_ms * 1.01,
                "{parts:?} against {update_ms} ms: {t}"
            );
        }
        // The targets and the peers' figures belong to the bench model alone.
        assert_eq!(t.contains("target ≥ 36,000"), args.len() == 5, "{t}");
    }
    // A config's PPO update (epochs, minibatches) and threads are what its bench runs; the
    // bench model's is 4 epochs of 1 minibatch. --threads overrides the config's.
    let shaped = dir.join("shaped.toml");
    fs::write(
        &shaped,
        TINY.replace(
            "updates = 2",
            "updates = 2\nupdate_epochs = 2\nnum_minibatches = 2",
        ),
    )
    .unwrap();
    let s = shaped.to_str().unwrap();
    let t = text(&run(&["bench", "--reps", "1", "--config", s]));
    assert!(
        t.contains("PPO end to end (2 epochs, 2 minibatches):") && t.contains("fp32, 1 threads"),
        "{t}"
    );
    let t = text(&run(&[
        "bench",
        "--reps",
        "1",
        "--config",
        s,
        "--threads",
        "2",
    ]));
    assert!(t.contains("fp32, 2 threads"), "{t}");
    let o = run(&["bench", "--reps", "0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--reps"), "{}", text(&o));
    // The native backend alone, libtorch alone, and the two alternated; on a GPU native is refused.
    // One timed repetition on one thread, with `extra` flags.
    let bench_with = |extra: &[&str]| {
        let mut args = vec!["bench", "--reps", "1", "--threads", "1"];
        args.extend_from_slice(extra);
        let o = run(&args);
        ok(&o);
        text(&o)
    };
    let bench_on = |backend: &str| bench_with(&["--backend", backend]);
    let t = bench_on("native");
    assert!(t.contains("backend of the PPO updates: native"), "{t}");
    assert!(!t.contains("libtorch's GELU"), "{t}");
    let t = bench_on("libtorch");
    assert!(
        t.contains("backend of the PPO updates: libtorch (rl.backend = \"libtorch\")"),
        "{t}"
    );
    // PPO again with libtorch's GELU, where gradgym's operator runs (x86-64 Linux, AVX2 or
    // AVX-512, libtorch left to choose its kernels).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if std::env::var_os("ATEN_CPU_CAPABILITY").is_none()
        && std::arch::is_x86_feature_detected!("avx2")
    {
        let l = t
            .lines()
            .find(|l| l.trim_start().starts_with("the same with libtorch's GELU"))
            .expect(&t);
        assert!(l.contains("tokens/s"), "{t}");
    }
    let t = bench_on("both");
    let native = t
        .lines()
        .find(|l| l.starts_with("PPO on the native backend"))
        .expect(&t);
    assert!(native.contains("tokens/s"), "{t}");
    let o = run(&["bench", "--backend", "native", "--device", "cuda"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--backend native"), "{}", text(&o));
    // Without --backend, a config's own rl.backend decides; --backend overrides it.
    let with_backend = |name: &str| {
        let path = dir.join(format!("{name}.toml"));
        fs::write(
            &path,
            TINY.replace("[rl]\n", &format!("[rl]\nbackend = \"{name}\"\n")),
        )
        .unwrap();
        path
    };
    let lt = with_backend("libtorch");
    let lt = lt.to_str().unwrap();
    let t = bench_with(&["--config", lt]);
    assert!(
        t.contains("backend of the PPO updates: libtorch (rl.backend = \"libtorch\")"),
        "{t}"
    );
    let t = bench_with(&["--config", lt, "--backend", "native"]);
    assert!(
        t.contains("backend of the PPO updates: native (rl.backend = \"native\")"),
        "{t}"
    );
    let native = with_backend("native");
    let o = run(&[
        "bench",
        "--config",
        native.to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("rl.backend in {}", native.display())),
        "{}",
        text(&o)
    );
}

/// samples.jsonl holds samples at every `rl.samples_every` updates and the last, whatever
/// `eval.every` (an update samples are due at is evaluated too); it used to take only the
/// updates both fell on.
#[test]
fn samples_are_written_every_samples_every_updates_whatever_eval_every() {
    let dir = scratch("samples-every");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let (sft, rm) = sft_and_rm(&dir, c);
    let out = dir.join("rl");
    ok(&run(&[
        "rl",
        "--config",
        c,
        "--sft",
        sft.to_str().unwrap(),
        "--rm",
        rm.to_str().unwrap(),
        "--set",
        "rl.updates=7",
        "--set",
        "eval.every=3",
        "--set",
        "rl.samples_every=2",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]));
    let mut updates: Vec<u64> = fs::read_to_string(out.join("samples.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["update"].as_u64())
        .collect();
    updates.dedup();
    assert_eq!(updates, [2, 4, 6, 7]);
    // Evaluated at every eval.every, every samples_every and the last.
    let eval = fs::read_to_string(out.join("eval.csv")).unwrap();
    let header: Vec<&str> = eval.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "update").unwrap();
    let mut evaluated: Vec<u64> = eval
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(col)?.parse().ok())
        .filter(|&u| u > 0)
        .collect();
    evaluated.dedup();
    assert_eq!(evaluated, [2, 3, 4, 6, 7], "{eval}");
    // `report`'s samples tables name a PPO-KL policy as its curve is named, not "ppo".
    let kl = dir.join("rl-kl");
    ok(&run(&[
        "rl",
        "--config",
        c,
        "--sft",
        sft.to_str().unwrap(),
        "--rm",
        rm.to_str().unwrap(),
        "--set",
        "rl.updates=1",
        "--set",
        "rl.ppo_loss=\"kl\"",
        "--out",
        kl.to_str().unwrap(),
        "--quiet",
    ]));
    let o = gradgym(&["report", dir.to_str().unwrap()]);
    ok(&o);
    let report = fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(
        report.contains("| ppo-kl[kl_coef=1] (update 1) | `rl-kl` |"),
        "{report}"
    );
    assert!(report.contains("| ppo (update 7) | `rl` |"), "{report}");
    // A sample line without its gold score is named by file, line and field.
    let path = kl.join("samples.jsonl");
    let lines = fs::read_to_string(&path).unwrap();
    let mut broken: Vec<String> = lines.lines().map(str::to_string).collect();
    let mut second: serde_json::Value = serde_json::from_str(&broken[1]).unwrap();
    second.as_object_mut().unwrap().remove("gold");
    broken[1] = second.to_string();
    fs::write(&path, broken.join("\n") + "\n").unwrap();
    let o = gradgym(&["report", dir.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("{}:2: field `gold`", path.display())),
        "{}",
        text(&o)
    );
}

/// A non-finite loss names its step as the progress lines and the interrupt messages do,
/// counting from 1: the step after the last one the stage's CSV holds (step 0 there).
#[test]
fn a_non_finite_loss_names_its_step_counting_from_1() {
    let dir = scratch("nan-step");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    for (set, stage, csv, said) in [
        (
            "pretrain.learning_rate=1e30",
            "sft",
            "lm.csv",
            "pretrain: non-finite next-token loss (NaN) at step 2 of ",
        ),
        (
            "reward_model.learning_rate=1e30",
            "",
            "rm.csv",
            "reward model: non-finite loss (NaN) at step 2 (counting from 1",
        ),
    ] {
        let out = dir.join(format!("out-{}", &csv[..2]));
        let o_str = out.to_str().unwrap().to_string();
        // The whole pipeline where `stage` is empty.
        let mut args: Vec<&str> = [stage].into_iter().filter(|s| !s.is_empty()).collect();
        args.extend(["--config", c, "--set", set, "--out", &o_str, "--quiet"]);
        let o = run(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains(said), "{t}");
        let rows = fs::read_to_string(out.join(csv)).unwrap();
        let steps: Vec<&str> = rows
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("sft"))
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(steps, ["0"], "{csv}: {rows}");
    }
}

#[test]
fn a_failed_run_is_sealed_with_its_files_and_an_overwrite_never_deletes_its_own_input() {
    let dir = scratch("failed");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let out = dir.join("nan");
    let o = run(&[
        "--config",
        c,
        "--set",
        "rl.learning_rate=1e30",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("non-finite") && t.contains("RL update 1/2"),
        "{t}"
    );
    assert!(
        t.contains("status failed") && t.contains(out.to_str().unwrap()),
        "{t}"
    );
    let failed = summary(&out);
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("non-finite"),
        "{failed}"
    );
    // The stages before the failure are kept, and usable.
    for f in [
        "sft/model.safetensors",
        "reward_model/model.safetensors",
        "labels.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(!partial(&out).exists());
    // Rerunning RL from that folder into that folder would delete the inputs: refused, even
    // with --overwrite, and nothing is touched.
    let before = fs::read(out.join("sft/model.safetensors")).unwrap();
    // `rl` on the failed run's SFT and reward models, into `dest`.
    let rl_from_failed = |extra: &[&str], dest: &Path| {
        let (o, d) = (out.to_str().unwrap(), dest.to_str().unwrap());
        let mut args = vec!["rl", "--config", c, "--sft", o, "--rm", o];
        args.extend_from_slice(extra);
        args.extend(["--out", d, "--quiet"]);
        run(&args)
    };
    let o = rl_from_failed(&["--overwrite"], &out);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("its own input --sft"), "{t}");
    assert_eq!(fs::read(out.join("sft/model.safetensors")).unwrap(), before);
    // Into another folder it runs.
    ok(&rl_from_failed(&[], &dir.join("rl")));
    assert_eq!(summary(&dir.join("rl"))["status"], "completed");
    // A report over both names the failed run instead of drawing its short curves.
    let o = gradgym(&["report", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let report = fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(
        report.contains("Left out: `nan` (status failed"),
        "{report}"
    );
    assert!(report.contains("\n| rl | "), "{report}");
    // A plot says what it left out.
    let o = gradgym(&["plot", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("nan left out (status failed)"),
        "{}",
        text(&o)
    );
    // Rerun into a finished run's folder with --overwrite, it fails again: the finished run
    // stays, and the failed one is sealed beside it.
    let o = rl_from_failed(
        &["--set", "rl.learning_rate=1e30", "--overwrite"],
        &dir.join("rl"),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("rl.failed"), "{t}");
    assert_eq!(summary(&dir.join("rl"))["status"], "completed");
    assert_eq!(summary(&dir.join("rl.failed"))["status"], "failed");
    // A killed run's `.partial` folder is kept: the same --out is refused, naming it.
    fs::create_dir_all(partial(&dir.join("killed"))).unwrap();
    let o = run(&[
        "sft",
        "--config",
        c,
        "--out",
        dir.join("killed").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("killed.partial") && t.contains("never finished"),
        "{t}"
    );
    fs::remove_dir_all(dir).ok();
}

/// Under `ulimit -v` the check before the run plans for the address space left, not the
/// machine's memory: past it Rust's own buffers (a model's weights, the RL stage's) would abort
/// the process, which no run can seal.
/// `gradgym rlhf sft --config cfg --set …sets --out out --quiet` under `ulimit -v kib`.
#[cfg(target_os = "linux")]
fn sft_under_ulimit(kib: u64, cfg: &Path, sets: &[&str], out: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command.args([
        "-c",
        &format!("ulimit -v {kib} && exec \"$0\" \"$@\""),
        env!("CARGO_BIN_EXE_gradgym"),
        "rlhf",
        "sft",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    command.args(["--out", out.to_str().unwrap(), "--quiet"]);
    command
}

#[test]
#[cfg(target_os = "linux")]
fn the_check_before_a_run_plans_for_the_address_space_ulimit_leaves() {
    let dir = scratch("rlimit");
    let cfg = config(&dir, "");
    let out = dir.join("run");
    let o = sft_under_ulimit(5_000_000, &cfg, &["pretrain.batch_size=30000"], &out)
        .env_remove("GRADGYM_MEMORY_LIMIT")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("field `pretrain.batch_size`: 30000 sequences need at least")
            && t.contains(
                "this process may still map (RLIMIT_AS, that is ulimit -v, of 4.8 GiB less the"
            ),
        "{t}"
    );
    assert!(!out.exists() && !partial(&out).exists());
    fs::remove_dir_all(&dir).unwrap();
}

/// A step too large for the memory it may use (here a 4 GiB address space, as `ulimit -v`,
/// or a batch system's limit, would set) ends the run with `out of memory`, the stage and the
/// tensor's size: not tch's panic with libtorch's C++ stack frames, dozens of lines of
/// addresses. The run's folder is sealed as failed, as for any other failure.
#[test]
#[cfg(target_os = "linux")]
fn a_step_past_the_memory_limit_is_named_out_of_memory_with_its_stage() {
    let dir = scratch("oom");
    let cfg = config(&dir, "");
    let out = dir.join("run");
    let o = sft_under_ulimit(
        4_000_000,
        &cfg,
        &["model.width=64", "pretrain.batch_size=1000000"],
        &out,
    )
    // A backtrace asked for: a failed allocation is no defect to trace, and capturing one
    // with memory exhausted could hang the process.
    .env("RUST_BACKTRACE", "1")
    // Past the check before the run (which would refuse this batch), to the allocation.
    .env("GRADGYM_MEMORY_LIMIT", "0")
    .output()
    .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("error: the run failed: during pretrain: out of memory: libtorch could not allocate a tensor of 5.5 GiB"),
        "{t}"
    );
    // Said once, by the run, with its stage: no panic's words, location or backtrace.
    assert!(!t.contains("frame #"), "{t}");
    assert!(!t.contains("panicked") && !t.contains("backtrace"), "{t}");
    assert_eq!(t.matches("out of memory").count(), 1, "{t}");
    assert!(t.lines().count() < 5, "{t}");
    let failed = summary(&out);
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .starts_with("during pretrain: out of memory"),
        "{failed}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// A batch whose activations alone exceed the memory planned for is refused before the run
/// starts (exit 2, nothing written), naming the field, for each training stage; under a larger
/// limit the same command passes the check (and stops later, at an output path that is a file).
#[test]
fn a_batch_past_the_machines_memory_is_refused_before_the_run_naming_its_field() {
    let dir = scratch("memory-check");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    // The check reads the input models' shape and the labels beside `--rm`.
    let (sft_dir, rm_dir) = sft_and_rm(&dir, c);
    let (sft, rm) = (sft_dir.to_str().unwrap(), rm_dir.to_str().unwrap());
    // (One step each, so that a check that let them through fails in seconds.)
    let cases: [(&[&str], &str, &str, &str); 5] = [
        (
            &[
                "sft",
                "--set",
                "pretrain.batch_size=20000",
                "--set",
                "pretrain.steps=1",
                "--set",
                "sft.steps=1",
            ],
            "pretrain.batch_size",
            "20000 sequences",
            "pretrain",
        ),
        (
            &[
                "sft",
                "--set",
                "sft.batch_size=20000",
                "--set",
                "pretrain.steps=1",
                "--set",
                "sft.steps=1",
            ],
            "sft.batch_size",
            "20000 sequences",
            "sft",
        ),
        (
            &[
                "rm",
                "--sft",
                sft,
                "--set",
                "reward_model.batch_size=20000",
                "--set",
                "labels.comparisons=20000",
            ],
            "reward_model.batch_size",
            "20000 comparisons",
            "reward_model",
        ),
        (
            &[
                "rl",
                "--sft",
                sft,
                "--rm",
                rm,
                "--set",
                "rl.batch_size=100000",
            ],
            "rl.batch_size",
            "100000 prompts",
            "rl",
        ),
        // Online rounds: the second round's refit trains on 20,000 new labels (less the held
        // out) and those beside --rm; the first fit, of the reward model's run, is small.
        (
            &[
                "rl",
                "--sft",
                sft,
                "--rm",
                rm,
                "--set",
                "rl.rounds=2",
                "--set",
                "labels.comparisons=20000",
                "--set",
                "reward_model.batch_size=20000",
            ],
            "reward_model.batch_size",
            "20000 comparisons",
            "online refit",
        ),
    ];
    let occupied = dir.join("occupied");
    fs::write(&occupied, "a file, not a folder").unwrap();
    for (args, field, what, stage) in cases {
        let run = |limit: &str, out: &Path| {
            let mut all = vec!["rlhf"];
            all.extend_from_slice(&args[..1]);
            all.extend(["--config", cfg.to_str().unwrap()]);
            all.extend_from_slice(&args[1..]);
            all.extend(["--out", out.to_str().unwrap(), "--quiet"]);
            std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"))
                .args(&all)
                .env("GRADGYM_MEMORY_LIMIT", limit)
                .output()
                .unwrap()
        };
        let out = dir.join(field);
        let o = run("2", &out);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{field}: {t}");
        assert!(
            t.contains(&format!("error: field `{field}`: {what} need at least"))
                && t.contains(&format!("in the {stage} stage"))
                && t.contains("more than the 2.0 GiB planned for (GRADGYM_MEMORY_LIMIT); lower"),
            "{field}: {t}"
        );
        assert!(!out.exists() && !dir.join(format!("{field}.partial")).exists());
        let o = run("1000", &occupied);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{field}: {t}");
        assert!(!t.contains("need at least"), "{field}: {t}");
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradgym"))
        .args(["rlhf", "sft", "--config", cfg.to_str().unwrap(), "--out"])
        .arg(dir.join("x"))
        .env("GRADGYM_MEMORY_LIMIT", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("GRADGYM_MEMORY_LIMIT=lots: not a number of GiB"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("x").exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_seals_an_rlhf_run_as_interrupted() {
    let dir = scratch("signal");
    let cfg = config(&dir, "");
    let out = dir.join("run");
    // A few RL updates on disk, then SIGINT.
    let o = common::interrupt_after_rows(
        &[
            "rlhf",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "rl.updates=100000",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        &out,
        4,
        std::time::Duration::from_secs(120),
        "-INT",
    );
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(
        t.contains("interrupted by a signal") && t.contains("status interrupted"),
        "{t}"
    );
    let summary = summary(&out);
    assert_eq!(summary["status"], "interrupted");
    let rows = fs::read_to_string(out.join("metrics.csv"))
        .unwrap()
        .lines()
        .count();
    assert!(rows >= 4, "{rows} lines of metrics.csv");
    assert!(out.join("reward_model/model.safetensors").is_file());
    fs::remove_dir_all(dir).ok();
}

/// Runs `gradgym rlhf ARGS`, and `delay` after `started` exists sends it SIGINT; its output
/// once it has ended, which must be within `within` of the signal.
fn interrupt_once(
    args: &[&str],
    started: &Path,
    delay: std::time::Duration,
    within: std::time::Duration,
) -> std::process::Output {
    let waiting = format!("the run never wrote {}", started.display());
    interrupt_when(args, &|_| started.exists(), &waiting, delay, within)
}

/// Whether the process `pid` has a handler for SIGINT: its bit (1 << 1) in the caught signals
/// of `/proc/PID/status`.
fn handles_sigint(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("SigCgt:"))?.to_string();
            u64::from_str_radix(line.trim_start_matches("SigCgt:").trim(), 16).ok()
        })
        .is_some_and(|caught| caught & 2 != 0)
}

/// Runs `gradgym rlhf ARGS`, and `delay` after `ready(pid)` holds (within two minutes, else it
/// panics saying `waiting`) sends it SIGINT; its output once it has ended, which must be
/// within `within` of the signal.
fn interrupt_when(
    args: &[&str],
    ready: &dyn Fn(u32) -> bool,
    waiting: &str,
    delay: std::time::Duration,
    within: std::time::Duration,
) -> std::process::Output {
    use std::time::{Duration, Instant};
    let mut child = common::signalable()
        .arg("rlhf")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(child.id()) {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("{waiting}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    while child.try_wait().unwrap().is_none() {
        if sent.elapsed() > within {
            child.kill().ok();
            panic!("the run did not stop within {within:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A signal while a large `--data` file is read (200,000 lines, over a second here) ends the
/// run before its folder is made: it used to make it, copy the file into it and then stop,
/// leaving `--out` taken by a run that had done nothing.
#[test]
fn sigint_while_the_inputs_are_read_writes_nothing() {
    use std::time::Duration;
    let dir = scratch("signal-inputs");
    let cfg = config(&dir, "");
    let data = dir.join("big.jsonl");
    fs::write(&data, format!("{GOOD}\n").repeat(200_000)).unwrap();
    let out = dir.join("run");
    // The handler is installed just before the inputs are read.
    let o = interrupt_when(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        &handles_sigint,
        "no SIGINT handler within two minutes",
        Duration::ZERO,
        Duration::from_secs(60),
    );
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("while its inputs were read"), "{t}");
    assert!(!out.exists() && !partial(&out).exists(), "{t}");
    fs::remove_dir_all(dir).ok();
}

/// A signal during one long RL update (a million epochs over the batch) stops it before its
/// next gradient step, instead of waiting for the update to end.
#[test]
fn sigint_stops_a_long_rl_update_between_its_gradient_steps() {
    use std::time::Duration;
    let dir = scratch("signal-update");
    let cfg = config(&dir, "");
    let out = dir.join("run");
    // The metrics header is written just before the first update's rollout (milliseconds on
    // this config); a second later the run is inside that update.
    let o = interrupt_once(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "rl.update_epochs=1000000",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        &partial(&out).join("metrics.csv"),
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("gradient steps"), "{t}");
    assert_eq!(summary(&out)["status"], "interrupted");
    assert!(
        !out.join("policy").exists(),
        "no policy is saved before the RL stage's first evaluation"
    );
    fs::remove_dir_all(dir).ok();
}

/// An RL run that a signal ends keeps the policy of its last evaluation: `policy/` holds the
/// weights a run of exactly that many updates ends with, summary.json names the update, and
/// the folder can be sampled from. A completed run's summary.json names no such update.
#[test]
fn an_interrupted_rl_run_keeps_the_policy_of_its_last_evaluation() {
    use std::time::Duration;
    let dir = scratch("signal-policy");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let (sft, rm) = sft_and_rm(&dir, c);
    let (s, r) = (sft.to_str().unwrap(), rm.to_str().unwrap());
    let out = dir.join("long");
    // Every update is evaluated (the config's eval.every = 1); 100,000 of them do not end.
    let o = interrupt_once(
        &[
            "rl",
            "--config",
            c,
            "--sft",
            s,
            "--rm",
            r,
            "--set",
            "rl.updates=100000",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        &partial(&out).join("metrics.csv"),
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{t}");
    let sum = summary(&out);
    assert_eq!(sum["status"], "interrupted");
    let k = sum["policy_update"].as_u64().expect("policy_update");
    assert!(k >= 1, "{sum}");
    let eval = fs::read_to_string(out.join("eval.csv")).unwrap();
    let last = eval.lines().last().unwrap();
    assert!(last.starts_with(&format!("{k},")), "{last}");
    assert_eq!(
        sum["policy"]["gold"].as_f64().unwrap().to_string(),
        last.split(',').nth(4).unwrap(),
        "{last}"
    );
    // The same run made to stop after k updates ends with those weights.
    let short = dir.join("short");
    let updates = format!("rl.updates={k}");
    ok(&run(&[
        "rl",
        "--config",
        c,
        "--sft",
        s,
        "--rm",
        r,
        "--set",
        &updates,
        "--quiet",
        "--out",
        short.to_str().unwrap(),
    ]));
    let weights = |d: &Path| fs::read(d.join("policy/model.safetensors")).unwrap();
    assert!(
        weights(&out) == weights(&short),
        "the kept policy is not update {k}'s"
    );
    assert!(summary(&short).get("policy_update").is_none());
    // With no updates, no evaluation saves a policy: the run's is the SFT model's, as are its
    // scores.
    let none = dir.join("none");
    ok(&run(&[
        "rl",
        "--config",
        c,
        "--sft",
        s,
        "--rm",
        r,
        "--set",
        "rl.updates=0",
        "--quiet",
        "--out",
        none.to_str().unwrap(),
    ]));
    assert!(weights(&none) == fs::read(sft.join("sft/model.safetensors")).unwrap());
    assert_eq!(summary(&none)["policy"], summary(&none)["sft"]);
    // It samples.
    let sampled = dir.join("sampled");
    ok(&run(&[
        "sample",
        "--config",
        c,
        "--model",
        out.to_str().unwrap(),
        "--rm",
        r,
        "--samples",
        "2",
        "--quiet",
        "--out",
        sampled.to_str().unwrap(),
    ]));
    fs::remove_dir_all(dir).ok();
}

/// A KL coefficient so large that score − β·KL overflows is named as the cause (it used to be
/// reported as a non-finite policy loss, with the advice to lower the learning rate), and the
/// run is sealed as failed with what it wrote.
#[test]
fn an_overflowing_kl_penalty_names_rl_beta() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = scratch("beta-overflow");
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let (sft, rm) = (
        repo.join("results/rlhf/sft"),
        repo.join("results/rlhf/rm-labels10000"),
    );
    let o = run(&[
        "rl",
        "--config",
        repo.join("configs/rlhf/demo.toml").to_str().unwrap(),
        "--sft",
        sft.to_str().unwrap(),
        "--rm",
        rm.to_str().unwrap(),
        "--set",
        "rl.beta=1e308",
        "--set",
        "rl.updates=2",
        "--set",
        "rl.batch_size=8",
        "--set",
        "eval.prompts=8",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("overflowed") && t.contains("lower rl.beta"),
        "{t}"
    );
    assert_eq!(common::summary(&out)["status"], "failed");
}

/// What a user's files can hold that is meant and should be taken, or said: a repeated
/// comparison (noted: it may fall on both sides of the held-out split), `"best": 1.0` (pandas
/// writes a column with gaps as floats), a μ within 1e-6 of summing to 1 (made to sum to 1, no
/// share past 1), a pretty-printed JSON file (hinted), a model.json with a byte-order mark,
/// and `sample --rm`'s mean proxy score; an input model whose context is too short is named.
#[test]
fn a_users_files_are_taken_as_meant_or_named() {
    let dir = scratch("users-files");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let sft = dir.join("sft-run");
    ok(&run(&[
        "sft",
        "--config",
        c,
        "--out",
        sft.to_str().unwrap(),
        "--quiet",
    ]));
    let data = dir.join("prefs.jsonl");
    let k_way = r#"{"prompt": "review of the phone negative :", "responses": ["bad . <eos>", "the phone is awful . <eos>", "great"], "best": 1.0}"#;
    let soft = r#"{"prompt": "review of the phone positive :", "responses": ["great . <eos>", "bad . <eos>"], "mu": [1.0000005, 0.0]}"#;
    fs::write(
        &data,
        format!("{GOOD}\n{GOOD}\n{GOOD}\n{k_way}\n{soft}\n").repeat(2),
    )
    .unwrap();
    let rm = dir.join("rm-run");
    let o = run(&[
        "rm",
        "--config",
        c,
        "--sft",
        sft.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        rm.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        text(&o).contains("note: 7 of the 10 comparisons given repeat an earlier one"),
        "{}",
        text(&o)
    );
    let written = fs::read_to_string(rm.join("labels.jsonl")).unwrap()
        + &fs::read_to_string(rm.join("held_out.jsonl")).unwrap();
    assert!(written.contains("\"best\":1"), "{written}");
    assert!(!written.contains("1.0000005"), "{written}");
    // A pretty-printed file is told to be one object per line.
    let pretty = dir.join("pretty.json");
    fs::write(
        &pretty,
        "{\n  \"prompt\": \"review of the phone positive :\"\n}\n",
    )
    .unwrap();
    let o = run(&[
        "rm",
        "--config",
        c,
        "--sft",
        sft.to_str().unwrap(),
        "--data",
        pretty.to_str().unwrap(),
        "--out",
        dir.join("pretty-run").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("one JSON object per line"),
        "{}",
        text(&o)
    );
    // A model.json with a byte-order mark loads; sampling with --rm gives the proxy's mean.
    let model = dir.join("bom-model");
    fs::create_dir_all(&model).unwrap();
    fs::copy(
        sft.join("sft/model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    let json = fs::read_to_string(sft.join("sft/model.json")).unwrap();
    fs::write(model.join("model.json"), format!("\u{feff}{json}")).unwrap();
    let sampled = dir.join("sample-run");
    ok(&run(&[
        "sample",
        "--config",
        c,
        "--model",
        model.to_str().unwrap(),
        "--rm",
        rm.to_str().unwrap(),
        "--out",
        sampled.to_str().unwrap(),
        "--quiet",
    ]));
    let s = summary(&sampled);
    assert!(s["proxy"].as_f64().is_some_and(f64::is_finite), "{s}");
    assert!(s["proxy_ci"].as_f64().is_some_and(f64::is_finite), "{s}");
    // One evaluation prompt gives no interval: an empty cell, which report and plot read.
    let bon = dir.join("bon-one-prompt");
    ok(&run(&[
        "bon",
        "--config",
        c,
        "--sft",
        sft.to_str().unwrap(),
        "--rm",
        rm.to_str().unwrap(),
        "--set",
        "eval.prompts=1",
        "--out",
        bon.to_str().unwrap(),
        "--quiet",
    ]));
    let csv = fs::read_to_string(bon.join("best_of_n.csv")).unwrap();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[3], "", "gold_ci of one prompt: {csv}");
    assert!(summary(&bon)["best_of_n"][0]["gold_ci"].is_null());
    for command in ["report", "plot"] {
        let o = gradgym(&[command, bon.to_str().unwrap()]);
        assert!(o.status.success(), "{command}: {}", text(&o));
    }
    // An input model too short for the config's responses is named by its model.json.
    let short = json.replace("\"context\": 24", "\"context\": 12");
    assert_ne!(short, json);
    fs::write(model.join("model.json"), short).unwrap();
    let o = run(&[
        "sample",
        "--config",
        c,
        "--model",
        model.to_str().unwrap(),
        "--out",
        dir.join("short-run").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "[model] from the input model {}",
            model.join("model.json").display()
        )),
        "{}",
        text(&o)
    );
    fs::remove_dir_all(dir).ok();
}

/// A signal during best-of-n (tens of thousands of samples) stops it within a chunk of them,
/// exit 130 and `interrupted`: best-of-n, the reward model's
/// normalisation and the evaluations never looked at the signal and ended `completed`, exit 0.
#[test]
fn sigint_stops_best_of_n_within_a_chunk_of_samples() {
    use std::time::Duration;
    let dir = scratch("signal-bon");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    let (sft, rm) = sft_and_rm(&dir, c);
    let out = dir.join("bon");
    // 256 prompts × 2048 samples: about a minute of sampling here.
    let (s, r) = (sft.to_str().unwrap(), rm.to_str().unwrap());
    let o = interrupt_once(
        &[
            "bon",
            "--config",
            c,
            "--sft",
            s,
            "--rm",
            r,
            "--set",
            "eval.prompts=256",
            "--set",
            "eval.samples_per_prompt=2048",
            "--set",
            "eval.best_of_n=[1, 2048]",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        &partial(&out),
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(
        t.contains(
            "best-of-n: sampling from the SFT model: interrupted by a signal while sampling"
        ),
        "{t}"
    );
    assert_eq!(summary(&out)["status"], "interrupted");
    fs::remove_dir_all(dir).ok();
}
