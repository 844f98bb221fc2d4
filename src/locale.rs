//! Subscriber languages: the words of digests and subscriber pages, and how dates and
//! numbers are written, per locale.
//!
//! Pure. Each locale is a data file, `locales/<code>.toml` (English and Spanish ship),
//! embedded at build time by `build.rs`: adding a language is adding a file. Templates
//! call `t("section.key", n=3, email=…)`, which reads the page's `lang` variable; Rust
//! code calls [`Locale::text`], [`Locale::fill`] and [`Locale::count`]. A key a locale
//! lacks falls back to English, so a partial translation still renders.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike};
use chrono_tz::Tz;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, State};

mod files {
    include!(concat!(env!("OUT_DIR"), "/locales.rs"));
}

/// The locale of a subscriber who chose none, and of every missing string.
pub const DEFAULT: &str = "en";

/// One language's strings and formats.
#[derive(Debug)]
pub struct Locale {
    /// ISO 639-1 (`es`).
    pub code: String,
    /// Its name in itself (`Español`).
    pub name: String,
    /// `section.key` (and `section.key.one` / `.other` for counts) → text.
    strings: HashMap<String, String>,
    months: Vec<String>,
}

static LOCALES: LazyLock<Vec<Locale>> = LazyLock::new(|| {
    let mut all: Vec<Locale> = files::FILES
        .iter()
        // Each is checked by the tests; one that does not read is left out.
        .filter_map(|(_, text)| Locale::parse(text).ok())
        .collect();
    all.sort_by(|a, b| (a.code != DEFAULT, &a.code).cmp(&(b.code != DEFAULT, &b.code)));
    all
});

/// Every locale, English first.
pub fn all() -> &'static [Locale] {
    &LOCALES
}

/// The locale with this code (`es`, `es-MX`), if there is one.
pub fn find(code: &str) -> Option<&'static Locale> {
    let code = crate::language::primary_subtag(code)?;
    LOCALES.iter().find(|l| l.code == code)
}

/// The locale with this code, else English.
pub fn get(code: &str) -> &'static Locale {
    find(code).unwrap_or_else(english)
}

fn english() -> &'static Locale {
    static EMPTY: LazyLock<Locale> = LazyLock::new(|| Locale {
        code: DEFAULT.into(),
        name: "English".into(),
        strings: HashMap::new(),
        months: Vec::new(),
    });
    LOCALES
        .iter()
        .find(|l| l.code == DEFAULT)
        .unwrap_or_else(|| &EMPTY)
}

/// The locale an `Accept-Language` header asks for: its languages by preference
/// (`q`), the first Tidings has; English when none is.
pub fn negotiate(accept_language: Option<&str>) -> &'static Locale {
    let mut asked: Vec<(f32, usize, &str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .take(20)
        .enumerate()
        .filter_map(|(i, part)| {
            let mut pieces = part.split(';');
            let tag = pieces.next()?.trim();
            // `q` is a weight from 0 to 1, its name in any case (RFC 9110); an entry
            // with another is left out, as one that cannot be read.
            let q = pieces
                .find_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("q").then_some(value)
                })
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))?;
            (q > 0.0 && tag != "*").then_some((q, i, tag))
        })
        .collect();
    asked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    asked
        .iter()
        .find_map(|(_, _, tag)| find(tag))
        .unwrap_or_else(english)
}

