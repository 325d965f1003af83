//! Deterministic sample release trees: source-like text files in nested
//! directories, a few large binaries, executables, symlinks (one pointing outside
//! the tree, as deploy trees do for shared config) and an empty directory. The same
//! spec and seed always give the same tree, so the demo, the tests and the
//! benchmarks measure the same thing every run.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Number of small text files.
    pub files: usize,
    /// Mean size of a small file in bytes (sizes vary from about 1/8 to 3x this).
    pub mean_file: usize,
    /// Sizes of the large binary files.
    pub binaries: Vec<u64>,
    pub seed: u64,
}

impl Spec {
    /// About 2,000 files and 20 MB: the demo's release.
    pub fn demo() -> Self {
        Spec {
            files: 2_000,
            mean_file: 6_000,
            binaries: vec![4 << 20, 3 << 20],
            seed: 1,
        }
    }

    /// A tree of about `bytes`: 40% in source-like files averaging 6 KB, the rest
    /// in two binaries (netsim's `--size`).
    pub fn sized(bytes: u64, seed: u64) -> Self {
        let text = bytes * 2 / 5;
        let bin = bytes - text;
        Spec {
            files: ((text / 6_000) as usize).max(1),
            mean_file: 6_000,
            binaries: vec![bin - bin / 2, bin / 2],
            seed,
        }
    }

