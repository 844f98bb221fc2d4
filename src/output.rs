//! What the commands print: text made safe for a terminal ([`printable`]), written so
//! that a reader that goes away ends the command quietly ([`say`], [`esay`]), and
//! counted nouns ([`count`]).
//!
//! A closed reader (`tidings subscriber list | head -1`) is not an error: `say` ends
//! the process with exit code 0, as ripgrep does, instead of panicking like
//! `println!`. Standard error is for diagnostics and logs: a line it cannot take is
//! dropped and the command goes on, so its work and its exit code stay what they were.

use std::io::{self, Write};

/// Writes `text` and a line break to standard output, made [`printable`]. When the
/// reader has gone away the process ends here, quietly, with exit code 0; another
/// write error ends it with exit code 2, said on standard error.
pub fn say(text: &str) {
    say_raw(&format!("{}\n", printable(text)));
}

/// Writes `text` as it is (a document: OPML, the health answer) to standard output,
/// ending the process as [`say`] does when it cannot.
pub fn say_raw(text: &str) {
    if let Err(e) = write_all(io::stdout().lock(), text) {
        exit_unwritable(&e);
    }
}

/// Writes `text` and a line break to standard error, made [`printable`]. A line that
/// cannot be written (the reader went away) is dropped.
pub fn esay(text: &str) {
    let _ = write_all(io::stderr().lock(), &format!("{}\n", printable(text)));
}

fn write_all(mut out: impl Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// How a command ends when its standard output is closed or broken: quietly with
/// exit code 0 when the reader went away, with exit code 2 and the error otherwise.
pub fn exit_unwritable(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    esay(&format!("error: writing to standard output: {e}"));
    std::process::exit(2);
}

/// `text` safe to print on a terminal: control characters other than line breaks and
/// tabs (escape sequences from a feed, a mail server's answer or a subscriber's search)
/// and bidirectional controls (which reorder what is shown: "news \u{202e}fdp.exe")
/// are shown as `\u{1b}` rather than obeyed.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let harmful =
        |c: char| (c.is_control() && c != '\n' && c != '\t') || crate::parse::is_bidi_control(c);
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

/// `n` and `noun`, singular or plural: "1 feed", "0 feeds", "2 matches", "3 queries".
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {}", plural(n, noun))
}

/// `noun` as it goes with `n`, by the English rules for the nouns Tidings counts: `-es`
/// after s, x, z, ch and sh; `-ies` for a consonant and y; `-s` otherwise.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        return noun.to_string();
    }
    let ends = |suffix: &str| noun.ends_with(suffix);
    if ["s", "x", "z", "ch", "sh"].into_iter().any(ends) {
        format!("{noun}es")
    } else if let Some(stem) = noun.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{noun}s")
    }
}

/// `d` in words, largest units first, each counted: "7 days", "1 day 12 hours",
/// "30 minutes", "0 seconds".
pub fn duration_in_words(d: std::time::Duration) -> String {
    let mut left = d.as_secs();
    let mut words = Vec::new();
    for (unit, secs) in [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ] {
        let n = left / secs;
        left %= secs;
        if n > 0 {
            words.push(count(n as usize, unit));
        }
    }
    if words.is_empty() {
        count(0, "second")
    } else {
        words.join(" ")
    }
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
        assert_eq!(
            printable("news \u{202e}fdp.exe \u{2066}x\u{2069} \u{200f}"),
            "news \\u{202e}fdp.exe \\u{2066}x\\u{2069} \\u{200f}"
        );
    }

    #[test]
    fn counted_nouns_agree_with_their_number() {
        for (name, n, noun, expected) in [
            ("one", 1, "feed", "1 feed"),
            ("none", 0, "feed", "0 feeds"),
            ("many", 2, "subscriber", "2 subscribers"),
            ("after ch", 3, "match", "3 matches"),
            ("one after ch", 1, "match", "1 match"),
            ("consonant and y", 2, "query", "2 queries"),
            ("vowel and y", 2, "day", "2 days"),
            ("after s", 2, "bus", "2 buses"),
            ("two words", 4, "new item", "4 new items"),
        ] {
            assert_eq!(count(n, noun), expected, "{name}");
        }
    }

    #[test]
    fn durations_read_as_words() {
        use std::time::Duration;
        for (name, secs, expected) in [
            ("a week", 7 * 86_400, "7 days"),
            ("a day and a half", 36 * 3_600, "1 day 12 hours"),
            ("minutes", 30 * 60, "30 minutes"),
            (
                "one of each",
                86_400 + 3_600 + 60 + 1,
                "1 day 1 hour 1 minute 1 second",
            ),
            ("nothing", 0, "0 seconds"),
        ] {
            assert_eq!(
                duration_in_words(Duration::from_secs(secs)),
                expected,
                "{name}"
            );
        }
    }
}
