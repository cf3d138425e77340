//! `gradgym plot DIR…`: figures drawn from the files of a results folder alone, as PNG and SVG.
//!
//! From a sweep (or its shards):
//! - `learning_curves`: per env, the episodic return against env steps, one line per algo: the
//!   mean over seeds of each run's curve (a trailing mean over 1/40 of the budget, read at 100
//!   evenly spaced steps), with a 95% bootstrap band over seeds;
//! - `final_scores`: per env, each algo's IQM of the final score with its 95% interval and the
//!   individual runs as dots;
//! - `intervals`: per algo, IQM, median, mean and optimality gap of normalised scores over envs
//!   with stratified-bootstrap 95% intervals (as in Agarwal et al. 2021, fig. 1);
//! - `profiles`: performance profiles (fraction of runs above τ) with bands.
//!
//! From `gradgym estimators` output (`estimators.csv`):
//! - `estimator_variance`: each estimator's gradient variance relative to REINFORCE with the
//!   total return, on the benchmark MDPs at the largest sample size (log scale);
//! - `estimator_bias`: every measurement's bias z-score (`|mean − exact| / SE`, largest
//!   coordinate), marked passed or failed.
//!
//! Text is drawn with DejaVu Sans, bundled in `benchmarks/assets/fonts/`, so no system font
//! library is used; the same inputs give the same files.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{self, Metric};
use crate::results::{Csv, ResultSet, learning_curve};
use crate::stats::{self, Bootstrap};

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the bundled DejaVu Sans font does not load");
        }
    });
}

/// Colours by algo rank: ppo, a2c, reinforce, then others (colour-blind-safe Okabe–Ito hues).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Font sizes, in pixels: figures are at least 1600 px wide and read at 1:1.
const CAPTION: u32 = 26;
const TICK: u32 = 18;
const LEGEND: u32 = 19;
const NOTE: u32 = 17;
/// The narrowest figure drawn.
const MIN_WIDTH: u32 = 1600;
/// Grey, for what failed.
const FAILED: RGBColor = RGBColor(150, 150, 150);

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// Draws `$body` (with `$root` bound to the drawing area) into `<name>.png` and `<name>.svg`;
/// evaluates to both paths. The body is expanded once per backend.
macro_rules! render {
    ($out:expr, $name:expr, $size:expr, |$root:ident| $body:expr) => {{
        let png = $out.join(format!("{}.png", $name));
        let svg = $out.join(format!("{}.svg", $name));
        {
            let $root = &BitMapBackend::new(&png, $size).into_drawing_area();
            $body?;
            $root.present().map_err(err)?;
        }
        {
            let $root = &SVGBackend::new(&svg, $size).into_drawing_area();
            $body?;
            $root.present().map_err(err)?;
        }
        vec![png, svg]
    }};
}

/// Whether `stem` is the name of a figure some `gradgym plot` draws.
fn is_figure_name(stem: &str) -> bool {
    const NAMES: [&str; 7] = [
        "learning_curves",
        "final_scores",
        "intervals",
        "profiles",
        "estimator_variance",
        "estimator_bias",
        "overoptimisation",
    ];
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    NAMES.contains(&stem)
        || stem.strip_prefix("scaling_").is_some_and(|k| !k.is_empty())
        || stem
            .strip_prefix("overoptimisation_labels")
            .is_some_and(digits)
}

/// Whether `png` and `svg` begin as the figures gradgym writes do: a PNG's signature, and
/// plotters' `<svg width=` (not a user's files that happen to share a figure's name).
fn is_figure_pair(png: &Path, svg: &Path) -> bool {
    let head = |p: &Path, n: u64| gradgym_agents::run_folder::read_head(p, n).unwrap_or_default();
    head(png, 8) == b"\x89PNG\r\n\x1a\n" && head(svg, 11) == b"<svg width="
}

/// Removes from `out` the figures an earlier plot drew there that this one did not redraw (a
/// grid key dropped, a reward model's comparisons changed, another folder plotted into the
/// same `--out`): left beside the new ones, they would pass for figures of these results. Only
/// pairs `<name>.png` + `<name>.svg` of a name gradgym draws, each beginning as gradgym's
/// figures do, are removed; each is said on standard error. Returns the files removed.
fn retire_stale(out: &Path, written: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut stems: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "png")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && is_figure_name(stem)
        {
            stems.push(stem.to_string());
        }
    }
    stems.sort();
    let mut removed = Vec::new();
    for stem in stems {
        let pair = [
            out.join(format!("{stem}.png")),
            out.join(format!("{stem}.svg")),
        ];
        if pair.iter().any(|p| written.contains(p) || !p.is_file())
            || !is_figure_pair(&pair[0], &pair[1])
        {
            continue;
        }
        for p in pair {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            eprintln!(
                "note: removed {}: an earlier plot's figure that these results do not draw",
                p.display()
            );
            removed.push(p);
        }
    }
    Ok(removed)
}

/// A curve averaged over seeds: (x, mean, low, high) at each grid step.
struct Band {
    label: String,
    /// Runs averaged (completed runs with a readable curve).
    runs: usize,
    points: Vec<(f64, f64, f64, f64)>,
}

/// Trailing mean of `curve` over `window` env steps, read at `xs` (None before the first point).
fn smooth_at(curve: &[(f64, f64)], xs: &[f64], window: f64) -> Vec<Option<f64>> {
    xs.iter()
        .map(|&x| {
            let inside: Vec<f64> = curve
                .iter()
                .filter(|(s, _)| *s <= x && *s > x - window)
                .map(|(_, r)| *r)
                .collect();
            if inside.is_empty() {
                curve.iter().rev().find(|(s, _)| *s <= x).map(|(_, r)| *r)
            } else {
                Some(stats::mean(&inside))
            }
        })
        .collect()
}

