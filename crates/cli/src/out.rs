//! Standard output for results and reports.
//!
//! A reader that stops early (`shoal bench --json | head -c 100`) closes
//! the pipe. Rust ignores SIGPIPE, so the next write fails with
//! `BrokenPipe`, and `print!` panics on that. Writes here return the error
//! instead, and `main` ends quietly on it: the reader asked for no more.

use std::io::{self, Write};

/// Writes `text` to standard output and flushes it.
pub fn print(text: impl std::fmt::Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    write!(out, "{text}")?;
    out.flush()
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_broken_pipe_is_found_under_context_and_other_errors_are_not() {
        let pipe: anyhow::Result<()> = Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        assert!(is_broken_pipe(
            &pipe.context("printing the report").unwrap_err()
        ));
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
