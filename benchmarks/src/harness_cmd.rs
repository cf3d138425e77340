//! `gradgym sweep`, `report`, `plot` and `compare`: argument parsing over the library modules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use gradgym_benchmarks::report::{self, Metric};
use gradgym_benchmarks::stats::Bootstrap;
use gradgym_benchmarks::sweep::{self, Shard, SlurmSpec, SweepOptions, SweepSpec};
use gradgym_benchmarks::{compare, plot, results, rlhf_study};

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep file (TOML): seeds, [[runs]] groups of envs × algos × grid.
    file: PathBuf,
    /// Runs trained at once (default: the number of cores). Each is single-threaded.
    #[arg(long)]
    jobs: Option<usize>,
    /// cpu, cuda or cuda:N, for every run.
    #[arg(long)]
    device: Option<String>,
    /// Run only slice i of n of the grid (runs k with k mod n = i − 1).
    #[arg(long)]
    shard: Option<String>,
    /// The results folder (default: out/sweeps/<sweep name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write an sbatch job-array script (one shard per task) to stdout instead of running.
    #[arg(long)]
    emit_slurm: bool,
    /// Shards for --emit-slurm (default: one per run).
    #[arg(long)]
    shards: Option<usize>,
    /// --emit-slurm: CPUs per array task (default 2, or the sweep file's [slurm] table).
    #[arg(long)]
    slurm_cpus_per_task: Option<usize>,
    /// --emit-slurm: the tasks' time limit, e.g. 02:00:00.
    #[arg(long)]
    slurm_time: Option<String>,
    /// --emit-slurm: memory per task, e.g. 4G.
    #[arg(long)]
    slurm_mem: Option<String>,
    /// --emit-slurm: the partition to submit to.
    #[arg(long)]
    slurm_partition: Option<String>,
    /// --emit-slurm: the account to charge.
    #[arg(long)]
    slurm_account: Option<String>,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    quiet: bool,
    /// Rerun the runs that an earlier session finished as failed (they are kept otherwise,
    /// and counted in the exit code).
    #[arg(long)]
    retry_failed: bool,
}

fn has_slurm_flags(args: &SweepArgs) -> bool {
    args.slurm_cpus_per_task.is_some()
        || args.slurm_time.is_some()
        || args.slurm_mem.is_some()
        || args.slurm_partition.is_some()
        || args.slurm_account.is_some()
}

