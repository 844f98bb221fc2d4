//! Renders one realistic digest, offline, into a folder (by default `docs/`):
//!
//! - `sample-digest.eml`: the whole MIME message as `Mailer::build_message` makes it
//!   (headers, `List-Unsubscribe`, plain text and HTML parts);
//! - `sample-digest.html`: the HTML part alone, for a browser or a screenshot;
//! - `sample-digest.txt`: the plain-text part alone.
//!
//! ```sh
//! cargo run --example sample_digest -- docs/
//! ```
//!
//! Nothing is fetched, stored or sent: the entries are written out by hand, the config
//! uses the `file` transport, and every date is fixed, so running it again gives the same
//! bytes (lettre's random MIME boundary is replaced by a fixed one).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::America::New_York;
use tidings::config::Config;
use tidings::digest::{DigestContext, DigestEntry, FailingFeed, Schedule, render_digest};
use tidings::mail::Mailer;
use tidings::store::{ItemId, OutboxId, OutboxMessage, SubscriberId, SubscriptionId};
use tidings::token::{Links, Signer};

/// The configuration the sample is rendered with: the feeds and synonyms of the shipped
/// `config.toml`, with an example domain and no mail server.
const CONFIG: &str = r#"
[digest]
daily_at = "08:00"
timezone = "America/New_York"

[mail]
from = "Tidings <tidings@tidings.example.org>"
transport = "file"
folder = "mail"

[web]
base_url = "https://tidings.example.org/"

[synonyms]
"H-1B" = ["specialty occupation"]
"TPS" = ["temporary protected status"]

[[feeds]]
id = "uscis-news"
name = "USCIS News Releases"
url = "https://www.uscis.gov/news/rss-feed/59144"
tags = ["us", "official"]

[[feeds]]
id = "federal-register-uscis"
name = "Federal Register: USCIS documents"
url = "https://www.federalregister.gov/api/v1/documents.rss?conditions%5Bagencies%5D%5B%5D=u-s-citizenship-and-immigration-services"
tags = ["us", "official", "rules"]

[[feeds]]
id = "visaverge"
name = "VisaVerge"
url = "https://www.visaverge.com/feed/"
tags = ["news"]

[[feeds]]
id = "immigration-impact"
name = "Immigration Impact"
url = "https://immigrationimpact.com/feed/"
tags = ["us", "analysis"]

[[feeds]]
id = "govuk-visas"
name = "GOV.UK: UK Visas and Immigration"
url = "https://www.gov.uk/government/organisations/uk-visas-and-immigration.atom"
tags = ["uk", "official"]
"#;

/// A signing key for the sample's unsubscribe links only.
const SAMPLE_SECRET: &[u8] = b"sample-secret-not-for-production";

const SUBSCRIBER_ID: SubscriberId = SubscriberId(1);
const RECIPIENT: &str = "ana.martinez@example.org";
const OUTBOX_ID: OutboxId = OutboxId(1);
/// When the digest goes out: 08:00 in New York.
const SENT_AT: &str = "2026-11-28T13:00:00Z";
/// Replaces lettre's random multipart boundary, so the `.eml` is reproducible.
const BOUNDARY: &str = "tidings-sample-digest-boundary";

/// One item as a feed carried it.
struct Story {
    feed: &'static str,
    item_id: i64,
    title: &'static str,
    link: &'static str,
    summary: &'static str,
    published: &'static str,
    updated: bool,
}

