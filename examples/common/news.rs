//! Generated immigration news and subscriptions, with a fixed seed so that runs are
//! comparable: the matcher bench (`benches/matcher.rs`) and the ingest bench
//! (`examples/ingest_bench.rs`) share them.

use tidings::matcher::Document;

/// Subjects people follow: programs, forms, visas, topics.
#[rustfmt::skip]
pub const TOPICS: &[&str] = &[
    "asylum", "refugee", "refugees", "parole", "TPS", "DACA", "naturalization",
    "citizenship", "deportation", "deportations", "detention", "\"green card\"",
    "H-1B", "H1B", "H-2A", "H-2B", "L-1", "O-1", "F-1", "J-1", "E-2", "EB-1", "EB-2", "EB-3",
    "EB-5", "K-1", "TN", "\"U visa\"", "\"T visa\"", "OPT", "\"STEM OPT\"", "EAD",
    "\"work permit\"", "I-485", "I-130", "I-140", "I-765", "I-131", "I-539", "I-129", "I-751",
    "I-90", "N-400", "I-589", "I-821D", "I-864", "I-601A", "DS-160", "\"visa bulletin\"",
    "\"priority date\"", "\"public charge\"", "\"premium processing\"", "\"processing times\"",
    "backlog", "lottery", "\"diversity visa\"", "\"travel ban\"", "\"credible fear\"",
    "\"expedited removal\"", "\"removal proceedings\"", "\"unaccompanied children\"",
    "\"family separation\"", "\"humanitarian parole\"", "\"temporary protected status\"",
    "\"border wall\"", "\"remain in mexico\"", "\"title 42\"", "\"title 8\"", "biometrics",
    "\"filing fee\"", "fees", "RFE", "\"oath ceremony\"", "\"civics test\"", "sponsorship",
    "\"prevailing wage\"", "PERM", "\"labor certification\"", "layoffs", "\"cap gap\"",
    "\"dual intent\"", "waiver", "\"consular processing\"", "\"visa interview\"",
    "\"visa appointment\"", "passport", "\"student visa\"", "\"tourist visa\"",
    "\"investor visa\"", "\"family reunification\"", "\"chain migration\"", "quota",
    "\"border crossings\"", "apprehensions", "encounters", "\"bond hearing\"", "detainer",
    "\"sanctuary city\"", "\"287(g)\"", "E-Verify", "\"birthright citizenship\"", "SIJS",
    "VAWA", "\"asylum clock\"", "\"work authorization\"", "deport*", "naturaliz*", "I-48*",
    "EB*", "refuge*", "detain*", "H-1B*",
];

/// Places, agencies and people's origins that narrow a subject.
#[rustfmt::skip]
pub const QUALIFIERS: &[&str] = &[
    "USCIS", "ICE", "CBP", "EOIR", "DHS", "\"State Department\"", "DOL", "BIA",
    "\"Supreme Court\"", "\"Fifth Circuit\"", "\"Ninth Circuit\"", "\"Federal Register\"",
    "Venezuela", "Venezuelan", "Venezuelans", "Haiti", "Haitian", "Haitians", "Ukraine",
    "Ukrainian", "Ukrainians", "Afghanistan", "Afghan", "Afghans", "Cuba", "Cuban", "Cubans",
    "Nicaragua", "Honduras", "\"El Salvador\"", "Guatemala", "Mexico", "Mexican", "India",
    "Indian", "China", "Chinese", "Philippines", "Nigeria", "Sudan", "Somalia", "Syria",
    "Yemen", "Ethiopia", "Burma", "Nepal", "Lebanon", "Russia", "Iran", "Colombia",
    "Ecuador", "Peru", "Brazil", "Cameroon", "Mauritania", "Senegal", "Eritrea", "Texas",
    "Florida", "California", "Arizona", "\"New York\"", "Illinois", "\"New Jersey\"",
    "Massachusetts", "Georgia", "Colorado", "Chicago", "Houston", "\"San Diego\"",
    "\"El Paso\"", "Miami", "Boston", "Denver", "Canada", "\"United Kingdom\"", "UK",
    "Germany", "Ireland", "Australia", "nurses", "doctors", "students", "farmworkers",
    "employers", "children", "families", "veterans", "spouses", "investors", "lawsuit",
    "injunction", "judge", "court", "rule", "policy", "memo", "guidance", "extension",
    "redesignation", "termination", "deadline", "delay", "delays", "surge", "record",
];

/// Feeds and their tags, as in config.toml.
pub const FEEDS: &[(&str, &[&str])] = &[
    ("uscis-news", &["official", "us"]),
    ("uscis-alerts", &["official", "us"]),
    ("federal-register", &["official", "us", "rules"]),
    ("state-dept-visas", &["official", "us"]),
    ("gov-uk-visas", &["official", "uk"]),
    ("visaverge", &["news", "us"]),
    ("immigration-impact", &["news", "analysis", "us"]),
    ("boundless", &["news", "us"]),
    ("migration-policy", &["analysis"]),
    ("cbp-newsroom", &["official", "us", "border"]),
    ("ice-newsroom", &["official", "us", "enforcement"]),
    ("canada-ircc", &["official", "canada"]),
];

