//! Stories: which items of different feeds report the same news.
//!
//! One announcement becomes many items: the agency's own, a wire's, and every outlet that
//! carries the wire with its own headline, dateline and boilerplate, or rewrites it. Two
//! items of different feeds are the same story when they have the same canonical link, or
//! when their words are alike: the cosine similarity of their [`Terms`] is at least the
//! configured threshold (`[stories] similarity`).
//!
//! [`Terms`] are the item's words, folded as the matcher folds them, without the words
//! every item uses ([`is_stopword`]: function words of English, Spanish, French and
//! Portuguese, and words of every news item, from `story_stopwords.txt`), from the title
//! (counted twice: a headline says what the story is) and the first [`LEAD_WORDS`] words
//! of the text (copies are cut after a paragraph, and outlets append their own
//! boilerplate at the end). Each term weighs `1 + ln(count)`; the vector has length 1.
//!
//! Finding the candidates among the items of the window without comparing against each
//! one: a [`StoryIndex`] keeps the window's grouped items by term, in memory. A new item's
//! [`RARE_TERMS`] rarest terms (those the fewest items of the window have: a name, a
//! number, a form, a place) give the items that share them; the [`MAX_CANDIDATES`] that
//! share the most are compared. The index is filled from the database when a process
//! first stores items, and follows what is stored since (by this process, and by others
//! on the same database as it finds them).
//!
//! This module is pure; the store keeps the index and asks the database about links.
//! Term hashes are fixed (xxh3, seed 0).

use std::collections::HashSet;

use rustc_hash::FxHashMap as HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Words of the item's text (after the title) that count.
pub const LEAD_WORDS: usize = 200;
/// Rarest terms of a new item whose items are candidates.
pub const RARE_TERMS: usize = 16;
/// Items of the window counted per term: a term this common is no clue.
pub const DF_CAP: u32 = 64;
/// Common terms looked up when an item has no rare one (the 65th copy of a wire story).
const COMMON_LOOKUPS: usize = 4;

/// Entries a term's posting list keeps, its newest: enough to tell a common term (at
/// least [`DF_CAP`] items of the window) from a rare one, and to find every item of a rare
/// one. Common terms then cost no more memory as the window fills.
const MAX_POSTINGS: usize = 4 * DF_CAP as usize;

/// Items with fewer terms than this (a title alone) are grouped by link only: a few words
/// alike ("Extension of the Designation of Haiti for Temporary Protected Status",
/// "Termination of the Designation of Venezuela for …") are not one story.
pub const MIN_TERMS: usize = 8;

/// Terms an indexed item keeps, its weightiest: enough for the similarity of alike items,
/// a bounded size for the index.
pub const INDEXED_TERMS: usize = 64;
/// Candidates compared per new item, at most: those sharing the most rare terms.
pub const MAX_CANDIDATES: usize = 30;

/// Items seen longer ago than this start stories of their own.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The similarity at or above which two items of different feeds are one story, chosen
/// on the labelled set (`tests/fixtures/stories`, `examples/story_eval.rs`, README
/// "Stories").
pub const DEFAULT_SIMILARITY: f64 = 0.33;

/// How items are grouped into stories (`[stories]` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoryRules {
    /// Items seen within this long before a new one can be its story.
    pub window: Duration,
    /// Cosine similarity at or above which two items are one story.
    pub similarity: f64,
}

impl Default for StoryRules {
    fn default() -> StoryRules {
        StoryRules {
            window: DEFAULT_WINDOW,
            similarity: DEFAULT_SIMILARITY,
        }
    }
}

/// An item of another feed that a new item may join: its story, and how alike the two
/// are (1 for the same link).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub story: i64,
    pub item: i64,
    pub similarity: f64,
}