pub fn run_sweep(args: SweepArgs) -> Result<ExitCode> {
    let spec = SweepSpec::read(&args.file)?;
    let source = args.file.display().to_string();
    // A Slurm script is written for the cluster's nodes: this machine need not have their
    // GPUs (every other check of the runs' configs still holds).
    if args.emit_slurm {
        gradgym_agents::device::check_for_other_machines();
    }
    // A flag's own fault is named as the flag's, not the grid's.
    if let Some(d) = &args.device {
        gradgym_agents::device::parse_device(d)
            .map_err(|e| anyhow::anyhow!("--device {d}: {e}"))?;
    }
    let planned = spec.plan(&source, args.device.as_deref())?;
    if !args.emit_slurm && (args.shards.is_some() || has_slurm_flags(&args)) {
        anyhow::bail!(
            "--shards and --slurm-* are read with --emit-slurm only; without it the sweep runs here (split it with --shard i/n)"
        );
    }
    if args.emit_slurm && args.jobs.is_some() {
        anyhow::bail!(
            "--jobs is not read with --emit-slurm: each array task runs as many jobs as its CPUs (set them with --slurm-cpus-per-task)"
        );
    }
    if args.emit_slurm && args.shard.is_some() {
        anyhow::bail!(
            "--shard is not read with --emit-slurm: the script gives each array task its shard (choose how many with --shards)"
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/sweeps").join(spec.display_name(&args.file)));
    if args.emit_slurm {
        if args.shards == Some(0) {
            anyhow::bail!("--shards must be at least 1");
        }
        if args.slurm_cpus_per_task == Some(0) {
            anyhow::bail!("--slurm-cpus-per-task must be at least 1");
        }
        let shards = args.shards.unwrap_or(planned.len()).clamp(1, planned.len());
        let slurm = spec.slurm.clone().unwrap_or_default().overlay(&SlurmSpec {
            cpus_per_task: args.slurm_cpus_per_task,
            time: args.slurm_time.clone(),
            mem: args.slurm_mem.clone(),
            partition: args.slurm_partition.clone(),
            account: args.slurm_account.clone(),
        });
        if slurm.cpus_per_task == Some(0) {
            anyhow::bail!("{source}: [slurm] cpus_per_task must be at least 1");
        }
        // The runs were checked for the nodes, not against this machine's memory: against
        // `--mem`, where it is given.
        if let Some(mem) = &slurm.mem {
            let field = if args.slurm_mem.is_some() {
                "--slurm-mem".to_string()
            } else {
                format!("{source}: [slurm] mem")
            };
            let bytes = sweep::slurm_mem_bytes(mem)
                .map_err(|e| anyhow::anyhow!("{field} = {mem:?}: {e}"))?;
            let jobs = slurm.cpus_per_task.unwrap_or(2);
            if let (Some(bytes), Some((need, at_once, run))) =
                (bytes, sweep::slurm_task_memory(&planned, shards, jobs))
                && need > bytes
            {
                let gib = gradgym_agents::config::gib;
                if at_once == 1 {
                    anyhow::bail!(
                        "{field} = {mem:?}: run {} would need about {} (rollout buffer, envs and network, and the {} the process itself takes); raise it",
                        run.id,
                        gib(need),
                        gib(sweep::SLURM_TASK_BASELINE)
                    );
                }
                let largest = run.config.memory_estimate();
                anyhow::bail!(
                    "{field} = {mem:?}: an array task runs {at_once} runs at once and would need about {} (rollout buffers, envs and networks, and the {} the process itself takes; the largest run, {}, alone about {}); raise it{}",
                    gib(need),
                    gib(sweep::SLURM_TASK_BASELINE),
                    run.id,
                    gib(largest),
                    if largest + sweep::SLURM_TASK_BASELINE <= bytes {
                        ", or lower --slurm-cpus-per-task"
                    } else {
                        ""
                    }
                );
            }
        }
        for (field, flag, value) in [
            ("time", &args.slurm_time, &slurm.time),
            ("partition", &args.slurm_partition, &slurm.partition),
            ("account", &args.slurm_account, &slurm.account),
        ] {
            if let Some(v) = value
                && let Some(problem) = sweep::slurm_field_problem(field, v)
            {
                let named = if flag.is_some() {
                    format!("--slurm-{field}")
                } else {
                    format!("{source}: [slurm] {field}")
                };
                anyhow::bail!("{named} = {v:?}: {problem}");
            }
        }
        let spec_path = std::fs::canonicalize(&args.file)
            .with_context(|| format!("cannot resolve {}", args.file.display()))?;
        let out = sweep::absolute(&out)?;
        for (what, path, log_folder) in
            [("the sweep file", &spec_path, false), ("--out", &out, true)]
        {
            if let Some(problem) = sweep::slurm_path_problem(path, log_folder) {
                anyhow::bail!("{what} {:?} {problem}", path.display().to_string());
            }
        }
        // Slurm opens each task's log in `out` before the script runs: make it now.
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        print!(
            "{}",
            sweep::slurm_script(
                &spec_path,
                &out,
                shards,
                args.device.as_deref(),
                args.retry_failed,
                &slurm
            )
        );
        eprintln!(
            "gradgym sweep: made the log folder {}; submit the script with sbatch from any folder",
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let shard = match &args.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::ALL,
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    let outcome = sweep::run_sweep(
        &args.file,
        &SweepOptions {
            jobs,
            device: args.device,
            shard,
            out: out.clone(),
            quiet: args.quiet,
            retry_failed: args.retry_failed,
        },
    )?;
    let earlier = if outcome.failed_earlier > 0 {
        format!(
            " + {} failed in earlier sessions (rerun them with --retry-failed)",
            outcome.failed_earlier
        )
    } else {
        String::new()
    };
    eprintln!(
        "gradgym sweep: {} runs in {} ({} already done, {} completed now, {} failed{earlier}); summary: {}",
        outcome.planned,
        out.display(),
        outcome.skipped,
        outcome.completed,
        outcome.failed,
        out.join("summary.csv").display()
    );
    Ok(if outcome.failed_in_folder() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The score and bootstrap settings shared by `report` and `plot`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// final (final_return_mean_last100) or eval (eval_return_mean).
    #[arg(long, default_value = "final")]
    metric: String,
    /// Bootstrap replicates.
    #[arg(long, default_value_t = 10_000)]
    reps: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl StatsArgs {
    fn metric(&self) -> Result<Metric> {
        Metric::parse(&self.metric)
    }
    fn bootstrap(&self) -> Result<Bootstrap> {
        if self.reps == 0 {
            anyhow::bail!("--reps must be at least 1 (bootstrap replicates)");
        }
        // Each cell keeps its replicates: a count past this aborted the process when their
        // buffer could not be allocated.
        let most = gradgym_agents::limits::MOST_SIZE;
        if self.reps > most {
            anyhow::bail!(
                "--reps {}: more bootstrap replicates than gradgym allows ({most}); gradgym's default is 10,000 and rliable's 50,000",
                self.reps
            );
        }
        Ok(Bootstrap {
            reps: self.reps,
            seed: self.seed,
        })
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Results folders (sweep folders, or folders of shard folders); their runs are pooled.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    #[command(flatten)]
    stats: StatsArgs,
    /// Where to write (default: <first DIR>/report).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Refuses RLHF run folders given beside others (an RLHF study is read one folder at a time),
/// and a folder with no sweep in it (no summary.csv in it or its subfolders) whose subfolders
/// hold RLHF studies, naming them.
fn rlhf_alone(dirs: &[PathBuf], command: &str) -> Result<()> {
    if dirs.len() > 1
        && let Some(d) = dirs.iter().find(|d| rlhf_study::is_study(d))
    {
        anyhow::bail!(
            "{}: holds gradgym rlhf runs, which `gradgym {command}` reads one folder at a time (`gradgym {command} {}`); give it alone",
            d.display(),
            d.display()
        );
    }
    for d in dirs {
        let subs: Vec<PathBuf> = match std::fs::read_dir(d) {
            Ok(it) => it
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
            Err(_) => continue,
        };
        if d.join("summary.csv").is_file() || subs.iter().any(|s| s.join("summary.csv").is_file()) {
            continue;
        }
        let mut nested: Vec<String> = subs
            .iter()
            .filter(|s| rlhf_study::is_study(s))
            .map(|s| format!("`gradgym {command} {}`", s.display()))
            .collect();
        nested.sort();
        if !nested.is_empty() {
            anyhow::bail!(
                "{}: no sweep here (no summary.csv in it or its subfolders), but folders inside it hold gradgym rlhf runs, each read alone: {}",
                d.display(),
                nested.join(", ")
            );
        }
    }
    Ok(())
}

fn sources(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter().map(|d| format!("`{}`", d.display())).collect()
}

pub fn run_report(args: ReportArgs) -> Result<ExitCode> {
    if args.dirs.len() == 1 && rlhf_study::is_study(&args.dirs[0]) {
        let study = rlhf_study::load(&args.dirs[0])?;
        let out = args.out.unwrap_or_else(|| args.dirs[0].join("report"));
        print!("{}", rlhf_study::write_report(&study, &out)?);
        eprintln!("gradgym report: wrote {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    rlhf_alone(&args.dirs, "report")?;
    let mut set = results::load(&args.dirs)?;
    // Said on stderr and at the top of report.md alike.
    let unreadable = results::check_curves(&set);
    set.warnings.extend(unreadable);
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let metric = args.stats.metric()?;
    if let Some(w) = report::unscored_note(&set, metric) {
        eprintln!("warning: {w}");
    }
    let report = report::compute(&set, metric, args.stats.bootstrap()?)?;
    if let Some(note) = report.few_runs_note() {
        eprintln!("note: {note}");
    }
    if let Some(note) = report.env_sets_note() {
        eprintln!("note: {note}");
    }
    let out = args.out.unwrap_or_else(|| args.dirs[0].join("report"));
    report.write(&out, &sources(&args.dirs))?;
    print!("{}", report.markdown(&sources(&args.dirs)));
    eprintln!("gradgym report: wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Results folders (sweeps, shard folders) or estimator-study folders (with estimators.csv).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    #[command(flatten)]
    stats: StatsArgs,
    /// Where to write (default: <first DIR>/plots; estimator studies: each <DIR>/plots).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run_plot(args: PlotArgs) -> Result<ExitCode> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dirs[0].join("plots"));
    // The estimator studies among the folders: all of them, or none, may be plotted.
    let studies: Vec<&PathBuf> = args
        .dirs
        .iter()
        .filter(|d| d.join("estimators.csv").is_file())
        .collect();
    let written = if args.dirs.len() == 1 && rlhf_study::is_study(&args.dirs[0]) {
        let study = rlhf_study::load(&args.dirs[0])?;
        for (run, status, _) in &study.skipped {
            eprintln!("warning: {run} left out (status {status})");
        }
        plot::plot_rlhf(&study, &out)?
    } else if studies.len() == args.dirs.len() {
        // Each study's figures have the same names: one folder of them per study.
        if args.dirs.len() > 1 && args.out.is_some() {
            anyhow::bail!(
                "--out: {} estimator studies would each draw the same four files there, each \
                 over the one before; leave --out out (each study's plots go to <its folder>/plots) \
                 or plot one study at a time",
                args.dirs.len()
            );
        }
        let mut all = Vec::new();
        for d in &args.dirs {
            let out = args.out.clone().unwrap_or_else(|| d.join("plots"));
            all.extend(plot::plot_estimators(&d.join("estimators.csv"), &out)?);
        }
        all
    } else {
        // Some estimator studies among results folders: two kinds that draw different
        // figures, said as such (each would otherwise be read as a broken run folder).
        if let Some(study) = studies.first() {
            anyhow::bail!(
                "{} is an estimator study (estimators.csv) and the others are not: an estimator \
                 study's figures and a results folder's are drawn apart; plot the studies in \
                 one call and the results folders in another",
                study.display()
            );
        }
        rlhf_alone(&args.dirs, "plot")?;
        let set = results::load(&args.dirs)?;
        for w in set
            .warnings
            .iter()
            .chain(&results::missing_runs_folders(&set))
        {
            eprintln!("warning: {w}");
        }
        let metric = args.stats.metric()?;
        if let Some(w) = report::unscored_note(&set, metric) {
            eprintln!("warning: {w}");
        }
        plot::plot_results(&set, metric, args.stats.bootstrap()?, &out)
            .context("cannot draw the plots")?
    };
    for p in &written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    baseline: PathBuf,
    candidate: PathBuf,
    #[arg(long, default_value = "final")]
    metric: String,
    /// Allowed drop, in normalised score (fraction of reference − random); a finite number ≥ 0.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    tolerance: f64,
    /// Pass a candidate that lacks seeds of the baseline (a killed sweep, a missing shard)
    /// on the seeds it has; without it such a candidate fails the gate.
    #[arg(long)]
    allow_missing_seeds: bool,
}

pub fn run_compare(args: CompareArgs) -> Result<ExitCode> {
    // A gate must not be switched off by a typo: NaN or ∞ would accept any drop.
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        anyhow::bail!(
            "--tolerance must be a finite number ≥ 0 (got {})",
            args.tolerance
        );
    }
    let baseline = results::load(std::slice::from_ref(&args.baseline))?;
    let candidate = results::load(std::slice::from_ref(&args.candidate))?;
    let metric = Metric::parse(&args.metric)?;
    // A gate against nothing would pass anything.
    if !baseline
        .runs
        .iter()
        .any(|r| r.completed() && metric.of(r).is_some())
    {
        anyhow::bail!(
            "{}: the baseline holds no completed run with a {} score ({} run(s) read), so \
             nothing could fail against it",
            args.baseline.display(),
            metric.column(),
            baseline.runs.len()
        );
    }
    let rows = compare::compare(
        &baseline,
        &candidate,
        metric,
        args.tolerance,
        Bootstrap::default(),
    );
    if args.tolerance > 0.0 {
        let unscaled: Vec<String> = baseline
            .envs()
            .into_iter()
            .filter(|e| gradgym_benchmarks::stats::score_range(e).is_none())
            .collect();
        if !unscaled.is_empty() {
            eprintln!(
                "warning: --tolerance {} does not apply on {}: no score range scales it there, \
                 so any drop beyond the interval fails",
                args.tolerance,
                unscaled.join(", ")
            );
        }
    }
    print!("{}", compare::table(&rows));
    let missing = compare::missing_seeds(&baseline, &candidate);
    let configs = compare::config_differences(&baseline, &candidate);
    for w in baseline
        .warnings
        .iter()
        .chain(&candidate.warnings)
        .chain(&missing)
        .chain(&configs)
    {
        eprintln!("warning: {w}");
    }
    let n = compare::regressions(&rows);
    if n > 0 {
        eprintln!("gradgym compare: {n} regression(s)");
        Ok(ExitCode::from(1))
    } else if !missing.is_empty() && !args.allow_missing_seeds {
        // A gate after a sweep that crashed or lost a shard must not pass it on the runs
        // that happened to finish.
        eprintln!(
            "gradgym compare: the candidate lacks seeds of the baseline ({} pair(s), above), so it fails the gate; --allow-missing-seeds compares the seeds it has",
            missing.len()
        );
        Ok(ExitCode::from(1))
    } else {
        eprintln!("gradgym compare: no regression");
        Ok(ExitCode::SUCCESS)
    }
}
