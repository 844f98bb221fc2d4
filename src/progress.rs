//! Progress of long interactive commands (`tidings poll`, `tidings feeds import`): a bar
//! on a terminal (indicatif), one plain line per step when stderr is not a terminal (a
//! pipe, a log file, a service manager), so logs stay readable. Log lines written while
//! a bar is shown go above it ([`LogWriter`]), so neither garbles the other.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::{esay, printable};

/// The bar on this process's terminal, if one is shown: log lines are printed above it.
/// A process has one terminal, so this is the one piece of state shared without being
/// passed: the logger is set up before any command runs.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    SHOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reports steps of a command with a known number of steps, on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar for `len` steps when stderr is a terminal; plain lines otherwise.
    pub fn new(len: u64, what: &str) -> Progress {
        Progress::with_terminal(len, what, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], choosing the form explicitly.
    pub fn with_terminal(len: u64, what: &str, terminal: bool) -> Progress {
        let target = terminal.then(ProgressDrawTarget::stderr);
        Progress::drawn_on(len, what, target)
    }

    /// A bar drawn on `target`, or plain lines if there is none.
    fn drawn_on(len: u64, what: &str, target: Option<ProgressDrawTarget>) -> Progress {
        let bar = target.map(|target| {
            let bar = ProgressBar::with_draw_target(Some(len), target);
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(what.to_string());
            *shown() = Some(bar.clone());
            bar
        });
        Progress { bar }
    }

    /// One step done; `line` says what happened (shown beside the bar, or printed).
    pub fn step(&self, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(printable(line).into_owned());
                bar.inc(1);
            }
            None => esay(line),
        }
    }

    /// One step that went wrong: `line` stays visible in full (printed above the bar,
    /// where a message beside it would be cut to the terminal's width), or is printed.
    pub fn step_failed(&self, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(printable(line));
                bar.inc(1);
            }
            None => esay(line),
        }
    }

    /// A line that must stay visible (a warning, say), printed above the bar.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(printable(line)),
            None => esay(line),
        }
    }

    /// Removes the bar; plain output needs nothing.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            // One bar at a time: the commands show no two at once.
            *shown() = None;
        }
    }
}

impl Drop for Progress {
    /// A command that fails half-way leaves no bar behind its error.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer for log lines (`tracing_subscriber::fmt().with_writer(LogWriter)`):
/// standard error, with the progress bar, if one is shown, cleared while a line is
/// written and drawn again below it. A line standard error cannot take (its reader went
/// away) is dropped: logging never ends or fails a command.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine
    }
}

/// One log line on its way to standard error; see [`LogWriter`].
#[derive(Debug)]
pub struct LogLine;

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = shown().clone();
        write_above(bar.as_ref(), io::stderr().lock(), buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `buf` to `out` with `bar` (if any) cleared meanwhile; errors are dropped.
fn write_above(bar: Option<&ProgressBar>, mut out: impl Write, buf: &[u8]) {
    let mut write = || {
        let _ = out.write_all(buf).and_then(|()| out.flush());
    };
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A terminal that records what is done to it, in one journal with the log lines.
    #[derive(Debug, Clone)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn record(&self, what: String) -> io::Result<()> {
            self.0.lock().unwrap().push(what);
            Ok(())
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            self.record(format!("up {n}"))
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.record(format!("down {n}"))
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.record(format!("draw {s}"))
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.record(format!("draw {s}"))
        }
        fn clear_line(&self) -> io::Result<()> {
            self.record("clear".into())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.record(format!("log {}", String::from_utf8_lossy(buf).trim_end()))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_goes_above_the_bar_not_through_it() {
        let screen = Screen(Arc::default());
        let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let progress = Progress::drawn_on(3, "polling", Some(target));
        progress.step("uscis: ok");
        let bar = progress.bar.clone().unwrap();
        bar.tick();
        let drawn = screen.0.lock().unwrap().len();
        assert!(
            screen
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("polling")),
            "the bar is drawn: {:?}",
            screen.0.lock().unwrap()
        );

        write_above(Some(&bar), screen.clone(), b"WARN feed moved permanently\n");
        let journal = screen.0.lock().unwrap()[drawn..].to_vec();
        let log = journal
            .iter()
            .position(|l| l == "log WARN feed moved permanently")
            .unwrap_or_else(|| panic!("{journal:?}"));
        assert!(
            journal[..log].iter().any(|l| l == "clear"),
            "the bar is cleared before the line: {journal:?}"
        );
        assert!(
            journal[log..].iter().any(|l| l.contains("polling")),
            "and drawn again after it: {journal:?}"
        );
        drop(progress);
        assert!(shown().is_none(), "a finished bar takes no more log lines");
    }
}