impl Locale {
    /// Reads a locale file. Fails naming what is wrong.
    pub fn parse(text: &str) -> Result<Locale, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let field = |key: &str| {
            table
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` is missing"))
        };
        let code = field("code")?;
        if crate::language::primary_subtag(&code).as_deref() != Some(code.as_str()) {
            return Err(format!(
                "`code` {code:?} is not an ISO 639-1 code such as \"es\""
            ));
        }
        let name = field("name")?;
        let mut strings = HashMap::new();
        let mut months = Vec::new();
        for (section, value) in &table {
            let Some(keys) = value.as_table() else {
                continue;
            };
            for (key, value) in keys {
                let name = format!("{section}.{key}");
                match value {
                    toml::Value::String(s) => {
                        strings.insert(name, s.clone());
                    }
                    toml::Value::Table(forms) => {
                        for (form, s) in forms {
                            let s = s
                                .as_str()
                                .ok_or_else(|| format!("`{name}.{form}` must be text"))?;
                            strings.insert(format!("{name}.{form}"), s.to_string());
                        }
                    }
                    toml::Value::Array(list) if name == "format.months" => {
                        months = list
                            .iter()
                            .map(|m| m.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                            .filter(|m| m.len() == 12)
                            .ok_or("`format.months` must be 12 names")?;
                    }
                    _ => return Err(format!("`{name}` must be text or a table of counts")),
                }
            }
        }
        Ok(Locale {
            code,
            name,
            strings,
            months,
        })
    }

    /// The keys this locale has, for checking translations.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.strings.keys().map(String::as_str)
    }

    fn own(&self, key: &str) -> Option<&str> {
        self.strings.get(key).map(String::as_str)
    }

    /// The text of `key`; a count's `other` form; English's when this locale lacks it;
    /// the key itself when English does too.
    pub fn text<'a>(&'a self, key: &'a str) -> &'a str {
        let english = english();
        let other = format!("{key}.other");
        self.own(key)
            .or_else(|| self.own(&other))
            .or_else(|| english.own(key))
            .or_else(|| english.own(&other))
            .unwrap_or(key)
    }

    /// [`Locale::text`] with each `{name}` of `args` replaced.
    pub fn fill(&self, key: &str, args: &[(&str, &dyn Display)]) -> String {
        substitute(self.text(key), args)
    }

    /// The form of `key` for `n` (`one` for 1, else `other`), with `{n}` written as a
    /// number of this locale and the other `args` replaced.
    pub fn count(&self, key: &str, n: u64, args: &[(&str, &dyn Display)]) -> String {
        let form = if n == 1 { "one" } else { "other" };
        let specific = format!("{key}.{form}");
        let english = english();
        let template = self
            .own(&specific)
            .or_else(|| self.own(key))
            .or_else(|| english.own(&specific))
            .or_else(|| english.own(key))
            .unwrap_or(key);
        let number = self.number(n);
        let mut all: Vec<(&str, &dyn Display)> = vec![("n", &number)];
        all.extend_from_slice(args);
        substitute(template, &all)
    }

    /// `n` with this locale's separator between groups of three digits.
    pub fn number(&self, n: u64) -> String {
        let digits = n.to_string();
        let separator = self.text("format.thousands");
        let mut out = String::with_capacity(digits.len() + digits.len() / 3 * separator.len());
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push_str(separator);
            }
            out.push(d);
        }
        out
    }

    /// `at` as this locale writes a date with its time (`format.date`), or without the
    /// year (`format.short_date`).
    pub fn date(&self, at: &DateTime<Tz>, short: bool) -> String {
        let month = at.month0() as usize;
        let english = english();
        let month = self
            .months
            .get(month)
            .or_else(|| english.months.get(month))
            .map_or_else(|| at.format("%b").to_string(), Clone::clone);
        let key = if short {
            "format.short_date"
        } else {
            "format.date"
        };
        self.fill(
            key,
            &[
                ("day", &at.day()),
                ("month", &month),
                ("year", &at.year()),
                ("time", &at.format("%H:%M")),
                ("zone", &at.format("%Z")),
            ],
        )
    }
}

/// `template` with each `{name}` of `args` replaced, in one pass: a value is never
/// read for placeholders itself (an address like `{schedule}@example.org` stays as it
/// is). Other braces stay.
fn substitute(template: &str, args: &[(&str, &dyn Display)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            let (_, value) = args.iter().find(|(n, _)| *n == name)?;
            Some((value, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(&value.to_string());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Adds `t(key, …)` to templates: the text of `key` in the locale named by the
/// template's `lang` variable, with keyword arguments filled in (`n` picks a count's
/// form and is written as a number of the locale).
pub fn install(env: &mut Environment<'_>) {
    env.add_function(
        "t",
        |state: &State, key: &str, kwargs: Kwargs| -> Result<String, minijinja::Error> {
            let lang = state.lookup("lang");
            let locale = get(lang.as_ref().and_then(Value::as_str).unwrap_or(DEFAULT));
            let mut args: Vec<(String, String)> = Vec::new();
            let mut n = None;
            for name in kwargs.args() {
                let value: Value = kwargs.get(name)?;
                if name == "n" {
                    n = u64::try_from(value.clone()).ok();
                }
                let text = match u64::try_from(value.clone()) {
                    Ok(number) if value.is_number() => locale.number(number),
                    _ => value.to_string(),
                };
                args.push((name.to_string(), text));
            }
            kwargs.assert_all_used()?;
            let refs: Vec<(&str, &dyn Display)> = args
                .iter()
                .filter(|(name, _)| name != "n")
                .map(|(name, text)| (name.as_str(), text as &dyn Display))
                .collect();
            Ok(match n {
                Some(n) => locale.count(key, n, &refs),
                None => locale.fill(key, &refs),
            })
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{name}` placeholders of a text.
    fn placeholders(text: &str) -> Vec<&str> {
        let mut found: Vec<&str> = text
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    #[test]
    fn every_shipped_locale_reads_and_has_every_english_string_with_its_placeholders() {
        assert_eq!(
            files::FILES.len(),
            all().len(),
            "a locale file does not read"
        );
        for (file, text) in files::FILES {
            let locale = Locale::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(*file, format!("{}.toml", locale.code));
            assert_eq!(locale.months.len(), 12, "{file}");
        }
        let english = get("en");
        assert_eq!(english.code, "en");
        let spanish = find("es").expect("Spanish ships");
        for key in english.keys() {
            let theirs = spanish
                .own(key)
                .or_else(|| {
                    // A count in one language may be a plain text in the other.
                    let base = key.rsplit_once('.').map(|(b, _)| b)?;
                    spanish
                        .own(base)
                        .or_else(|| spanish.own(&format!("{base}.other")))
                })
                .or_else(|| spanish.own(&format!("{key}.other")))
                .unwrap_or_else(|| panic!("es lacks {key}"));
            let ours = english.own(key).unwrap_or_default();
            // A translation may leave a placeholder out ("one" search needs no number),
            // never add one English does not fill.
            let ours = placeholders(ours);
            for p in placeholders(theirs) {
                assert!(
                    ours.contains(&p),
                    "{key}: {{{p}}} is not English's ({ours:?})"
                );
            }
        }
    }

    #[test]
    fn counts_numbers_and_dates_as_each_locale_writes_them() {
        let (en, es) = (get("en"), get("es"));
        assert_eq!(
            en.count("digest.intro_new", 1, &[]),
            "1 new item for your Tidings alerts."
        );
        assert_eq!(
            es.count("digest.intro_new", 3, &[]),
            "3 noticias nuevas para sus alertas de Tidings."
        );
        assert_eq!(en.number(12_500), "12,500");
        assert_eq!(es.number(12_500), "12\u{a0}500");
        assert_eq!(es.number(999), "999");
        assert_eq!(en.number(1_234_567), "1,234,567");
        let at = "2026-12-01T15:04:00Z"
            .parse::<DateTime<chrono::Utc>>()
            .unwrap()
            .with_timezone(&chrono_tz::America::New_York);
        assert_eq!(en.date(&at, false), "Dec 1, 2026 10:04 EST");
        assert_eq!(es.date(&at, false), "1 dic 2026, 10:04 EST");
        assert_eq!(es.date(&at, true), "1 dic, 10:04 EST");
        // Missing keys fall back to English, then to the key.
        assert_eq!(es.text("no.such"), "no.such");
        assert_eq!(
            es.fill(
                "subscribe.not_added",
                &[("search", &"visa"), ("unused", &1)]
            ),
            "No se añadió: visa"
        );
        assert_eq!(
            es.count("unsubscribe.deleted", 1, &[]),
            "Se borrará su búsqueda guardada."
        );
    }

    #[test]
    fn accept_language_picks_the_preferred_locale_there_is() {
        for (header, want) in [
            (Some("es-MX,es;q=0.9,en;q=0.8"), "es"),
            (Some("fr-CA, es;q=0.5, en;q=0.4"), "es"),
            (Some("en-US,en;q=0.9,es;q=0.8"), "en"),
            (Some("es;q=0.2, en;q=0.9"), "en"),
            (Some("es;q=0, en"), "en"),
            (Some("de, *"), "en"),
            (Some("ES"), "es"),
            (Some("garbage;;q=x,es"), "es"),
            (None, "en"),
            (Some(""), "en"),
        ] {
            assert_eq!(negotiate(header).code, want, "{header:?}");
        }
    }

    #[test]
    fn templates_translate_with_arguments() {
        let mut env = Environment::new();
        install(&mut env);
        let render = |lang: &str, source: &str| {
            env.render_str(source, minijinja::context! { lang, feeds => 12_500 })
                .unwrap()
        };
        assert_eq!(render("es", "{{ t('manage.title') }}"), "Sus resúmenes");
        assert_eq!(render("xx", "{{ t('manage.title') }}"), "Your digests");
        assert!(
            render("es", "{{ t('subscribe.intro', n=feeds) }}")
                .starts_with("Tidings lee 12\u{a0}500 fuentes de noticias")
        );
        assert_eq!(
            render("en", "{{ t('subscribe.preview_count', n=1) }}"),
            "1 story"
        );
    }

    #[test]
    fn a_broken_locale_file_is_refused_with_the_reason() {
        for (text, want) in [
            ("name = \"X\"\n", "`code` is missing"),
            ("code = \"xx-1\"\nname = \"X\"\n", "not an ISO 639-1"),
            (
                "code = \"xx\"\nname = \"X\"\n[a]\nb = 3\n",
                "`a.b` must be text",
            ),
            (
                "code = \"xx\"\nname = \"X\"\n[format]\nmonths = [\"a\"]\n",
                "12 names",
            ),
            ("code = \"xx\"\n[", "TOML parse error"),
        ] {
            let err = Locale::parse(text).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
    }
}
