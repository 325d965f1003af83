//! `shoal status --watch`: the fleet, live. On a terminal, a full-screen view
//! (ratatui): per-datacenter progress, a grid of hosts coloured by state, the
//! rollout's batch now and next, rates across each datacenter's boundary and
//! the last errors. Elsewhere, one plain line per refresh (or one JSON view
//! per line with `--json`), so it can be logged or piped.

use anyhow::{Context, Result};
use indicatif::{BinaryBytes, HumanDuration};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Wrap};
use shoal_node::client::{Client, Conn};
use shoal_proto::{FleetState, LogEntry, MAX_CONTROL, Msg};
use shoal_view::{FleetView, HostState, Watcher, clock, unix_ms};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Deploy log lines read per refresh, for the error list.
const LOG_LINES: u32 = 50;
const ASK_WITHIN: Duration = Duration::from_secs(5);

pub struct Options {
    pub every: Duration,
    pub release: Option<String>,
    pub stale_after: u64,
    /// Exit (0) once every agent is live on the release.
    pub until_live: bool,
    pub json: bool,
}

/// The tracker, asked again after a failure.
struct Source {
    client: Client,
    addr: SocketAddr,
    host: String,
    conn: Option<Conn>,
}

impl Source {
    async fn poll(&mut self) -> Result<(FleetState, Vec<LogEntry>)> {
        if self.conn.is_none() {
            let c = tokio::time::timeout(ASK_WITHIN, self.client.connect(self.addr, &self.host))
                .await
                .map_err(|_| anyhow::anyhow!("no answer in {ASK_WITHIN:?}"))??;
            self.conn = Some(c);
        }
        let conn = self.conn.as_ref().expect("connected above");
        let r = async {
            let fleet = match conn
                .request(&Msg::GetFleet, MAX_CONTROL, ASK_WITHIN)
                .await?
            {
                Msg::Fleet(f) => *f,
                other => anyhow::bail!("the tracker answered GetFleet with {}", other.name()),
            };
            let log = match conn
                .request(&Msg::GetLog { last: LOG_LINES }, MAX_CONTROL, ASK_WITHIN)
                .await?
            {
                Msg::Log { entries } => entries,
                _ => Vec::new(),
            };
            Ok((fleet, log))
        }
        .await;
        if r.is_err()
            && let Some(c) = self.conn.take()
        {
            c.close();
        }
        r
    }
}

pub fn run(remote: &crate::Remote, opts: Options) -> Result<ExitCode> {
    let (addr, host, id) = crate::rollout::resolve(remote)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = rt.block_on(async { Client::new(&id, addr) })?;
    let mut source = Source {
        client,
        addr,
        host,
        conn: None,
    };
    let watcher = Watcher::new(opts.stale_after, opts.release.clone());
    let terminal = !opts.json && std::io::stdout().is_terminal();
    let code = if terminal {
        full_screen(&rt, &mut source, watcher, &opts, addr)
    } else {
        lines(&rt, &mut source, watcher, &opts)
    };
    rt.block_on(source.client.close());
    code
}

