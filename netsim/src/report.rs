//! The results of a run: one [`Report`] per topology and release, one
//! [`StrategyResult`] per strategy, rendered as a plain-text table for a
//! terminal and as JSON for tools and CI.
//!
//! The numbers that matter are the ones DESIGN.md asks for: the time until every
//! host verified the release against the lower bound T_lb, and the bytes that
//! entered each datacenter against F. Both renderings come from the same
//! structures, so the table never shows what the JSON does not hold. The JSON
//! field names are part of the interface (CI and the issue read them).

use crate::bound::Bound;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Audit findings listed per strategy in the table (the JSON has them all).
const MAX_FINDINGS: usize = 5;

/// One run: a topology, a release, and every strategy that delivered it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub topology: String,
    pub hosts_total: usize,
    /// Size of the plain release tree.
    pub release_bytes: u64,
    /// F: the compressed chunk bytes every target must receive.
    pub bundle_bytes: u64,
    pub chunks: usize,
    /// The lower bound for `bundle_bytes` on this topology, if computed.
    pub bound: Option<Bound>,
    pub delta: Option<DeltaInfo>,
    pub strategies: Vec<StrategyResult>,
    /// Share of all cores busy over the whole run (0..1).
    pub cpu_busy: f64,
    pub cores: usize,
    /// `packet` (real QUIC over the simulated network, in virtual time) or
    /// `flow` (the swarm's decisions with flows, in virtual time).
    #[serde(default)]
    pub model: String,
}

/// How one strategy did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: String,
    /// Seconds until every host verified; `None` if some had not by the limit.
    pub t_all_s: Option<f64>,
    pub t_lb_s: f64,
    /// `t_all_s / t_lb_s`.
    pub ratio_to_lb: Option<f64>,
    pub seed_upload_bytes: u64,
    pub hosts_verified: usize,
    pub hosts_total: usize,
    /// Bytes that entered each datacenter over its WAN in link.
    pub cross_dc_bytes_in: BTreeMap<String, u64>,
    /// Bytes into each datacenter / F.
    pub cross_dc_ratio: BTreeMap<String, f64>,
    /// What carried the bytes into each datacenter (packet-level runs; empty
    /// for the flow model, which has no datagrams).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cross_dc_in_parts: BTreeMap<String, CrossParts>,
    pub per_dc: Vec<DcResult>,
    pub per_host: Vec<HostResult>,
    pub time_limit_s: f64,
    /// Share of all cores busy while this strategy ran (0..1).
    pub cpu_busy: f64,
    /// (seconds since start, hosts verified) step points, for the chart.
    pub curve: Vec<(f64, usize)>,
    /// Seconds until every host verified the delta release, if one ran and
    /// every host got it before the limit.
    #[serde(default)]
    pub delta_t_all_s: Option<f64>,
    /// Hosts whose tree passed the audit after the run, if audited.
    #[serde(default)]
    pub audit_ok: Option<usize>,
    /// What the audit found wrong, one line each.
    #[serde(default)]
    pub audit_findings: Vec<String>,
    /// Seconds `shoal rollback` took to switch every host back to the first
    /// release (batches of 25%), if it ran.
    #[serde(default)]
    pub rollback_s: Option<f64>,
    #[serde(default)]
    pub rollback_hosts_back: Option<usize>,
    #[serde(default)]
    pub rollback_error: Option<String>,
}

/// The bytes that entered a datacenter, by the kind of datagram that
/// carried them: where the bytes above F go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossParts {
    /// Datagrams opening with a QUIC long header: connection handshakes.
    pub handshake_bytes: u64,
    /// Other datagrams under [`crate::net::SMALL_DATAGRAM`] bytes:
    /// acknowledgements, `Have`s, requests, keep-alives, and the last,
    /// short packet of a chunk.
    pub control_bytes: u64,
    /// The rest: full-sized packets of chunks and manifests, their QUIC
    /// framing and their retransmissions.
    pub data_bytes: u64,
}

