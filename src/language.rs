//! Languages: what language an item is written in.
//!
//! Pure, like `matcher`. An item's language is detected from its title and the start of
//! its text (the `whatlang` trigram detector, limited to the languages the config
//! expects, which is what makes short texts reliable), with the language its feed
//! declares (RSS `<language>`, Atom `xml:lang`) as the fallback:
//!
//! * a declared language the detector cannot tell (Haitian Creole, or one the config
//!   does not list) is taken as declared: the publisher knows and the detector cannot;
//! * otherwise a reliable detection wins, also over the declaration (many CMSs declare
//!   `en` for everything);
//! * otherwise the declared language, if any; otherwise the detector's best guess when
//!   it is reasonably confident, else unknown (`None`): `lang:` never matches it.
//!
//! Languages are named by their primary subtag, lowercased (`es` for `es-MX`).

use whatlang::Lang;

/// The languages Tidings can detect: code, the detector's language, name in the
/// language itself. Others can still be declared by a feed.
const DETECTABLE: &[(&str, Lang, &str)] = &[
    ("en", Lang::Eng, "English"),
    ("es", Lang::Spa, "Español"),
    ("fr", Lang::Fra, "Français"),
    ("pt", Lang::Por, "Português"),
    ("de", Lang::Deu, "Deutsch"),
    ("it", Lang::Ita, "Italiano"),
    ("nl", Lang::Nld, "Nederlands"),
    ("pl", Lang::Pol, "Polski"),
    ("ro", Lang::Ron, "Română"),
    ("ru", Lang::Rus, "Русский"),
    ("uk", Lang::Ukr, "Українська"),
    ("tr", Lang::Tur, "Türkçe"),
    ("ar", Lang::Ara, "العربية"),
    ("fa", Lang::Pes, "فارسی"),
    ("ur", Lang::Urd, "اردو"),
    ("hi", Lang::Hin, "हिन्दी"),
    ("bn", Lang::Ben, "বাংলা"),
    ("zh", Lang::Cmn, "中文"),
    ("ja", Lang::Jpn, "日本語"),
    ("ko", Lang::Kor, "한국어"),
    ("vi", Lang::Vie, "Tiếng Việt"),
    ("tl", Lang::Tgl, "Tagalog"),
    ("am", Lang::Amh, "አማርኛ"),
];

/// Languages often declared by immigration news feeds that no detector tells apart.
const DECLARED_ONLY: &[(&str, &str)] = &[
    ("ht", "Kreyòl ayisyen"),
    ("so", "Soomaali"),
    ("ti", "ትግርኛ"),
    ("ps", "پښتو"),
    ("ne", "नेपाली"),
];

/// What the config expects when it says nothing: the languages of US immigration news.
pub const DEFAULT_LANGUAGES: &[&str] = &["en", "es", "fr", "pt"];

/// The bytes of text (after the title) the detector reads: enough for a reliable
/// answer, little enough to cost microseconds.
const SAMPLE_BYTES: usize = 200;

/// Below this confidence an unreliable guess is no answer. Chosen on the labelled set
/// (`examples/language_eval.rs`): with a title and text, 0.2 tells 96.3% right, 0.5%
/// wrong and 3.1% unknown; 0 is 97.9% right but 2.1% wrong; 0.5 is 94.0% and 0%.
const MIN_GUESS_CONFIDENCE: f64 = 0.2;

/// How languages are named everywhere (the matcher's `lang:` owns the rule: it is
/// compiled on its own for fuzzing).
pub use crate::matcher::primary_subtag;

/// The language's name in itself ("Español"), or its code when Tidings has no name
/// for it.
pub fn native_name(code: &str) -> &str {
    DETECTABLE
        .iter()
        .map(|&(c, _, name)| (c, name))
        .chain(DECLARED_ONLY.iter().copied())
        .find(|&(c, _)| c == code)
        .map_or(code, |(_, name)| name)
}

/// Detects items' languages among the expected ones.
#[derive(Debug, Clone)]
pub struct Detector {
    whatlang: whatlang::Detector,
    /// The codes the detector can answer with.
    expected: Vec<&'static str>,
    /// Below this confidence an unreliable guess is no answer.
    min_guess: f64,
}

impl Default for Detector {
    fn default() -> Detector {
        // A constant, checked by the tests.
        Detector::new(DEFAULT_LANGUAGES).expect("the default languages are detectable")
    }
}

impl Detector {
    /// A detector answering with one of `codes` (ISO 639-1). Fails on a code it
    /// cannot detect, naming the ones it can.
    pub fn new(codes: &[impl AsRef<str>]) -> Result<Detector, String> {
        let mut langs = Vec::new();
        let mut expected = Vec::new();
        for code in codes.iter().map(AsRef::as_ref) {
            let Some(&(known, lang, _)) = DETECTABLE
                .iter()
                .find(|(c, _, _)| Some(*c) == primary_subtag(code).as_deref())
            else {
                let all: Vec<&str> = DETECTABLE.iter().map(|(c, _, _)| *c).collect();
                return Err(format!(
                    "cannot detect language {code:?}; detectable are {} (a feed may still \
                     declare any other)",
                    all.join(", ")
                ));
            };
            if !expected.contains(&known) {
                expected.push(known);
                langs.push(lang);
            }
        }
        if langs.is_empty() {
            return Err("list at least one language to detect".into());
        }
        Ok(Detector {
            whatlang: whatlang::Detector::with_allowlist(langs),
            expected,
            min_guess: MIN_GUESS_CONFIDENCE,
        })
    }

