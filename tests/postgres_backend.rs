//! The PostgreSQL backend against a real PostgreSQL on loopback: its migrations, the
//! stories the SQLite store's unit tests tell, and what only several instances can do to
//! each other (claims taken at the same instant, one digest taken twice at once).
//!
//! Scaffolding until the contract suite runs one set of stories on both backends: these
//! call `tidings::store::postgres::Postgres` directly. One server serves every test here
//! (libtest-mimic, `harness = false`, so that it is stopped after the last one, failed
//! or not); each test makes its own database. Without PostgreSQL the tests are reported
//! as ignored, with the reason, unless `TIDINGS_REQUIRE_POSTGRES=1`.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use libtest_mimic::{Arguments, Trial};
use support::postgres::PgServer;
use tidings::config::FeedConfig;
use tidings::digest::{Rendered, Schedule};
use tidings::parse::Item;
use tidings::store::postgres::Postgres;
use tidings::store::{
    FeedToPoll, Signup, SignupAdmission, SignupLimits, StoreOutcome, SuccessfulPoll,
};

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn feed(id: &str, url: &str) -> FeedConfig {
    FeedConfig {
        id: id.into(),
        name: id.to_uppercase(),
        url: url.parse().unwrap(),
        tags: Vec::new(),
        interval: Duration::from_secs(900),
    }
}

fn item(key: &str, title: &str, published: DateTime<Utc>) -> Item {
    Item {
        key: key.into(),
        guid: None,
        link: None,
        title: title.into(),
        summary: String::new(),
        content: String::new(),
        published: Some(published),
    }
}

/// A successful poll of `items` at `now`, matched by a matcher at `generation`.
fn poll(items: &[Item], now: DateTime<Utc>, generation: i64) -> SuccessfulPoll {
    SuccessfulPoll {
        items: items.into(),
        etag: None,
        last_modified: None,
        full_fetch: true,
        moved_to: None,
        repairs: std::sync::Arc::new([]),
        body_hash: None,
        now,
        next_poll_at: now,
        baseline_cutoff: now - chrono::Duration::days(1),
        matcher_generation: generation,
    }
}

fn claim_one(store: &Postgres, now: DateTime<Utc>) -> FeedToPoll {
    let mut claimed = store.claim_feeds(now, Duration::ZERO, false).unwrap();
    assert_eq!(claimed.len(), 1, "one feed to claim");
    claimed.remove(0)
}

/// Renders slowly: a second take of the same digest started meanwhile must wait for
/// this one, not read the same pending matches (the rendering runs inside the transaction).
fn render_slowly(
    _: &tidings::store::Subscriber,
    entries: &[tidings::digest::DigestEntry],
    _: bool,
) -> anyhow::Result<Rendered> {
    std::thread::sleep(Duration::from_millis(100));
    Ok(Rendered {
        subject: format!("{} new", entries.len()),
        text: "text".into(),
        html: "<p>html</p>".into(),
    })
}

/// A plain client on the database at `url`, for what the store does not offer.
fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn migrations_apply_and_reconnecting_is_a_no_op(server: &PgServer) {
    let url = server.fresh_database();
    let store = Postgres::connect(&url, None).unwrap();
    store
        .add_subscription(
            "a@x.example",
            "asylum",
            Schedule::Immediate,
            Tz::UTC,
            noon(),
        )
        .unwrap();
    let generation = store.subscriptions_generation().unwrap();
    drop(store);
    let store = Postgres::connect(&url, None).unwrap();
    assert_eq!(store.subscribers().unwrap().len(), 1, "data survives");
    assert_eq!(store.subscriptions_generation().unwrap(), generation);
    let versions: Vec<i32> = sql(&url)
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1], "applied once");
}

