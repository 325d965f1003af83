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

    // Headroom so lines that reach every host stay visible under the frame.
    let y_max = hosts * 1.04;
    let x_fmt = |x: &f64| {
        if x_max >= 10.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
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
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            // Whole hosts only: a few hosts would otherwise get repeated
            // rounded labels.
            .y_labels((c.hosts + 1).clamp(2, 11))
            .x_desc("seconds since start")
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
                .label(format!("T_lb = {t:.2} s"))
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
}
