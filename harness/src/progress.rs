//! Progress of long work, on a terminal and off it.
//!
//! indicatif draws nothing when stderr is not a terminal, and drops what is
//! printed above a hidden bar: a run under `nohup` with its output in a file
//! (how the results table's hours of secure evaluation run) would show
//! nothing until it ends. Off a terminal, [`Progress`] writes a plain line
//! instead, at most once per [`PLAIN_EVERY`] and at the end.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Least time between two plain progress lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(60);

/// A progress bar on a terminal, plain lines elsewhere.
pub struct Progress {
    bar: ProgressBar,
    plain: Option<Plain>,
}

struct Plain {
    what: String,
    len: u64,
    pos: u64,
    /// Position and time the rate is measured from (after a resume).
    from: (u64, Instant),
    last: Instant,
    msg: String,
}

impl Progress {
    /// `len` steps of `what` (e.g. "secure"), shown as a bar when stderr is
    /// a terminal.
    pub fn new(len: usize, what: &str) -> Self {
        Self::with_terminal(len, what, std::io::stderr().is_terminal())
    }

    fn with_terminal(len: usize, what: &str, terminal: bool) -> Self {
        if terminal {
            let bar = ProgressBar::new(len as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(what.to_string());
            return Self { bar, plain: None };
        }
        let now = Instant::now();
        Self {
            bar: ProgressBar::hidden(),
            plain: Some(Plain {
                what: what.to_string(),
                len: len as u64,
                pos: 0,
                from: (0, now),
                last: now,
                msg: String::new(),
            }),
        }
    }

    /// Jumps to `pos` (work found done, e.g. in a journal); the rate is
    /// measured from here.
    pub fn set_position(&mut self, pos: u64) {
        self.bar.set_position(pos);
        if let Some(p) = &mut self.plain {
            p.pos = pos;
            p.from = (pos, Instant::now());
        }
    }

    /// The text shown after the count.
    pub fn set_message(&mut self, msg: String) {
        match &mut self.plain {
            Some(p) => p.msg = msg,
            None => self.bar.set_message(msg),
        }
    }

    /// A line above the bar (a plain line off a terminal).
    pub fn println(&self, line: &str) {
        match &self.plain {
            Some(_) => eprintln!("{line}"),
            None => self.bar.println(line),
        }
    }

    /// One step done.
    pub fn inc(&mut self) {
        self.bar.inc(1);
        if let Some(p) = &mut self.plain {
            p.pos += 1;
            if p.last.elapsed() >= PLAIN_EVERY {
                p.last = Instant::now();
                eprintln!("{}", p.line());
            }
        }
    }

    /// Clears the bar, or writes the last plain line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(p) = &self.plain {
            eprintln!("{}", p.line());
        }
    }
}

impl Plain {
    fn line(&self) -> String {
        let mut s = format!("{}: {}/{}", self.what, self.pos, self.len);
        if !self.msg.is_empty() {
            s.push(' ');
            s.push_str(&self.msg);
        }
        let done = self.pos.saturating_sub(self.from.0);
        let secs = self.from.1.elapsed().as_secs_f64();
        if done > 0 && secs > 0.0 {
            let each = secs / done as f64;
            let left = each * self.len.saturating_sub(self.pos) as f64;
            if left > 0.0 {
                s.push_str(&format!(" ({each:.2} s each, {:.0} min left)", (left / 60.0).ceil()));
            } else {
                s.push_str(&format!(" ({each:.2} s each, done)"));
            }
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_the_line_counts_from_a_resumed_position() {
        let mut p = Progress::with_terminal(10, "secure", false);
        p.set_position(4);
        p.set_message("acc 0.500".into());
        let plain = p.plain.as_mut().expect("plain off a terminal");
        assert_eq!(plain.line(), "secure: 4/10 acc 0.500");
        plain.pos = 6;
        plain.from.1 = plain
            .from
            .1
            .checked_sub(Duration::from_secs(4))
            .expect("an instant 4 s back");
        // 2 steps in 4 s since the resume: 2 s each, 4 steps left = 8 s
        assert_eq!(plain.line(), "secure: 6/10 acc 0.500 (2.00 s each, 1 min left)");
        plain.pos = 10;
        assert!(
            plain.line().starts_with("secure: 10/10 acc 0.500 (0.6"),
            "{}",
            plain.line()
        );
        assert!(plain.line().ends_with(" s each, done)"), "{}", plain.line());
    }

    #[test]
    fn on_a_terminal_there_is_no_plain_line() {
        assert!(Progress::with_terminal(3, "x", true).plain.is_none());
    }
}
