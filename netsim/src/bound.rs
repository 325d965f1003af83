//! The physical limit T_lb (DESIGN.md, "The physical limit"): no scheme can
//! deliver a release of F bytes to every target of a topology sooner.
//!
//! Benchmarks divide their measured time by T_lb, so the bound must be a true
//! lower bound for *any* scheme (fluid, perfectly scheduled, free relaying
//! through any host and any datacenter), never an estimate of what a good swarm
//! achieves. Every term is kept, named, so a report can say which resource
//! binds; the bound is their maximum.
//!
//! The model is the one netsim simulates: each host has an upload and a download
//! capacity; a byte that crosses from datacenter `a` into datacenter `b` uses
//! `a`'s WAN out link and `b`'s WAN in link; inside a datacenter only the hosts'
//! own links limit traffic. Latency and chunking only add time (about
//! log2(N)/M of the fluid bound for M chunks), so leaving them out keeps the
//! bound valid.

use crate::topology::{HostRole, Topology};

/// The lower bound on the time to deliver F bytes to every target.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bound {
    /// The bound in seconds: the largest of `terms`.
    pub t_lb_s: f64,
    /// Every term in seconds, named: `"F/u_seed"`, `"F/d_min"`,
    /// `"N*F/(u_s+sum u)"`, `"F/c_in[dc2]"`, `"N_k*F/(c_k+U_k)[dc2]"`,
    /// `"N_k*F/(u_s+c_k+U_k)[dc1]"`, `"F/c_out[dc1]"`, `"R*F/sum c_out"`.
    pub terms: Vec<(String, f64)>,
    /// The name of the largest term (the first one on a tie).
    pub binding: String,
}

impl Bound {
    /// The value of the term called `name`, if the topology produced one.
    pub fn term(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }
}

