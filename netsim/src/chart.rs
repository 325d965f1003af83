//! The chart of a run: hosts verified over time, one step line per strategy,
//! with the lower bound T_lb marked, as SVG.
//!
//! One picture shows what the table cannot: whether a strategy is slow from the
//! start or slow in its tail, and how far every line is from the physical
//! limit. SVG needs no fonts (the viewer lays out the `<text>` elements, and
//! plotters only estimates text sizes without the `ttf`/`ab_glyph` features), so
//! the chart renders on any machine with the default-features-off plotters.

use crate::report::{Report, StrategyResult};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const SIZE: (u32, u32) = (900, 500);

/// Distinct, print-safe colours for the strategies, in report order.
const COLOURS: [RGBColor; 8] = [
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

/// Hosts verified (y, 0..hosts) against seconds since the start (x), one step
/// line per strategy from its `curve`, a dashed vertical line at T_lb, and a
/// legend; the title names the topology.
pub fn hosts_over_time_svg(report: &Report) -> Result<String, ChartError> {
    let hosts = report
        .strategies
        .iter()
        .map(|s| s.hosts_total)
        .max()
        .filter(|&n| n > 0)
        .unwrap_or(report.hosts_total)
        .max(1) as f64;
    let t_lb = report
        .bound
        .as_ref()
        .map(|b| b.t_lb_s)
        .or_else(|| report.strategies.first().map(|s| s.t_lb_s))
        .filter(|t| t.is_finite() && *t > 0.0);
    let lines: Vec<Vec<(f64, f64)>> = report.strategies.iter().map(steps).collect();
    let x_end = lines
        .iter()
        .flatten()
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
            .caption(
                format!("{}: hosts verified over time", report.topology),
                ("sans-serif", 26),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("hosts verified")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;

        for (i, (s, line)) in report.strategies.iter().zip(&lines).enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    line.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(legend_name(s))
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

/// "shoal (11.50 s)" or "central (4/48 by 120 s)".
fn legend_name(s: &StrategyResult) -> String {
    match s.t_all_s {
        Some(t) => format!("{} ({t:.2} s)", s.strategy),
        None => format!(
            "{} ({}/{} by {:.0} s)",
            s.strategy, s.hosts_verified, s.hosts_total, s.time_limit_s
        ),
    }
}

/// The curve as a step function from (0, 0): the count holds until the next
/// point. A strategy that did not finish is drawn on to its time limit, so its
/// plateau shows. Points that are not finite are skipped.
fn steps(s: &StrategyResult) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0)];
    let mut last = 0.0;
    for &(t, n) in &s.curve {
        if !t.is_finite() || t < 0.0 {
            continue;
        }
        let n = n as f64;
        out.push((t, last));
        out.push((t, n));
        last = n;
    }
    if s.t_all_s.is_none() && s.time_limit_s.is_finite() {
        let end = out.last().map_or(0.0, |&(t, _)| t);
        if s.time_limit_s > end {
            out.push((s.time_limit_s, last));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bound::Bound;

    fn strategy(name: &str, t_all: Option<f64>, curve: Vec<(f64, usize)>) -> StrategyResult {
        StrategyResult {
            strategy: name.into(),
            t_all_s: t_all,
            t_lb_s: 10.0,
            hosts_verified: curve.last().map_or(0, |p| p.1),
            hosts_total: 6,
            time_limit_s: 60.0,
            curve,
            ..Default::default()
        }
    }

    fn report() -> Report {
        Report {
            topology: "ci & friends".into(),
            hosts_total: 7,
            bound: Some(Bound {
                t_lb_s: 10.0,
                terms: vec![("F/u_seed".into(), 10.0)],
                binding: "F/u_seed".into(),
            }),
            strategies: vec![
                strategy("shoal", Some(12.0), vec![(8.0, 2), (11.0, 5), (12.0, 6)]),
                strategy("central", Some(40.0), vec![(10.0, 1), (20.0, 3), (40.0, 6)]),
                strategy("tree", None, vec![(30.0, 2)]),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_svg_has_a_line_and_a_legend_entry_per_strategy() {
        let r = report();
        let svg = hosts_over_time_svg(&r).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"width="900""#) && svg.contains(r#"height="500""#));
        for want in [
            "ci &amp; friends: hosts verified over time",
            "shoal (12.00 s)",
            "central (40.00 s)",
            "tree (2/6 by 60 s)",
            "T_lb = 10.00 s",
            "\nT_lb\n",
            "hosts verified",
            "seconds since start",
        ] {
            assert!(svg.contains(want), "missing {want:?}");
        }
        let polylines: Vec<&str> = svg.lines().filter(|l| l.contains("<polyline")).collect();
        for (i, s) in r.strategies.iter().enumerate() {
            let c = COLOURS[i];
            let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
            let n = polylines.iter().filter(|l| l.contains(&stroke)).count();
            // The step line and its legend sample.
            assert_eq!(n, 2, "{}: {stroke} in {polylines:#?}", s.strategy);
        }
        // The step line of "shoal" has 1 + 2 x 3 points.
        let shoal = COLOURS[0];
        let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", shoal.0, shoal.1, shoal.2);
        let longest = polylines
            .iter()
            .filter(|l| l.contains(&stroke))
            .map(|l| {
                let points = l.split("points=\"").nth(1).unwrap();
                points.split('"').next().unwrap().split_whitespace().count()
            })
            .max();
        assert_eq!(longest, Some(7));
    }

    #[test]
    fn an_empty_report_still_draws() {
        let svg = hosts_over_time_svg(&Report::default()).unwrap();
        assert!(svg.contains("</svg>"));
    }

    #[test]
    fn steps_hold_the_count_and_run_unfinished_lines_to_the_limit() {
        let s = strategy("tree", None, vec![(30.0, 2), (f64::NAN, 9)]);
        assert_eq!(
            steps(&s),
            vec![(0.0, 0.0), (30.0, 0.0), (30.0, 2.0), (60.0, 2.0)]
        );
    }
}