/// The subscriptions, in the order the store hands them over, with what each matched.
fn pending() -> Vec<(i64, &'static str, Vec<Story>)> {
    vec![
        (
            11,
            "asylum",
            vec![
                Story {
                    feed: "govuk-visas",
                    item_id: 101,
                    title: "Asylum accommodation update: November 2026",
                    link: "https://www.gov.uk/government/publications/asylum-accommodation-update-november-2026",
                    summary: "The Home Office has published its monthly update on asylum \
                        accommodation. It sets out the number of people in contingency \
                        hotels and large sites, the sites that closed in November, and \
                        the timetable for moving people into dispersal accommodation \
                        managed with local authorities. This version corrects the \
                        regional table published on 20 November.",
                    published: "2026-11-27T09:30:00Z",
                    updated: true,
                },
                Story {
                    feed: "visaverge",
                    item_id: 102,
                    title: "Work permits for asylum seekers: what the new EAD processing times mean",
                    link: "https://www.visaverge.com/immigration/work-permits-asylum-seekers-ead-processing-times/",
                    summary: "Applicants with a pending asylum case can ask for an employment \
                        authorization document 150 days after filing. We look at the \
                        latest processing times posted by USCIS for Form I-765 under \
                        category (c)(8), what to do when a card is late, and how an \
                        automatic extension works while a renewal is pending.",
                    published: "2026-11-27T16:05:00Z",
                    updated: false,
                },
            ],
        ),
        (
            12,
            "\"H-1B\"",
            vec![
                Story {
                    feed: "uscis-news",
                    item_id: 103,
                    title: "H-1B registration period opens March 1",
                    link: "https://www.uscis.gov/newsroom/alerts/h-1b-registration-period-opens-march-1",
                    summary: "USCIS announced that the initial registration period for the \
                        fiscal year 2028 H-1B cap will open at noon Eastern on March 1 and \
                        run through noon Eastern on March 20. Prospective petitioners and \
                        their representatives must use a USCIS online organizational \
                        account to register each beneficiary electronically and pay the \
                        registration fee.",
                    published: "2026-11-27T15:00:00Z",
                    updated: false,
                },
                Story {
                    feed: "visaverge",
                    item_id: 104,
                    title: "Cap season checklist: five things employers should settle before registration",
                    link: "https://www.visaverge.com/h1b/cap-season-checklist-employers/",
                    summary: "Registration takes minutes; the preparation does not. Confirm \
                        that each role is a specialty occupation, gather degree \
                        evaluations early, check the prevailing wage level you intend to \
                        offer, and make sure your online account has a second \
                        administrator before the window opens.",
                    published: "2026-11-27T20:40:00Z",
                    updated: false,
                },
            ],
        ),
        (
            13,
            "TPS OR \"temporary protected status\"",
            vec![
                Story {
                    feed: "federal-register-uscis",
                    item_id: 105,
                    title: "Extension of the Designation of Venezuela for Temporary Protected Status",
                    link: "https://www.federalregister.gov/documents/2026/11/27/2026-23817/extension-of-the-designation-of-venezuela-for-temporary-protected-status",
                    summary: "Through this notice, the Department of Homeland Security announces \
                        that the Secretary is extending the designation of Venezuela for \
                        Temporary Protected Status (TPS) for 18 months. Current beneficiaries \
                        who want to keep their TPS must re-register during the 60-day \
                        re-registration period described in this notice.",
                    published: "2026-11-27T13:45:00Z",
                    updated: false,
                },
                // The same notice again, through USCIS's own feed: shown once, "also covered by".
                Story {
                    feed: "uscis-news",
                    item_id: 106,
                    title: "USCIS extends TPS for Venezuela",
                    link: "https://www.federalregister.gov/documents/2026/11/27/2026-23817/extension-of-the-designation-of-venezuela-for-temporary-protected-status",
                    summary: "Venezuela's TPS designation is extended for 18 months; see the \
                        Federal Register notice for re-registration steps.",
                    published: "2026-11-27T14:10:00Z",
                    updated: false,
                },
            ],
        ),
    ]
}

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("docs"), PathBuf::from);

    let config = Config::parse(CONFIG, Path::new("sample-config.toml"))?;
    let synonyms = config.matcher_synonyms().map_err(anyhow::Error::msg)?;
    let links = Links::new(config.web.base_url.clone(), Signer::new(SAMPLE_SECRET)?);
    let unsubscribe = links.unsubscribe_url(SUBSCRIBER_ID, RECIPIENT);
    let manage = links.manage_url(SUBSCRIBER_ID, RECIPIENT);
    let sent_at = at(SENT_AT)?;

    let entries = entries(&config, sent_at)?;
    let failing = [FailingFeed {
        name: feed_name(&config, "immigration-impact")?,
        since: at("2026-11-26T09:00:00Z")?,
        error: "HTTP 503 Service Unavailable".into(),
    }];
    let cx = DigestContext {
        recipient: RECIPIENT,
        schedule: Schedule::Daily {
            at: NaiveTime::from_hms_opt(8, 0, 0).context("08:00")?,
        },
        timezone: New_York,
        synonyms: &synonyms,
        failing_feeds: &failing,
        unsubscribe_url: Some(&unsubscribe),
        manage_url: Some(&manage),
        cache: None,
        more_follow: false,
        locale: tidings::locale::get("en"),
    };
    let rendered = render_digest(&entries, &cx)?;

    let mailer = Mailer::new(&config.mail, Some(links))?;
    // The Message-ID the store would give outbox row 1 of subscriber 1.
    let message_id = format!(
        "<digest.{OUTBOX_ID}.{SUBSCRIBER_ID}.{}@{}>",
        sent_at.timestamp(),
        mailer.message_domain()
    );
    let row = OutboxMessage {
        id: OUTBOX_ID,
        subscriber_id: Some(SUBSCRIBER_ID),
        recipient: RECIPIENT.into(),
        message_id,
        subject: rendered.subject.clone(),
        body_text: rendered.text.clone(),
        body_html: rendered.html.clone(),
        created_at: sent_at,
        status: tidings::store::OutboxStatus::Pending,
        attempts: 0,
        last_error: None,
        next_attempt_at: sent_at,
        sent_at: None,
        claim: None,
    };
    let message = mailer
        .build_message(&row)
        .map_err(|e| anyhow!("building the message: {e:?}"))?;
    let eml = fixed_boundary(&String::from_utf8(message.formatted())?)?;
    check_eml(&eml, &rendered.text, &rendered.html)?;

    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, bytes) in [
        ("sample-digest.eml", eml.as_bytes()),
        ("sample-digest.html", rendered.html.as_bytes()),
        ("sample-digest.txt", rendered.text.as_bytes()),
    ] {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!("subject: {}", rendered.subject);
    Ok(())
}

