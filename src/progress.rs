//! Progress of long interactive commands (`tidings poll`, `tidings feeds import`): a bar
//! on a terminal (indicatif), one plain line per step when stderr is not a terminal (a
//! pipe, a log file, a service manager), so logs stay readable.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(what.to_string());
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
            None => eprintln!("{}", printable(line)),
        }
    }

    /// A line that must stay visible (a warning, say), printed above the bar.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(printable(line)),
            None => eprintln!("{}", printable(line)),
        }
    }

    /// Removes the bar; plain output needs nothing.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `text` safe to print on a terminal: control characters other than line breaks and
/// tabs (escape sequences from a feed, a mail server's answer or a subscriber's search)
/// are shown as `\u{1b}` rather than obeyed.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let harmful = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(harmful) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if harmful(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(printable("plain\tline\nnext"), "plain\tline\nnext");
        assert_eq!(
            printable("550 \u{1b}]0;owned\u{7}\r"),
            "550 \\u{1b}]0;owned\\u{7}\\u{d}"
        );
    }
}
