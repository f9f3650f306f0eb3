//! PNG charts of a [`Report`], every system side by side: for each stepped scenario, throughput
//! against offered load and latency percentiles (p50 dashed, p99 solid) against offered load; for
//! idle, server memory per connection; for churn, cycles per second and the fan-out's p99.
//!
//! Drawn with `plotters` into bitmaps; text uses a TrueType font read from a file (Debian's
//! `fonts-dejavu-core` by default), so nothing depends on the system's font lookup.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::report::Report;
use crate::scenario::{StepResult, Stepped};
use crate::system::System;

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 600);

/// The colour of each system's lines and bars.
fn colour(system: System) -> RGBColor {
    match system {
        System::Herald => RGBColor(214, 39, 40),
        System::HeraldNoRecovery => RGBColor(227, 119, 194),
        System::Nats => RGBColor(31, 119, 180),
        System::Mosquitto => RGBColor(44, 160, 44),
        System::Socketio => RGBColor(148, 103, 189),
        System::RawWriter => RGBColor(60, 60, 60),
        System::BareAxum => RGBColor(255, 127, 14),
        System::Cluster1 => RGBColor(240, 128, 128),
        System::Cluster3 => RGBColor(140, 20, 20),
        System::Cluster1NoRecovery => RGBColor(250, 190, 190),
        System::Cluster3NoRecovery => RGBColor(190, 110, 110),
    }
}

/// Registers `font` (a TTF file) as the charts' sans-serif face. Call once before drawing.
pub fn load_font(font: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(font).with_context(|| format!("cannot read {}", font.display()))?;
    // plotters keeps fonts for the life of the program.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable TrueType font", font.display()))
}

/// A file name for a title: "fanout 16 KiB" → "fanout-16-kib".
pub fn slug(title: &str) -> String {
    let mut s = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_owned()
}

/// An axis label: "500", "20k", "1.5M", "0.1".
fn number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if v >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if v >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn draw_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// The steps of a run, by offered rate (a repeated step appears twice).
fn steps_by_rate(run: &Stepped) -> Vec<&StepResult> {
    let mut steps: Vec<&StepResult> = run.steps.iter().filter(|s| s.offered.is_some()).collect();
    steps.sort_by(|a, b| {
        a.offered
            .unwrap_or(0.0)
            .total_cmp(&b.offered.unwrap_or(0.0))
    });
    steps
}

/// A power-of-ten range covering `values` (for a log axis).
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return 1.0..10.0;
    }
    10f64.powf(lo.log10().floor())..10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0))
}

/// What a throughput chart plots for a step: deliveries/s, or accepted calls/s for a system that
/// delivers nothing.
fn throughput(system: System, s: &StepResult) -> f64 {
    if crate::api::delivers(system) {
        s.deliveries_per_sec
    } else {
        s.achieved
    }
}

/// A chart with both axes logarithmic.
type LogLog<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// The frame of a chart against offered calls/s, both axes logarithmic, mesh drawn.
fn log_log<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    y_desc: &str,
) -> anyhow::Result<LogLog<'a, 'b>> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x.log_scale(), y.log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("offered calls/s")
        .y_desc(y_desc)
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    Ok(chart)
}