/// The candidates a new item may join, best first: those at or above the rules'
/// similarity, most similar first, then the oldest story; each story once.
pub fn ranked(mut candidates: Vec<Candidate>, rules: &StoryRules) -> Vec<Candidate> {
    candidates.retain(|c| c.similarity >= rules.similarity);
    candidates.sort_by(|a, b| {
        b.similarity
            .total_cmp(&a.similarity)
            .then(a.story.cmp(&b.story))
            .then(a.item.cmp(&b.item))
    });
    let mut seen = HashSet::new();
    candidates.retain(|c| seen.insert(c.story));
    candidates
}

static STOPWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("story_stopwords.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .flat_map(words)
        .collect()
});

/// Whether `word` (folded) says nothing about which story an item tells.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(word)
}

/// An item's terms: (term hash, weight), sorted by hash, of length 1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Terms {
    weights: Vec<(i64, f64)>,
}

impl Terms {
    /// The terms of an item with this title and plain text (see the module doc). Empty
    /// when it has no word worth a term.
    pub fn of(title: &str, text: &str) -> Terms {
        Terms::of_parts(title, &[text])
    }

    /// [`Terms::of`] an item's title and the text [`crate::parse::body_text`] makes of
    /// its summary and content, without making it (only the lead counts).
    pub fn of_item(title: &str, summary: &str, content: &str) -> Terms {
        if content.is_empty() || content == summary {
            Terms::of_parts(title, &[summary])
        } else {
            Terms::of_parts(title, &[summary, content])
        }
    }

    /// [`Terms::of`] the text that is `parts` one after another, each ending a word.
    fn of_parts(title: &str, parts: &[&str]) -> Terms {
        let mut counts: HashMap<i64, u32> = HashMap::default();
        let mut word = String::new();
        let mut count = |word: &str, weight: u32| {
            if !is_stopword(word) {
                *counts.entry(term_hash(word)).or_default() += weight;
            }
        };
        for_each_word(title, usize::MAX, &mut word, |w| count(w, 2));
        let mut lead = 0;
        for part in parts {
            lead += for_each_word(part, LEAD_WORDS - lead, &mut word, |w| count(w, 1));
        }
        let mut weights: Vec<(i64, f64)> = counts
            .into_iter()
            .map(|(term, n)| (term, 1.0 + f64::from(n).ln()))
            .collect();
        weights.sort_unstable_by_key(|&(term, _)| term);
        let norm = weights.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut weights {
                *w /= norm;
            }
        }
        Terms { weights }
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The cosine similarity of the two items' terms, 0 to 1.
    pub fn cosine(&self, other: &Terms) -> f64 {
        let (mut i, mut j, mut dot) = (0, 0, 0.0);
        while let (Some(a), Some(b)) = (self.weights.get(i), other.weights.get(j)) {
            match a.0.cmp(&b.0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += a.1 * b.1;
                    i += 1;
                    j += 1;
                }
            }
        }
        dot.min(1.0)
    }
}

/// The items of the window that were grouped, by term (see the module doc).
#[derive(Debug, Default)]
pub struct StoryIndex {
    /// In the order they were added (about the order they were seen).
    entries: Vec<Entry>,
    by_id: HashMap<i64, usize>,
    /// Term → the entries that have it, oldest first.
    postings: HashMap<u32, Vec<u32>>,
    term_ids: HashMap<i64, u32>,
    feed_ids: HashMap<String, u32>,
    /// Entries before this one are past the window.
    first_live: usize,
    /// Whether the database's items have been read in (see [`StoryIndex::needs_loading`]).
    loaded: bool,
    /// The highest item id added.
    highest: i64,
    /// Entries seen before an entry added earlier (by slot, a bit each): the only ones
    /// after `first_live` that may be out of the window (see [`StoryIndex::liveness`]).
    late: Vec<u64>,
    /// The latest `seen_at` added.
    latest: i64,
}

#[derive(Debug)]
struct Entry {
    id: i64,
    story: i64,
    feed: u32,
    seen_at: i64,
    /// (term id, weight), by term id.
    terms: Box<[(u32, f32)]>,
}