/// Plain lines: one per refresh while something changes, errors as they come.
fn lines(
    rt: &tokio::runtime::Runtime,
    source: &mut Source,
    mut watcher: Watcher,
    opts: &Options,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut last_line = String::new();
    let mut last_error: Option<String> = None;
    loop {
        let tick = Instant::now();
        match rt.block_on(source.poll()) {
            Ok((state, log)) => {
                let v = watcher.observe(&state, &log, Instant::now(), unix_ms());
                if opts.json {
                    writeln!(out, "{}", serde_json::to_string(&v)?)?;
                } else {
                    let line = plain_line(&v);
                    if line != last_line {
                        writeln!(out, "{} {line}", clock(unix_ms()))?;
                        last_line = line;
                    }
                    // Errors are kept newest last; print the ones not shown yet.
                    let new = match &last_error {
                        Some(e) => v.errors.iter().rev().take_while(|x| *x != e).count(),
                        None => v.errors.len(),
                    };
                    for e in &v.errors[v.errors.len() - new..] {
                        writeln!(out, "error: {e}")?;
                    }
                    last_error = v.errors.last().cloned();
                }
                out.flush()?;
                if opts.until_live && v.all_live {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Err(e) => {
                let line = format!("tracker unreachable: {e:#}");
                if line != last_line {
                    writeln!(out, "{} {line}", clock(unix_ms()))?;
                    last_line = line;
                }
            }
        }
        std::thread::sleep(opts.every.saturating_sub(tick.elapsed()));
    }
}

/// "v2: dc1 3/4 verified 2 live 75% in 1.2 MiB/s | dc2 ... | 5/8 live | batch 2/4".
fn plain_line(v: &FleetView) -> String {
    let mut parts = vec![format!("{}:", v.release.as_deref().unwrap_or("no release"))];
    for d in &v.dcs {
        parts.push(format!(
            "{} {}/{} verified {} live {:.0}% in {}/s out {}/s |",
            d.dc,
            d.verified,
            d.hosts,
            d.live,
            100.0 * d.fraction(),
            BinaryBytes(d.rate_in_bps as u64),
            BinaryBytes(d.rate_out_bps as u64)
        ));
    }
    parts.push(format!(
        "{}/{} live",
        v.counts.get("live").copied().unwrap_or(0),
        v.hosts.len()
    ));
    for s in [HostState::Failed, HostState::Unreachable] {
        if let Some(&n) = v.counts.get(s.name())
            && n > 0
        {
            parts.push(format!("{n} {}", s.name()));
        }
    }
    if let Some(r) = &v.rollout {
        match r.batch {
            Some(b) if !r.done => parts.push(format!("| {} batch {b}/{}", r.purpose, r.batches)),
            _ => parts.push(format!("| {}: {}", r.purpose, r.phase)),
        }
    }
    if v.all_live {
        parts.push("| every host live".into());
    }
    parts.join(" ")
}

/// The full-screen view until q, Esc or Ctrl-C (or every host is live, with
/// `--until-live`).
fn full_screen(
    rt: &tokio::runtime::Runtime,
    source: &mut Source,
    mut watcher: Watcher,
    opts: &Options,
    tracker: SocketAddr,
) -> Result<ExitCode> {
    let mut term = ratatui::init();
    let result = (|| -> Result<ExitCode> {
        let mut view: Option<FleetView> = None;
        let mut problem: Option<String>;
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                next = Instant::now() + opts.every;
                match rt.block_on(source.poll()) {
                    Ok((state, log)) => {
                        view = Some(watcher.observe(&state, &log, Instant::now(), unix_ms()));
                        problem = None;
                    }
                    Err(e) => problem = Some(format!("tracker unreachable: {e:#}")),
                }
                term.draw(|f| draw(f, view.as_ref(), problem.as_deref(), tracker))?;
                if opts.until_live && view.as_ref().is_some_and(|v| v.all_live) {
                    // Leave the final picture up a moment for whoever watches.
                    std::thread::sleep(Duration::from_millis(300));
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn colour(s: HostState) -> Color {
    match s {
        HostState::Fetching => Color::Blue,
        HostState::Staged => Color::Magenta,
        HostState::Switching => Color::Yellow,
        HostState::Live => Color::Green,
        HostState::Failed => Color::Red,
        HostState::Stale => Color::Gray,
        HostState::Unreachable => Color::DarkGray,
    }
}

fn draw(
    f: &mut ratatui::Frame,
    view: Option<&FleetView>,
    problem: Option<&str>,
    tracker: SocketAddr,
) {
    let area = f.area();
    let Some(v) = view else {
        let text = problem.unwrap_or("asking the tracker...");
        f.render_widget(
            Paragraph::new(format!("shoal status --watch: {tracker}\n{text}")),
            area,
        );
        return;
    };
    let dc_rows = v.dcs.len().max(1) as u16 + 2;
    let [top, dcs, middle, errors, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(dc_rows),
        Constraint::Min(6),
        Constraint::Length(v.errors.len().clamp(1, 6) as u16 + 2),
        Constraint::Length(1),
    ])
    .areas(area);

    let live = v.counts.get("live").copied().unwrap_or(0);
    let mut head = vec![
        Span::styled("shoal ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "release {} · target {} · {live}/{} live · {} · tracker {tracker}",
            v.release.as_deref().unwrap_or("none"),
            v.target.as_deref().unwrap_or("none"),
            v.hosts.len(),
            HumanDuration(Duration::from_secs_f64(v.elapsed_s)),
        )),
    ];
    if v.all_live {
        head.push(Span::styled(
            "  every host live",
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(p) = problem {
        head.push(Span::styled(format!("  {p}"), Style::new().fg(Color::Red)));
    }
    f.render_widget(Paragraph::new(Line::from(head)), top);

    draw_dcs(f, v, dcs);

    let [hosts, right] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(middle);
    let [rollout, chart] =
        Layout::vertical([Constraint::Length(8), Constraint::Min(6)]).areas(right);
    draw_hosts(f, v, hosts);
    draw_rollout(f, v, rollout);
    draw_chart(f, v, chart);

    let lines: Vec<Line> = if v.errors.is_empty() {
        vec![Line::styled("none", Style::new().fg(Color::DarkGray))]
    } else {
        v.errors
            .iter()
            .rev()
            .take(6)
            .map(|e| Line::styled(e.clone(), Style::new().fg(Color::Red)))
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" last errors "),
            )
            .wrap(Wrap { trim: true }),
        errors,
    );
    f.render_widget(
        Paragraph::new(Line::styled(
            "q quit · read-only view of the tracker",
            Style::new().fg(Color::DarkGray),
        )),
        help,
    );
}

fn draw_dcs(f: &mut ratatui::Frame, v: &FleetView, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" datacenters ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = Layout::vertical(vec![Constraint::Length(1); v.dcs.len().max(1)]).split(inner);
    for (d, row) in v.dcs.iter().zip(rows.iter()) {
        let [name, bar, figures] = Layout::horizontal([
            Constraint::Length(10),
            Constraint::Min(10),
            Constraint::Length(64),
        ])
        .areas(*row);
        f.render_widget(Paragraph::new(d.dc.clone()), name);
        let ratio = d.fraction().clamp(0.0, 1.0);
        f.render_widget(
            Gauge::default()
                .gauge_style(Style::new().fg(if d.live == d.hosts {
                    Color::Green
                } else {
                    Color::Blue
                }))
                .ratio(ratio)
                .label(format!("{:.0}%", 100.0 * ratio)),
            bar,
        );
        f.render_widget(
            Paragraph::new(format!(
                " {}/{} verified {} live · {}/{} · in {}/s out {}/s",
                d.verified,
                d.hosts,
                d.live,
                BinaryBytes(d.bytes_have),
                BinaryBytes(d.bytes_total),
                BinaryBytes(d.rate_in_bps as u64),
                BinaryBytes(d.rate_out_bps as u64),
            )),
            figures,
        );
    }
}

fn draw_hosts(f: &mut ratatui::Frame, v: &FleetView, area: Rect) {
    let mut legend: Vec<Span> = Vec::new();
    for s in HostState::ALL {
        legend.push(Span::styled(
            format!(
                " {} {} ",
                s.name(),
                v.counts.get(s.name()).copied().unwrap_or(0)
            ),
            Style::new().fg(Color::Black).bg(colour(s)),
        ));
        legend.push(Span::raw(" "));
    }
    let mut lines = vec![Line::from(legend), Line::raw("")];
    let mut dc = "";
    let mut row: Vec<Span> = Vec::new();
    for h in &v.hosts {
        if h.dc != dc {
            if !row.is_empty() {
                lines.push(Line::from(std::mem::take(&mut row)));
            }
            dc = &h.dc;
            row.push(Span::styled(
                format!("{dc:<8}"),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        }
        row.push(Span::styled(
            format!(" {} ", h.host),
            Style::new().fg(Color::Black).bg(colour(h.state)),
        ));
        row.push(Span::raw(" "));
    }
    if !row.is_empty() {
        lines.push(Line::from(row));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" hosts "))
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn draw_rollout(f: &mut ratatui::Frame, v: &FleetView, area: Rect) {
    let lines = match &v.rollout {
        None => vec![Line::styled(
            "no rollout yet",
            Style::new().fg(Color::DarkGray),
        )],
        Some(r) => {
            let mut l = vec![
                Line::from(Span::styled(
                    r.purpose.clone(),
                    Style::new().add_modifier(Modifier::BOLD),
                )),
                Line::raw(format!("by {}", r.who)),
                Line::raw(format!(
                    "{}{}",
                    r.phase,
                    if r.done { " (finished)" } else { "" }
                )),
            ];
            if let Some(b) = r.batch {
                l.push(Line::raw(format!(
                    "batch {b} of {}: {}",
                    r.batches,
                    r.batch_hosts.join(", ")
                )));
            }
            if !r.next_hosts.is_empty() {
                l.push(Line::raw(format!("next: {}", r.next_hosts.join(", "))));
            }
            l
        }
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" rollout "))
            .wrap(Wrap { trim: true }),
        area,
    );
}

/// Hosts verified over time since the release appeared (the curve netsim
/// and the web page draw), as a braille line.
fn draw_chart(f: &mut ratatui::Frame, v: &FleetView, area: Rect) {
    use ratatui::symbols::Marker;
    use ratatui::widgets::{Axis, Chart, Dataset, GraphType};
    let points = shoal_view::chart::steps(&v.curve, Some(v.elapsed_s));
    let x_max = v.elapsed_s.max(1.0);
    let y_max = v.hosts.len().max(1) as f64;
    let data = Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(Color::Green))
        .data(&points);
    let chart = Chart::new(vec![data])
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" hosts verified over time "),
        )
        .x_axis(
            Axis::default()
                .bounds([0.0, x_max])
                .labels(["0 s".to_string(), format!("{x_max:.0} s")]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .labels(["0".to_string(), format!("{}", v.hosts.len())]),
        );
    f.render_widget(chart, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use shoal_view::{DcView, HostView};

    fn view() -> FleetView {
        let host = |h: &str, dc: &str, state| HostView {
            host: h.into(),
            dc: dc.into(),
            state,
            current: Some("v1".into()),
            verified: false,
            chunks_have: 1,
            chunks_total: 2,
            last_seen_s: 0,
            note: None,
        };
        FleetView {
            release: Some("v2".into()),
            target: Some("v1".into()),
            dcs: vec![DcView {
                dc: "fra".into(),
                hosts: 2,
                verified: 1,
                live: 0,
                chunks_have: 3,
                chunks_total: 4,
                bytes_have: 3 << 20,
                bytes_total: 4 << 20,
                rate_in_bps: 2048.0,
                rate_out_bps: 0.0,
            }],
            hosts: vec![
                host("web-01", "fra", HostState::Fetching),
                host("web-02", "fra", HostState::Failed),
            ],
            counts: [("fetching".to_string(), 1), ("failed".to_string(), 1)].into(),
            errors: vec!["01:02:03 web-02: v2 failed here".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_screen_shows_datacenters_hosts_and_errors() {
        let mut t = Terminal::new(TestBackend::new(140, 30)).unwrap();
        let v = view();
        t.draw(|f| draw(f, Some(&v), None, "127.0.0.1:7400".parse().unwrap()))
            .unwrap();
        let text: String = t
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        for want in [
            "release v2",
            "75%",
            "1/2 verified 0 live",
            "in 2.00 KiB/s",
            "web-01",
            "web-02",
            "failed 1",
            "01:02:03 web-02: v2 failed here",
            "no rollout yet",
            "hosts verified over time",
        ] {
            assert!(text.contains(want), "missing {want:?}");
        }
        assert!(!text.contains("every host live"));
        // Each host's cell carries its state's colour.
        let buf = t.backend().buffer();
        let cell_of = |needle: &str| {
            let w = buf.area.width as usize;
            let at = text[..text.find(needle).unwrap()].chars().count();
            buf.content()[at / w * w + at % w].bg
        };
        assert_eq!(cell_of("web-02"), Color::Red);
        assert_eq!(cell_of("web-01"), Color::Blue);
    }

    #[test]
    fn a_plain_line_per_refresh() {
        let mut v = view();
        assert_eq!(
            plain_line(&v),
            "v2: fra 1/2 verified 0 live 75% in 2.00 KiB/s out 0 B/s | 0/2 live 1 failed"
        );
        v.all_live = true;
        assert!(plain_line(&v).ends_with("| every host live"));
    }
}