/// Ordinary words for the rest of the text, decoys included ("police",
/// "option", "head", "office", "notice").
#[rustfmt::skip]
pub const FILLER: &[&str] = &[
    "the", "a", "of", "to", "and", "in", "for", "on", "with", "new", "said", "will", "would",
    "could", "has", "have", "been", "after", "before", "under", "over", "more", "than",
    "thousands", "hundreds", "officials", "announced", "Monday", "Tuesday", "Wednesday",
    "Thursday", "Friday", "week", "month", "year", "2025", "2026", "applicants", "people",
    "agency", "administration", "program", "process", "application", "applications",
    "office", "notice", "police", "option", "options", "head", "advice", "service",
    "services", "update", "changes", "change", "plan", "plans", "report", "data", "show",
    "shows", "percent", "number", "numbers", "according", "statement", "press", "release",
    "federal", "state", "local", "officers", "agents", "community", "advocates", "lawyers",
    "attorney", "attorneys", "case", "cases", "decision", "ruling", "appeal", "appeals",
    "request", "requests", "review", "system", "online", "portal", "website", "form",
    "forms", "eligible", "eligibility", "requirements", "required", "must", "may", "can",
    "expected", "likely", "immediately", "effective", "starting", "until", "through",
    "during", "while", "because", "however", "also", "only", "first", "last", "next",
    "including", "such", "as", "other", "their", "its", "this", "that", "these", "those",
    "workers", "jobs", "economy", "business", "businesses", "schools", "hospital", "city",
    "county", "governor", "mayor", "president", "congress", "senate", "house", "bill", "vote",
];

/// Deterministic xorshift64*, so every run sees the same data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A subscription of about three terms.
pub fn subscription(rng: &mut Rng) -> String {
    let topic = rng.pick(TOPICS);
    let other = rng.pick(TOPICS);
    let place = rng.pick(QUALIFIERS);
    let place2 = rng.pick(QUALIFIERS);
    let feed = FEEDS[rng.below(FEEDS.len())].0;
    match rng.below(20) {
        0..=5 => format!("{topic} {place}"),
        6..=8 => format!("{topic} {place} {place2}"),
        9..=11 => format!("({topic} OR {other}) {place}"),
        12 => format!("{topic} ({place} OR {place2})"),
        13..=14 => format!("{topic} {place} -{place2}"),
        15 => format!("{topic} -({other} OR {place2}) {place}"),
        16 => format!("title:{topic} {place}"),
        17 => format!("{topic} {place} -feed:{feed}"),
        18 => format!(
            "{topic} (tag:{} OR {place})",
            ["official", "analysis", "uk"][rng.below(3)]
        ),
        _ => format!("{topic} OR {other} {place}"),
    }
}

/// Unquotes a vocabulary entry and strips a prefix star, for use in text;
/// compounds are written the ways the news writes them.
pub fn as_text(rng: &mut Rng, term: &str) -> String {
    let plain = term.trim_matches('"').trim_end_matches('*');
    let plain = if term.ends_with('*') {
        format!("{plain}{}", ["", "s", "ation", "ed", "ing"][rng.below(5)])
    } else {
        plain.to_string()
    };
    if plain.contains('-') && rng.chance(30) {
        plain.replace('-', if rng.chance(50) { "" } else { " " })
    } else {
        plain
    }
}

/// A sentence of 8–20 words about `focus`: now and then one of those terms,
/// rarely another from the vocabulary, ordinary words otherwise.
pub fn sentence(rng: &mut Rng, focus: &[&str]) -> String {
    let len = 8 + rng.below(13);
    let mut words: Vec<String> = Vec::with_capacity(len);
    for _ in 0..len {
        let word = match rng.below(100) {
            0..=6 => {
                let term = rng.pick(focus);
                as_text(rng, term)
            }
            7 => {
                let vocabulary = if rng.chance(50) { TOPICS } else { QUALIFIERS };
                let term = rng.pick(vocabulary);
                as_text(rng, term)
            }
            _ => rng.pick(FILLER).to_string(),
        };
        words.push(word);
    }
    let mut s = words.join(" ");
    if let Some(first) = s.get(..1) {
        s = first.to_uppercase() + s.get(1..).unwrap_or_default();
    }
    s + [".", ".", ".", "?", ";"][rng.below(5)]
}

pub struct Item {
    pub title: String,
    pub body: String,
    pub feed: &'static str,
    pub tags: Vec<String>,
}

impl Item {
    pub fn document(&self) -> Document {
        Document::new(&self.title, &self.body).with_source(self.feed, &self.tags)
    }
}

/// ~200 items, each about a few subjects and places: mostly summaries of a
/// few sentences, a quarter full articles.
pub fn corpus(rng: &mut Rng) -> Vec<Item> {
    (0..200)
        .map(|_| {
            let (feed, tags) = FEEDS[rng.below(FEEDS.len())];
            let mut focus = vec![rng.pick(TOPICS), rng.pick(QUALIFIERS)];
            for _ in 0..1 + rng.below(2) {
                focus.push(rng.pick(TOPICS));
            }
            for _ in 0..rng.below(2) {
                focus.push(rng.pick(QUALIFIERS));
            }
            let who = as_text(rng, focus[1]);
            let verb = rng.pick(&[
                "announces",
                "extends",
                "ends",
                "updates",
                "delays",
                "expands",
            ]);
            let what = as_text(rng, focus[0]);
            let tail = rng.pick(&["rule", "changes", "for 2026", "deadline", "fees", "policy"]);
            let title = format!("{who} {verb} {what} {tail}");
            let sentences = if rng.chance(25) {
                20 + rng.below(30)
            } else {
                3 + rng.below(6)
            };
            let body = (0..sentences)
                .map(|_| sentence(rng, &focus))
                .collect::<Vec<_>>()
                .join(" ");
            Item {
                title,
                body,
                feed,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            }
        })
        .collect()
}