fn a_database_from_a_newer_tidings_is_refused_and_left_as_it_is(server: &PgServer) {
    let url = server.fresh_database();
    drop(Postgres::connect(&url, None).unwrap());
    let mut client = sql(&url);
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (2, 'x', 0)",
            &[],
        )
        .unwrap();
    let err = format!("{:#}", Postgres::connect(&url, None).unwrap_err());
    assert!(
        err.contains("was written by a newer version of Tidings (schema version 2")
            && !err.contains("migrat"),
        "{err}"
    );
    let tables: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 11, "left as it was");
}

/// Whatever goes wrong, the password is not in the message.
fn errors_never_show_the_password(server: &PgServer) {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            "bad option",
            "postgres://u:hunter2@127.0.0.1/x?bogus=1".to_string(),
            None,
        ),
        (
            "refused",
            format!("postgres://u:hunter2@127.0.0.1:{closed}/x"),
            None,
        ),
        (
            "refused, password apart",
            format!("postgres://u@127.0.0.1:{closed}/x"),
            Some("hunter2"),
        ),
        (
            "no such database",
            server.url("nothing_here"),
            Some("hunter2"),
        ),
    ];
    for (name, url, password) in cases {
        let err = format!("{:#}", Postgres::connect(&url, password).unwrap_err());
        assert!(!err.contains("hunter2"), "{name}: {err}");
        assert!(!err.is_empty(), "{name}");
    }
    // Given apart, it is the password used (trust ignores it, and it is not printed).
    let url = server.fresh_database();
    let store = Postgres::connect(&url, Some("hunter2")).unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
}

fn three_instances_starting_at_once_migrate_once(server: &PgServer) {
    let url = server.fresh_database();
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Postgres::connect(&url, None).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let mut client = sql(&url);
    let applied: i64 = client
        .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    let generation: i64 = client
        .query_one("SELECT value FROM generations", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 1, "the schema's one generation row, as made");
}

/// A feed's claim is valid while it is held: a worker whose lease ran out while it
/// waited (another took the feed) neither fetches it nor writes its result.
fn a_worker_that_lost_its_feed_claim_writes_nothing(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .unwrap();
    let lease = Duration::from_secs(300);
    let old = store.claim_feeds(t0, lease, false).unwrap().remove(0);
    let later = t0 + chrono::Duration::seconds(301);
    let new = store.claim_feeds(later, lease, false).unwrap().remove(0);
    assert_ne!(old.claim, new.claim);
    assert!(!store.renew_feed_claim(&old, later, lease).unwrap());
    assert!(store.renew_feed_claim(&new, later, lease).unwrap());
    let failed = store
        .record_failure(&old, later, "http", "HTTP 500", later)
        .unwrap();
    assert!(!failed, "the old holder's failure is not recorded");
    assert_eq!(store.consecutive_failures("f").unwrap(), 0);
    assert!(!store.record_not_modified(&old, later, later, None).unwrap());
    assert!(!store.record_gone(&old, later, "410").unwrap());
    let items = [item("k", "Asylum", later)];
    let generation = store.subscriptions_generation().unwrap();
    let outcome = store
        .store_items(&old, &poll(&items, later, generation), |_| Vec::new())
        .unwrap();
    assert_eq!(outcome, StoreOutcome::ClaimLost);
    assert!(store.feed_items("f").unwrap().is_empty());
    store.release_claim(&old).unwrap();
    assert!(
        store.claim_feeds(later, lease, false).unwrap().is_empty(),
        "the old holder cannot release the new holder's claim"
    );
    let outcome = store
        .store_items(&new, &poll(&items, later, generation), |_| Vec::new())
        .unwrap();
    assert!(matches!(outcome, StoreOutcome::Stored(s) if s.new_items == 1));
    let status = &store.feed_statuses().unwrap()[0];
    assert_eq!(status.last_status.as_deref(), Some("ok"));
    assert_eq!(status.items, 1);
}