/// The curves of `env`, one band per label, all smoothed by one trailing window (1/40 of the
/// panel's x range, so the caption can name it), and the x range.
fn bands(set: &ResultSet, env: &str, boot: Bootstrap) -> Result<(Vec<Band>, f64)> {
    let mut out = Vec::new();
    let mut xmax: f64 = 0.0;
    let mut curves_of = Vec::new();
    for label in set.labels() {
        let runs = set.completed(env, &label);
        if runs.is_empty() {
            continue;
        }
        // One unreadable metrics.csv (truncated, a NaN) costs that run's curve, not the
        // figure: it is left out and said on stderr.
        let curves: Vec<Vec<(f64, f64)>> = runs
            .iter()
            // A row of a summary.csv kept without runs/ has no curve (said once by the caller).
            .filter(|r| !crate::results::without_runs_folder(r))
            .filter_map(|r| match learning_curve(r) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("warning: {e:#}; {} is left out of learning_curves", r.id);
                    None
                }
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        let end = curves
            .iter()
            .map(|c| c.last().map_or(0.0, |p| p.0))
            .fold(f64::INFINITY, f64::min);
        if !end.is_finite() || end <= 0.0 {
            continue;
        }
        xmax = xmax.max(end);
        curves_of.push((label, curves, end));
    }
    let window = xmax / 40.0;
    for (label, curves, end) in curves_of {
        let xs: Vec<f64> = (1..=100).map(|i| end * i as f64 / 100.0).collect();
        let smoothed: Vec<Vec<Option<f64>>> =
            curves.iter().map(|c| smooth_at(c, &xs, window)).collect();
        let mut points = Vec::new();
        for (j, &x) in xs.iter().enumerate() {
            let ys: Vec<f64> = smoothed.iter().filter_map(|s| s[j]).collect();
            if ys.is_empty() {
                continue;
            }
            let i = stats::stratified_interval(
                &[ys],
                &stats::mean,
                Bootstrap {
                    reps: boot.reps.min(2000),
                    seed: boot.seed,
                },
                &format!("curve/{env}/{label}/{j}"),
            );
            points.push((x, i.point, i.low, i.high));
        }
        out.push(Band {
            label,
            runs: curves.len(),
            points,
        });
    }
    Ok((out, xmax))
}