/// An item as the index needs it: for filling it from the database.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub id: i64,
    pub story: i64,
    pub feed: String,
    pub seen_at: i64,
    pub terms: Terms,
}

impl StoryIndex {
    /// Whether it still has to be filled from the database ([`StoryIndex::loaded`]).
    pub fn needs_loading(&self) -> bool {
        !self.loaded
    }

    /// The highest item id it has: items stored since by other processes have higher
    /// ones (with SQLite always; with PostgreSQL, ids are handed out before the commit,
    /// so one committed late may be missed: it is then never a candidate, which costs a
    /// grouping, never a wrong one).
    pub fn highest(&self) -> i64 {
        self.highest
    }

    /// Marks it filled, after adding the database's items of the window.
    pub fn loaded(&mut self) {
        self.loaded = true;
    }

    /// Adds a grouped item (again: a known id is left as it is).
    pub fn add(&mut self, item: Indexed) {
        if self.by_id.contains_key(&item.id) {
            return;
        }
        self.highest = self.highest.max(item.id);
        let slot = self.entries.len() as u32;
        self.mark_order(slot, item.seen_at);
        let mut heaviest = item.terms.weights.clone();
        heaviest.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        heaviest.truncate(INDEXED_TERMS);
        let mut terms: Vec<(u32, f32)> = Vec::with_capacity(heaviest.len());
        for (hash, weight) in heaviest {
            let next = self.term_ids.len() as u32;
            let id = *self.term_ids.entry(hash).or_insert(next);
            terms.push((id, weight as f32));
            let list = self.postings.entry(id).or_default();
            if list.len() >= 2 * MAX_POSTINGS {
                list.drain(..MAX_POSTINGS);
            }
            list.push(slot);
        }
        terms.sort_unstable_by_key(|&(t, _)| t);
        let feeds = self.feed_ids.len() as u32;
        let feed = *self.feed_ids.entry(item.feed).or_insert(feeds);
        self.by_id.insert(item.id, self.entries.len());
        self.entries.push(Entry {
            id: item.id,
            story: item.story,
            feed,
            seen_at: item.seen_at,
            terms: terms.into(),
        });
    }

    /// Notes whether the entry in `slot` came in later than one added before it.
    fn mark_order(&mut self, slot: u32, seen_at: i64) {
        let (word, bit) = (slot as usize / 64, slot % 64);
        if self.late.len() <= word {
            self.late.resize(word + 1, 0);
        }
        if seen_at < self.latest {
            self.late[word] |= 1 << bit;
        } else {
            self.late[word] &= !(1 << bit);
            self.latest = seen_at;
        }
    }