/// Items are never matched by a matcher older than the subscriptions.
fn storing_with_a_stale_matcher_writes_nothing(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .unwrap();
    let stale = store.subscriptions_generation().unwrap();
    store
        .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, now)
        .unwrap();
    let active = store.subscriptions().unwrap();
    assert_ne!(active.generation, stale);
    let asylum = active.queries[0].0;
    let feed = claim_one(&store, now);
    let items = [item("k", "Asylum", now)];
    let outcome = store
        .store_items(&feed, &poll(&items, now, stale), |_| vec![asylum])
        .unwrap();
    assert_eq!(outcome, StoreOutcome::StaleMatcher);
    assert!(store.feed_items("f").unwrap().is_empty(), "nothing stored");
    let outcome = store
        .store_items(&feed, &poll(&items, now, active.generation), |_| {
            vec![asylum]
        })
        .unwrap();
    assert!(
        matches!(outcome, StoreOutcome::Stored(s) if s.new_items == 1 && s.matches == 1),
        "{outcome:?}"
    );
    assert_eq!(store.due_digests(now, false).unwrap().len(), 1);
}

/// Every kind of change, made through any path (a cascade included), moves the
/// generation, and a removed subscription's id never comes back.
fn every_subscription_change_moves_the_generation_and_ids_are_never_reused(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let now = noon();
    let add = |email: &str, query: &str| {
        store
            .add_subscription(email, query, Schedule::Immediate, Tz::UTC, now)
            .unwrap()
    };
    let id_of = |query: &str| {
        store
            .subscriptions()
            .unwrap()
            .queries
            .into_iter()
            .find(|(_, q)| q == query)
            .map(|(id, _)| id)
    };
    let mut seen = vec![store.subscriptions_generation().unwrap()];
    let mut step = |name: &str| {
        let g = store.subscriptions_generation().unwrap();
        assert!(!seen.contains(&g), "{name}: generation {g} seen before");
        seen.push(g);
    };
    assert!(add("a@x.example", "asylum"));
    step("add");
    assert!(add("b@x.example", "DACA"));
    step("add a second");
    let daca = id_of("DACA").unwrap();
    let b = store.subscriber("b@x.example").unwrap().unwrap().id;
    assert!(store.set_subscription_paused(b, daca, true, now).unwrap());
    step("pause");
    assert_eq!(id_of("DACA"), None, "a paused search is not matched");
    assert!(store.set_subscription_paused(b, daca, false, now).unwrap());
    step("resume");
    assert!(store.remove_subscriber("B@X.example").unwrap());
    step("remove the subscriber, any case (cascade)");
    assert!(add("c@x.example", "TPS"));
    step("add after remove");
    let tps = id_of("TPS").unwrap();
    assert!(
        tps > daca,
        "id {daca} of a removed search was reused ({tps})"
    );
    let c = store.subscriber("c@x.example").unwrap().unwrap().id;
    assert!(store.remove_subscription(c, tps).unwrap());
    step("remove one search");
    let active = store.subscriptions().unwrap();
    assert_eq!(active.generation, *seen.last().unwrap());
    assert_eq!(active.queries.len(), 1);
}

/// Addresses are one subscriber whatever their ASCII case, as SQLite's NOCASE has it;
/// other letters are not folded (NOCASE does not fold them either).
fn addresses_compare_as_sqlite_nocase(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let now = noon();
    let add = |email: &str, query: &str| {
        store
            .add_subscription(email, query, Schedule::Immediate, Tz::UTC, now)
            .unwrap()
    };
    assert!(add("Zoe@X.example", "asylum"));
    assert!(add("zoe@x.EXAMPLE", "parole"));
    assert!(!add("ZOE@x.example", "asylum"), "the same search again");
    assert!(add("Émile@x.example", "TPS"));
    assert!(add("émile@x.example", "TPS"));
    let subscribers = store.subscribers().unwrap();
    let emails: Vec<&str> = subscribers.iter().map(|s| s.email.as_str()).collect();
    assert_eq!(
        emails,
        ["Zoe@X.example", "Émile@x.example", "émile@x.example"]
    );
    assert_eq!(subscribers[0].queries, ["asylum", "parole"]);
    let zoe = store.subscriber(" zoe@x.example ").unwrap().unwrap();
    assert_eq!(zoe.queries, ["asylum", "parole"]);
    assert!(store.resume_subscriber("ZOE@X.EXAMPLE").unwrap());
    let email_of = |email: &str| store.subscriber(email).unwrap().map(|s| s.email);
    assert_eq!(
        email_of("ÉMILE@X.EXAMPLE").as_deref(),
        Some("Émile@x.example")
    );
    assert_eq!(
        email_of("éMILE@x.example").as_deref(),
        Some("émile@x.example")
    );
}

