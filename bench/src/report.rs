//! Result blocks: printed, and appended to `bench/RESULTS.md` with the exact command,
//! the date, the machine's core count and its load average.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// In the results file, new performance blocks go just above this line.
pub const MARKER: &str = "<!-- vigie-bench: new performance blocks go above this line -->";

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Logical CPUs available to this process.
pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// This process's command line, quoted for a POSIX shell.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A result block under construction.
#[derive(Debug)]
pub struct Report {
    title: String,
    load_start: String,
    lines: Vec<String>,
}

impl Report {
    /// Starts a block; the load average is sampled now and again at [`Report::finish`].
    pub fn new(title: &str) -> Report {
        Report {
            title: title.to_string(),
            load_start: loadavg(),
            lines: Vec::new(),
        }
    }

    /// Adds one line of Markdown.
    pub fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }

    /// Renders the block.
    pub fn render(&self, note: &str) -> String {
        let mut s = format!(
            "### {} — {}\n\n",
            self.title,
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        s.push_str(&format!("- command: `{}`\n", command_line()));
        s.push_str(&format!(
            "- machine: nproc {}, load average {} at start, {} at end (shared machine, others compiling in parallel: figures are noisy)\n",
            nproc(),
            self.load_start,
            loadavg()
        ));
        if !note.is_empty() {
            s.push_str(&format!("- note: {note}\n"));
        }
        s.push('\n');
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push('\n');
        s
    }

    /// Prints the block and records it in `results` when given: just above the line
    /// [`MARKER`] if the file has one (so performance blocks stay together while other
    /// sections follow), else at the end.
    pub fn finish(self, results: Option<&Path>, note: &str) -> Result<()> {
        let text = self.render(note);
        println!("{text}");
        if let Some(p) = results {
            let old = std::fs::read_to_string(p).unwrap_or_default();
            match old.find(MARKER) {
                Some(at) => {
                    let new = format!("{}{text}{}", &old[..at], &old[at..]);
                    let tmp = p.with_extension("md.tmp");
                    std::fs::write(&tmp, new)
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                    std::fs::rename(&tmp, p)
                        .with_context(|| format!("cannot replace {}", p.display()))?;
                    eprintln!("recorded in {}", p.display());
                }
                None => {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .with_context(|| format!("cannot append to {}", p.display()))?;
                    f.write_all(text.as_bytes())?;
                    eprintln!("appended to {}", p.display());
                }
            }
        }
        Ok(())
    }
}

/// `x` with `digits` decimals, or `n/a` for NaN.
pub fn f(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// "met" or "MISSED", for a goal line.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