    /// Whether an entry is in the window that starts at `since`, without reading most
    /// entries: past `first_live`, an entry seen no earlier than every entry before it
    /// is at least as recent as the first live one, so only the late ones need a look.
    /// (When the first live one is itself before `since`, every entry is looked at.)
    fn liveness(&self, since: i64) -> impl Fn(u32) -> bool + '_ {
        let ordered = self
            .entries
            .get(self.first_live)
            .is_some_and(|e| e.seen_at >= since);
        move |slot: u32| {
            let s = slot as usize;
            let late = self.late[s / 64] & (1 << (slot % 64)) != 0;
            s >= self.first_live && (ordered && !late || self.entries[s].seen_at >= since)
        }
    }

    /// The items of other feeds seen at or after `since` that may be the story of an item
    /// of `feed` with `terms`, with their similarity (not yet filtered by the threshold).
    pub fn candidates(&self, terms: &Terms, feed: &str, since: i64) -> Vec<Candidate> {
        let feed = self.feed_ids.get(feed).copied();
        let in_window = self.liveness(since);
        let first_live = self.first_live as u32;
        let live = |slot: u32| in_window(slot) && Some(self.entries[slot as usize].feed) != feed;
        // The new item's terms the index knows, by term id, with their weights.
        let mut known: Vec<(u32, f64, u32)> = terms
            .weights
            .iter()
            .filter_map(|&(hash, weight)| {
                let id = *self.term_ids.get(&hash)?;
                let list = self.postings.get(&id)?;
                // Counted from the newest, up to the cap (slots ascend: those before the
                // first live one are gone).
                let df = list
                    .iter()
                    .rev()
                    .take_while(|&&slot| slot >= first_live)
                    .filter(|&&slot| in_window(slot))
                    .take(DF_CAP as usize)
                    .count() as u32;
                Some((id, weight, df))
            })
            .collect();
        let rare = rare_terms(
            known
                .iter()
                .map(|&(id, _, df)| (i64::from(id), df))
                .collect(),
        );
        let mut shared: HashMap<u32, u32> = HashMap::default();
        for term in rare {
            // Newest first, as many as tell a common term: a rare one's are all there.
            for &slot in self.postings[&(term as u32)]
                .iter()
                .rev()
                .take(2 * DF_CAP as usize)
            {
                if live(slot) {
                    *shared.entry(slot).or_default() += 1;
                }
            }
        }
        let mut most: Vec<(u32, u32)> = shared.into_iter().collect();
        most.sort_unstable_by_key(|&(slot, n)| (std::cmp::Reverse(n), slot));
        most.truncate(MAX_CANDIDATES);
        known.sort_unstable_by_key(|&(id, _, _)| id);
        let short = terms.weights.len() < MIN_TERMS;
        // Candidates often share their story's first item: compared once.
        let mut root_dots: HashMap<usize, f64> = HashMap::default();
        most.into_iter()
            .map(|(slot, _)| {
                let e = &self.entries[slot as usize];
                // A few words alike (two titles of one agency) are not one story.
                let similarity = if short || e.terms.len() < MIN_TERMS {
                    0.0
                } else {
                    // Alike this item, and alike the story's first: a roundup that
                    // carries two stories never bridges them into one.
                    let alike = dot(&known, e);
                    match self.by_id.get(&e.story) {
                        Some(&root) if root >= self.first_live && root != slot as usize => alike
                            .min(
                                *root_dots
                                    .entry(root)
                                    .or_insert_with(|| dot(&known, &self.entries[root])),
                            ),
                        _ => alike,
                    }
                };
                Candidate {
                    story: e.story,
                    item: e.id,
                    similarity,
                }
            })
            .collect()
    }

    /// A candidate with the same link as an item with `terms`: as alike as a link makes
    /// it, unless their words are unlike (a feed that claims an agency's link for other
    /// news is not that story).
    pub fn same_link(
        &self,
        mut candidate: Candidate,
        terms: &Terms,
        rules: &StoryRules,
    ) -> Candidate {
        // A short item (a headline linking to the page) is that story by its link alone.
        let both_say_something = terms.weights.len() >= MIN_TERMS
            && self
                .by_id
                .get(&candidate.item)
                .is_some_and(|&slot| self.entries[slot].terms.len() >= MIN_TERMS);
        if both_say_something
            && self
                .similarity_to(terms, candidate.item)
                .is_some_and(|s| s < rules.similarity / 2.0)
        {
            candidate.similarity = 0.0;
        }
        candidate
    }

    /// How alike an item with `terms` is to the indexed item `id` (and its story's
    /// first), or `None` when the index does not have it.
    pub fn similarity_to(&self, terms: &Terms, id: i64) -> Option<f64> {
        let slot = *self.by_id.get(&id)?;
        if slot < self.first_live {
            return None;
        }
        let mut known: Vec<(u32, f64, u32)> = terms
            .weights
            .iter()
            .filter_map(|&(hash, weight)| Some((*self.term_ids.get(&hash)?, weight, 0)))
            .collect();
        known.sort_unstable_by_key(|&(id, _, _)| id);
        let e = &self.entries[slot];
        let mut similarity = dot(&known, e);
        if let Some(&root) = self.by_id.get(&e.story)
            && root >= self.first_live
        {
            similarity = similarity.min(dot(&known, &self.entries[root]));
        }
        Some(similarity)
    }

    /// Forgets the items seen before `since`. The memory they held is given back once
    /// they are most of it.
    pub fn evict(&mut self, since: i64) {
        while let Some(e) = self.entries.get(self.first_live) {
            if e.seen_at >= since {
                break;
            }
            self.first_live += 1;
        }
        if self.first_live > 1024 && self.first_live * 2 > self.entries.len() {
            let live: Vec<Entry> = self.entries.drain(self.first_live..).collect();
            let (loaded, highest) = (self.loaded, self.highest);
            // Term ids anew, for the live entries' terms only: words seen once long ago
            // do not stay in memory.
            let mut hash_of: Vec<i64> = vec![0; self.term_ids.len()];
            for (&hash, &id) in &self.term_ids {
                hash_of[id as usize] = hash;
            }
            let feed_ids = std::mem::take(&mut self.feed_ids);
            *self = StoryIndex {
                feed_ids,
                loaded,
                highest,
                ..StoryIndex::default()
            };
            for mut e in live {
                let slot = self.entries.len() as u32;
                self.mark_order(slot, e.seen_at);
                let mut terms: Vec<(u32, f32)> = e
                    .terms
                    .iter()
                    .map(|&(old, w)| {
                        let next = self.term_ids.len() as u32;
                        (
                            *self.term_ids.entry(hash_of[old as usize]).or_insert(next),
                            w,
                        )
                    })
                    .collect();
                terms.sort_unstable_by_key(|&(t, _)| t);
                for &(t, _) in &terms {
                    self.postings.entry(t).or_default().push(slot);
                }
                e.terms = terms.into();
                self.by_id.insert(e.id, self.entries.len());
                self.entries.push(e);
            }
        }
    }

    /// Items it holds within the window.
    pub fn len(&self) -> usize {
        self.entries.len() - self.first_live
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dot product of a new item's known terms (by term id) and an entry's.
fn dot(known: &[(u32, f64, u32)], e: &Entry) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while let (Some(a), Some(b)) = (known.get(i), e.terms.get(j)) {
        match a.0.cmp(&b.0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a.1 * f64::from(b.1);
                i += 1;
                j += 1;
            }
        }
    }
    dot.min(1.0)
}

