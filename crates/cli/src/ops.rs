//! Operating shoal: config checks and man pages.

use crate::ConfigKind;
use crate::commands::emit;
use anyhow::{Context, Result, bail};
use shoal_node::check::{Which, check, which};
use std::path::Path;
use std::process::ExitCode;

pub fn config_check(file: &Path, kind: Option<ConfigKind>, json: bool) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let kind = match kind {
        Some(ConfigKind::Agent) => Which::Agent,
        Some(ConfigKind::Seed) => Which::Seed,
        None => match which(&text) {
            Some(w) => w,
            None => bail!(
                "{}: cannot tell an agent config (with `root`) from a seed config (with `store`); say --kind",
                file.display()
            ),
        },
    };
    let base = std::env::current_dir().context("reading the working directory")?;
    let problems = check(&text, kind, &base);
    let name = match kind {
        Which::Agent => "agent",
        Which::Seed => "seed",
    };
    emit(
        json,
        &serde_json::json!({ "file": file, "kind": name, "ok": problems.is_empty(), "problems": problems }),
        || {
            if problems.is_empty() {
                return format!("{}: a valid {name} config\n", file.display());
            }
            let mut s = format!(
                "{}: {} problem(s) in this {name} config:\n",
                file.display(),
                problems.len()
            );
            for p in &problems {
                s.push_str(&format!("  {p}\n"));
            }
            s
        },
    )?;
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn man(out: Option<&Path>) -> Result<ExitCode> {
    let cmd = crate::command();
    let Some(dir) = out else {
        clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .context("writing the man page")?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = vec![(String::from("shoal"), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("shoal-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_mangen::Man::new(page)
            .render(&mut f)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