/// Confirming a sign-up is one transaction: when one of its searches cannot be stored,
/// none is, and the sign-up stays unconfirmed (it can be confirmed again).
fn a_confirmation_that_fails_part_way_stores_nothing(server: &PgServer) {
    let url = server.fresh_database();
    let store = Postgres::connect(&url, None).unwrap();
    let now = noon();
    let id = store
        .create_signup(&Signup {
            email: "zoe@x.example".into(),
            queries: vec!["asylum".into(), "refused".into(), "parole".into()],
            frequency: "daily".into(),
            timezone: "UTC".into(),
            client: "127.0.0.1".into(),
            created_at: now,
            confirmed_at: None,
        })
        .unwrap();
    let mut client = sql(&url);
    client
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by the test'; END; $$;
             CREATE TRIGGER refuse AFTER INSERT ON subscriptions
                 FOR EACH ROW WHEN (NEW.query = 'refused') EXECUTE FUNCTION refuse();",
        )
        .unwrap();
    let generation = store.subscriptions_generation().unwrap();
    let err = store
        .confirm_signup(id, Schedule::Immediate, Tz::UTC, |_| true, now)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("refused by the test"),
        "{err:#}"
    );
    assert_eq!(store.subscriber("zoe@x.example").unwrap(), None);
    assert_eq!(store.signup(id).unwrap().unwrap().confirmed_at, None);
    assert_eq!(store.subscriptions_generation().unwrap(), generation);

    client
        .batch_execute("DROP TRIGGER refuse ON subscriptions")
        .unwrap();
    let subscriber = store
        .confirm_signup(id, Schedule::Immediate, Tz::UTC, |q| q != "parole", now)
        .unwrap();
    let zoe = store.subscriber("zoe@x.example").unwrap().unwrap();
    assert_eq!(zoe.id, subscriber);
    assert_eq!(zoe.queries, ["asylum", "refused"]);
    assert!(store.signup(id).unwrap().unwrap().confirmed_at.is_some());
}

/// The body hash stands for what was stored from the feed's URL; a feed given a new URL
/// starts over, even if the new URL serves the same bytes.
fn the_body_hash_is_kept_per_url(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/a")])
        .unwrap();
    let first = claim_one(&store, now);
    assert_eq!(first.body_hash, None);
    let generation = store.subscriptions_generation().unwrap();
    let mut hashed = poll(&[], now, generation);
    hashed.body_hash = Some("abc".into());
    store.store_items(&first, &hashed, |_| Vec::new()).unwrap();
    assert_eq!(claim_one(&store, now).body_hash.as_deref(), Some("abc"));
    store
        .sync_feeds(&[feed("f", "https://f.example/a")])
        .unwrap();
    assert_eq!(
        claim_one(&store, now).body_hash.as_deref(),
        Some("abc"),
        "same URL"
    );
    store
        .sync_feeds(&[feed("f", "https://f.example/b")])
        .unwrap();
    assert_eq!(claim_one(&store, now).body_hash, None, "new URL");
}

/// Runs `work(instance)` on two instances (each its own pool) released at the same instant.
fn at_once<T: Send + 'static>(
    url: &str,
    work: impl Fn(&Postgres) -> T + Send + Sync + 'static,
) -> (T, T) {
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let store = Postgres::connect(url, None).unwrap();
            store.ping().unwrap(); // a pooled connection ready before the start
            let (work, barrier) = (work.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                work(&store)
            })
        })
        .collect();
    let mut results = threads.into_iter().map(|t| t.join().unwrap());
    (results.next().unwrap(), results.next().unwrap())
}