/// The stored form of a term.
pub fn term_hash(word: &str) -> i64 {
    xxh3_64_with_seed(word.as_bytes(), 0) as i64
}

/// The terms to look up candidates by: of `counted` (term, items of the window that
/// have it, at most [`DF_CAP`]), those some other item has, rarest first, at most
/// [`RARE_TERMS`]. When every word is common (the 65th copy of a wire story), the least
/// common still find the others: their posting lists are bounded.
pub fn rare_terms(mut counted: Vec<(i64, u32)>) -> Vec<i64> {
    counted.retain(|&(_, n)| n > 0);
    let limit = if counted.iter().any(|&(_, n)| n < DF_CAP) {
        counted.retain(|&(_, n)| n < DF_CAP);
        RARE_TERMS
    } else {
        COMMON_LOOKUPS
    };
    counted.sort_unstable_by_key(|&(term, n)| (n, term));
    counted.truncate(limit);
    counted.into_iter().map(|(term, _)| term).collect()
}

/// The folded words of `text`, as the matcher folds them (case, accents, width).
fn words(text: &str) -> Vec<String> {
    words_limited(text, usize::MAX)
}

fn words_limited(text: &str, limit: usize) -> Vec<String> {
    let mut words = Vec::new();
    for_each_word(text, limit, &mut String::new(), |w| {
        words.push(w.to_string())
    });
    words
}