fn steps_label(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Tick labels with as many decimals as the axis span needs.
fn tick(v: f64, span: f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else if span >= 2.0 {
        1
    } else if span >= 0.2 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    // A value that rounds to zero is labelled 0, not -0.
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = (hi - lo).abs().max(1e-9);
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// The axis range of `values`: their smallest and largest, [`padded`]; (0, 1) when there are
/// none.
fn axis_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if lo.is_finite() {
        padded(lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// One entry of a legend: a coloured swatch and its text, or a grey crossed swatch for a
/// group whose every run failed.
struct LegendItem {
    text: String,
    colour: Option<RGBColor>,
}

/// The legend of a figure: one item per label, with how many seeds its curves average when
/// `seeds` says (`ppo (n = 5)`, or `n = 3–5` when envs differ); a label with no completed run
/// or readable curve at all is marked so rather than shown as an empty entry.
fn legend_items(labels: &[String], seeds: &[(String, Vec<usize>)]) -> Vec<LegendItem> {
    labels
        .iter()
        .enumerate()
        .map(
            |(i, l)| match seeds.iter().find(|(s, _)| s == l).map(|(_, n)| n) {
                Some(n) if n.is_empty() => LegendItem {
                    text: format!("{l}: no run to draw (each failed or is unreadable)"),
                    colour: None,
                },
                Some(n) => {
                    let (lo, hi) = (n.iter().min().unwrap(), n.iter().max().unwrap());
                    let n = if lo == hi {
                        format!("{lo}")
                    } else {
                        format!("{lo}–{hi}")
                    };
                    LegendItem {
                        text: format!("{l} (n = {n})"),
                        colour: Some(colour(i)),
                    }
                }
                None => LegendItem {
                    text: l.clone(),
                    colour: Some(colour(i)),
                },
            },
        )
        .collect()
}

/// Where each legend item goes: (x, y of its first line, its lines) and the legend's height.
/// Items flow left to right and wrap to a new row before they would clip; a label too long
/// for half the width is broken into lines at commas.
#[allow(clippy::type_complexity)]
fn legend_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[LegendItem],
) -> Result<(Vec<(i32, i32, Vec<String>)>, u32)> {
    let style: TextStyle = ("sans-serif", LEGEND).into_font().into();
    let width = area.dim_in_pixel().0 as i32;
    let (swatch, gap, line_h, pad) = (34, 36, LEGEND as i32 + 8, 10);
    let max_text = width / 2 - swatch;
    let text_w =
        |t: &str| -> Result<i32> { Ok(area.estimate_text_size(t, &style).map_err(err)?.0 as i32) };
    let mut placed = Vec::new();
    let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
    let mut row_w = 0;
    let mut widths = Vec::new();
    for item in items {
        // Break at commas (grid labels are `algo[k=v,k=v]`) until every line fits.
        let mut lines: Vec<String> = Vec::new();
        for piece in item.text.split_inclusive(',') {
            match lines.last_mut() {
                Some(last) if text_w(&format!("{last}{piece}"))? <= max_text => {
                    last.push_str(piece)
                }
                _ => lines.push(piece.to_string()),
            }
        }
        let w = swatch
            + lines
                .iter()
                .map(|l| text_w(l))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .max()
                .unwrap_or(0);
        if row_w > 0 && row_w + w > width - 2 * pad {
            rows.push(Vec::new());
            row_w = 0;
        }
        row_w += w + gap;
        rows.last_mut().expect("a row").push(placed.len());
        widths.push(w);
        placed.push(lines);
    }
    let mut out: Vec<(i32, i32, Vec<String>)> = placed.into_iter().map(|l| (0, 0, l)).collect();
    let mut y = pad;
    for row in &rows {
        let total: i32 = row.iter().map(|&k| widths[k] + gap).sum::<i32>() - gap;
        let mut x = ((width - total) / 2).max(pad);
        let mut tallest = 1;
        for &k in row {
            out[k].0 = x;
            out[k].1 = y;
            tallest = tallest.max(out[k].2.len() as i32);
            x += widths[k] + gap;
        }
        y += tallest * line_h;
    }
    Ok((out, (y + pad) as u32))
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[LegendItem],
    layout: &[(i32, i32, Vec<String>)],
) -> Result<()> {
    let line_h = LEGEND as i32 + 8;
    for (item, (x, y, lines)) in items.iter().zip(layout) {
        let (x, y) = (*x, *y);
        let mid = y + line_h / 2 - 2;
        match item.colour {
            Some(c) => area
                .draw(&Rectangle::new(
                    [(x, mid - 7), (x + 26, mid + 7)],
                    c.filled(),
                ))
                .map_err(err)?,
            None => {
                area.draw(&Rectangle::new(
                    [(x, mid - 7), (x + 26, mid + 7)],
                    FAILED.stroke_width(2),
                ))
                .map_err(err)?;
                area.draw(&PathElement::new(
                    vec![(x, mid - 7), (x + 26, mid + 7)],
                    FAILED.stroke_width(2),
                ))
                .map_err(err)?;
            }
        }
        let colour = if item.colour.is_some() { BLACK } else { FAILED };
        for (k, line) in lines.iter().enumerate() {
            area.draw(&Text::new(
                line.clone(),
                (x + 34, y + k as i32 * line_h),
                ("sans-serif", LEGEND).into_font().color(&colour),
            ))
            .map_err(err)?;
        }
    }
    Ok(())
}

/// Lines of `note`, left-aligned at the bottom of a figure.
fn draw_note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, note: &[String]) -> Result<()> {
    for (k, line) in note.iter().enumerate() {
        area.draw(&Text::new(
            line.clone(),
            (14, 4 + k as i32 * (NOTE as i32 + 7)),
            ("sans-serif", NOTE).into_font().color(&BLACK.mix(0.75)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// A panel of learning curves: the env, its curves, the x range, and the groups that have
/// runs here but no curve (each run failed or is unreadable), as text.
struct CurvePanel {
    env: String,
    bands: Vec<Band>,
    xmax: f64,
    failed: Vec<String>,
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[CurvePanel],
    labels: &[String],
    items: &[LegendItem],
    note: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (layout, legend_h) = legend_layout(root, items)?;
    let note_h = note.len() as u32 * (NOTE + 7) + 10;
    let (top, rest) = root.split_vertically(root.dim_in_pixel().1 - legend_h - note_h);
    let (legend, foot) = rest.split_vertically(legend_h);
    let areas = top.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas) {
        let ys = panel
            .bands
            .iter()
            .flat_map(|b| b.points.iter().flat_map(|p| [p.2, p.3]));
        let (lo, hi) = axis_range(ys);
        let caption = format!(
            "{} (smoothing window {} steps)",
            panel.env,
            steps_label(panel.xmax / 40.0)
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..panel.xmax, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("environment steps")
            .y_desc("episodic return")
            .x_labels(5)
            .x_label_formatter(&|x| steps_label(*x))
            .y_label_formatter(&|y| tick(*y, hi - lo))
            .label_style(("sans-serif", TICK))
            .axis_desc_style(("sans-serif", TICK))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(err)?;
        for band in &panel.bands {
            let c = colour(labels.iter().position(|l| *l == band.label).unwrap_or(0));
            let mut poly: Vec<(f64, f64)> = band.points.iter().map(|p| (p.0, p.2)).collect();
            poly.extend(band.points.iter().rev().map(|p| (p.0, p.3)));
            chart
                .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.2).filled())))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(
                    band.points.iter().map(|p| (p.0, p.1)),
                    c.stroke_width(3),
                ))
                .map_err(err)?;
        }
        let plot = chart.plotting_area();
        for (k, text) in panel.failed.iter().enumerate() {
            plot.draw(&Text::new(
                text.clone(),
                (panel.xmax * 0.03, hi - (hi - lo) * (0.06 + 0.07 * k as f64)),
                ("sans-serif", NOTE).into_font().color(&FAILED),
            ))
            .map_err(err)?;
        }
    }
    draw_legend(&legend, items, &layout)?;
    draw_note(&foot, note)?;
    Ok(())
}

/// The name of the row drawn at height `y` on a chart whose rows are `names` from top to
/// bottom (row i at height n − 1 − i); empty between rows.
fn row_label(y: f64, names: &[String]) -> String {
    let k = y.round();
    let n = names.len();
    if (y - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < n {
        names[n - 1 - k as usize].clone()
    } else {
        String::new()
    }
}

/// The width in pixels of the widest of `names` at the tick font (0 when all are empty).
fn label_width<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, names: &[String]) -> Result<u32> {
    let style: TextStyle = ("sans-serif", TICK).into_font().into();
    let mut w = 0;
    for n in names.iter().filter(|n| !n.is_empty()) {
        w = w.max(area.estimate_text_size(n, &style).map_err(err)?.0);
    }
    Ok(w)
}

/// Horizontal interval bars: one row per (label, point, low, high) with optional dots.
#[allow(clippy::type_complexity)]
fn draw_intervals<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[(usize, String, f64, f64, f64, Vec<f64>)],
    x_desc: &str,
) -> Result<()> {
    let xs = rows
        .iter()
        .flat_map(|r| [r.3, r.4].into_iter().chain(r.5.iter().copied()))
        .filter(|v| v.is_finite());
    let (lo, hi) = axis_range(xs);
    let n = rows.len().max(1);
    let names: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    // The row labels get the room their longest one needs, so none is clipped.
    let label_w = label_width(area, &names)?;
    // As many x ticks as fit without running together (a tick label such as "0.960" is
    // about 50 px wide).
    let plot_w = area
        .dim_in_pixel()
        .0
        .saturating_sub(2 * 16 + if label_w > 0 { label_w + 16 } else { 10 });
    let ticks = (plot_w / 100).clamp(2, 5) as usize;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", CAPTION - 4))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(if label_w > 0 { label_w + 16 } else { 10 })
        .build_cartesian_2d(lo..hi, -0.5f64..(n as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| row_label(*y, &names))
        .x_labels(ticks)
        .x_label_formatter(&|x| tick(*x, hi - lo))
        .x_desc(x_desc)
        .label_style(("sans-serif", TICK))
        .axis_desc_style(("sans-serif", TICK))
        .draw()
        .map_err(err)?;
    for (i, (c, _, point, low, high, dots)) in rows.iter().enumerate() {
        if !point.is_finite() {
            continue;
        }
        let y = (n - 1 - i) as f64;
        let col = colour(*c);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(*low, y - 0.3), (*high, y + 0.3)],
                col.mix(0.35).filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*point, y - 0.3), (*point, y + 0.3)],
                col.stroke_width(3),
            )))
            .map_err(err)?;
        chart
            .draw_series(
                dots.iter()
                    .map(|&d| Circle::new((d, y), 5, BLACK.mix(0.6).filled())),
            )
            .map_err(err)?;
    }
    Ok(())
}

