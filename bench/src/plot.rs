//! The PNG: backlog-drain throughput as bars (top), end-to-end lag over time at each steady
//! load (middle), and the end-to-end ratio against native replication over the runs of the
//! same size in `history.csv` (bottom). plotters' bitmap backend; text through ab_glyph with DejaVu Sans embedded by
//! the `dejavu` crate, so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::report::{HistoryPoint, Report};

static FONT: Once = Once::new();

fn e<E: std::fmt::Debug>(x: E) -> anyhow::Error {
    anyhow!("drawing the PNG: {x:?}")
}

pub fn draw(path: &Path, rep: &Report, history: &[HistoryPoint]) -> Result<()> {
    FONT.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
    let root = BitMapBackend::new(path, (1400, 1450)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (title, rest) = root.split_vertically(60);
    title
        .draw_text(
            &format!("Continuum bench {}: {}", rep.date_utc, rep.headline()),
            &("sans-serif", 15).into_font().color(&BLACK),
            (10, 10),
        )
        .map_err(e)?;
    let (top, rest) = rest.split_vertically(470);
    let (bottom, past) = rest.split_vertically(520);

    // Throughput bars.
    let bars: Vec<(String, f64)> = rep
        .contestants
        .iter()
        .map(|c| (c.name.clone(), c.drain.rows_per_s))
        .collect();
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.45;
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Backlog drain, rows/s (higher is better)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..max, 0f64..n)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("rows/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = n - i as f64 - 1.0;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (*v, y + 0.85)],
                color.filled(),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{name}: {v:.0}"),
                (*v + max * 0.005, y + 0.62),
                ("sans-serif", 14).into_font(),
            )))
            .map_err(e)?;
    }

    // Lag over time.
    let series: Vec<(String, &Vec<(f64, f64)>)> = rep
        .steady
        .iter()
        .map(|s| {
            (
                format!(
                    "{}% load ({:.0} rows/s): p50 {:.0} ms, p99 {:.0} ms",
                    s.load_pct, s.achieved_rows_per_s, s.p50_ms, s.p99_ms
                ),
                &s.series,
            )
        })
        .collect();
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(10.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            if series.is_empty() {
                "Steady state: not run"
            } else {
                "End-to-end lag at steady load (heartbeat written on SF, seen on EU)"
            },
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("lag, ms")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = [BLUE, RGBColor(0, 150, 0), RED][i % 3];
        draw_line(&mut chart, pts, label.clone(), color)?;
    }
    if !series.is_empty() {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    draw_history(&past, history)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The end-to-end drain's ratio to native replication (single-thread and parallel), one point
/// per run, oldest left; the goals (2.0 and 1.0) as dashed lines.
fn draw_history<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    history: &[HistoryPoint],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = history.len().max(1) as f64;
    let ymax = history
        .iter()
        .flat_map(|h| [h.e2e_vs_st, h.e2e_vs_par])
        .flatten()
        .fold(2.2, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "End-to-end drain vs native replication, run by run ({} runs of this size in history.csv)",
                history.len()
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..ymax)
        .map_err(e)?;
    let dates: Vec<String> = history
        .iter()
        .map(|h| h.date.chars().take(10).collect())
        .collect();
    chart
        .configure_mesh()
        .x_desc("run")
        .y_desc("ratio (x native)")
        .x_labels(history.len().clamp(1, 12))
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 {
                dates.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (goal, color) in [(2.0, BLUE), (1.0, RGBColor(0, 150, 0))] {
        chart
            .draw_series(DashedLineSeries::new(
                [(-0.5, goal), (n - 0.5, goal)],
                6,
                4,
                color.mix(0.5).stroke_width(1),
            ))
            .map_err(e)?;
    }
    let line = |pick: fn(&HistoryPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .enumerate()
            .filter_map(|(i, h)| pick(h).map(|v| (i as f64, v)))
            .collect()
    };
    for (label, pts, color) in [
        (
            "vs native, 1 SQL thread (goal 2.0)",
            line(|h| h.e2e_vs_st),
            BLUE,
        ),
        (
            "vs native, 4 threads (goal 1.0)",
            line(|h| h.e2e_vs_par),
            RGBColor(0, 150, 0),
        ),
    ] {
        draw_line(&mut chart, &pts, label.to_owned(), color)?;
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(e)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A line through `pts`, 2 px of `color`, with its entry in the legend.
fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pts: &[(f64, f64)],
    label: String,
    color: RGBColor,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
        .map_err(e)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

/// The legend of a chart's lines, boxed, at `pos`.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pos: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(pos)
        .draw()
        .map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{tests::parse, Cfg};
    use crate::db::Durability;
    use crate::report::SteadyRun;

    /// Both panels that draw lines and legends (the steady state, the history) render.
    #[test]
    fn draws_the_steady_state_and_the_history() {
        let cfg = Cfg::new(parse(&["--rows=20000"]).unwrap()).unwrap();
        let mut rep = Report::new(&cfg, &Durability::strict(), "1");
        rep.steady.push(SteadyRun {
            load_pct: 25,
            target_rows_per_s: 100.0,
            achieved_rows_per_s: 99.0,
            seconds: 5.0,
            rows: 500,
            heartbeats: 3,
            p50_ms: 20.0,
            p99_ms: 40.0,
            max_ms: 40.0,
            by_size: vec![],
            drain_after_s: 0.1,
            cpu_per_1k_rows: BTreeMap::new(),
            cpu: Default::default(),
            series: vec![(0.1, 20.0), (0.2, 40.0), (0.3, 15.0)],
        });
        let history =
            [("2026-12-01", 0.8, 0.5), ("2026-12-02", 0.9, 0.6)].map(|(date, st, par)| {
                HistoryPoint {
                    date: date.into(),
                    e2e_vs_st: Some(st),
                    e2e_vs_par: Some(par),
                }
            });
        let path = std::env::temp_dir().join(format!("bench-plot-{}.png", std::process::id()));
        draw(&path, &rep, &history).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let _ = std::fs::remove_file(&path);
        assert!(size > 10_000, "{size} bytes");
    }
}