/// Calls `visit` with each folded word of `text` (in `word`, a buffer), at most `limit`
/// of them; returns how many.
fn for_each_word(
    text: &str,
    limit: usize,
    word: &mut String,
    mut visit: impl FnMut(&str),
) -> usize {
    let mut n = 0;
    word.clear();
    for c in text.chars() {
        if n >= limit {
            break;
        }
        let mut boundary = true;
        crate::matcher::fold_char(c, |f| {
            if f.is_alphanumeric() {
                word.push(f);
                boundary = false;
            }
        });
        if boundary && !word.is_empty() {
            visit(word);
            word.clear();
            n += 1;
        }
    }
    if !word.is_empty() && n < limit {
        visit(word);
        n += 1;
    }
    word.clear();
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRE: &str = "U.S. Citizenship and Immigration Services said Tuesday it will extend \
        the automatic extension of employment authorization documents to 540 days for \
        applicants who file Form I-765 on time, citing processing backlogs.";

    #[test]
    fn copies_with_their_own_headline_and_boilerplate_are_alike() {
        let original = Terms::of("USCIS extends EAD automatic extension to 540 days", WIRE);
        let copy = Terms::of(
            "US immigration agency extends work permit extension to 540 days",
            &format!("WASHINGTON (AP) — {WIRE} The post appeared first on VisaVerge."),
        );
        let s = original.cosine(&copy);
        assert!(s >= DEFAULT_SIMILARITY, "similarity {s}");
    }

    #[test]
    fn different_stories_of_one_agency_are_not() {
        // Hard cases (two H-1B rules the same week) are measured on the labelled set;
        // here, two releases that share only the agency's vocabulary.
        let fee = Terms::of(
            "USCIS announces new H-1B registration fee",
            "The registration fee for the H-1B cap season rises to $250 per beneficiary \
             starting in March, USCIS said in a final rule published Friday.",
        );
        let office = Terms::of(
            "USCIS opens asylum office in Atlanta",
            "USCIS said Friday it will open an asylum office in Atlanta to interview \
             applicants from Georgia and the Carolinas starting in March.",
        );
        let s = fee.cosine(&office);
        assert!(s < DEFAULT_SIMILARITY, "{s}");
    }

    #[test]
    fn folding_and_punctuation_do_not_matter() {
        let a = Terms::of(
            "Deportación de migrantes en Texas",
            "¿Qué dice la corte? ¡Todo!",
        );
        let b = Terms::of(
            "DEPORTACION de migrantes en texas",
            "Que dice la corte... todo",
        );
        assert_eq!(a, b);
        assert!((a.cosine(&b) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn stopwords_and_empty_text_make_no_terms() {
        assert!(Terms::of("The news of today", "").is_empty());
        assert!(Terms::of("", "  ,, ").is_empty());
        assert!(!Terms::of("TPS Haiti extended", "").is_empty());
        assert_eq!(Terms::of("", "").cosine(&Terms::of("TPS", "")), 0.0);
    }

    #[test]
    fn term_hashes_are_stable_across_versions() {
        // Stored terms must be found by later versions: the hash function never changes.
        assert_eq!(term_hash("asylum"), term_hash("asylum"));
        assert_eq!(term_hash("asylum"), -4_360_798_663_628_534_332);
    }

    fn indexed(id: i64, feed: &str, seen_at: i64, title: &str, text: &str) -> Indexed {
        Indexed {
            id,
            story: id,
            feed: feed.into(),
            seen_at,
            terms: Terms::of(title, text),
        }
    }

    #[test]
    fn the_index_finds_alike_items_of_other_feeds_within_the_window() {
        let mut index = StoryIndex::default();
        let title = "USCIS extends EAD automatic extension to 540 days";
        index.add(indexed(1, "uscis", 100, title, WIRE));
        index.add(indexed(
            2,
            "other",
            100,
            "Asylum office opens in Atlanta",
            "Georgia.",
        ));
        let copy = Terms::of("Work permits extended to 540 days", WIRE);
        let found = index.candidates(&copy, "visaverge", 50);
        let best = ranked(found.clone(), &StoryRules::default());
        assert_eq!(best.len(), 1, "{found:?}");
        assert_eq!(best[0].item, 1);
        // Not an item of the same feed; not one seen before the window.
        assert!(ranked(index.candidates(&copy, "uscis", 50), &StoryRules::default()).is_empty());
        assert!(
            ranked(
                index.candidates(&copy, "visaverge", 101),
                &StoryRules::default()
            )
            .is_empty()
        );
        // Forgotten once past the window, memory given back when most of it is.
        index.evict(101);
        assert!(index.is_empty());
        assert!(index.candidates(&copy, "visaverge", 0).is_empty());
    }

    #[test]
    fn a_link_alone_joins_a_headline_but_not_other_news() {
        let mut index = StoryIndex::default();
        let title = "USCIS extends EAD automatic extension to 540 days";
        index.add(indexed(1, "uscis", 100, title, WIRE));
        let rules = StoryRules::default();
        let by_link = Candidate {
            story: 1,
            item: 1,
            similarity: 1.0,
        };
        // A headline linking to the agency's page: the same story.
        let headline = Terms::of("Work permits extended", "");
        assert_eq!(index.same_link(by_link, &headline, &rules).similarity, 1.0);
        // Other news that claims the agency's link: not that story.
        let other = Terms::of(
            "Renewal fee due by Friday for all permit holders",
            "Pay online today at renew-ead.example or your permit is cancelled; the \
             portal accepts cards and transfers until midnight.",
        );
        assert_eq!(index.same_link(by_link, &other, &rules).similarity, 0.0);
    }

    #[test]
    fn common_terms_keep_a_bounded_posting_list() {
        let mut index = StoryIndex::default();
        for id in 0..5_000 {
            index.add(indexed(
                id,
                &format!("f{id}"),
                id,
                &format!("visa x{id}"),
                "",
            ));
        }
        let visa = index.term_ids[&term_hash("visa")];
        assert!(index.postings[&visa].len() <= 2 * MAX_POSTINGS);
        // Looked up by its least common words, the work stays bounded.
        let probe = Terms::of("visa x4999", "");
        let found = index.candidates(&probe, "new", 0);
        assert!(found.len() <= MAX_CANDIDATES, "{}", found.len());
        assert!(found.iter().any(|c| c.item == 4999), "{found:?}");
        assert_eq!(index.len(), 5_000);
    }

    #[test]
    fn the_lead_counts_and_the_tail_does_not() {
        let lead: String = (0..LEAD_WORDS).map(|i| format!("w{i} ")).collect();
        let a = Terms::of("Same title here", &format!("{lead} tail one two three"));
        let b = Terms::of("Same title here", &format!("{lead} other ending entirely"));
        assert_eq!(a, b);
    }

    #[test]
    fn rare_terms_are_those_few_items_share() {
        let counted = vec![(1, 0), (2, 5), (3, 1), (4, DF_CAP), (5, 2), (6, 1)];
        assert_eq!(rare_terms(counted), [3, 6, 5, 2]);
        // No rare term: the least common few still find the others.
        let common: Vec<(i64, u32)> = (0..10).map(|t| (t, DF_CAP)).collect();
        assert_eq!(rare_terms(common).len(), COMMON_LOOKUPS);
        let many: Vec<(i64, u32)> = (0..100).map(|t| (t, 1)).collect();
        assert_eq!(rare_terms(many).len(), RARE_TERMS);
    }

    #[test]
    fn candidates_rank_by_similarity_then_oldest_story_each_story_once() {
        let c = |story, item, similarity| Candidate {
            story,
            item,
            similarity,
        };
        let ranked = ranked(
            vec![
                c(9, 9, 0.5),
                c(3, 4, 0.9),
                c(3, 5, 0.95),
                c(2, 2, 0.9),
                c(1, 1, 0.1),
            ],
            &StoryRules::default(),
        );
        assert_eq!(ranked, [c(3, 5, 0.95), c(2, 2, 0.9), c(9, 9, 0.5)]);
    }
}