fn draw_final_scores<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    envs: &[String],
    rep: &report::Report,
    labels: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((1, envs.len().max(1)));
    for (env, area) in envs.iter().zip(areas) {
        let rows: Vec<_> = rep
            .per_env
            .iter()
            .filter(|r| &r.env == env)
            .map(|r| {
                (
                    labels.iter().position(|l| *l == r.label).unwrap_or(0),
                    r.label.clone(),
                    r.iqm.point,
                    r.iqm.low,
                    r.iqm.high,
                    r.scores.clone(),
                )
            })
            .collect();
        draw_intervals(
            &area,
            env,
            &rows,
            "final return: IQM (bar), 95% bootstrap CI, runs (dots)",
        )?;
    }
    Ok(())
}

fn draw_aggregates<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rep: &report::Report,
    labels: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    // Rows over different env sets say how many envs each stands on (see env_sets_note).
    let envs_scored = rep.aggregate_envs().len();
    let mixed = rep.env_sets_note().is_some();
    let row_label = |r: &report::AggregateRow| {
        if mixed {
            format!("{} ({} of {envs_scored} envs)", r.label, r.envs.len())
        } else {
            r.label.clone()
        }
    };
    // The first panel also holds the row labels: it gets their width on top of an even share.
    let names: Vec<String> = rep.aggregate.iter().map(row_label).collect();
    let label_w = label_width(root, &names)? + 16;
    let panels = stats::Aggregate::ALL.len() as u32;
    let share = root.dim_in_pixel().0.saturating_sub(label_w) / panels;
    let (first, rest) = root.split_horizontally(label_w + share);
    let mut areas = vec![first];
    areas.extend(rest.split_evenly((1, panels as usize - 1)));
    for (k, (agg, area)) in stats::Aggregate::ALL.iter().zip(areas).enumerate() {
        let rows: Vec<_> = rep
            .aggregate
            .iter()
            .map(|r| {
                let (a, i) = r.values[k];
                debug_assert_eq!(a, *agg);
                (
                    labels.iter().position(|l| *l == r.label).unwrap_or(0),
                    if k > 0 { String::new() } else { row_label(r) },
                    i.point,
                    i.low,
                    i.high,
                    Vec::new(),
                )
            })
            .collect();
        let title = match agg {
            stats::Aggregate::OptimalityGap => "optimality gap (lower is better)".to_string(),
            other => other.name().to_string(),
        };
        draw_intervals(&area, &title, &rows, "normalised score (95% CI)")?;
    }
    Ok(())
}

fn draw_profiles<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rep: &report::Report,
    labels: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let items = legend_items(labels, &[]);
    let (layout, legend_h) = legend_layout(root, &items)?;
    let note = [
        "Bands: 95% stratified bootstrap CIs of the fraction of runs (over envs and seeds)."
            .to_string(),
    ];
    let note_h = NOTE + 17;
    let (top, rest) = root.split_vertically(root.dim_in_pixel().1 - legend_h - note_h);
    let (bottom, foot) = rest.split_vertically(legend_h);
    let taus = report::profile_taus();
    let mut chart = ChartBuilder::on(&top)
        .caption("Performance profiles", ("sans-serif", CAPTION))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(taus[0]..taus[taus.len() - 1], 0f64..1.02)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .x_desc("normalised score τ")
        .y_desc("fraction of runs with score > τ")
        .label_style(("sans-serif", TICK))
        .axis_desc_style(("sans-serif", TICK))
        .draw()
        .map_err(err)?;
    for (i, label) in labels.iter().enumerate() {
        let rows: Vec<_> = rep.profiles.iter().filter(|p| &p.label == label).collect();
        if rows.is_empty() {
            continue;
        }
        let c = colour(i);
        let mut poly: Vec<(f64, f64)> = rows.iter().map(|p| (p.tau, p.fraction.low)).collect();
        poly.extend(rows.iter().rev().map(|p| (p.tau, p.fraction.high)));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.2).filled())))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|p| (p.tau, p.fraction.point)),
                c.stroke_width(3),
            ))
            .map_err(err)?;
    }
    draw_legend(&bottom, &items, &layout)?;
    draw_note(&foot, &note)?;
    Ok(())
}

