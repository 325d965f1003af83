//! Hosts verified over time, one step line per series (a netsim strategy, or
//! the live distribution), with an optional lower bound marked, as SVG.
//!
//! One picture shows what a table cannot: whether a distribution is slow from
//! the start or slow in its tail, and how far every line is from the physical
//! limit. SVG needs no fonts (the viewer lays out the `<text>` elements, and
//! plotters only estimates text sizes without the `ttf`/`ab_glyph` features), so
//! the chart renders on any machine with the default-features-off plotters.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const SIZE: (u32, u32) = (900, 500);

/// Distinct, print-safe colours for the series, in order.
pub const COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("drawing the chart: {0}")]
    Draw(String),
}

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// What to draw.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    /// The y axis runs to this many hosts.
    pub hosts: usize,
    pub lines: Vec<Line>,
    /// A dashed vertical line at this many seconds (netsim's T_lb).
    pub bound: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Line {
    /// The legend's text.
    pub name: String,
    /// (seconds, hosts) points, drawn as given (see [`steps`]).
    pub points: Vec<(f64, f64)>,
}

/// Hosts verified (y, 0..hosts) against seconds since the start (x), one line
/// per [`Line`], a dashed vertical line at the bound, and a legend; the title
/// is the chart's.
pub fn hosts_over_time_svg(c: &Chart) -> Result<String, ChartError> {
    let hosts = c.hosts.max(1) as f64;
    let t_lb = c.bound.filter(|t| t.is_finite() && *t > 0.0);
    let lines: Vec<&[(f64, f64)]> = c.lines.iter().map(|l| l.points.as_slice()).collect();
    let x_end = lines
        .iter()
        .flat_map(|l| l.iter())
        .map(|&(t, _)| t)
        .chain(t_lb)
        .fold(0.0_f64, f64::max);
    let x_max = if x_end > 0.0 { x_end * 1.05 } else { 1.0 };
    let scale = Scale::for_lines(&lines, x_max);
    let x_max = scale.x(x_max);
    let t_lb = t_lb.map(|t| scale.x(t));
    let mapped: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|l| l.iter().map(|&(t, n)| (scale.x(t), n)).collect())
        .collect();
    let lines: Vec<&[(f64, f64)]> = mapped.iter().map(Vec::as_slice).collect();

    // Headroom so lines that reach every host stay visible under the frame.
    let y_max = hosts * 1.04;
    let x_fmt = |x: &f64| {
        let t = scale.seconds(*x);
        if t >= 10.0 || (scale.is_log() && t >= 1.0) {
            format!("{t:.0}")
        } else {
            format!("{t:.1}")
        }
    };
    let y_fmt = |y: &f64| format!("{y:.0}");

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title.clone(), ("sans-serif", 26))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(scale.x(0.0)..x_max, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            // Whole hosts only: a few hosts would otherwise get repeated
            // rounded labels.
            .y_labels((c.hosts + 1).clamp(2, 11))
            // On a log axis, about one label a decade: 10, 100, 1000.
            .x_labels(match scale {
                Scale::Log { .. } => (x_max - scale.x(0.0)).ceil() as usize + 1,
                Scale::Linear => 11,
            })
            .x_desc(if scale.is_log() {
                "seconds since start (log scale)"
            } else {
                "seconds since start"
            })
            .y_desc("hosts verified")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;

        for (i, (l, line)) in c.lines.iter().zip(&lines).enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    line.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(l.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }

        if let Some(t) = t_lb {
            let grey = RGBColor(0x55, 0x55, 0x55);
            chart
                .draw_series(DashedLineSeries::new(
                    [(t, 0.0), (t, y_max)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(draw_err)?
                .label(format!("T_lb = {:.2} s", scale.seconds(t)))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
            // Left of the line's top (no strategy can be left of it there).
            let style = ("sans-serif", 16)
                .into_font()
                .color(&grey)
                .pos(Pos::new(HPos::Right, VPos::Top));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((t, y_max)) + Text::new("T_lb", (-4, 4), style),
                ))
                .map_err(draw_err)?;
        }

        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The x axis: seconds as they are, or their logarithm when the lines end
/// so far apart (central at 10,000 hosts takes 4,000 times shoal's time) that
/// a linear axis would crush the fast ones against the left edge.
#[derive(Clone, Copy, Debug)]
enum Scale {
    Linear,
    /// log10 of seconds, from `floor` seconds (earlier points sit on it).
    Log {
        floor: f64,
    },
}

/// Lines that end further apart than this factor get a log axis.
const LOG_SPREAD: f64 = 30.0;

impl Scale {
    fn for_lines(lines: &[&[(f64, f64)]], x_max: f64) -> Scale {
        let ends = lines.iter().filter_map(|l| l.last()).map(|&(t, _)| t);
        let first_end = ends.filter(|&t| t > 0.0).fold(f64::INFINITY, f64::min);
        if !(first_end.is_finite() && x_max / first_end > LOG_SPREAD) {
            return Scale::Linear;
        }
        let first_point = lines
            .iter()
            .flat_map(|l| l.iter())
            .map(|&(t, _)| t)
            .filter(|&t| t > 0.0)
            .fold(first_end, f64::min);
        Scale::Log {
            floor: first_point / 2.0,
        }
    }

    fn is_log(self) -> bool {
        matches!(self, Scale::Log { .. })
    }

    /// Where `t` seconds sit on the axis.
    fn x(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log { floor } => t.max(floor).log10(),
        }
    }

    /// The seconds at axis position `x`.
    fn seconds(self, x: f64) -> f64 {
        match self {
            Scale::Linear => x,
            Scale::Log { .. } => 10f64.powf(x),
        }
    }
}

/// A curve of (seconds, hosts done) as a step function from (0, 0): the count
/// holds until the next point. With `run_to`, the line goes on flat to that
/// time (a run that did not finish, or a live one, shows its plateau). Points
/// that are not finite are skipped.
pub fn steps(curve: &[(f64, usize)], run_to: Option<f64>) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0)];
    let mut last = 0.0;
    for &(t, n) in curve {
        if !t.is_finite() || t < 0.0 {
            continue;
        }
        let n = n as f64;
        out.push((t, last));
        out.push((t, n));
        last = n;
    }
    if let Some(end_at) = run_to.filter(|t| t.is_finite()) {
        let end = out.last().map_or(0.0, |&(t, _)| t);
        if end_at > end {
            out.push((end_at, last));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_the_count_and_run_on_to_the_end() {
        assert_eq!(
            steps(&[(30.0, 2), (f64::NAN, 9)], Some(60.0)),
            vec![(0.0, 0.0), (30.0, 0.0), (30.0, 2.0), (60.0, 2.0)]
        );
        assert_eq!(steps(&[(5.0, 1)], None).len(), 3);
    }

    #[test]
    fn a_chart_has_its_title_lines_and_bound() {
        let svg = hosts_over_time_svg(&Chart {
            title: "live: v2 & more".into(),
            hosts: 4,
            lines: vec![Line {
                name: "v2 (3/4)".into(),
                points: steps(&[(1.0, 1), (2.0, 3)], Some(3.0)),
            }],
            bound: Some(1.5),
        })
        .unwrap();
        for want in ["live: v2 &amp; more", "v2 (3/4)", "T_lb = 1.50 s"] {
            assert!(svg.contains(want), "missing {want:?}");
        }
        let empty = hosts_over_time_svg(&Chart::default()).unwrap();
        assert!(empty.contains("</svg>"));
    }

    #[test]
    fn lines_that_end_far_apart_get_a_log_axis() {
        let chart = |slow: f64| Chart {
            title: "spread".into(),
            hosts: 2,
            lines: vec![
                Line {
                    name: "fast".into(),
                    points: steps(&[(10.0, 2)], None),
                },
                Line {
                    name: "slow".into(),
                    points: steps(&[(slow, 2)], None),
                },
            ],
            bound: Some(8.0),
        };
        let near = hosts_over_time_svg(&chart(100.0)).unwrap();
        assert!(!near.contains("log scale"));
        let far = hosts_over_time_svg(&chart(86_000.0)).unwrap();
        assert!(far.contains("seconds since start (log scale)"));
        // Labels are seconds, not logarithms, and the bound keeps its value.
        let labels: Vec<&str> = far
            .split('<')
            .filter(|t| t.starts_with("text") && t.contains("y=\"458\""))
            .filter_map(|t| t.split('>').nth(1))
            .map(str::trim)
            .collect();
        assert_eq!(labels, ["10", "100", "1000", "10000"], "{far}");
        assert!(far.contains("T_lb = 8.00 s"));
    }
}
