//! Progress bars on a terminal; nothing when output is JSON or not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub fn bytes_bar(json: bool, len: u64, what: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// `shoal deploy`'s progress: on a terminal, a bar per datacenter while the
/// release stages and a bar of hosts switched; elsewhere, plain lines on
/// stderr; nothing with `--json`.
pub struct RolloutView {
    json: bool,
    multi: Option<indicatif::MultiProgress>,
    dcs: Vec<(String, ProgressBar)>,
    switched: Option<ProgressBar>,
    last_line: String,
}

impl RolloutView {
    pub fn new(json: bool) -> Self {
        let terminal = !json && std::io::stderr().is_terminal();
        RolloutView {
            json,
            multi: terminal.then(indicatif::MultiProgress::new),
            dcs: Vec::new(),
            switched: None,
            last_line: String::new(),
        }
    }

    fn line(&self, s: String) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => eprintln!("{s}"),
        }
    }

    pub fn event(&mut self, e: shoal_rollout::Event) {
        use shoal_rollout::Event;
        if self.json {
            return;
        }
        match e {
            Event::Staging(progress) => match &self.multi {
                Some(m) => {
                    for d in progress {
                        let bar = match self.dcs.iter().find(|(dc, _)| *dc == d.dc) {
                            Some((_, b)) => b.clone(),
                            None => {
                                let b = m.add(ProgressBar::new(d.hosts as u64));
                                b.set_style(
                                    ProgressStyle::with_template(
                                        "{prefix:>10} [{bar:30}] {pos}/{len} hosts staged {msg}",
                                    )
                                    .expect("valid template")
                                    .progress_chars("=> "),
                                );
                                b.set_prefix(d.dc.clone());
                                self.dcs.push((d.dc.clone(), b.clone()));
                                b
                            }
                        };
                        bar.set_length(d.hosts as u64);
                        bar.set_position(d.staged as u64);
                        bar.set_message(if d.chunks_total > 0 {
                            format!("({}/{} chunks on the rest)", d.chunks_have, d.chunks_total)
                        } else {
                            String::new()
                        });
                    }
                }
                None => {
                    let line = progress
                        .iter()
                        .map(|d| format!("{} {}/{} staged", d.dc, d.staged, d.hosts))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if line != self.last_line {
                        eprintln!("staging: {line}");
                        self.last_line = line;
                    }
                }
            },
            Event::Batch {
                index,
                of,
                hosts,
                canary,
            } => {
                for (_, b) in self.dcs.drain(..) {
                    b.finish();
                }
                if let (Some(m), None) = (&self.multi, &self.switched) {
                    let b = m.add(ProgressBar::new(0));
                    b.set_style(
                        ProgressStyle::with_template(
                            "  switched [{bar:30}] {pos}/{len} hosts {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    self.switched = Some(b);
                }
                if let Some(b) = &self.switched {
                    b.inc_length(hosts.len() as u64);
                    b.set_message(format!("batch {}/{of}", index + 1));
                }
                self.line(format!(
                    "batch {}/{of}{}: {}",
                    index + 1,
                    if canary { " (canary)" } else { "" },
                    hosts.join(", ")
                ));
            }
            Event::Host(h) => {
                if let Some(b) = &self.switched {
                    b.inc(1);
                }
                self.line(format!("  {}", crate::rollout::host_line(h)));
            }
            Event::Pause(d) => {
                if let Some(b) = &self.switched {
                    b.set_message(format!("pause {d:?}"));
                } else {
                    self.line(format!("  pause {d:?}"));
                }
            }
            Event::RollingBack(n) => self.line(format!("rolling back {n} switched host(s)")),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.switched {
            b.finish();
        }
        for (_, b) in &self.dcs {
            b.finish();
        }
    }
}