/// Every figure of a results folder; returns the files written.
pub fn plot_results(
    set: &ResultSet,
    metric: Metric,
    boot: Bootstrap,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    register_font();
    // The statistics first: a set they refuse (no runs) leaves no plot behind.
    let rep = report::compute(set, metric, boot)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let labels = set.labels();
    let envs = set.envs();
    let mut written = Vec::new();

    let mut panels = Vec::new();
    for env in &envs {
        let (bands, xmax) = bands(set, env, boot)?;
        let failed: Vec<String> = labels
            .iter()
            .filter(|l| !bands.iter().any(|b| &b.label == *l))
            .filter_map(|l| {
                let all = set.all(env, l);
                (!all.is_empty()).then(|| {
                    format!(
                        "{l}: {} of {} runs failed or unreadable, no curve",
                        all.len() - bands.iter().filter(|b| &b.label == l).count(),
                        all.len()
                    )
                })
            })
            .collect();
        if !bands.is_empty() {
            panels.push(CurvePanel {
                env: env.clone(),
                bands,
                xmax,
                failed,
            });
        }
    }
    let seeds: Vec<(String, Vec<usize>)> = labels
        .iter()
        .map(|l| {
            let n = panels
                .iter()
                .flat_map(|p| p.bands.iter().filter(|b| &b.label == l).map(|b| b.runs))
                .collect();
            (l.clone(), n)
        })
        .collect();
    let items = legend_items(labels.as_slice(), &seeds);
    let note = vec![
        "Lines: the mean over seeds of each run's episodic return, smoothed by a trailing mean over 1/40 of the run's steps (the window in each title).".to_string(),
        "Bands: 95% bootstrap confidence interval of that mean over the seeds (n in the legend).".to_string(),
    ];
    let width = (560 * panels.len().max(1) as u32).max(MIN_WIDTH);
    written.extend(render!(out, "learning_curves", (width, 760), |root| {
        draw_curves(root, &panels, &labels, &items, &note)
    }));

    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let panel_w = (380 + 11 * longest).max(560);
    let size = (
        (panel_w * envs.len().max(1) as u32).max(MIN_WIDTH),
        200 + 80 * labels.len() as u32,
    );
    written.extend(render!(out, "final_scores", size, |root| {
        draw_final_scores(root, &envs, &rep, &labels)
    }));
    if !rep.aggregate.is_empty() {
        let size = (
            MIN_WIDTH.max(1000 + 11 * longest),
            200 + 70 * rep.aggregate.len() as u32,
        );
        written.extend(render!(out, "intervals", size, |root| {
            draw_aggregates(root, &rep, &labels)
        }));
        written.extend(render!(out, "profiles", (MIN_WIDTH, 1000), |root| {
            draw_profiles(root, &rep, &labels)
        }));
    }
    for key in numeric_grid_keys(set) {
        let (panels, left_out) = scaling_panels(set, &rep, &key);
        if panels.is_empty() {
            continue;
        }
        let name = format!(
            "scaling_{}",
            key.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        let width = (640 * panels.len() as u32).max(MIN_WIDTH);
        written.extend(render!(out, &name, (width, 820), |root| {
            draw_scaling(root, &key, &panels, &left_out)
        }));
    }
    retire_stale(out, &written)?;
    Ok(written)
}

/// Grid keys whose values are all numbers, with at least two distinct values.
fn numeric_grid_keys(set: &ResultSet) -> Vec<String> {
    let mut keys: Vec<String> = set
        .runs
        .iter()
        .flat_map(|r| {
            r.hyperparameters
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.clone())
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| {
        let mut values: Vec<f64> = Vec::new();
        for r in &set.runs {
            match r.hyperparameters.get(k).filter(|v| !v.is_empty()) {
                None => {}
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => values.push(x),
                    _ => return false,
                },
            }
        }
        values.sort_by(f64::total_cmp);
        values.dedup();
        values.len() >= 2
    });
    keys
}

/// (x, IQM, CI low, CI high, the runs' scores) at one value of a grid key.
type ScalingPoint = (f64, f64, f64, f64, Vec<f64>);

/// One env of a scaling plot: per line (the label without `key`), the IQM interval at each
/// value of `key`; and the reference lines (labels with no grid value at all).
struct ScalingPanel {
    env: String,
    /// (line name, colour index, points (x, IQM, low, high, scores))
    lines: Vec<(String, usize, Vec<ScalingPoint>)>,
    /// (label, colour index, IQM, low, high)
    references: Vec<(String, usize, f64, f64, f64)>,
}