/// T_lb for delivering `f_bytes` (F: the bytes that must reach every target,
/// i.e. the compressed bundle) from the seed to every target of `topo`.
///
/// With N targets, seed upload u_s, target uploads u_i, the slowest target
/// download d_min, and per datacenter k: WAN in c_k, WAN out o_k, N_k targets
/// with total upload U_k; R is the number of datacenters that hold targets but
/// not the seed:
///
/// - `F/u_seed`: at first only the seed holds the release, so every byte must
///   leave the seed at least once, through its upload.
/// - `F/d_min`: every target must download all F bytes through its own
///   downlink, the slowest one included.
/// - `N*F/(u_s+sum u)` (Kumar and Ross): the targets together download N·F
///   bytes, and every byte downloaded is uploaded by the seed or a target.
/// - For each datacenter k without the seed that holds targets:
///   - `F/c_in[k]`: every byte must enter k at least once, over its WAN in.
///   - `N_k*F/(c_k+U_k)[k]`: k's targets download N_k·F bytes; each arrives
///     either over k's WAN in or from a host of k (only targets live there).
/// - For the seed's datacenter s, if it holds targets:
///   `N_k*F/(u_s+c_k+U_k)[s]`: as above, but the seed also serves them. Not
///   implied by the Kumar-Ross term when uploads differ between datacenters
///   (fast uploaders elsewhere can only reach s through c_s).
/// - If R > 0:
///   - `F/c_out[s]`: the first copy of each byte to reach another datacenter
///     must leave s over its WAN out (only s holds the byte until then; it can
///     be relayed between other datacenters afterwards, so only one copy is
///     forced through o_s).
///   - `R*F/sum c_out`: the R datacenters receive at least R·F bytes over WAN,
///     and every byte crossing the WAN leaves some datacenter over its WAN out.
///     (R·F/o_s would assume no relaying between datacenters: not a bound.)
///
/// A zero `f_bytes` gives zero for every term; a zero rate gives an infinite
/// term (topologies from TOML refuse zero rates).
pub fn lower_bound(topo: &Topology, f_bytes: u64) -> Bound {
    let f = f_bytes as f64;
    // Time to move `bytes` at `rate` bytes/s; nothing to move takes no time even
    // over a dead link.
    let time = |bytes: f64, rate: f64| if bytes <= 0.0 { 0.0 } else { bytes / rate };

    let seed = topo.seed();
    let u_s = seed.upload as f64;
    let targets: Vec<_> = topo
        .hosts
        .iter()
        .filter(|h| h.role == HostRole::Target)
        .collect();
    let n = targets.len() as f64;
    let mut terms: Vec<(String, f64)> = vec![("F/u_seed".into(), time(f, u_s))];
    if let Some(d_min) = targets.iter().map(|h| h.download).min() {
        terms.push(("F/d_min".into(), time(f, d_min as f64)));
    }
    let sum_u: f64 = targets.iter().map(|h| h.upload as f64).sum();
    terms.push(("N*F/(u_s+sum u)".into(), time(n * f, u_s + sum_u)));

    let mut remote = 0usize;
    for (k, dc) in topo.dcs.iter().enumerate() {
        let in_k: Vec<_> = targets.iter().filter(|h| h.dc == k).collect();
        if in_k.is_empty() {
            continue;
        }
        let n_k = in_k.len() as f64;
        let u_k: f64 = in_k.iter().map(|h| h.upload as f64).sum();
        let c_k = dc.wan_in as f64;
        if k == seed.dc {
            terms.push((
                format!("N_k*F/(u_s+c_k+U_k)[{}]", dc.name),
                time(n_k * f, u_s + c_k + u_k),
            ));
        } else {
            remote += 1;
            terms.push((format!("F/c_in[{}]", dc.name), time(f, c_k)));
            terms.push((
                format!("N_k*F/(c_k+U_k)[{}]", dc.name),
                time(n_k * f, c_k + u_k),
            ));
        }
    }
    if remote > 0 {
        if let Some(dc) = topo.dcs.get(seed.dc) {
            terms.push((format!("F/c_out[{}]", dc.name), time(f, dc.wan_out as f64)));
        }
        let sum_out: f64 = topo.dcs.iter().map(|d| d.wan_out as f64).sum();
        terms.push(("R*F/sum c_out".into(), time(remote as f64 * f, sum_out)));
    }

    let (binding, t_lb_s) = terms
        .iter()
        .fold(None::<&(String, f64)>, |best, t| match best {
            Some(b) if b.1 >= t.1 => Some(b),
            _ => Some(t),
        })
        .map(|(n, v)| (n.clone(), *v))
        .unwrap_or_default();
    Bound {
        t_lb_s,
        terms,
        binding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8 Mbit/s is 1 MB/s, so with F = 10 MB every term is easy to do by hand.
    /// Defaults: seed in `a` at 10 MB/s up; `a` has 2 targets, `b` 4, each 2 MB/s
    /// up and 5 MB/s down; `a`'s WAN is 100 MB/s both ways, `b`'s in is 10 MB/s.
    struct Spec {
        seed_dc: &'static str,
        seed_up: f64,
        host_up: f64,
        host_down: f64,
        a_out: f64,
        b_in: f64,
    }

    const BASE: Spec = Spec {
        seed_dc: "a",
        seed_up: 80.0,
        host_up: 16.0,
        host_down: 40.0,
        a_out: 800.0,
        b_in: 80.0,
    };

    const F: u64 = 10_000_000;

    fn topo(s: &Spec) -> Topology {
        let text = format!(
            r#"
name = "bound-test"
[network]
intra_dc_ms = 0.25
inter_dc_ms = 20.0
[seed]
dc = "{seed_dc}"
upload_mbit = {seed_up}
download_mbit = 80
[[dc]]
name = "a"
hosts = 2
upload_mbit = {up}
download_mbit = {down}
wan_in_mbit = 800
wan_out_mbit = {a_out}
[[dc]]
name = "b"
hosts = 4
upload_mbit = {up}
download_mbit = {down}
wan_in_mbit = {b_in}
wan_out_mbit = 800
"#,
            seed_dc = s.seed_dc,
            seed_up = s.seed_up,
            up = s.host_up,
            down = s.host_down,
            a_out = s.a_out,
            b_in = s.b_in,
        );
        Topology::parse(&text).unwrap()
    }

    fn close(got: Option<f64>, want: f64, what: &str) {
        let got = got.unwrap_or_else(|| panic!("no term {what}"));
        assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
    }

    #[test]
    fn every_term_by_hand() {
        let b = lower_bound(&topo(&BASE), F);
        close(b.term("F/u_seed"), 10.0 / 10.0, "F/u_seed");
        close(b.term("F/d_min"), 10.0 / 5.0, "F/d_min");
        // 6 targets x 10 MB over 10 + 6 x 2 MB/s.
        close(b.term("N*F/(u_s+sum u)"), 60.0 / 22.0, "kumar-ross");
        // The seed's datacenter: 2 x 10 MB over seed 10 + WAN in 100 + 2 x 2.
        close(b.term("N_k*F/(u_s+c_k+U_k)[a]"), 20.0 / 114.0, "seed dc");
        close(b.term("F/c_in[b]"), 10.0 / 10.0, "F/c_in[b]");
        // 4 x 10 MB over WAN in 10 + 4 x 2 MB/s.
        close(b.term("N_k*F/(c_k+U_k)[b]"), 40.0 / 18.0, "dc b");
        close(b.term("F/c_out[a]"), 10.0 / 100.0, "F/c_out[a]");
        // One remote datacenter; WAN out 100 + 100 MB/s.
        close(b.term("R*F/sum c_out"), 10.0 / 200.0, "sum c_out");
        // The seed's datacenter needs nothing to cross into it.
        assert_eq!(b.term("F/c_in[a]"), None);
        assert_eq!(b.term("N_k*F/(c_k+U_k)[a]"), None);
        assert_eq!(b.terms.len(), 8);
        assert_eq!(b.binding, "N*F/(u_s+sum u)");
        close(Some(b.t_lb_s), 60.0 / 22.0, "t_lb");
    }

    #[test]
    fn the_binding_term_follows_the_scarce_resource() {
        let cases = [
            // Fast hosts: only the seed's upload is left.
            (
                Spec {
                    host_up: 80.0,
                    host_down: 800.0,
                    b_in: 800.0,
                    ..BASE
                },
                "F/u_seed",
                1.0,
            ),
            // Slow downloads.
            (
                Spec {
                    host_down: 8.0,
                    ..BASE
                },
                "F/d_min",
                10.0,
            ),
            // A thin pipe into b.
            (Spec { b_in: 8.0, ..BASE }, "F/c_in[b]", 10.0),
            // b's pipe is wide enough for one copy in 2 s but its 4 hosts
            // must share 5 + 8 MB/s: 40 / 13.
            (
                Spec {
                    b_in: 40.0,
                    host_down: 800.0,
                    ..BASE
                },
                "N_k*F/(c_k+U_k)[b]",
                40.0 / 13.0,
            ),
            // The seed's datacenter can hardly send out.
            (Spec { a_out: 8.0, ..BASE }, "F/c_out[a]", 10.0),
        ];
        for (spec, binding, t) in cases {
            let b = lower_bound(&topo(&spec), F);
            assert_eq!(b.binding, binding, "{:?}", b.terms);
            close(Some(b.t_lb_s), t, binding);
        }
    }

    #[test]
    fn moving_the_seed_moves_the_wan_terms() {
        let b = lower_bound(
            &topo(&Spec {
                seed_dc: "b",
                ..BASE
            }),
            F,
        );
        assert_eq!(b.term("F/c_in[b]"), None);
        close(b.term("F/c_in[a]"), 10.0 / 100.0, "F/c_in[a]");
        // 2 x 10 MB over WAN in 100 + 2 x 2 MB/s.
        close(b.term("N_k*F/(c_k+U_k)[a]"), 20.0 / 104.0, "dc a");
        // 4 x 10 MB over seed 10 + WAN in 10 + 4 x 2.
        close(b.term("N_k*F/(u_s+c_k+U_k)[b]"), 40.0 / 28.0, "seed dc b");
        close(b.term("F/c_out[b]"), 10.0 / 100.0, "F/c_out[b]");
        assert_eq!(b.binding, "N*F/(u_s+sum u)");
    }

    #[test]
    fn one_datacenter_has_no_wan_terms_and_zero_bytes_take_no_time() {
        let t = Topology::parse(
            r#"
name = "one"
[network]
intra_dc_ms = 0.25
inter_dc_ms = 20.0
[seed]
dc = "a"
upload_mbit = 80
download_mbit = 80
[[dc]]
name = "a"
hosts = 3
upload_mbit = 8
download_mbit = 80
wan_in_mbit = 8
wan_out_mbit = 8
"#,
        )
        .unwrap();
        let b = lower_bound(&t, F);
        assert!(
            !b.terms
                .iter()
                .any(|(n, _)| n.contains("c_out") || n.contains("c_in"))
        );
        // 3 x 10 MB over 10 + 3 x 1 MB/s.
        close(Some(b.t_lb_s), 30.0 / 13.0, "kumar-ross");
        let zero = lower_bound(&t, 0);
        assert_eq!(zero.t_lb_s, 0.0);
        assert!(zero.terms.iter().all(|&(_, v)| v == 0.0));
    }

    #[test]
    fn shipped_topologies_have_finite_positive_bounds() {
        for name in ["demo", "3dc-48", "5dc-200", "ci"] {
            let t = Topology::builtin(name).unwrap();
            let b = lower_bound(&t, 64 << 20);
            assert!(b.t_lb_s.is_finite() && b.t_lb_s > 0.0, "{name}: {b:?}");
            assert_eq!(b.term(&b.binding), Some(b.t_lb_s));
        }
    }
}