/// The pending matches as the store would hand them over: grouped by subscription,
/// feed names and tags from the config.
fn entries(config: &Config, first_seen: DateTime<Utc>) -> Result<Vec<DigestEntry>> {
    let mut entries = Vec::new();
    for (subscription_id, query, stories) in pending() {
        for story in stories {
            let feed = config
                .feed(story.feed)
                .with_context(|| format!("no feed {:?} in the sample config", story.feed))?;
            entries.push(DigestEntry {
                subscription_id: SubscriptionId(subscription_id),
                query: query.into(),
                item_id: ItemId(story.item_id),
                feed_id: feed.id.clone(),
                feed_name: feed.name.clone(),
                tags: feed.tags.clone(),
                title: story.title.into(),
                link: Some(story.link.into()),
                summary: story.summary.into(),
                content: String::new(),
                published: Some(at(story.published)?),
                first_seen,
                updated: story.updated,
                article: None,
                // Same link, same story (the store groups them when it stores them).
                story: story.link.len() as i64,
                more_coverage: false,
                lang: None,
                crosses_languages: false,
            });
        }
    }
    Ok(entries)
}

fn feed_name(config: &Config, id: &str) -> Result<String> {
    Ok(config
        .feed(id)
        .with_context(|| format!("no feed {id:?} in the sample config"))?
        .name
        .clone())
}

fn at(rfc3339: &str) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(rfc3339)
        .with_context(|| format!("date {rfc3339:?}"))?
        .with_timezone(&Utc))
}

/// The message with lettre's random boundary swapped for [`BOUNDARY`].
fn fixed_boundary(eml: &str) -> Result<String> {
    let marker = "boundary=\"";
    let start = eml.find(marker).context("no multipart boundary")? + marker.len();
    let len = eml[start..].find('"').context("unterminated boundary")?;
    let random = &eml[start..start + len];
    if eml.contains(BOUNDARY) {
        bail!("the fixed boundary {BOUNDARY:?} occurs in the message");
    }
    Ok(eml.replace(random, BOUNDARY))
}

/// Reads the message back as a mail client would: both parts must come out as rendered.
fn check_eml(eml: &str, text: &str, html: &str) -> Result<()> {
    let parsed = mail_parser::MessageParser::default()
        .parse(eml)
        .context("the .eml does not parse")?;
    let unix = |s: &str| s.replace("\r\n", "\n");
    let text_part = parsed.body_text(0).context("no text/plain part")?;
    let html_part = parsed.body_html(0).context("no text/html part")?;
    if unix(&text_part) != unix(text) {
        bail!("the text/plain part differs from the rendered text");
    }
    if unix(&html_part) != unix(html) {
        bail!("the text/html part differs from the rendered HTML");
    }
    Ok(())
}