    /// This detector, taking an unreliable guess as the answer from `confidence` (0 to
    /// 1) up; for measuring (`examples/language_eval.rs`).
    pub fn with_min_confidence(mut self, confidence: f64) -> Detector {
        self.min_guess = confidence;
        self
    }

    /// The language of a parsed item: its title and the start of its summary (or
    /// content), with the language its feed declares.
    pub fn detect_item(&self, item: &crate::parse::Item) -> Option<String> {
        let text = if item.summary.is_empty() {
            &item.content
        } else {
            &item.summary
        };
        self.detect(&item.title, text, item.declared_lang.as_deref())
    }

    /// The language of an item with `title` and `text` (plain text) whose feed
    /// declares `declared` (any language tag), by the rules of the module docs.
    pub fn detect(&self, title: &str, text: &str, declared: Option<&str>) -> Option<String> {
        let declared = declared.and_then(primary_subtag);
        if let Some(code) = &declared
            && !self.expected.contains(&code.as_str())
        {
            return declared;
        }
        // A bounded start of each: a hostile 10 MB title costs what a normal one does.
        let head = |s: &'_ str| -> usize {
            let mut end = s.len().min(SAMPLE_BYTES);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            end
        };
        let mut sample = String::with_capacity(2 * SAMPLE_BYTES + 2);
        sample.push_str(&title[..head(title)]);
        sample.push_str(".\n");
        sample.push_str(&text[..head(text)]);
        let info = self.whatlang.detect(&sample);
        let code = |info: &whatlang::Info| {
            DETECTABLE
                .iter()
                .find(|(_, lang, _)| *lang == info.lang())
                .map(|(c, _, _)| c.to_string())
        };
        match info {
            Some(info) if info.is_reliable() => code(&info),
            _ if declared.is_some() => declared,
            Some(info) if info.confidence() >= self.min_guess => code(&info),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Detector {
        Detector::default()
    }

    #[test]
    fn subtags() {
        for (tag, want) in [
            ("es", Some("es")),
            ("es-MX", Some("es")),
            ("EN_us", Some("en")),
            (" pt-BR ", Some("pt")),
            ("fil", Some("fil")),
            ("", None),
            ("e", None),
            ("english", None),
            ("e1", None),
            ("-es", None),
        ] {
            assert_eq!(primary_subtag(tag).as_deref(), want, "{tag:?}");
        }
    }

    #[test]
    fn spanish_with_accents_and_inverted_marks_is_spanish() {
        let cases = [
            (
                "¿Qué cambia con la nueva regla de asilo?",
                "El gobierno publicó el jueves una norma que limita las solicitudes de asilo \
                 en la frontera sur. Los abogados señalan que la regla será impugnada.",
            ),
            (
                "¡Atención! Nueva fecha para el TPS de Honduras",
                "Los beneficiarios deben volver a inscribirse antes del 15 de diciembre.",
            ),
            ("Niños y adolescentes: cómo pedir la visa juvenil", ""),
        ];
        for (title, text) in cases {
            assert_eq!(
                default().detect(title, text, None).as_deref(),
                Some("es"),
                "{title}"
            );
        }
    }

    #[test]
    fn a_reliable_detection_beats_a_wrong_declaration() {
        let title = "USCIS extends the validity of work permits for TPS holders";
        let text = "The agency said that employers may accept the expired documents \
                    together with the notice published in the Federal Register.";
        assert_eq!(
            default().detect(title, text, Some("es")).as_deref(),
            Some("en")
        );
    }

    #[test]
    fn a_declared_language_the_detector_cannot_tell_is_kept() {
        let title = "Nouvo dat pou TPS Ayiti";
        let text = "Moun ki gen TPS dwe re-enskri anvan dat limit la.";
        assert_eq!(
            default().detect(title, text, Some("ht")).as_deref(),
            Some("ht")
        );
        // Not in the expected list: declared wins too.
        assert_eq!(
            default()
                .detect("Neue Regeln", "", Some("de-AT"))
                .as_deref(),
            Some("de")
        );
    }

    #[test]
    fn an_unclear_text_falls_back_to_the_declared_language_or_to_unknown() {
        assert_eq!(
            default().detect("H-1B", "", Some("es")).as_deref(),
            Some("es")
        );
        assert_eq!(default().detect("H-1B I-765", "", None), None);
        assert_eq!(default().detect("", "", None), None);
    }

    #[test]
    fn only_expected_languages_are_answered() {
        let portuguese = "A decisão não muda a situação dos imigrantes que já estão no \
                          país, disse o advogado. As famílias também poderão pedir a \
                          renovação das autorizações de trabalho.";
        assert_eq!(
            default().detect("", portuguese, None).as_deref(),
            Some("pt")
        );
        let without = Detector::new(&["en", "es"]).expect("en, es");
        assert_ne!(without.detect("", portuguese, None).as_deref(), Some("pt"));
        let err = Detector::new(&["xx"]).expect_err("unknown");
        assert!(err.contains("detectable are en, es"), "{err}");
        assert!(Detector::new(&[] as &[&str]).is_err());
        assert_eq!(
            Detector::new(&["es-MX", "es"]).expect("es").expected,
            ["es"]
        );
    }

    #[test]
    fn a_long_text_is_sampled_on_a_char_boundary() {
        let text = "ñ".repeat(1000);
        // 600 bytes falls inside no character: the two-byte ñ splits evenly; try odd.
        let odd = format!("a{text}");
        assert!(
            default()
                .detect("Título", &odd, None)
                .is_none_or(|c| c.len() == 2)
        );
    }

    #[test]
    fn names() {
        assert_eq!(native_name("es"), "Español");
        assert_eq!(native_name("ht"), "Kreyòl ayisyen");
        assert_eq!(native_name("xx"), "xx");
    }
}
