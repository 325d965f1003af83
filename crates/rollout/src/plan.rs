//! Which hosts switch together: the canaries first and alone, then batches of
//! a fixed size or a percentage of the fleet. Batches take hosts from every
//! datacenter in turn, so a batch removes about the same share of each
//! datacenter's capacity instead of most of one.

use std::collections::BTreeMap;

/// How many hosts switch at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BatchSize {
    Hosts(usize),
    /// Percent of the hosts in the rollout, rounded up, at least one.
    Percent(f64),
}

impl std::str::FromStr for BatchSize {
    type Err = String;

    /// `3` or `25%`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("a batch of {p}% is not in (0, 100]"));
            }
            return Ok(BatchSize::Percent(p));
        }
        match s.parse::<usize>() {
            Ok(0) => Err("a batch must hold at least one host".into()),
            Ok(n) => Ok(BatchSize::Hosts(n)),
            Err(_) => Err(format!("{s:?} is neither a host count nor a percentage")),
        }
    }
}

impl BatchSize {
    pub fn hosts(&self, total: usize) -> usize {
        match *self {
            BatchSize::Hosts(n) => n,
            BatchSize::Percent(p) => (total as f64 * p / 100.0).ceil() as usize,
        }
        .max(1)
    }
}

/// Splits `hosts` (name, datacenter) into batches: the canaries that are in
/// the list as one batch, then the rest, datacenters interleaved.
pub fn batches(hosts: &[(String, String)], canary: &[String], size: BatchSize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let canaries: Vec<String> = hosts
        .iter()
        .filter(|(h, _)| canary.contains(h))
        .map(|(h, _)| h.clone())
        .collect();
    if !canaries.is_empty() {
        out.push(canaries);
    }
    let mut by_dc: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (h, dc) in hosts {
        if !canary.contains(h) {
            by_dc.entry(dc.as_str()).or_default().push(h.as_str());
        }
    }
    // Each host at its place within its datacenter, as a share of that
    // datacenter: a batch then takes the same share of every datacenter,
    // small ones included, rather than the same number of hosts.
    let mut order: Vec<(f64, &str, &str)> = Vec::new();
    for (dc, list) in by_dc.iter_mut() {
        list.sort_unstable();
        let n = list.len() as f64;
        for (i, h) in list.iter().enumerate() {
            order.push(((i as f64 + 0.5) / n, dc, h));
        }
    }
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    let order: Vec<String> = order.into_iter().map(|(_, _, h)| h.to_string()).collect();
    let n = size.hosts(hosts.len());
    out.extend(order.chunks(n).map(|c| c.to_vec()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Vec<(String, String)> {
        (0..12)
            .map(|i| (format!("h{i:02}"), format!("dc{}", i % 3)))
            .collect()
    }

    #[test]
    fn sizes_parse_and_round_up() {
        assert_eq!("3".parse(), Ok(BatchSize::Hosts(3)));
        assert_eq!("25%".parse(), Ok(BatchSize::Percent(25.0)));
        assert!("0".parse::<BatchSize>().is_err());
        assert!("0%".parse::<BatchSize>().is_err());
        assert!("150%".parse::<BatchSize>().is_err());
        assert!("x".parse::<BatchSize>().is_err());
        assert_eq!(BatchSize::Percent(10.0).hosts(48), 5);
        assert_eq!(BatchSize::Percent(1.0).hosts(12), 1);
    }

    #[test]
    fn canaries_go_first_alone_then_datacenters_interleave() {
        let b = batches(
            &fleet(),
            &["h05".into(), "nobody".into()],
            BatchSize::Hosts(3),
        );
        assert_eq!(b[0], ["h05"]);
        let rest: Vec<&String> = b[1..].iter().flatten().collect();
        assert_eq!(rest.len(), 11);
        assert!(b[1..].iter().all(|x| x.len() <= 3));
        // Every full batch spans three datacenters.
        for batch in &b[1..4] {
            let mut dcs: Vec<usize> = batch
                .iter()
                .map(|h| h[1..].parse::<usize>().unwrap() % 3)
                .collect();
            dcs.sort();
            dcs.dedup();
            assert_eq!(dcs.len(), 3, "{batch:?}");
        }
        let p = batches(&fleet(), &[], BatchSize::Percent(50.0));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].len(), 6);
    }

    #[test]
    fn a_small_datacenter_is_not_emptied_by_one_batch() {
        let mut hosts: Vec<(String, String)> = (0..20)
            .map(|i| (format!("s{i:02}"), "big".to_string()))
            .collect();
        hosts.push(("b0".into(), "small".into()));
        hosts.push(("b1".into(), "small".into()));
        let b = batches(&hosts, &[], BatchSize::Hosts(4));
        for batch in &b {
            let small = batch.iter().filter(|h| h.starts_with('b')).count();
            assert!(small <= 1, "{batch:?} takes the whole small datacenter");
        }
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 22);
    }
}