/// The panels, and the cells with no scored run (every run failed or unreadable), drawn
/// nowhere, whichever env they are on.
fn scaling_panels(
    set: &ResultSet,
    rep: &report::Report,
    key: &str,
) -> (Vec<ScalingPanel>, Vec<String>) {
    let labels = set.labels();
    let mut panels = Vec::new();
    let mut left_out = Vec::new();
    for env in set.envs() {
        let mut lines: Vec<(String, usize, Vec<ScalingPoint>)> = Vec::new();
        let mut references = Vec::new();
        for row in rep.per_env.iter().filter(|r| r.env == env) {
            let Some(run) = set.all(&env, &row.label).into_iter().next() else {
                continue;
            };
            if !row.iqm.point.is_finite() {
                left_out.push(format!("{env} {}", row.label));
                continue;
            }
            let colour_of = |l: &str| labels.iter().position(|x| x == l).unwrap_or(0);
            match run.hyperparameters.get(key).filter(|v| !v.is_empty()) {
                Some(v) => {
                    let x: f64 = v.parse().expect("numeric key");
                    let mut rest = run.clone();
                    rest.hyperparameters.remove(key);
                    let name = format!("{} by {key}", rest.label());
                    let point = (
                        x,
                        row.iqm.point,
                        row.iqm.low,
                        row.iqm.high,
                        row.scores.clone(),
                    );
                    match lines.iter_mut().find(|l| l.0 == name) {
                        Some(line) => line.2.push(point),
                        None => lines.push((name, colour_of(&row.label), vec![point])),
                    }
                }
                None if run.hyperparameters.values().all(|v| v.is_empty()) => {
                    references.push((
                        row.label.clone(),
                        colour_of(&row.label),
                        row.iqm.point,
                        row.iqm.low,
                        row.iqm.high,
                    ));
                }
                None => {}
            }
        }
        if lines.is_empty() {
            continue;
        }
        for line in &mut lines {
            line.2.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        panels.push(ScalingPanel {
            env,
            lines,
            references,
        });
    }
    (panels, left_out)
}

fn draw_scaling<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    key: &str,
    panels: &[ScalingPanel],
    left_out: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let mut names: Vec<String> = Vec::new();
    for p in panels {
        for l in &p.lines {
            if !names.contains(&l.0) {
                names.push(l.0.clone());
            }
        }
        for r in &p.references {
            let n = format!("{} (reference, no {key})", r.0);
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let colour_of = |name: &str| colour(names.iter().position(|n| n == name).unwrap_or(0));
    let items: Vec<LegendItem> = names
        .iter()
        .map(|n| LegendItem {
            text: n.clone(),
            colour: Some(colour_of(n)),
        })
        .collect();
    let (layout, legend_h) = legend_layout(root, &items)?;
    let note = vec![
        format!(
            "Each point: the IQM over seeds of the final return at that {key} (line), its 95% bootstrap CI (bar) and the runs (dots)."
        ),
        "Dashed: a reference with no grid value (its IQM, and its CI as a band).".to_string(),
    ];
    let mut note = note;
    if !left_out.is_empty() {
        note.push(format!(
            "Not drawn, no run scored (failed or unreadable): {}.",
            left_out.join("; ")
        ));
    }
    let note_h = note.len() as u32 * (NOTE + 7) + 10;
    let (top, rest) = root.split_vertically(root.dim_in_pixel().1 - legend_h - note_h);
    let (legend, foot) = rest.split_vertically(legend_h);
    let areas = top.split_evenly((1, panels.len()));
    for (panel, area) in panels.iter().zip(areas) {
        // One column per value of the key, in order (the values of a grid are usually a
        // geometric series, so this is close to a log scale and labels every value exactly).
        let mut values: Vec<f64> = panel
            .lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.0))
            .collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let fx = |x: f64| values.iter().position(|v| *v == x).unwrap_or(0) as f64;
        let (x0, x1) = (-0.5, values.len() as f64 - 0.5);
        let ys = panel
            .lines
            .iter()
            .flat_map(|l| {
                l.2.iter()
                    .flat_map(|p| [p.2, p.3].into_iter().chain(p.4.iter().copied()))
            })
            .chain(panel.references.iter().flat_map(|r| [r.3, r.4]))
            .filter(|v| v.is_finite());
        let (lo, hi) = axis_range(ys);
        let mut chart = ChartBuilder::on(&area)
            .caption(panel.env.clone(), ("sans-serif", CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(key)
            .y_desc("final return (IQM)")
            .disable_x_mesh()
            .x_labels(values.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < values.len() {
                    let v = values[i as usize];
                    tick(v, v.abs().max(1.0))
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| tick(*y, hi - lo))
            .label_style(("sans-serif", TICK))
            .axis_desc_style(("sans-serif", TICK))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(err)?;
        for (label, _, iqm, low, high) in &panel.references {
            let col = colour_of(&format!("{label} (reference, no {key})"));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, *low), (x1, *high)],
                    col.mix(0.12).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, *iqm), (x1, *iqm)],
                    12,
                    8,
                    col.stroke_width(3),
                ))
                .map_err(err)?;
        }
        for (name, _, points) in &panel.lines {
            let col = colour_of(name);
            let w = 0.06;
            for (x, _, low, high, scores) in points {
                let x = fx(*x);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x - w, *low), (x + w, *high)],
                        col.mix(0.3).filled(),
                    )))
                    .map_err(err)?;
                chart
                    .draw_series(
                        scores
                            .iter()
                            .map(|&d| Circle::new((x, d), 5, BLACK.mix(0.5).filled())),
                    )
                    .map_err(err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (fx(p.0), p.1)),
                    col.stroke_width(3),
                ))
                .map_err(err)?;
        }
    }
    draw_legend(&legend, &items, &layout)?;
    draw_note(&foot, &note)?;
    Ok(())
}

/// One row of `estimators.csv`.
struct StudyRow {
    mdp: String,
    estimator: String,
    samples: f64,
    z: f64,
    var: f64,
    passes: bool,
}

fn draw_variance<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    ratios: &[(String, f64)],
    largest: f64,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let names: Vec<String> = ratios.iter().map(|r| r.0.clone()).collect();
    let n = names.len();
    let finite: Vec<f64> = ratios
        .iter()
        .map(|r| r.1)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        / 1.5;
    let hi = finite.iter().copied().fold(0.0, f64::max).max(1.0) * 1.5;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Gradient variance relative to REINFORCE (benchmark MDPs, M = {largest})"),
            ("sans-serif", CAPTION - 4),
        )
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(label_width(root, &names)? + 20)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5f64..(n as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| row_label(*y, &names))
        .x_desc("trace of covariance / REINFORCE (total return); log scale")
        .label_style(("sans-serif", TICK))
        .axis_desc_style(("sans-serif", TICK))
        .draw()
        .map_err(err)?;
    for (i, (_, r)) in ratios.iter().enumerate() {
        if !(r.is_finite() && *r > 0.0) {
            continue;
        }
        let y = (n - 1 - i) as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(lo, y - 0.35), (*r, y + 0.35)],
                colour(0).mix(0.7).filled(),
            )))
            .map_err(err)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, -0.5), (1.0, n as f64 - 0.5)],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    Ok(())
}

fn draw_bias<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[StudyRow],
    names: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let n = names.len();
    let zmax = rows
        .iter()
        .map(|r| r.z)
        .filter(|z| z.is_finite())
        .fold(10.0, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Bias z-score of every measurement (red: flagged as biased)",
            ("sans-serif", CAPTION - 4),
        )
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(label_width(root, names)? + 20)
        .build_cartesian_2d((0.01f64..zmax).log_scale(), -0.5f64..(n as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| row_label(*y, names))
        .x_desc("max over coordinates of |mean estimate − exact gradient| / SE; log scale")
        .label_style(("sans-serif", TICK))
        .axis_desc_style(("sans-serif", TICK))
        .draw()
        .map_err(err)?;
    for r in rows {
        // A measurement that checked no coordinate has no z to draw.
        if !r.z.is_finite() {
            continue;
        }
        let i = names.iter().position(|e| *e == r.estimator).unwrap_or(0);
        let y = (n - 1 - i) as f64;
        let z = r.z.clamp(0.011, zmax / 1.01);
        let c = if r.passes {
            colour(0).mix(0.6)
        } else {
            RGBColor(200, 30, 30).mix(0.8)
        };
        chart
            .draw_series(std::iter::once(Circle::new((z, y), 5, c.filled())))
            .map_err(err)?;
    }
    Ok(())
}

