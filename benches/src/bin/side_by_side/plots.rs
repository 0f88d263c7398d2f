//! SVG plots for the report, where a picture says more than a table: API calls against guest
//! shutdown time (flat vs growing) and the off-detection latency of every run on a log scale.
//!
//! Text is emitted as SVG `<text>` (no font backend), so the files are small and diffable.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A line chart with markers: `series` against a linear x axis and a linear y axis from 0.
pub(crate) fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let x_max = max_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let y_max = max_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// A strip plot: one row per group, one dot per sample, on a log-scale x axis (ms).
pub(crate) fn strips_log_ms(
    path: &Path,
    title: &str,
    x_label: &str,
    groups: &[Series],
) -> Result<(), String> {
    let values = || groups.iter().flat_map(|g| g.points.iter().map(|p| p.0));
    let lo = values().fold(f64::INFINITY, f64::min).max(0.01);
    let hi = max_of(values());
    let (lo, hi) = (lo / 2.0, hi * 2.0);
    let rows = groups.len().max(1);
    let root = SVGBackend::new(path, (760, 120 + 60 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(150)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5..(rows as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_labels(rows)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, g) in groups.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let n = g.points.len().max(1) as f64;
        chart
            .draw_series(g.points.iter().enumerate().map(|(k, &(x, _))| {
                // Spread the dots vertically a little so equal values stay visible.
                let jitter = (k as f64 / n - 0.5) * 0.4;
                Circle::new((x, i as f64 + jitter), 4, color.mix(0.8).filled())
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// One bar of a timeline: `label` from `start` to `end` (seconds), in colour `color`;
/// `open` bars never finished (drawn hollow up to `end`).
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub label: String,
    pub start: f64,
    pub end: f64,
    pub color: usize,
    pub open: bool,
}

/// A timeline (Gantt) chart: one row per bar, top to bottom, with a dashed vertical line at
/// `marker` (for example the grace deadline) and a legend of `colors` names.
pub(crate) fn timeline(
    path: &Path,
    title: &str,
    x_label: &str,
    bars: &[Bar],
    marker: Option<(f64, &str)>,
    colors: &[&str],
) -> Result<(), String> {
    let x_max = max_of(bars.iter().map(|b| b.end)).max(marker.map_or(0.0, |m| m.0));
    let rows = bars.len().max(1);
    let height = 110 + 26 * rows as u32;
    let root = SVGBackend::new(path, (860, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..x_max * 1.3, 0.0..rows as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_labels(rows * 2 + 1)
        .y_label_formatter(&|y| {
            // Row i spans [rows-1-i, rows-i]; label its middle.
            let mid = y - y.floor();
            if (mid - 0.5).abs() < 1e-6 {
                let i = rows as i64 - 1 - y.floor() as i64;
                usize::try_from(i)
                    .ok()
                    .and_then(|i| labels.get(i).cloned())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    draw_bars(&mut chart, bars, rows, marker, colors)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// A chart on linear f64 axes.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The timeline's bars, its `marker` line and the legend entries of `colors`.
fn draw_bars(
    chart: &mut Chart<'_, '_>,
    bars: &[Bar],
    rows: usize,
    marker: Option<(f64, &str)>,
    colors: &[&str],
) -> Result<(), String> {
    for (i, b) in bars.iter().enumerate() {
        let top = (rows - i) as f64 - 0.15;
        let bottom = (rows - 1 - i) as f64 + 0.15;
        let color = COLORS[b.color % COLORS.len()];
        let style = if b.open {
            color.stroke_width(2)
        } else {
            color.mix(0.85).filled()
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(b.start, top), (b.end, bottom)],
                style,
            )))
            .map_err(err)?;
    }
    if let Some((x, name)) = marker {
        chart
            .draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, rows as f64)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(err)?
            .label(name)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6)));
    }
    for (i, name) in colors.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.filled()));
    }
    Ok(())
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.fold(0.0, f64::max);
    if m > 0.0 { m } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_svg() {
        let keep = std::env::var_os("VR_PLOTS_KEEP");
        let dir = keep
            .clone()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("vr-plots-{}", std::process::id()))
            });
        std::fs::create_dir_all(&dir).expect("dir");
        let s = vec![
            Series {
                name: "flat".into(),
                points: vec![(0.6, 5.0), (0.7, 5.0), (0.65, 5.0), (120.0, 5.0)],
            },
            Series {
                name: "growing".into(),
                points: vec![(1770.0, 2.0), (1775.0, 61.0), (1771.0, 3.0)],
            },
        ];
        lines(&dir.join("l.svg"), "t", "x", "y", &s).expect("lines");
        strips_log_ms(&dir.join("s.svg"), "t", "ms", &s).expect("strips");
        let bars = vec![
            Bar {
                label: "virtrigaud · ACPI".into(),
                start: 0.0,
                end: 2.3,
                color: 0,
                open: false,
            },
            Bar {
                label: "libvirt-guests · ignores".into(),
                start: 0.0,
                end: 43.0,
                color: 1,
                open: true,
            },
        ];
        timeline(
            &dir.join("t.svg"),
            "t",
            "s",
            &bars,
            Some((10.0, "deadline")),
            &["graceful", "still running"],
        )
        .expect("timeline");
        for f in ["l.svg", "s.svg", "t.svg"] {
            let text = std::fs::read_to_string(dir.join(f)).expect("read");
            assert!(text.starts_with("<svg"), "{f}");
            let want: &[&str] = match f {
                "l.svg" => &["flat", "growing"],
                "t.svg" => &["virtrigaud · ACPI", "deadline", "still running"],
                _ => &[],
            };
            for w in want {
                assert!(text.contains(w), "{f} lacks {w}");
            }
        }
        if keep.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