impl CrossParts {
    pub(crate) fn of(d: &crate::net::DcStats) -> CrossParts {
        CrossParts {
            handshake_bytes: d.wan_in_handshake_bytes,
            control_bytes: d.wan_in_small_bytes,
            data_bytes: d
                .wan_in_bytes
                .saturating_sub(d.wan_in_handshake_bytes + d.wan_in_small_bytes),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DcResult {
    pub dc: String,
    pub hosts: usize,
    pub verified: usize,
    pub t_first_s: Option<f64>,
    pub t_last_s: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostResult {
    pub host: String,
    pub dc: String,
    pub t_verified_s: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A second release that changes part of the first, delivered after it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeltaInfo {
    /// Share of the files changed, in percent.
    pub percent: f64,
    pub files_changed: usize,
    pub changed_plain_bytes: u64,
    pub changed_compressed_bytes: u64,
    pub new_chunks: usize,
    pub new_chunk_bytes: u64,
    /// Mean and max over hosts of the bytes each host received during the delta.
    pub per_host_mean_bytes: f64,
    pub per_host_max_bytes: u64,
    pub ratio_to_changed: f64,
}

impl StrategyResult {
    /// How many times faster than `other` this strategy got every host
    /// verified; `None` unless both finished (and this one took some time).
    pub fn speedup_over(&self, other: &StrategyResult) -> Option<f64> {
        match (self.t_all_s, other.t_all_s) {
            (Some(me), Some(them)) if me > 0.0 => Some(them / me),
            _ => None,
        }
    }

    /// The speed-up over `other` as a table cell: `">k.kx"` when `other`
    /// did not finish (it would have needed at least its time limit).
    fn speedup_cell(&self, other: &StrategyResult) -> String {
        if let Some(s) = self.speedup_over(other) {
            return format!("{s:.2}x");
        }
        match (self.t_all_s, other.t_all_s) {
            (Some(me), None) if me > 0.0 && other.time_limit_s > 0.0 => {
                format!(">{:.1}x", other.time_limit_s / me)
            }
            _ => "-".into(),
        }
    }

    fn t_all_cell(&self) -> String {
        match self.t_all_s {
            Some(t) => secs(t),
            None => format!(
                "> {} ({}/{})",
                secs(self.time_limit_s),
                self.hosts_verified,
                self.hosts_total
            ),
        }
    }
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Only a failing Serialize impl gets here; none of ours fails.
            serde_json::json!({ "error": e.to_string() }).to_string()
        })
    }

    /// A plain-text report for a terminal (no colour codes).
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_table(&mut out);
        out
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        let f = self.bundle_bytes;
        writeln!(
            out,
            "{}: {} hosts, release {} MiB, F = {} MiB in {} chunks",
            self.topology,
            self.hosts_total,
            mib(self.release_bytes),
            mib(f),
            self.chunks
        )?;
        let t_lb = self
            .bound
            .as_ref()
            .map(|b| b.t_lb_s)
            .or_else(|| self.strategies.first().map(|s| s.t_lb_s));
        match (&self.bound, t_lb) {
            (Some(b), _) => writeln!(out, "T_lb {} (binding: {})", secs(b.t_lb_s), b.binding)?,
            (None, Some(t)) => writeln!(out, "T_lb {}", secs(t))?,
            (None, None) => {}
        }

        if !self.strategies.is_empty() {
            self.write_strategies(out)?;
            self.write_per_dc(out)?;
            self.write_cross_parts(out)?;
        }
        if let Some(d) = &self.delta {
            writeln!(out)?;
            writeln!(
                out,
                "delta: {:.1}% of files ({} changed): {} plain, {} compressed; \
                 {} new chunks, {}",
                d.percent,
                d.files_changed,
                size(d.changed_plain_bytes as f64),
                size(d.changed_compressed_bytes as f64),
                d.new_chunks,
                size(d.new_chunk_bytes as f64)
            )?;
            writeln!(
                out,
                "  received per host: mean {}, max {}; {:.2}x the changed compressed bytes",
                size(d.per_host_mean_bytes),
                size(d.per_host_max_bytes as f64),
                d.ratio_to_changed
            )?;
        }

        writeln!(out)?;
        if self.model == "flow" {
            return writeln!(
                out,
                "flow model: the swarm's decisions in virtual time; times leave out \
                 hashing, decompression and writing the tree"
            );
        }
        writeln!(
            out,
            "packet model: real QUIC and agents in virtual time; CPU work (hashing, \
             decompression, writing) takes no simulated time"
        )?;
        writeln!(
            out,
            "cpu busy {:.0}% of {} cores",
            self.cpu_busy * 100.0,
            self.cores
        )?;
        // No warning when it is saturated: the packet model keeps virtual
        // time (crate::run), so a busy CPU makes a run longer, not slower.
        Ok(())
    }

    fn write_strategies(&self, out: &mut String) -> std::fmt::Result {
        let f = self.bundle_bytes;
        let shoal = self.strategies.iter().find(|s| s.strategy == "shoal");
        let any_delta =
            self.delta.is_some() || self.strategies.iter().any(|s| s.delta_t_all_s.is_some());
        let any_audit = self.strategies.iter().any(|s| s.audit_ok.is_some());
        let mut rows = vec![[
            "strategy".to_string(),
            "t_all".into(),
            "/T_lb".into(),
            "seed upload".into(),
            "cpu".into(),
            if any_delta {
                "delta t_all".into()
            } else {
                String::new()
            },
            if any_audit {
                "audit ok".into()
            } else {
                String::new()
            },
            if shoal.is_some() {
                "shoal speed-up".into()
            } else {
                String::new()
            },
            "cross-DC in (xF)".into(),
        ]];
        for s in &self.strategies {
            let ratio = s.ratio_to_lb.map_or("-".into(), |r| format!("{r:.2}"));
            let seed = format!(
                "{} MiB ({})",
                mib(s.seed_upload_bytes),
                times_f(s.seed_upload_bytes, f)
            );
            let speedup = match shoal {
                Some(sh) if sh.strategy != s.strategy => sh.speedup_cell(s),
                Some(_) => "-".into(),
                None => String::new(),
            };
            let cross = s
                .cross_dc_bytes_in
                .iter()
                .map(|(dc, &b)| format!("{dc} {}", times_f(b, f)))
                .collect::<Vec<_>>()
                .join("  ");
            rows.push([
                s.strategy.clone(),
                s.t_all_cell(),
                ratio,
                seed,
                format!("{:.0}%", s.cpu_busy * 100.0),
                match (any_delta, s.delta_t_all_s) {
                    (false, _) => String::new(),
                    (true, Some(t)) => secs(t),
                    (true, None) => "-".into(),
                },
                match (any_audit, s.audit_ok) {
                    (false, _) => String::new(),
                    (true, Some(ok)) => format!("{ok}/{}", s.hosts_total),
                    (true, None) => "-".into(),
                },
                speedup,
                cross,
            ]);
        }
        writeln!(out)?;
        write_grid(out, &rows)?;
        for s in &self.strategies {
            if let (Some(t), Some(back)) = (s.rollback_s, s.rollback_hosts_back) {
                writeln!(
                    out,
                    "fleet rollback ({}, `shoal rollback` in batches of 25%): {back}/{} hosts back on the first release in {}{}",
                    s.strategy,
                    s.hosts_total,
                    secs(t),
                    s.rollback_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )?;
            }
        }
        for s in self
            .strategies
            .iter()
            .filter(|s| !s.audit_findings.is_empty())
        {
            writeln!(out, "audit findings, {}:", s.strategy)?;
            for line in s.audit_findings.iter().take(MAX_FINDINGS) {
                writeln!(out, "  {line}")?;
            }
            if s.audit_findings.len() > MAX_FINDINGS {
                writeln!(
                    out,
                    "  ... and {} more",
                    s.audit_findings.len() - MAX_FINDINGS
                )?;
            }
        }
        Ok(())
    }

    /// What carried the bytes into each datacenter, as multiples of F:
    /// where the bytes above the release go (packet-level runs only).
    fn write_cross_parts(&self, out: &mut String) -> std::fmt::Result {
        let f = self.bundle_bytes;
        let mut dcs: Vec<&str> = Vec::new();
        for d in self
            .strategies
            .iter()
            .flat_map(|s| s.cross_dc_in_parts.keys())
        {
            if !dcs.contains(&d.as_str()) {
                dcs.push(d);
            }
        }
        if dcs.is_empty() || f == 0 {
            return Ok(());
        }
        let mut header = vec!["into DC (xF): data + control + handshakes".to_string()];
        header.extend(dcs.iter().map(|d| d.to_string()));
        let mut rows = vec![header];
        let x = |b: u64| format!("{:.3}", b as f64 / f as f64);
        for s in self
            .strategies
            .iter()
            .filter(|s| !s.cross_dc_in_parts.is_empty())
        {
            let mut row = vec![s.strategy.clone()];
            for dc in &dcs {
                row.push(match s.cross_dc_in_parts.get(*dc) {
                    None => "-".into(),
                    Some(p) => format!(
                        "{} + {} + {}",
                        x(p.data_bytes),
                        x(p.control_bytes),
                        x(p.handshake_bytes)
                    ),
                });
            }
            rows.push(row);
        }
        writeln!(out)?;
        write_grid(out, &rows)
    }

    fn write_per_dc(&self, out: &mut String) -> std::fmt::Result {
        let mut dcs: Vec<&str> = Vec::new();
        for d in self.strategies.iter().flat_map(|s| &s.per_dc) {
            if !dcs.contains(&d.dc.as_str()) {
                dcs.push(&d.dc);
            }
        }
        if dcs.is_empty() {
            return Ok(());
        }
        let mut header = vec!["per DC: first..last verified".to_string()];
        header.extend(dcs.iter().map(|d| d.to_string()));
        let mut rows = vec![header];
        for s in &self.strategies {
            let mut row = vec![s.strategy.clone()];
            for dc in &dcs {
                let cell = match s.per_dc.iter().find(|d| d.dc == *dc) {
                    None => "-".to_string(),
                    Some(d) if d.hosts == 0 => "-".to_string(),
                    Some(d) => {
                        let t = |v: Option<f64>| v.map_or("-".into(), secs_short);
                        let mut c = format!("{}..{}", t(d.t_first_s), t(d.t_last_s));
                        if d.verified < d.hosts {
                            let _ = write!(c, " ({}/{})", d.verified, d.hosts);
                        }
                        c
                    }
                };
                row.push(cell);
            }
            rows.push(row);
        }
        writeln!(out)?;
        write_grid(out, &rows)
    }
}

/// Left-aligned columns two spaces apart; trailing blanks trimmed.
fn write_grid<R: AsRef<[String]>>(out: &mut String, rows: &[R]) -> std::fmt::Result {
    let cols = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.as_ref().iter().enumerate() {
            if width[c] == 0 {
                continue;
            }
            write!(line, "{cell:<w$}  ", w = width[c])?;
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Seconds: two decimals below 100 s, one above.
fn secs(t: f64) -> String {
    format!("{} s", secs_short(t))
}

fn secs_short(t: f64) -> String {
    if t.abs() < 100.0 {
        format!("{t:.2}")
    } else {
        format!("{t:.1}")
    }
}

/// Mebibytes with one decimal.
fn mib(b: u64) -> String {
    mib_f(b as f64)
}

/// Bytes in KiB below a mebibyte, else MiB, with one decimal and the unit:
/// a delta's patches are kilobytes.
fn size(b: f64) -> String {
    if b < (1u64 << 20) as f64 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{} MiB", mib_f(b))
    }
}

fn mib_f(b: f64) -> String {
    format!("{:.1}", b / (1u64 << 20) as f64)
}

/// `bytes` as a multiple of F (`"1.02xF"`), or `"-"` if F is zero.
fn times_f(bytes: u64, f: u64) -> String {
    if f == 0 {
        "-".into()
    } else {
        format!("{:.2}xF", bytes as f64 / f as f64)
    }
}

/// Bytes in binary units with one decimal: `"512 B"`, `"1.5 KiB"`, `"12.3 MiB"`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    // Step up while the rounded value would read 1024.0 or more.
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn strategy(name: &str, t_all: Option<f64>, seed_up: u64, into_b: u64) -> StrategyResult {
        let t_lb = 10.0;
        StrategyResult {
            strategy: name.into(),
            t_all_s: t_all,
            t_lb_s: t_lb,
            ratio_to_lb: t_all.map(|t| t / t_lb),
            seed_upload_bytes: seed_up,
            hosts_verified: if t_all.is_some() { 6 } else { 4 },
            hosts_total: 6,
            cross_dc_bytes_in: [("a".to_string(), 0), ("b".to_string(), into_b)].into(),
            cross_dc_ratio: [
                ("a".to_string(), 0.0),
                ("b".to_string(), into_b as f64 / (100 * MIB) as f64),
            ]
            .into(),
            per_dc: vec![
                DcResult {
                    dc: "a".into(),
                    hosts: 3,
                    verified: 3,
                    t_first_s: Some(3.0),
                    t_last_s: Some(4.5),
                },
                DcResult {
                    dc: "b".into(),
                    hosts: 3,
                    verified: if t_all.is_some() { 3 } else { 1 },
                    t_first_s: Some(5.25),
                    t_last_s: t_all.or(Some(7.0)),
                },
            ],
            per_host: vec![HostResult {
                host: "a-01".into(),
                dc: "a".into(),
                t_verified_s: Some(3.0),
                bytes_in: 100 * MIB,
                bytes_out: 50 * MIB,
            }],
            time_limit_s: 120.0,
            cpu_busy: 0.4,
            curve: vec![(3.0, 1), (4.5, 3), (t_all.unwrap_or(7.0), 6)],
            ..Default::default()
        }
    }

    fn report() -> Report {
        Report {
            topology: "ci".into(),
            hosts_total: 7,
            release_bytes: 250 * MIB,
            bundle_bytes: 100 * MIB,
            chunks: 1600,
            bound: Some(Bound {
                t_lb_s: 10.0,
                terms: vec![("F/u_seed".into(), 10.0), ("F/d_min".into(), 4.0)],
                binding: "F/u_seed".into(),
            }),
            delta: None,
            strategies: vec![
                strategy("shoal", Some(11.5), 100 * MIB, 102 * MIB),
                strategy("central", Some(46.0), 600 * MIB, 300 * MIB),
                strategy("rsync-tree", None, 200 * MIB, 100 * MIB),
            ],
            cpu_busy: 0.42,
            cores: 2,
            model: "packet".into(),
        }
    }

    #[test]
    fn the_table_holds_the_numbers() {
        let t = report().render_table();
        println!("{t}");
        for want in [
            "ci: 7 hosts, release 250.0 MiB, F = 100.0 MiB in 1600 chunks",
            "T_lb 10.00 s (binding: F/u_seed)",
            "11.50 s",
            "1.15",
            "100.0 MiB (1.00xF)",
            "600.0 MiB (6.00xF)",
            "b 1.02xF",
            "b 3.00xF",
            "shoal speed-up",
            "4.00x",
            "> 120.0 s (4/6)",
            // shoal at 11.5 s against a strategy still unfinished at 120 s.
            ">10.4x",
            "3.00..4.50",
            "5.25..7.00 (1/3)",
            "cpu busy 42% of 2 cores",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(!t.contains("warning"), "{t}");
        assert!(!t.contains("audit") && !t.contains("delta"), "{t}");
        assert!(!t.contains('\x1b'), "no colour codes");
        // One row per strategy, in order.
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| {
                ["shoal ", "central ", "rsync-tree "]
                    .iter()
                    .any(|s| l.starts_with(s))
            })
            .collect();
        assert_eq!(rows.len(), 6, "strategies and per-DC rows:\n{t}");
        assert!(rows[1].starts_with("central") && rows[1].contains("4.00x"));
    }

    #[test]
    fn without_shoal_there_is_no_speed_up_and_a_hot_cpu_warns() {
        let mut r = report();
        r.strategies.remove(0);
        r.cpu_busy = 0.9;
        r.strategies[0].cpu_busy = 0.95;
        r.strategies[0].delta_t_all_s = Some(3.5);
        r.strategies[0].audit_ok = Some(5);
        r.strategies[0].audit_findings = (1..=7).map(|i| format!("host {i}: bad file")).collect();
        r.delta = Some(DeltaInfo {
            percent: 5.0,
            files_changed: 12,
            changed_plain_bytes: 10 * MIB,
            changed_compressed_bytes: 4 * MIB,
            new_chunks: 40,
            new_chunk_bytes: 5 * MIB,
            per_host_mean_bytes: 4.5 * MIB as f64,
            per_host_max_bytes: 6 * MIB,
            ratio_to_changed: 1.25,
        });
        let t = r.render_table();
        println!("{t}");
        assert!(!t.contains("speed-up"), "{t}");
        for want in [
            "cpu busy 90% of 2 cores",
            "delta: 5.0% of files (12 changed): 10.0 MiB plain, 4.0 MiB compressed; 40 new chunks, 5.0 MiB",
            "mean 4.5 MiB, max 6.0 MiB; 1.25x",
            "delta t_all",
            "3.50 s",
            "audit ok",
            "5/6",
            "audit findings, central:\n  host 1: bad file\n",
            "  host 5: bad file\n  ... and 2 more\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }

    #[test]
    fn bytes_into_a_datacenter_are_broken_down_by_what_carried_them() {
        let mut r = report();
        // A flow-model report has no breakdown: no line, no JSON key.
        let t = r.render_table();
        assert!(!t.contains("handshakes"), "{t}");
        assert!(!r.to_json().contains("cross_dc_in_parts"));

        let parts = CrossParts::of(&crate::net::DcStats {
            wan_in_bytes: 110 * MIB,
            wan_in_small_bytes: 6 * MIB,
            wan_in_handshake_bytes: 4 * MIB,
            ..Default::default()
        });
        assert_eq!(
            parts,
            CrossParts {
                handshake_bytes: 4 * MIB,
                control_bytes: 6 * MIB,
                data_bytes: 100 * MIB,
            }
        );
        r.strategies[0].cross_dc_in_parts = [
            ("a".to_string(), CrossParts::default()),
            ("b".to_string(), parts),
        ]
        .into();
        let t = r.render_table();
        println!("{t}");
        let line = t
            .lines()
            .find(|l| l.starts_with("into DC (xF): data + control + handshakes"))
            .unwrap_or_else(|| panic!("no breakdown in\n{t}"));
        assert!(line.contains(" a ") && line.ends_with(" b"), "{line}");
        assert!(
            t.contains("0.000 + 0.000 + 0.000  1.000 + 0.060 + 0.040"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let b = &v["strategies"][0]["cross_dc_in_parts"]["b"];
        assert_eq!(b["handshake_bytes"], 4 * MIB);
        assert_eq!(b["control_bytes"], 6 * MIB);
        assert_eq!(b["data_bytes"], 100 * MIB);
        assert!(v["strategies"][1].get("cross_dc_in_parts").is_none());
    }

    #[test]
    fn small_delta_sizes_are_shown_in_kib() {
        assert_eq!(super::size(89_476.0), "87.4 KiB");
        assert_eq!(super::size(0.0), "0.0 KiB");
        assert_eq!(super::size((5 * MIB) as f64), "5.0 MiB");
    }

    #[test]
    fn json_has_the_fields_the_issue_names() {
        let r = report();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let s = &v["strategies"];
        assert_eq!(s.as_array().unwrap().len(), 3);
        assert_eq!(s[0]["strategy"], "shoal");
        assert_eq!(s[0]["t_all_s"], 11.5);
        assert_eq!(s[0]["t_lb_s"], 10.0);
        assert_eq!(s[0]["ratio_to_lb"], 1.15);
        assert_eq!(s[0]["seed_upload_bytes"], 100 * MIB);
        assert_eq!(s[0]["hosts_verified"], 6);
        assert_eq!(s[0]["hosts_total"], 6);
        assert_eq!(s[0]["cross_dc_bytes_in"]["b"], 102 * MIB);
        assert_eq!(s[0]["cross_dc_bytes_in"]["a"], 0);
        assert!(s[2]["t_all_s"].is_null());
        assert!(s[2]["ratio_to_lb"].is_null());
        assert_eq!(s[2]["hosts_verified"], 4);
        assert_eq!(v["bound"]["binding"], "F/u_seed");
        assert_eq!(v["bundle_bytes"], 100 * MIB);
        assert!(v["delta"].is_null());
        assert!(s[0]["audit_ok"].is_null() && s[0]["delta_t_all_s"].is_null());
        // And back.
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back.strategies[1].curve, r.strategies[1].curve);
    }

    #[test]
    fn speed_up_needs_both_times() {
        let r = report();
        let [shoal, central, unfinished] = &r.strategies[..] else {
            panic!()
        };
        assert_eq!(shoal.speedup_over(central), Some(4.0));
        assert_eq!(central.speedup_over(shoal), Some(11.5 / 46.0));
        assert_eq!(shoal.speedup_over(unfinished), None);
        assert_eq!(unfinished.speedup_over(shoal), None);
    }

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * MIB + 300 * 1024), "12.3 MiB");
        assert_eq!(human_bytes(MIB - 1), "1.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