fn two_instances_claiming_at_once_never_get_the_same_feed(server: &PgServer) {
    let url = server.fresh_database();
    let store = Postgres::connect(&url, None).unwrap();
    let feeds: Vec<FeedConfig> = (0..200)
        .map(|n| feed(&format!("f{n:03}"), &format!("https://f{n}.example/feed")))
        .collect();
    store.sync_feeds(&feeds).unwrap();
    for round in 0..5 {
        // Each round after the last one's leases ran out: every feed is free again.
        let now = noon() + chrono::Duration::minutes(10 * round);
        let (a, b) = at_once(&url, move |s| {
            s.claim_feeds(now, Duration::from_secs(300), false)
                .unwrap()
                .into_iter()
                .map(|f| f.id)
                .collect::<Vec<_>>()
        });
        let a_ids: HashSet<&String> = a.iter().collect();
        let both: Vec<&String> = b.iter().filter(|id| a_ids.contains(id)).collect();
        assert!(both.is_empty(), "round {round}: both claimed {both:?}");
        assert_eq!(
            a.len() + b.len(),
            200,
            "round {round}: every feed claimed once"
        );
    }
}

fn two_senders_claiming_at_once_never_get_the_same_message(server: &PgServer) {
    let url = server.fresh_database();
    let store = Postgres::connect(&url, None).unwrap();
    let now = noon();
    for n in 0..150 {
        let id = store
            .queue_message(
                &format!("r{n}@x.example"),
                "s",
                "t",
                "<p>h</p>",
                "tidings.test",
                now,
            )
            .unwrap();
        assert_eq!(
            store.outbox().unwrap().last().unwrap().message_id,
            format!("<note.{id}.{}@tidings.test>", now.timestamp())
        );
    }
    let (a, b) = at_once(&url, move |s| {
        let mut got = Vec::new();
        loop {
            let batch = s.claim_mail(now, Duration::from_secs(60), 7).unwrap();
            if batch.is_empty() {
                return got;
            }
            for m in &batch {
                assert!(
                    s.renew_mail_claim(
                        m.id,
                        m.claim.as_deref().unwrap(),
                        now,
                        Duration::from_secs(60)
                    )
                    .unwrap()
                );
            }
            got.extend(batch);
        }
    });
    let a_ids: HashSet<i64> = a.iter().map(|m| m.id).collect();
    let both: Vec<i64> = b
        .iter()
        .map(|m| m.id)
        .filter(|id| a_ids.contains(id))
        .collect();
    assert!(both.is_empty(), "both claimed {both:?}");
    assert_eq!(a.len() + b.len(), 150, "every message claimed once");
    // A claim token has SQLite's form, and only the holder's token marks the row.
    let m = &a[0];
    let claim = m.claim.as_deref().unwrap();
    assert!(
        claim.len() == 24
            && claim
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
        "{claim}"
    );
    assert!(
        !store
            .mark_sent(m.id, Some("0123456789ABCDEF01234567"), now)
            .unwrap()
    );
    assert!(!store.mark_sent(m.id, None, now).unwrap());
    assert!(store.mark_sent(m.id, Some(claim), now).unwrap());
    assert!(
        !store
            .renew_mail_claim(m.id, claim, now, Duration::from_secs(60))
            .unwrap(),
        "sent"
    );
}