/// The estimator study's figures from `estimators.csv`.
pub fn plot_estimators(csv_path: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let csv = Csv::read(csv_path)?;
    let (c_mdp, c_est, c_m, c_z, c_var, c_pass) = (
        csv.column("mdp")?,
        csv.column("estimator")?,
        csv.column("samples")?,
        csv.column("bias_z")?,
        csv.column("variance_trace")?,
        csv.column("passes")?,
    );
    let mut rows = Vec::new();
    for i in 0..csv.rows.len() {
        let f = &csv.rows[i].1;
        rows.push(StudyRow {
            mdp: f[c_mdp].clone(),
            estimator: f[c_est].clone(),
            samples: csv.number(i, c_m)?.unwrap_or(0.0),
            z: csv.number(i, c_z)?.unwrap_or(f64::NAN),
            var: csv.number(i, c_var)?.unwrap_or(f64::NAN),
            passes: f[c_pass] == "true",
        });
    }
    anyhow::ensure!(!rows.is_empty(), "{}: no measurements", csv_path.display());
    let mut names: Vec<String> = Vec::new();
    for r in &rows {
        if !names.contains(&r.estimator) {
            names.push(r.estimator.clone());
        }
    }
    let largest = rows.iter().map(|r| r.samples).fold(0.0, f64::max);
    let bench_var = |e: &str| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.estimator == e && r.samples == largest && r.mdp.starts_with("bench"))
            .map(|r| r.var)
            .collect();
        stats::mean(&v)
    };
    // The first estimator of the study is REINFORCE with the total return.
    let reference = bench_var(&names[0]);
    let ratios: Vec<(String, f64)> = names
        .iter()
        .map(|e| (e.clone(), bench_var(e) / reference))
        .collect();
    let height = 140 + 40 * names.len() as u32;
    let mut written = Vec::new();
    written.extend(render!(
        out,
        "estimator_variance",
        (MIN_WIDTH, height),
        |root| { draw_variance(root, &ratios, largest) }
    ));
    written.extend(render!(
        out,
        "estimator_bias",
        (MIN_WIDTH, height),
        |root| { draw_bias(root, &rows, &names) }
    ));
    retire_stale(out, &written)?;
    Ok(written)
}

/// The over-optimisation figures of an RLHF study (`crate::rlhf_study`): for each reward model
/// (by the comparisons it was fitted on), gold and proxy score against √KL(π‖p_SFT) for
/// best-of-n and for RL at every β, with Gao et al.'s fits of the gold curves dashed.
/// Figures: `overoptimisation_labels<N>`.
pub fn plot_rlhf(study: &crate::rlhf_study::Study, out: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut labels: Vec<Option<u64>> = study.curves.iter().map(|c| c.labels).collect();
    labels.sort();
    labels.dedup();
    let mut written = Vec::new();
    for l in labels {
        let curves: Vec<&crate::rlhf_study::Curve> =
            study.curves.iter().filter(|c| c.labels == l).collect();
        let name = match l {
            Some(n) => format!("overoptimisation_labels{n}"),
            None => "overoptimisation".to_string(),
        };
        written.extend(render!(out, name, (MIN_WIDTH, 760), |root| {
            draw_overoptimisation(root, &curves, l)
        }));
    }
    retire_stale(out, &written)?;
    Ok(written)
}