    /// About 20,000 small files plus four binaries, ~500 MB: the benchmark tree.
    pub fn bench() -> Self {
        Spec {
            files: 20_000,
            mean_file: 5_000,
            binaries: vec![160 << 20, 120 << 20, 80 << 20, 40 << 20],
            seed: 7,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub files: usize,
    pub bytes: u64,
    pub small_files: Vec<PathBuf>,
}

/// splitmix64: a tiny, fast, seedable generator; quality is ample for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "return", "if", "else", "match", "self", "config", "request", "response",
    "release", "server", "cache", "value", "error", "result", "handler", "string", "index",
    "buffer", "render", "page", "user", "session", "=>", "{", "}", "(", ")", ";", "=", "+",
    "// TODO", "async", "await", "struct", "impl", "pub", "use", "mod", "const", "0", "1",
];

/// Source-like text of about `len` bytes.
pub fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut col = 0;
    while out.len() < len {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 60 + rng.below(30) as usize {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
        }
        if rng.below(50) == 0 {
            // Identifiers and numbers keep the text from compressing unrealistically well.
            out.extend_from_slice(format!("v{} ", rng.below(1_000_000)).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Binary-like bytes: runs of random data mixed with runs of repeated structure,
/// compressing roughly 2:1 like compiled code.
fn binary(rng: &mut Rng, w: &mut impl Write, len: u64) -> io::Result<()> {
    let mut block = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = block.len().min(left as usize);
        let mut i = 0;
        while i < n {
            let run = (64 + rng.below(448) as usize).min(n - i);
            if rng.below(2) == 0 {
                for b in &mut block[i..i + run] {
                    *b = rng.next_u64() as u8;
                }
            } else {
                let v = rng.next_u64().to_le_bytes();
                for (j, b) in block[i..i + run].iter_mut().enumerate() {
                    *b = v[j % 8];
                }
            }
            i += run;
        }
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Writes the tree into `dir` (created if needed).
pub fn generate(dir: &Path, spec: &Spec) -> io::Result<Stats> {
    let mut rng = Rng::new(spec.seed);
    let mut stats = Stats::default();
    fs::create_dir_all(dir)?;
    let dirs_n = (spec.files / 40).max(1);
    let mut dirs = Vec::with_capacity(dirs_n);
    for i in 0..dirs_n {
        // Nest some directories two deep.
        let d = if i % 3 == 2 {
            PathBuf::from(format!("src/mod{:03}/part{}", i / 3, i % 3))
        } else {
            PathBuf::from(format!("src/mod{:03}", i / 3))
        };
        fs::create_dir_all(dir.join(&d))?;
        dirs.push(d);
    }
    for i in 0..spec.files {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        let rel = d.join(format!("file{i:05}.rs"));
        // Sizes skewed small, as in real trees: mean ≈ mean_file.
        let len = match rng.below(8) {
            0..=4 => spec.mean_file / 8 + rng.below(spec.mean_file as u64 / 2) as usize,
            5 | 6 => spec.mean_file + rng.below(spec.mean_file as u64) as usize,
            _ => spec.mean_file * 2 + rng.below(spec.mean_file as u64 * 2) as usize,
        };
        let body = text(&mut rng, len);
        fs::write(dir.join(&rel), &body)?;
        stats.files += 1;
        stats.bytes += body.len() as u64;
        stats.small_files.push(rel);
    }
    fs::create_dir_all(dir.join("bin"))?;
    for (i, &len) in spec.binaries.iter().enumerate() {
        let p = dir.join(format!("bin/tool{i}"));
        let mut f = io::BufWriter::new(fs::File::create(&p)?);
        binary(&mut rng, &mut f, len)?;
        f.into_inner()?.sync_all()?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        stats.files += 1;
        stats.bytes += len;
    }
    fs::write(dir.join("VERSION"), format!("sample {}\n", spec.seed))?;
    fs::create_dir_all(dir.join("cache/empty"))?;
    std::os::unix::fs::symlink("bin/tool0", dir.join("tool"))?;
    std::os::unix::fs::symlink("/etc/shoal-shared/config.php", dir.join("config.php"))?;
    stats.files += 1;
    Ok(stats)
}

/// The small files of a tree [`generate`] wrote, found again on disk (sorted).
pub fn small_files(dir: &Path, _spec: &Spec) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p.strip_prefix(base).expect("under base").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &dir.join("src"), &mut out);
    out.sort();
    out
}

/// Edits `percent` of the small files in place (a line rewritten near a random
/// spot, sometimes a line added), as a new release of the same code would.
/// Returns the files edited.
pub fn edit(dir: &Path, stats: &Stats, percent: f64, seed: u64) -> io::Result<Vec<PathBuf>> {
    let mut rng = Rng::new(seed);
    let n = ((stats.small_files.len() as f64 * percent / 100.0).round() as usize).max(1);
    let mut picked: Vec<PathBuf> = Vec::with_capacity(n);
    while picked.len() < n.min(stats.small_files.len()) {
        let f = &stats.small_files[rng.below(stats.small_files.len() as u64) as usize];
        if !picked.contains(f) {
            picked.push(f.clone());
        }
    }
    for rel in &picked {
        let p = dir.join(rel);
        let mut body = fs::read(&p)?;
        let at = rng.below(body.len().max(1) as u64) as usize;
        let line = format!("\n    edited_{}();\n", rng.below(1_000_000));
        if rng.below(2) == 0 {
            body.splice(at..at, line.bytes());
        } else {
            let end = (at + line.len()).min(body.len());
            body.splice(at..end, line.bytes());
        }
        fs::write(&p, body)?;
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tree() {
        let a = std::env::temp_dir().join(format!("shoal-sample-a-{}", std::process::id()));
        let b = std::env::temp_dir().join(format!("shoal-sample-b-{}", std::process::id()));
        let spec = Spec {
            files: 50,
            mean_file: 500,
            binaries: vec![10_000],
            seed: 3,
        };
        let sa = generate(&a, &spec).unwrap();
        let sb = generate(&b, &spec).unwrap();
        assert_eq!(sa.bytes, sb.bytes);
        for f in &sa.small_files {
            assert_eq!(fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        }
        let edited = edit(&a, &sa, 10.0, 1).unwrap();
        assert_eq!(edited.len(), 5);
        assert!(
            edited
                .iter()
                .all(|f| fs::read(a.join(f)).unwrap() != fs::read(b.join(f)).unwrap())
        );
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
}