/// Two instances taking the same subscriber's digest at the same instant queue one
/// message, which holds every pending match.
fn one_digest_taken_twice_at_once_is_queued_once(server: &PgServer) {
    let url = server.fresh_database();
    let store = Postgres::connect(&url, None).unwrap();
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .unwrap();
    let emails: Vec<String> = (0..3).map(|n| format!("s{n}@x.example")).collect();
    for email in &emails {
        store
            .add_subscription(email, "asylum", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
    }
    let active = store.subscriptions().unwrap();
    let ids: Vec<i64> = active.queries.iter().map(|(id, _)| *id).collect();
    let items: Vec<Item> = (0..5)
        .map(|n| item(&format!("k{n}"), "Asylum news", now))
        .collect();
    let feed = claim_one(&store, now);
    let outcome = store
        .store_items(&feed, &poll(&items, now, active.generation), |_| {
            ids.clone()
        })
        .unwrap();
    assert!(
        matches!(outcome, StoreOutcome::Stored(s) if s.matches == 15),
        "{outcome:?}"
    );
    let due = store.due_digests(now, false).unwrap();
    assert_eq!(due.len(), 3);
    for subscriber in due {
        let (a, b) = at_once(&url, move |s| {
            s.take_digest(subscriber, now, "tidings.test", render_slowly)
                .unwrap()
        });
        let queued: Vec<i64> = a.into_iter().chain(b).collect();
        assert_eq!(queued.len(), 1, "subscriber {subscriber}: {queued:?}");
        let message = store
            .outbox()
            .unwrap()
            .into_iter()
            .find(|m| m.id == queued[0])
            .unwrap();
        assert_eq!(
            message.subject, "5 new",
            "every pending match in the one message"
        );
        assert_eq!(
            message.message_id,
            format!(
                "<digest.{}.{subscriber}.{}@tidings.test>",
                message.id,
                now.timestamp()
            )
        );
    }
    assert_eq!(store.outbox().unwrap().len(), 3);
    assert!(
        store.due_digests(now, true).unwrap().is_empty(),
        "nothing left pending"
    );
}

/// Sign-up limits hold for the cluster: requests from one client at the same instant,
/// through two instances, cannot both pass a limit of one.
fn sign_up_limits_hold_across_instances(server: &PgServer) {
    let url = server.fresh_database();
    let limits = SignupLimits {
        per_client_per_hour: 1,
        per_address_per_day: 3,
    };
    for round in 0..5 {
        let client = format!("192.0.2.{round}");
        let (a, b) = at_once(&url, move |s| {
            let signup = Signup {
                email: "Zoe@x.example".into(),
                queries: vec!["asylum".into()],
                frequency: "daily".into(),
                timezone: "UTC".into(),
                client: client.clone(),
                created_at: noon(),
                confirmed_at: None,
            };
            // The mail is rendered inside the transaction, after the count and the
            // insert: slowly, so the other request counts while this one is uncommitted.
            s.record_signup(&signup, limits, "tidings.test", |id| {
                std::thread::sleep(Duration::from_millis(100));
                Ok((format!("confirm {id}"), "t".into(), "h".into()))
            })
            .unwrap()
        });
        let recorded = [a, b]
            .into_iter()
            .filter(|x| matches!(x, SignupAdmission::Recorded { .. }))
            .count();
        assert_eq!(recorded, 1, "round {round}: {a:?} {b:?}");
    }
    let store = Postgres::connect(&url, None).unwrap();
    let mailed = store.outbox().unwrap();
    assert_eq!(
        mailed.len(),
        3,
        "three confirmations a day per address (any case), then none"
    );
    assert_eq!(
        store
            .recent_signups("zoe@X.example", "192.0.2.0", noon())
            .unwrap(),
        (5, 1)
    );
}

/// An edited item goes out again, marked updated, to whoever got it; pruning removes
/// old mail and the old items no pending match needs, leaving tombstones that keep a
/// pruned item from coming back as new.
fn edits_are_sent_again_and_pruning_keeps_what_is_pending(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let t0 = noon();
    let t1 = t0 + chrono::Duration::days(40);
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .unwrap();
    store
        .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, t0)
        .unwrap();
    let active = store.subscriptions().unwrap();
    let asylum = vec![active.queries[0].0];
    let store_poll = |items: &[Item], now| {
        let feed = claim_one(&store, now);
        match store
            .store_items(&feed, &poll(items, now, active.generation), |_| {
                asylum.clone()
            })
            .unwrap()
        {
            StoreOutcome::Stored(stored) => stored,
            other => panic!("{other:?}"),
        }
    };
    let first = [item("k1", "Asylum one", t0), item("k2", "Asylum two", t0)];
    let stored = store_poll(&first, t0);
    assert_eq!((stored.new_items, stored.matches), (2, 2));
    let subscriber = store.subscriber("a@x.example").unwrap().unwrap().id;
    let sent = store
        .take_digest(subscriber, t0, "tidings.test", render_slowly)
        .unwrap()
        .unwrap();
    let claimed = store.claim_mail(t0, Duration::from_secs(60), 10).unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .mark_sent(sent, claimed[0].claim.as_deref(), t0)
            .unwrap()
    );

    let second = [
        item("k1", "Asylum one", t0),
        item("k2", "Asylum two (corrected)", t0),
        item("k3", "Asylum three", t1),
    ];
    let stored = store_poll(&second, t1);
    assert_eq!(
        (stored.new_items, stored.updated_items, stored.matches),
        (1, 1, 2)
    );

    // k1: old, sent, unchanged: pruned. k2: old but pending again. k3: pending.
    let pruned = store.prune(t1 + chrono::Duration::seconds(1), t1).unwrap();
    assert_eq!(
        (pruned.items, pruned.outbox, pruned.matches),
        (1, 1, 1),
        "{pruned:?}"
    );
    assert!(store.outbox().unwrap().is_empty());
    let titles: Vec<String> = store
        .feed_items("f")
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(titles, ["Asylum three", "Asylum two (corrected)"]);

    let stored = store_poll(&second, t1 + chrono::Duration::hours(1));
    assert_eq!(
        stored,
        Default::default(),
        "the pruned item is not new again"
    );

    let mut shown = Vec::new();
    store
        .take_digest(subscriber, t1, "tidings.test", |who, entries, more| {
            shown = entries
                .iter()
                .map(|e| (e.title.clone(), e.updated))
                .collect();
            render_slowly(who, entries, more)
        })
        .unwrap()
        .unwrap();
    shown.sort();
    assert_eq!(
        shown,
        [
            ("Asylum three".to_string(), false),
            ("Asylum two (corrected)".to_string(), true)
        ]
    );
}