fn draw_overoptimisation<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[&crate::rlhf_study::Curve],
    labels: Option<u64>,
) -> Result<()> {
    use crate::rlhf_study::{gao_curve, gao_fit};
    root.fill(&WHITE).map_err(err)?;
    // One colour and one legend entry per setting; a setting run with several seeds draws
    // its first seed in full and the others as thinner lines.
    let groups = crate::rlhf_study::group_by_setting(curves.iter().copied());
    // Black is best-of-n's alone: the RL settings cycle through the six hues and Okabe and
    // Ito's yellow, the one hue of theirs the palette leaves out (pale on white, so last).
    let colour_of = |c: &crate::rlhf_study::Curve, i: usize| {
        const YELLOW: RGBColor = RGBColor(240, 228, 66);
        if c.best_of_n {
            PALETTE[6]
        } else if i % 7 == 6 {
            YELLOW
        } else {
            PALETTE[i % 7]
        }
    };
    let items: Vec<LegendItem> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| LegendItem {
            // A seed other than the default is said, so that a plot of another pipeline seed
            // (results/rlhf-seed2) cannot pass for seed 1's.
            text: if g.len() > 1 {
                let seeds: Vec<String> = g.iter().map(|c| c.seed.to_string()).collect();
                format!("{} (seeds {})", g[0].label, seeds.join(", "))
            } else if g[0].seed != 1 {
                format!("{} (seed {})", g[0].label, g[0].seed)
            } else {
                g[0].label.clone()
            },
            colour: Some(colour_of(g[0], i)),
        })
        .collect();
    let (layout, legend_h) = legend_layout(root, &items)?;
    let seeds_note = if groups.iter().any(|g| g.len() > 1) {
        " Thin lines: a setting's other seeds."
    } else {
        ""
    };
    let note = vec![
        format!(
            "Reward model fitted on {} comparisons. Lines: RL policies every few updates (points) and best-of-n for n = 1…64 (squares), on the fixed evaluation prompts.{seeds_note}",
            labels.map_or("?".to_string(), |n| n.to_string())
        ),
        "Dotted: Gao et al. 2022's forms fitted to the gold gain over SFT (best-of-n d(α − βd), RL d(α − β log d), d = √KL), where the fitted β > 0. Bars: 95% intervals over prompts.".to_string(),
    ];
    let note_h = note.len() as u32 * (NOTE + 7) + 10;
    let (top, rest) = root.split_vertically(root.dim_in_pixel().1 - legend_h - note_h);
    let (legend, foot) = rest.split_vertically(legend_h);
    let areas = top.split_evenly((1, 2));
    let x_hi = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.d()))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.04;
    for (panel, area) in ["gold score (hidden judge)", "proxy score (reward model)"]
        .iter()
        .zip(areas)
    {
        let gold = panel.starts_with("gold");
        let ys = curves.iter().flat_map(|c| {
            c.points.iter().flat_map(move |p| {
                if gold {
                    vec![p.gold - p.gold_ci, p.gold + p.gold_ci]
                } else {
                    vec![p.proxy]
                }
            })
        });
        let (lo, hi) = axis_range(ys.filter(|v| v.is_finite()));
        let mut chart = ChartBuilder::on(&area)
            .caption(*panel, ("sans-serif", CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..x_hi, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("√KL(π‖p_SFT)  (nats^½ per sequence)")
            .y_desc(if gold { "gold score" } else { "proxy score" })
            .x_label_formatter(&|x| tick(*x, x_hi))
            .y_label_formatter(&|y| tick(*y, hi - lo))
            .label_style(("sans-serif", TICK))
            .axis_desc_style(("sans-serif", TICK))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(err)?;
        for (i, c, first) in groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.iter().enumerate().map(move |(k, c)| (i, *c, k == 0)))
        {
            let col = colour_of(c, i);
            let pts: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|p| (p.d(), if gold { p.gold } else { p.proxy }))
                .filter(|p| p.1.is_finite())
                .collect();
            // One path per segment: a curve whose √KL turns back on itself makes acute
            // joins, and a thick polyline draws those as spikes far off the data.
            let width = if first { 3 } else { 1 };
            chart
                .draw_series(
                    pts.windows(2)
                        .map(|w| PathElement::new(w.to_vec(), col.stroke_width(width))),
                )
                .map_err(err)?;
            if !first {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())))
                    .map_err(err)?;
                continue;
            }
            if c.best_of_n {
                chart
                    .draw_series(pts.iter().map(|&(x, y)| {
                        Rectangle::new(
                            [
                                (x - x_hi * 0.006, y - (hi - lo) * 0.008),
                                (x + x_hi * 0.006, y + (hi - lo) * 0.008),
                            ],
                            col.filled(),
                        )
                    }))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 5, col.filled())))
                    .map_err(err)?;
            }
            if gold {
                for p in &c.points {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(p.d(), p.gold - p.gold_ci), (p.d(), p.gold + p.gold_ci)],
                            col.mix(0.5).stroke_width(2),
                        )))
                        .map_err(err)?;
                }
                // A fit with β ≤ 0 has no peak: the run never reached its falling side, and
                // the form says nothing about it (the report still lists the coefficients).
                if let Some(fit) = gao_fit(c).filter(|f| f.1 > 0.0) {
                    let d_max = c.points.iter().map(|p| p.d()).fold(0.0f64, f64::max);
                    let line: Vec<(f64, f64)> = (0..=100)
                        .map(|k| {
                            let d = d_max * k as f64 / 100.0;
                            (d, gao_curve(c, fit, d))
                        })
                        .filter(|p| p.1 >= lo && p.1 <= hi)
                        .collect();
                    // Dots, not a dashed series: the fit must not be mistaken for data.
                    chart
                        .draw_series(
                            line.iter()
                                .step_by(2)
                                .map(|&p| Circle::new(p, 2, col.mix(0.8).filled())),
                        )
                        .map_err(err)?;
                }
            }
        }
    }
    draw_legend(&legend, &items, &layout)?;
    draw_note(&foot, &note)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_that_rounds_to_zero_has_no_sign() {
        assert_eq!(tick(-0.001, 1.0), "0.00");
        assert_eq!(tick(-0.04, 4.0), "0.0");
        assert_eq!(tick(-0.5, 1.0), "-0.50");
        assert_eq!(tick(-100.4, 50.0), "-100");
    }

    #[test]
    fn legend_items_wrap_instead_of_overlapping_or_clipping() {
        register_font();
        let mut buffer = vec![0u8; 800 * 300 * 3];
        let root = BitMapBackend::with_buffer(&mut buffer, (800, 300)).into_drawing_area();
        let labels: Vec<String> = [
            "ppo",
            "ppo[clip_coef=0.1,ent_coef=0.001,learning_rate=0.00025,num_minibatches=8,update_epochs=10]",
            "a2c[learning_rate=0.0007]",
            "reinforce",
            "ppo[clip_coef=0.3]",
        ]
        .map(String::from)
        .to_vec();
        let items = legend_items(&labels, &[]);
        let (layout, height) = legend_layout(&root, &items).unwrap();
        let style: TextStyle = ("sans-serif", LEGEND).into_font().into();
        let line_h = LEGEND as i32 + 8;
        let boxes: Vec<(i32, i32, i32, i32)> = layout
            .iter()
            .map(|(x, y, lines)| {
                let w = lines
                    .iter()
                    .map(|l| root.estimate_text_size(l, &style).unwrap().0 as i32)
                    .max()
                    .unwrap();
                (*x, *y, x + 34 + w, y + lines.len() as i32 * line_h)
            })
            .collect();
        for (k, b) in boxes.iter().enumerate() {
            assert!(b.0 >= 0 && b.2 <= 800, "item {k} clips: {b:?}");
            assert!(b.3 <= height as i32, "item {k} below the legend: {b:?}");
            for c in &boxes[k + 1..] {
                let apart = b.2 <= c.0 || c.2 <= b.0 || b.3 <= c.1 || c.3 <= b.1;
                assert!(apart, "items overlap: {b:?} {c:?}");
            }
        }
        assert!(layout[1].2.len() > 1, "the long grid label is wrapped");
        assert_eq!(
            layout[1].2.concat(),
            labels[1],
            "wrapping keeps every character"
        );
    }

    #[test]
    fn a_group_whose_runs_all_failed_is_marked_not_left_empty() {
        let labels = ["ppo", "a2c"].map(String::from).to_vec();
        let seeds = vec![("ppo".to_string(), vec![5, 3]), ("a2c".to_string(), vec![])];
        let items = legend_items(&labels, &seeds);
        assert_eq!(items[0].text, "ppo (n = 3–5)");
        assert!(items[0].colour.is_some());
        assert_eq!(
            items[1].text,
            "a2c: no run to draw (each failed or is unreadable)"
        );
        assert!(items[1].colour.is_none(), "drawn grey and crossed");
    }
}