fn throughput_chart(path: &Path, title: &str, runs: &[(System, &Stepped)]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let all = || {
        runs.iter()
            .flat_map(|(sys, r)| steps_by_rate(r).into_iter().map(move |s| (*sys, s)))
    };
    let x = log_range(all().filter_map(|(_, s)| s.offered));
    let y = log_range(all().map(|(sys, s)| throughput(sys, s)));
    let mut chart = log_log(
        &root,
        &format!("{title}: throughput (filled: sustained step)"),
        (x, y),
        "deliveries/s received (bare axum: calls/s answered)",
    )?;
    for (system, run) in runs {
        let c = colour(*system);
        let steps = steps_by_rate(run);
        let point = |s: &&StepResult| Some((s.offered?, throughput(*system, s).max(1.0)));
        chart
            .draw_series(LineSeries::new(
                steps.iter().filter_map(point),
                c.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(system.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        // Filled markers on sustained steps, hollow ones on the others.
        chart
            .draw_series(steps.iter().filter_map(|s| {
                let style = if s.sustained {
                    c.filled()
                } else {
                    c.stroke_width(2)
                };
                Some(Circle::new(point(s)?, 5, style))
            }))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

fn latency_chart(path: &Path, title: &str, runs: &[(System, &Stepped)]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let all = || runs.iter().flat_map(|(_, r)| steps_by_rate(r));
    let x = log_range(all().filter_map(|s| s.offered));
    let y = log_range(all().flat_map(|s| [s.latency.p50_ms, s.latency.p99_ms]));
    let y = y.start.min(0.1)..y.end;
    let mut chart = log_log(
        &root,
        &format!("{title}: latency, p50 (dashed) and p99 (solid)"),
        (x, y),
        "API call to receipt, ms (bare axum: round trip)",
    )?;
    let floor = 0.001;
    for (system, run) in runs {
        let c = colour(*system);
        let steps = steps_by_rate(run);
        let p99: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|s| Some((s.offered?, s.latency.p99_ms.max(floor))))
            .collect();
        let p50: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|s| Some((s.offered?, s.latency.p50_ms.max(floor))))
            .collect();
        chart
            .draw_series(LineSeries::new(p99, c.stroke_width(2)).point_size(3))
            .map_err(draw_error)?
            .label(system.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(p50, 6, 4, c.stroke_width(2)))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// One bar per system, labelled with its value; `target` draws a horizontal line.
fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    bars: &[(System, f64)],
    unit: &str,
    target: Option<f64>,
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let top = bars
        .iter()
        .map(|(_, v)| *v)
        .chain(target)
        .fold(1e-9, f64::max)
        * 1.15;
    let last = bars.len().saturating_sub(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        // A segmented range 0..last has a segment for each of 0..=last.
        .build_cartesian_2d((0..last).into_segmented(), 0f64..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map_or("", |(s, _)| s.label()).to_owned(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .y_label_formatter(&|v| number(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (s, v))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                colour(*s).filled(),
            );
            bar.set_margin(0, 0, 20, 20);
            bar
        }))
        .map_err(draw_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{} {unit}", number(*v)),
                (SegmentValue::CenterOf(i), v + top * 0.03),
                ("sans-serif", 16),
            )
        }))
        .map_err(draw_error)?;
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new(
                vec![(SegmentValue::Exact(0), t), (SegmentValue::Last, t)],
                BLACK.stroke_width(1),
            ))
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// Draws every chart of `report` into `dir`; returns (what each shows, its file name).
pub fn draw(report: &Report, dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut drawn = Vec::new();
    let idle = report.idle_runs();
    if !idle.is_empty() {
        let name = PathBuf::from("idle-memory.png");
        let title = format!(
            "idle: server memory per connection ({} subscribed connections)",
            idle[0].1.setup.ready
        );
        let bars: Vec<(System, f64)> = idle
            .iter()
            .map(|(s, i)| (*s, (i.server_rss_per_connection / 1024.0).max(0.0)))
            .collect();
        bar_chart(
            &dir.join(&name),
            &title,
            "KiB of server RSS per connection (line: the 4 KiB target)",
            &bars,
            "KiB",
            Some(4.0),
        )?;
        drawn.push(("idle: server memory per connection".to_owned(), name));
    }
    let churn = report.churn_runs();
    if !churn.is_empty() {
        let name = PathBuf::from("churn-cycles.png");
        let bars: Vec<(System, f64)> = churn.iter().map(|(s, c)| (*s, c.cycles_per_sec)).collect();
        bar_chart(
            &dir.join(&name),
            &format!(
                "churn: cycles per second done (offered {:.0})",
                churn[0].1.offered_cycles_per_sec
            ),
            "connect, subscribe, join, leave, close: cycles/s",
            &bars,
            "/s",
            None,
        )?;
        drawn.push(("churn: cycles per second".to_owned(), name));
        let name = PathBuf::from("churn-latency.png");
        let bars: Vec<(System, f64)> = churn
            .iter()
            .map(|(s, c)| (*s, c.fanout.latency.p99_ms))
            .collect();
        bar_chart(
            &dir.join(&name),
            &format!(
                "churn: fan-out p99 latency while churning ({:.0} calls/s)",
                churn[0].1.fanout.achieved
            ),
            "API call to receipt, p99, ms",
            &bars,
            "ms",
            None,
        )?;
        drawn.push(("churn: fan-out p99 latency while churning".to_owned(), name));
    }
    for title in report.stepped_titles() {
        let runs = report.stepped_by_title(&title);
        let slug = slug(&title);
        let name = PathBuf::from(format!("{slug}-throughput.png"));
        throughput_chart(&dir.join(&name), &title, &runs)?;
        drawn.push((format!("{title}: throughput against offered load"), name));
        let name = PathBuf::from(format!("{slug}-latency.png"));
        latency_chart(&dir.join(&name), &title, &runs)?;
        drawn.push((format!("{title}: latency percentiles"), name));
    }
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_ranges() {
        assert_eq!(slug("fanout 16 KiB"), "fanout-16-kib");
        assert_eq!(
            slug("unicast 100 B over 100 apps"),
            "unicast-100-b-over-100-apps"
        );
        assert_eq!(log_range([3.0, 450.0].into_iter()), 1.0..1000.0);
        assert_eq!(log_range([100.0].into_iter()), 100.0..1000.0);
        assert_eq!(log_range(std::iter::empty()), 1.0..10.0);
        assert_eq!(number(1_500_000.0), "1.5M");
        assert_eq!(number(20_000.0), "20k");
        assert_eq!(number(500.0), "500");
        assert_eq!(number(0.1), "0.1");
    }
}