fn backup_to_points_to_pg_dump(server: &PgServer) {
    let store = Postgres::connect(&server.fresh_database(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    let err = format!("{:#}", store.backup_to(&path, false).unwrap_err());
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!path.exists());
}

/// (name, test) for each test function named.
macro_rules! tests {
    ($($test:ident),* $(,)?) => {
        [$((stringify!($test), $test as fn(&PgServer))),*]
    };
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let started = Instant::now();
    let server = if args.list {
        None
    } else {
        PgServer::start_or_skip("PostgreSQL backend tests").map(Arc::new)
    };
    if server.is_some() {
        eprintln!("PostgreSQL test server started in {:?}", started.elapsed());
    }
    let tests = tests![
        migrations_apply_and_reconnecting_is_a_no_op,
        a_database_from_a_newer_tidings_is_refused_and_left_as_it_is,
        errors_never_show_the_password,
        three_instances_starting_at_once_migrate_once,
        a_worker_that_lost_its_feed_claim_writes_nothing,
        storing_with_a_stale_matcher_writes_nothing,
        every_subscription_change_moves_the_generation_and_ids_are_never_reused,
        addresses_compare_as_sqlite_nocase,
        a_confirmation_that_fails_part_way_stores_nothing,
        the_body_hash_is_kept_per_url,
        two_instances_claiming_at_once_never_get_the_same_feed,
        two_senders_claiming_at_once_never_get_the_same_message,
        one_digest_taken_twice_at_once_is_queued_once,
        sign_up_limits_hold_across_instances,
        edits_are_sent_again_and_pruning_keeps_what_is_pending,
        backup_to_points_to_pg_dump,
    ];
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let server = server.clone();
            let ignored = server.is_none() && !args.list;
            Trial::test(name, move || {
                if let Some(server) = &server {
                    test(server);
                }
                Ok(())
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials (and their clones of the server) are gone: this stops it.
    drop(server);
    conclusion.exit_code()
}
