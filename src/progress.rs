//! Progress of long work: a bar on a terminal (bytes, rate, ETA), JSON lines for scripts
//! (`--json`), nothing otherwise. Updates are throttled so a fast copy is not slowed by
//! its own reporting.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use transplant_formats::copy::Progress;

pub enum Reporter {
    Bar(ProgressBar),
    Json { last: Instant, start: Instant },
    Silent,
}

impl Reporter {
    /// `force`: show the bar even if stderr is not a terminal (`-p`).
    pub fn new(json: bool, force: bool, quiet: bool) -> Self {
        if quiet {
            return Reporter::Silent;
        }
        if json {
            let now = Instant::now();
            return Reporter::Json {
                last: now - Duration::from_secs(10),
                start: now,
            };
        }
        if !(force || std::io::stderr().is_terminal()) {
            return Reporter::Silent;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Reporter::Bar(bar)
    }

    pub fn update(&mut self, p: Progress) {
        match self {
            Reporter::Bar(b) => {
                b.set_length(p.total);
                b.set_position(p.done);
            }
            Reporter::Json { last, start } => {
                if last.elapsed() >= Duration::from_millis(500) || p.done == p.total {
                    *last = Instant::now();
                    let line = serde_json::json!({
                        "event": "progress",
                        "done": p.done,
                        "total": p.total,
                        "virtual_size": p.disk,
                        "elapsed_s": start.elapsed().as_secs_f64(),
                    });
                    eprintln!("{line}");
                }
            }
            Reporter::Silent => {}
        }
    }

    pub fn finish(&self) {
        if let Reporter::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
