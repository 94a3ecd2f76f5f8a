//! Counting what a command moved (records, batches or pages, bytes) and saying it: a live line on stderr
//! while it runs (only when stderr is a terminal, redrawn with `\r` at most every `REDRAW_INTERVAL`), and a
//! summary line with rates at the end. Sizes are in MB (10^6 bytes), as throughput is usually quoted.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the live line is redrawn: often enough to look alive, rarely enough to cost nothing.
const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    /// Batches sent or pages read.
    pub units: u64,
    pub bytes: u64,
}

/// Totals plus the clock and the live line.
#[derive(Debug)]
pub struct Progress {
    /// "batches" or "pages".
    unit: &'static str,
    started: Instant,
    pub totals: Totals,
    live: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// Starts the clock. `live`: draw the line on stderr (only if stderr is a terminal).
    pub fn new(unit: &'static str, live: bool) -> Progress {
        Progress {
            unit,
            started: Instant::now(),
            totals: Totals::default(),
            live: live && std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// Adds one batch or page.
    pub fn add(&mut self, records: u64, bytes: u64) {
        self.totals.records += records;
        self.totals.units += 1;
        self.totals.bytes += bytes;
        self.draw(false);
    }

    /// Replaces the totals (counted elsewhere, e.g. by connection threads).
    pub fn set(&mut self, totals: Totals) {
        self.totals = totals;
        self.draw(false);
    }

    /// Starts again from zero (a recovery restarted from the beginning).
    pub fn reset(&mut self) {
        self.started = Instant::now();
        self.totals = Totals::default();
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn draw(&mut self, force: bool) {
        if !self.live {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .drawn
                .is_some_and(|t| now.duration_since(t) < REDRAW_INTERVAL)
        {
            return;
        }
        self.drawn = Some(now);
        let mut err = std::io::stderr().lock();
        // `\x1b[K` clears what a longer earlier line left.
        let _ = write!(err, "\r{}\x1b[K", self.line());
        let _ = err.flush();
    }

    /// Removes the live line, so the summary or an error starts on a clean line.
    pub fn clear(&mut self) {
        if self.live && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = None;
        }
    }

    /// "12000 records, 120 pages, 12.3 MB in 1.02 s: 11765 records/s, 12.1 MB/s".
    pub fn line(&self) -> String {
        summary(self.totals, self.unit, self.elapsed())
    }
}

/// The summary line of `totals` moved in `elapsed`.
pub fn summary(totals: Totals, unit: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let mb = totals.bytes as f64 / 1e6;
    format!(
        "{} records, {} {unit}, {mb:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s",
        totals.records,
        totals.units,
        elapsed.as_secs_f64(),
        totals.records as f64 / secs,
        mb / secs,
    )
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the summary states counts, size and both rates.
    #[test]
    fn summary_line() {
        let totals = Totals {
            records: 1000,
            units: 10,
            bytes: 2_000_000,
        };
        assert_eq!(
            summary(totals, "batches", Duration::from_secs(2)),
            "1000 records, 10 batches, 2.0 MB in 2.00 s: 500 records/s, 1.0 MB/s"
        );
    }
}
