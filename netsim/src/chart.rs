//! The chart of a run: hosts verified over time, one step line per strategy,
//! with the lower bound T_lb marked, as SVG (drawn by `shoal_view::chart`, the
//! same chart the live views draw of a running distribution).

use crate::report::{Report, StrategyResult};
pub use shoal_view::chart::ChartError;
use shoal_view::chart::{Chart, Line, steps};

/// The report's strategies as lines, titled by the topology.
pub fn hosts_over_time_svg(report: &Report) -> Result<String, ChartError> {
    let hosts = report
        .strategies
        .iter()
        .map(|s| s.hosts_total)
        .max()
        .filter(|&n| n > 0)
        .unwrap_or(report.hosts_total);
    let bound = report
        .bound
        .as_ref()
        .map(|b| b.t_lb_s)
        .or_else(|| report.strategies.first().map(|s| s.t_lb_s));
    shoal_view::chart::hosts_over_time_svg(&Chart {
        title: format!("{}: hosts verified over time", report.topology),
        hosts,
        lines: report
            .strategies
            .iter()
            .map(|s| Line {
                name: legend_name(s),
                points: line(s),
            })
            .collect(),
        bound,
    })
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

/// A strategy that did not finish is drawn on to its time limit, so its
/// plateau shows.
fn line(s: &StrategyResult) -> Vec<(f64, f64)> {
    steps(&s.curve, s.t_all_s.is_none().then_some(s.time_limit_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bound::Bound;
    use shoal_view::chart::COLOURS;

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
            line(&s),
            vec![(0.0, 0.0), (30.0, 0.0), (30.0, 2.0), (60.0, 2.0)]
        );
    }
}
