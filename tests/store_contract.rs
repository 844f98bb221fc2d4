//! The store's contract: one set of stories, told through the public [`Store`] front
//! only, run on each backend. Every story is registered twice, `sqlite::<story>` (a fresh
//! temporary database file) and `postgres::<story>` (a fresh database on the one
//! PostgreSQL server of this binary); a few that only PostgreSQL can tell (its
//! migrations, its connection errors) are registered for it alone.
//!
//! Each trial runs on its own multi-thread tokio runtime. Stories about races run on
//! several instances of one database ([`Database::open`]: another `Store::open` of the
//! same file, another pool on the same PostgreSQL database) released at the same
//! instant. The few that must reach under the store (a trigger that makes an insert
//! fail) use [`Database::execute`], with the SQL for each backend.
//!
//! libtest-mimic (`harness = false`) so that the server is stopped after the last trial,
//! failed or not. Without PostgreSQL the `postgres::` trials are reported as ignored,
//! with the reason, unless `TIDINGS_REQUIRE_POSTGRES=1`.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use support::postgres::PgServer;
use tidings::config::FeedConfig;
use tidings::digest::{DigestEntry, Event, Parcels, Rendered, RenderedRound, Schedule};
use tidings::parse::Item;
use tidings::store::NewOutlets;
use tidings::store::{
    ArticleDone, ArticleOutcome, ArticleState, ClusterStats, FeedListSync, FeedListVersion,
    FeedToPoll, FetchLimits, Instance, ServiceStats, Signup, SignupAdmission, SignupLimits, Store,
    StoreOutcome, Stored, Subscriber, SuccessfulPoll, UnchangedPoll,
};
use tidings::store::{
    ChannelId, ChannelKind, ChannelOrigin, ChannelState, Confirmation, NewChannel, OutboxKind,
};
use tidings::store::{OutboxId, OutboxStatus, PollStatus, SignupId, SubscriberId, SubscriptionId};

// ---- the database a trial runs on -----------------------------------------------------------

/// [`Store::connect`] from a plain thread (the tests' blocking parts): a runtime of its
/// own waits for it.
fn connect_now(url: &str, password: Option<&str>) -> anyhow::Result<Store> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Store::connect(url, password))
}

/// How many migrations PostgreSQL's schema has (the files in `migrations/postgres/`).
fn postgres_migrations() -> i32 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i32
}

/// Which backend a trial runs on, and where its database is.
#[derive(Clone)]
enum Database {
    Sqlite(PathBuf),
    Postgres { url: String, server: Arc<PgServer> },
}

impl Database {
    /// A new instance on this database, as another process would have it: for SQLite
    /// its own connection to the file, for PostgreSQL its own pool.
    fn open_now(&self) -> Store {
        match self {
            Database::Sqlite(path) => Store::open(path).unwrap(),
            Database::Postgres { url, .. } => connect_now(url, None).unwrap(),
        }
    }

    /// [`Database::open_now`] from async code (connecting to PostgreSQL blocks), with a
    /// pooled connection ready, so that a race starts when the story says.
    async fn open(&self) -> Store {
        let database = self.clone();
        let store = blocking(move || database.open_now()).await;
        store.ping().await.unwrap();
        store
    }

    /// Runs SQL on the database underneath the store: `sqlite` or `postgres`, whichever
    /// this trial runs on. For the few steps no store operation can take.
    async fn execute(&self, sqlite: &'static str, postgres: &'static str) {
        let database = self.clone();
        blocking(move || match database {
            Database::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sqlite)
                .unwrap(),
            Database::Postgres { url, .. } => sql(&url).batch_execute(postgres).unwrap(),
        })
        .await
    }

    fn postgres(&self) -> (&str, &Arc<PgServer>) {
        match self {
            Database::Postgres { url, server } => (url, server),
            Database::Sqlite(_) => panic!("a PostgreSQL story on SQLite"),
        }
    }
}

/// A plain client on the PostgreSQL database at `url`, for what the store does not
/// offer. Blocks: call it on a blocking thread.
fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

/// Runs `work` on `n` instances of `database` (each opened beforehand), released at the
/// same instant; their results in order.
async fn at_once<T, F, Fut>(database: &Database, n: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Store) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let job = work(database.open().await);
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            job.await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

// ---- what the stories are made of -----------------------------------------------------------

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn at(hour: u32, minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(hour, minute, 0).unwrap()
}

fn feed(id: &str, url: &str) -> FeedConfig {
    FeedConfig {
        id: id.into(),
        name: id.to_uppercase(),
        url: url.parse().unwrap(),
        tags: Vec::new(),
        interval: Duration::from_secs(900),
        options: Default::default(),
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
        declared_lang: None,
    }
}

/// A successful poll of `items` at `now`, matched by a matcher at `generation`; the
/// baseline cutoff a day before `now`, the next poll 15 minutes after.
fn poll(items: &[Item], now: DateTime<Utc>, generation: i64) -> SuccessfulPoll {
    SuccessfulPoll {
        items: items.into(),
        etag: None,
        last_modified: None,
        full_fetch: true,
        moved_to: None,
        repairs: Arc::new([]),
        body_hash: None,
        now,
        next_poll_at: now + minutes(15),
        baseline_cutoff: now - chrono::Duration::days(1),
        matcher_generation: generation,
        snapshot: None,
        stories: Default::default(),
        languages: Default::default(),
        prepared: Default::default(),
    }
}

fn unchanged(etag: &str, now: DateTime<Utc>) -> UnchangedPoll {
    UnchangedPoll {
        etag: Some(etag.into()),
        last_modified: None,
        full_fetch: false,
        moved_to: None,
        now,
        next_poll_at: now + minutes(15),
    }
}

/// Claims the one feed there is (whatever its schedule, with no lease).
async fn claim_one(store: &Store, now: DateTime<Utc>) -> FeedToPoll {
    let mut claimed = store.claim_feeds(now, Duration::ZERO, false).await.unwrap();
    assert_eq!(claimed.len(), 1, "one feed to claim");
    claimed.remove(0)
}

/// Polls the one feed at `now`: `items` are stored, matched to `subscriptions` by a
/// matcher at the current generation.
async fn store_poll(
    store: &Store,
    items: &[Item],
    now: DateTime<Utc>,
    subscriptions: &[SubscriptionId],
) -> Stored {
    let feed = claim_one(store, now).await;
    let generation = store.subscriptions_generation().await.unwrap();
    let subscriptions = subscriptions.to_vec();
    match store
        .store_items(&feed, poll(items, now, generation), move |_, _, _| {
            subscriptions.clone()
        })
        .await
        .unwrap()
    {
        StoreOutcome::Stored(stored) => stored,
        other => panic!("{other:?}"),
    }
}

/// Adds `query` for `email` and returns the new subscription's id.
async fn subscribe(
    store: &Store,
    email: &str,
    query: &str,
    schedule: Schedule,
    now: DateTime<Utc>,
) -> SubscriptionId {
    assert!(
        store
            .add_subscription(email, query, schedule, Tz::UTC, now)
            .await
            .unwrap()
    );
    let subscriber = store.subscriber(email).await.unwrap().unwrap();
    let searches = store.subscriptions_of(subscriber.id).await.unwrap();
    searches.iter().find(|(_, q)| q == query).unwrap().0
}

async fn subscriber_id(store: &Store, email: &str) -> SubscriberId {
    store.subscriber(email).await.unwrap().unwrap().id
}

/// A digest's subject is "N new"; its text the titles, one a line (updated ones marked).
fn render_mail(entries: &[DigestEntry], more_follow: bool) -> Rendered {
    let lines: Vec<String> = entries
        .iter()
        .map(|e| format!("{}{}", e.title, if e.updated { " (updated)" } else { "" }))
        .collect();
    Rendered {
        subject: format!(
            "{} new{}",
            entries.len(),
            if more_follow { "+" } else { "" }
        ),
        text: lines.join("\n"),
        html: "<p>html</p>".into(),
    }
}

/// The mail as [`render_mail`] makes it, and for each destination an event whose title
/// is "N new" and whose text is the titles, one a line.
fn render(_: &Subscriber, parcels: &Parcels) -> anyhow::Result<RenderedRound> {
    let email =
        (!parcels.email.is_empty()).then(|| render_mail(&parcels.email, parcels.more_follow));
    let events = parcels
        .channels
        .iter()
        .map(|(channel, taken)| {
            let titles: Vec<&str> = taken.iter().map(|e| e.title.as_str()).collect();
            Event::notice(
                "tidings.digest",
                "",
                &channel.name,
                &format!("{} new", taken.len()),
                &titles.join("\n"),
                None,
                noon(),
            )
        })
        .collect();
    Ok(RenderedRound { email, events })
}

/// [`render`], slowly: a second take of the same digest started meanwhile must wait for
/// this one, not read the same pending matches (rendering runs inside the transaction).
fn render_slowly(subscriber: &Subscriber, parcels: &Parcels) -> anyhow::Result<RenderedRound> {
    std::thread::sleep(Duration::from_millis(100));
    render(subscriber, parcels)
}

/// Takes `subscriber`'s digest at `now`; its outbox id.
async fn take(store: &Store, subscriber: SubscriberId, now: DateTime<Utc>) -> Option<OutboxId> {
    store
        .take_digest(subscriber, now, false, "tidings.test", render)
        .await
        .unwrap()
}

async fn message(store: &Store, id: OutboxId) -> tidings::store::OutboxMessage {
    let outbox = store.outbox().await.unwrap();
    outbox.into_iter().find(|m| m.id == id).unwrap()
}

/// Claims the pending messages due at `now` and returns the one with this id, claimed.
async fn claim_message(store: &Store, id: OutboxId, now: DateTime<Utc>) -> String {
    let claimed = store
        .claim_mail(now, Duration::from_secs(60), 100)
        .await
        .unwrap();
    let message = claimed.iter().find(|m| m.id == id);
    message
        .and_then(|m| m.claim.clone())
        .unwrap_or_else(|| panic!("message {id} not claimed at {now}"))
}

fn signup(email: &str, queries: &[&str], client: &str, created_at: DateTime<Utc>) -> Signup {
    Signup {
        email: email.into(),
        queries: queries.iter().map(|q| q.to_string()).collect(),
        frequency: "daily".into(),
        timezone: "UTC".into(),
        client: client.into(),
        created_at,
        confirmed_at: None,
        locale: "en".into(),
    }
}

fn confirmation(id: SignupId) -> anyhow::Result<(String, String, String)> {
    Ok((format!("confirm {id}"), "text".into(), "<p>html</p>".into()))
}

// ---- polling and ingesting -------------------------------------------------------------------

/// The first poll of a feed is its baseline: everything is stored, but only what was
/// published since the cutoff can match. After it, every new item can match; an item
/// seen before is never new again.
async fn a_baseline_poll_stores_everything_and_matches_only_what_is_new(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, t0).await;
    let mut undated = item("k3", "Asylum undated", t0);
    undated.published = None;
    let first = [
        item("k1", "Asylum new", t0 - minutes(60)),
        item("k2", "Asylum old", t0 - chrono::Duration::days(3)),
        undated,
    ];
    let stored = store_poll(&store, &first, t0, &[asylum]).await;
    assert_eq!(
        stored,
        Stored {
            new_items: 3,
            updated_items: 0,
            matches: 1,
            articles_pending: 0,
        },
        "the baseline matches only what is dated after its cutoff"
    );
    let t1 = t0 + minutes(60);
    let again = store_poll(&store, &first, t1, &[asylum]).await;
    assert_eq!(again, Stored::default(), "nothing is new twice");

    let mut second = first.to_vec();
    second.push(item("k4", "Asylum late", t0 - chrono::Duration::days(30)));
    let stored = store_poll(&store, &second, t1, &[asylum]).await;
    assert_eq!(
        (stored.new_items, stored.matches),
        (1, 1),
        "after the baseline"
    );

    let titles = |items: Vec<tidings::store::StoredItem>| -> Vec<String> {
        items.into_iter().map(|i| i.title).collect()
    };
    assert_eq!(
        titles(store.items_since(t0).await.unwrap()),
        ["Asylum undated", "Asylum new", "Asylum old", "Asylum late"],
        "newest (published, else first seen) first"
    );
    let since_t1 = store.items_since(t1).await.unwrap();
    assert_eq!(since_t1.len(), 1);
    assert_eq!(
        (
            since_t1[0].feed_id.as_str(),
            since_t1[0].feed_name.as_str(),
            since_t1[0].first_seen
        ),
        ("f", "F", t1)
    );
    let matched: Vec<String> = store
        .subscription_matches(asylum, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.title)
        .collect();
    assert_eq!(matched, ["Asylum late", "Asylum new"], "newest match first");

    let subscriber = subscriber_id(&store, "a@x.example").await;
    assert_eq!(store.due_digests(t1, false).await.unwrap(), [subscriber]);
    let id = take(&store, subscriber, t1).await.unwrap();
    let digest = message(&store, id).await;
    assert_eq!(digest.subject, "2 new");
    assert!(store.due_digests(t1, false).await.unwrap().is_empty());
}

/// A feed's claim is valid while it is held: nobody else takes the feed before its
/// lease ends; after, another worker does, and the old holder (whose lease ran out while
/// it waited) neither fetches it nor writes any result, nor releases the new claim.
async fn a_worker_that_lost_its_feed_claim_writes_nothing(store: Store, db: Database) {
    let other = db.open().await;
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let lease = Duration::from_secs(300);
    let old = store.claim_feeds(t0, lease, false).await.unwrap().remove(0);
    let almost = t0 + chrono::Duration::seconds(299);
    assert!(
        other
            .claim_feeds(almost, lease, false)
            .await
            .unwrap()
            .is_empty(),
        "held until the lease ends"
    );
    let later = t0 + chrono::Duration::seconds(301);
    let new = other
        .claim_feeds(later, lease, false)
        .await
        .unwrap()
        .remove(0);
    assert_ne!(old.claim, new.claim);
    assert!(!store.renew_feed_claim(&old, later, lease).await.unwrap());
    assert!(other.renew_feed_claim(&new, later, lease).await.unwrap());

    let failed = store
        .record_failure(&old, later, "http", "HTTP 500", later)
        .await
        .unwrap();
    assert!(!failed, "the old holder's failure is not recorded");
    assert_eq!(store.consecutive_failures("f").await.unwrap(), 0);
    assert!(
        !store
            .record_not_modified(&old, later, later, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_unchanged(&old, unchanged("e", later))
            .await
            .unwrap()
    );
    assert!(!store.record_gone(&old, later, "HTTP 410").await.unwrap());
    let items = [item("k", "Asylum", later)];
    let generation = store.subscriptions_generation().await.unwrap();
    let outcome = store
        .store_items(&old, poll(&items, later, generation), |_, _, _| Vec::new())
        .await
        .unwrap();
    assert_eq!(outcome, StoreOutcome::ClaimLost);
    assert!(store.feed_items("f").await.unwrap().is_empty());
    assert_eq!(store.last_poll_at("f").await.unwrap(), None);

    store.release_claim(&old).await.unwrap();
    assert!(
        store
            .claim_feeds(later, lease, false)
            .await
            .unwrap()
            .is_empty(),
        "the old holder cannot release the new holder's claim"
    );
    let outcome = other
        .store_items(&new, poll(&items, later, generation), |_, _, _| Vec::new())
        .await
        .unwrap();
    assert!(matches!(outcome, StoreOutcome::Stored(s) if s.new_items == 1));
    let status = &store.feed_statuses().await.unwrap()[0];
    assert_eq!(status.last_status, Some(PollStatus::Ok));
    assert_eq!(status.items, 1);
    // Its result released the claim: due again once its next poll comes.
    let next = later + minutes(15);
    assert!(
        store
            .claim_feeds(next - minutes(1), lease, true)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.claim_feeds(next, lease, true).await.unwrap().len(), 1);
}

/// A worker that shuts down lets go of its claims: the feed is due again at once.
async fn a_released_claim_frees_the_feed_at_once(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let lease = Duration::from_secs(300);
    let held = store.claim_feeds(t0, lease, true).await.unwrap().remove(0);
    assert!(store.claim_feeds(t0, lease, true).await.unwrap().is_empty());
    store.release_claim(&held).await.unwrap();
    let again = store.claim_feeds(t0, lease, true).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].claim, held.claim, "a new claim each time");
}

/// The feeds held by a claim, and when the last claim ends: what a poll of all feeds
/// leaves alone. A released or lapsed claim holds nothing.
async fn claims_held_counts_live_claims_and_their_end(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[
            feed("a", "https://a.example/feed"),
            feed("b", "https://b.example/feed"),
            feed("c", "https://c.example/feed"),
        ])
        .await
        .unwrap();
    assert_eq!(store.claims_held(t0).await.unwrap(), (0, None));
    store
        .claim_due_feeds(t0, Duration::from_secs(300), 1)
        .await
        .unwrap();
    let later = t0 + chrono::Duration::seconds(60);
    let second = store
        .claim_due_feeds(later, Duration::from_secs(300), 1)
        .await
        .unwrap();
    let ends = later + chrono::Duration::seconds(300);
    assert_eq!(store.claims_held(later).await.unwrap(), (2, Some(ends)));
    store.release_claim(&second[0]).await.unwrap();
    assert_eq!(
        store.claims_held(later).await.unwrap(),
        (1, Some(t0 + chrono::Duration::seconds(300)))
    );
    // Past its lease, a claim holds nothing.
    let lapsed = t0 + chrono::Duration::seconds(300);
    assert_eq!(store.claims_held(lapsed).await.unwrap(), (0, None));
}

/// A claim whose owner is gone is taken over at once, not after its lease: its process
/// ended on this host, or its instance stopped reporting. The claims of a live process
/// and of an instance that reports are left alone, and every claim names its owner.
async fn claims_of_gone_owners_are_taken_over_at_once(store: Store, db: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[
            feed("dead", "https://dead.example/feed"),
            feed("silent", "https://silent.example/feed"),
            feed("alive", "https://alive.example/feed"),
            feed("reporting", "https://reporting.example/feed"),
            feed("elsewhere", "https://other-namespace.example/feed"),
            feed("older", "https://older.example/feed"),
        ])
        .await
        .unwrap();
    // A process of this host that has ended; one that runs (this one, another start).
    // The same pid seen from another PID namespace (another container with the same
    // hostname) says nothing; an id without a namespace (an older Tidings) is taken as
    // this host's.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let pid = ended.id();
    ended.wait().unwrap();
    let this = tidings::store::Instance::this();
    let (host, ns) = (&this.host, &this.pid_scope);
    let (t, until, long_ago) = (t0.timestamp(), t0.timestamp() + 300, t0.timestamp() - 600);
    let setup = format!(
        "UPDATE feeds SET claim = 'held', claimed_until = {until}, claimed_at = {t} - 60,
             claimed_by = CASE id WHEN 'dead' THEN '{host}:{pid}:1:{ns}'
                                  WHEN 'elsewhere' THEN '{host}:{pid}:1:{ns}0'
                                  WHEN 'older' THEN '{host}:{pid}:1'
                                  WHEN 'alive' THEN '{host}:{}:1:{ns}'
                                  WHEN 'silent' THEN 'elsewhere:42:1'
                                  ELSE 'elsewhere:43:1' END;
         INSERT INTO instances (id, host, pid, version, started_at, seen_at) VALUES
             ('elsewhere:42:1', 'elsewhere', 42, 'x', {long_ago}, {long_ago}),
             ('elsewhere:43:1', 'elsewhere', 43, 'x', {long_ago}, {t} - 10);",
        std::process::id()
    );
    let setup: &'static str = Box::leak(setup.into_boxed_str());
    db.execute(setup, setup).await;

    let lease = Duration::from_secs(300);
    let mut taken: Vec<String> = store
        .claim_feeds(t0, lease, false)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    taken.sort();
    assert_eq!(taken, ["dead", "older", "silent"]);
    let owners: Vec<(String, String)> = store
        .feed_statuses()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.id, f.claim.expect("claimed").by))
        .collect();
    for (id, by) in owners {
        match id.as_str() {
            "dead" | "silent" | "older" => assert_eq!(by, this.id, "{id}"),
            "alive" => assert_eq!(by, format!("{host}:{}:1:{ns}", std::process::id())),
            "elsewhere" => assert_eq!(by, format!("{host}:{pid}:1:{ns}0")),
            _ => assert_eq!(by, "elsewhere:43:1"),
        }
    }
    assert_eq!(store.claims_held(t0).await.unwrap().0, 6);
}

/// Two workers (two instances) claiming at the same instant share the feeds between
/// them: none is claimed by both, none left out.
async fn two_workers_claiming_at_once_never_get_the_same_feed(store: Store, db: Database) {
    let feeds: Vec<FeedConfig> = (0..200)
        .map(|n| feed(&format!("f{n:03}"), &format!("https://f{n}.example/feed")))
        .collect();
    store.sync_feeds(&feeds).await.unwrap();
    for round in 0..5 {
        // Each round after the last one's leases ran out: every feed is free again.
        let now = noon() + minutes(10 * round);
        let claimed = at_once(&db, 2, move |s| async move {
            s.claim_feeds(now, Duration::from_secs(300), false)
                .await
                .unwrap()
                .into_iter()
                .map(|f| f.id)
                .collect::<Vec<_>>()
        })
        .await;
        let a: HashSet<&String> = claimed[0].iter().collect();
        let both: Vec<&String> = claimed[1].iter().filter(|id| a.contains(id)).collect();
        assert!(both.is_empty(), "round {round}: both claimed {both:?}");
        assert_eq!(
            claimed[0].len() + claimed[1].len(),
            200,
            "round {round}: every feed claimed once"
        );
    }
}

/// Items are never matched by a matcher older than the subscriptions.
async fn storing_with_a_stale_matcher_writes_nothing(store: Store, _: Database) {
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let stale = store.subscriptions_generation().await.unwrap();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, now).await;
    let active = store.subscriptions().await.unwrap();
    assert_ne!(active.generation, stale);
    assert_eq!(active.queries, [(asylum, "asylum".to_string())]);
    let feed = claim_one(&store, now).await;
    let items = [item("k", "Asylum", now)];
    let outcome = store
        .store_items(&feed, poll(&items, now, stale), move |_, _, _| vec![asylum])
        .await
        .unwrap();
    assert_eq!(outcome, StoreOutcome::StaleMatcher);
    assert!(
        store.feed_items("f").await.unwrap().is_empty(),
        "nothing stored"
    );
    assert_eq!(store.last_poll_at("f").await.unwrap(), None);
    let outcome = store
        .store_items(
            &feed,
            poll(&items, now, active.generation),
            move |_, _, _| vec![asylum],
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, StoreOutcome::Stored(s) if s.new_items == 1 && s.matches == 1),
        "{outcome:?}"
    );
    assert_eq!(store.due_digests(now, false).await.unwrap().len(), 1);
}

/// The body hash stands for what was stored from the feed's URL; a feed given a new URL
/// starts over, even if the new URL serves the same bytes.
async fn the_body_hash_is_kept_per_url(store: Store, _: Database) {
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/a")])
        .await
        .unwrap();
    let first = claim_one(&store, now).await;
    assert_eq!(first.body_hash, None);
    let generation = store.subscriptions_generation().await.unwrap();
    let mut hashed = poll(&[], now, generation);
    hashed.body_hash = Some("abc".into());
    store
        .store_items(&first, hashed, |_, _, _| Vec::new())
        .await
        .unwrap();
    assert_eq!(
        claim_one(&store, now).await.body_hash.as_deref(),
        Some("abc")
    );
    store
        .sync_feeds(&[feed("f", "https://f.example/a")])
        .await
        .unwrap();
    assert_eq!(
        claim_one(&store, now).await.body_hash.as_deref(),
        Some("abc"),
        "same URL"
    );
    store
        .sync_feeds(&[feed("f", "https://f.example/b")])
        .await
        .unwrap();
    assert_eq!(claim_one(&store, now).await.body_hash, None, "new URL");
}

/// What `tidings feeds status` shows after each kind of poll result.
async fn feed_statuses_follow_ok_not_modified_failure_and_gone(store: Store, _: Database) {
    let lease = Duration::from_secs(300);
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let status = store.feed_statuses().await.unwrap().remove(0);
    assert_eq!(
        (
            status.id.as_str(),
            status.name.as_str(),
            status.url.as_str()
        ),
        ("f", "F", "https://f.example/feed")
    );
    assert!(status.active && !status.gone);
    assert_eq!((status.last_status, status.last_poll_at), (None, None));

    // 200: ok, with validators and repairs.
    let polled = store.claim_feeds(t0, lease, true).await.unwrap().remove(0);
    let generation = store.subscriptions_generation().await.unwrap();
    let mut ok = poll(&[item("k", "Asylum", t0)], t0, generation);
    ok.etag = Some("\"e1\"".into());
    ok.last_modified = Some("Sat, 28 Nov 2026 11:00:00 GMT".into());
    ok.repairs = vec!["closed an unclosed <item>".to_string()].into();
    store
        .store_items(&polled, ok, |_, _, _| Vec::new())
        .await
        .unwrap();
    let status = store.feed_statuses().await.unwrap().remove(0);
    assert_eq!(status.last_status, Some(PollStatus::Ok));
    assert_eq!(
        (
            status.last_poll_at,
            status.last_success_at,
            status.next_poll_at
        ),
        (Some(t0), Some(t0), t0 + minutes(15))
    );
    assert_eq!(status.items, 1);
    assert_eq!(status.repairs, ["closed an unclosed <item>"]);
    assert!(
        store
            .claim_feeds(t0 + minutes(14), lease, true)
            .await
            .unwrap()
            .is_empty(),
        "not due before its next poll"
    );
    let t1 = t0 + minutes(15);
    let polled = store.claim_feeds(t1, lease, true).await.unwrap().remove(0);
    assert_eq!(polled.etag.as_deref(), Some("\"e1\""));
    assert_eq!(
        polled.last_modified.as_deref(),
        Some("Sat, 28 Nov 2026 11:00:00 GMT")
    );
    assert_eq!(
        (polled.baseline_at, polled.last_full_fetch_at),
        (Some(t0), Some(t0))
    );

    // 304, from a new home.
    let moved = "https://new.example/feed";
    assert!(
        store
            .record_not_modified(&polled, t1, t1 + minutes(15), Some(moved))
            .await
            .unwrap()
    );
    let status = store.feed_statuses().await.unwrap().remove(0);
    assert_eq!(status.last_status, Some(PollStatus::NotModified));
    assert_eq!(status.moved_to.as_deref(), Some(moved));
    assert_eq!(
        (status.last_success_at, status.next_poll_at),
        (Some(t1), t1 + minutes(15))
    );

    // Two failures in a row.
    let t2 = t1 + minutes(15);
    let t3 = t2 + minutes(15);
    for now in [t2, t3] {
        let polled = store.claim_feeds(now, lease, true).await.unwrap().remove(0);
        assert!(
            store
                .record_failure(&polled, now, "http", "HTTP 500", now + minutes(15))
                .await
                .unwrap()
        );
    }
    let status = store.feed_statuses().await.unwrap().remove(0);
    assert_eq!(status.last_status, Some(PollStatus::Error));
    assert_eq!(
        (
            status.last_error.as_deref(),
            status.last_error_kind.as_deref()
        ),
        (Some("HTTP 500"), Some("http"))
    );
    assert_eq!(
        (status.last_error_at, status.last_poll_at),
        (Some(t3), Some(t3))
    );
    assert_eq!(
        status.last_success_at,
        Some(t1),
        "kept from the last success"
    );
    assert_eq!(status.consecutive_failures, 2);
    assert_eq!(store.consecutive_failures("f").await.unwrap(), 2);
    let failing = store.failing_feeds(2).await.unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(
        (
            failing[0].name.as_str(),
            failing[0].since,
            failing[0].error.as_str()
        ),
        ("F", t2, "HTTP 500"),
        "failing since the first failure of the run"
    );
    assert!(store.failing_feeds(3).await.unwrap().is_empty());

    // A 200 with the body stored last time: fine again, new validators kept.
    let t4 = t3 + minutes(15);
    let polled = store.claim_feeds(t4, lease, true).await.unwrap().remove(0);
    assert_eq!(polled.consecutive_failures, 2);
    assert!(
        store
            .record_unchanged(&polled, unchanged("\"e2\"", t4))
            .await
            .unwrap()
    );
    let status = store.feed_statuses().await.unwrap().remove(0);
    assert_eq!(
        (
            status.last_status.map(PollStatus::as_str),
            status.consecutive_failures
        ),
        (Some("not-modified"), 0)
    );
    assert!(store.failing_feeds(1).await.unwrap().is_empty());
    let t5 = t4 + minutes(15);
    let claimed = store.claim_feeds(t5, lease, true).await.unwrap().remove(0);
    assert_eq!(claimed.etag.as_deref(), Some("\"e2\""));

    // 410: gone, never polled again (until its URL changes).
    assert!(store.record_gone(&claimed, t5, "HTTP 410").await.unwrap());
    let status = store.feed_statuses().await.unwrap().remove(0);
    assert!(status.gone && status.active);
    assert_eq!(
        (
            status.last_status.map(PollStatus::as_str),
            status.last_error_kind.as_deref()
        ),
        (Some("gone"), Some("gone"))
    );
    assert_eq!(store.last_poll_at("f").await.unwrap(), Some(t5));
    let far = t5 + chrono::Duration::days(30);
    assert!(
        store
            .claim_feeds(far, lease, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.failing_feeds(99).await.unwrap().len(),
        1,
        "gone counts as failing"
    );
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    assert!(
        store
            .claim_feeds(far, lease, false)
            .await
            .unwrap()
            .is_empty(),
        "still gone at the same URL"
    );
}

/// The feed table follows the config: feeds no longer configured stop being polled
/// (their items stay); a feed whose URL changed starts over, and a poll of its old URL
/// still in flight records nothing.
async fn sync_feeds_deactivates_removed_feeds_and_restarts_a_moved_one(store: Store, _: Database) {
    let lease = Duration::from_secs(300);
    let t0 = noon();
    store
        .sync_feeds(&[
            feed("a", "https://a.example/1"),
            feed("b", "https://b.example/feed"),
            feed("c", "https://c.example/feed"),
        ])
        .await
        .unwrap();
    let generation = store.subscriptions_generation().await.unwrap();
    for claimed in store.claim_feeds(t0, lease, true).await.unwrap() {
        let mut ok = poll(&[item("k", "Asylum", t0)], t0, generation);
        ok.etag = Some(format!("etag-{}", claimed.id));
        ok.body_hash = Some("h".into());
        store
            .store_items(&claimed, ok, |_, _, _| Vec::new())
            .await
            .unwrap();
    }
    let t1 = t0 + minutes(15);
    let mut due = store.claim_feeds(t1, lease, true).await.unwrap();
    due.sort_by(|x, y| x.id.cmp(&y.id));
    let [in_flight, b, c] = <[FeedToPoll; 3]>::try_from(due).unwrap();
    assert!(
        store
            .record_failure(&b, t1, "http", "HTTP 500", t1)
            .await
            .unwrap()
    );
    assert!(store.record_gone(&c, t1, "HTTP 410").await.unwrap());

    let mut a = feed("a", "https://a.example/2");
    a.name = "A, moved".into();
    store
        .sync_feeds(&[a, feed("c", "https://c.example/new")])
        .await
        .unwrap();
    let statuses = store.feed_statuses().await.unwrap();
    let by_id = |id: &str| statuses.iter().find(|s| s.id == id).unwrap().clone();
    let (a, b, c) = (by_id("a"), by_id("b"), by_id("c"));
    assert!(!b.active, "removed from the config");
    assert_eq!(
        (b.items, b.consecutive_failures),
        (1, 1),
        "its state and items stay"
    );
    assert!(a.active && c.active && !c.gone);
    assert_eq!(
        (a.name.as_str(), a.url.as_str(), a.last_status, a.items),
        ("A, moved", "https://a.example/2", None, 1)
    );

    let mut claimed = store.claim_feeds(t1, lease, true).await.unwrap();
    claimed.sort_by(|x, y| x.id.cmp(&y.id));
    let ids: Vec<&str> = claimed.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "c"],
        "due at once at their new URLs; b not polled"
    );
    for moved in &claimed {
        assert_eq!(
            (
                moved.etag.as_deref(),
                moved.baseline_at,
                moved.body_hash.as_deref(),
                moved.consecutive_failures
            ),
            (None, None, None, 0),
            "{} starts over",
            moved.id
        );
    }
    assert_eq!(claimed[0].url, "https://a.example/2");

    // The poll of a's old URL, still under its lease, is of another feed now.
    let outcome = store
        .store_items(
            &in_flight,
            poll(&[item("k2", "Old", t1)], t1, generation),
            |_, _, _| Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, StoreOutcome::ClaimLost);
    assert!(
        !store
            .record_not_modified(&in_flight, t1, t1, None)
            .await
            .unwrap()
    );

    // Configured again at the same URL: polled again, its state as it was.
    store
        .sync_feeds(&[feed("b", "https://b.example/feed")])
        .await
        .unwrap();
    let b = store.claim_feeds(t1, Duration::ZERO, false).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(
        (
            b[0].id.as_str(),
            b[0].etag.as_deref(),
            b[0].consecutive_failures
        ),
        ("b", Some("etag-b"), 1)
    );
}

// ---- subscriptions and matching --------------------------------------------------------------

/// Every kind of change, made through any path (a cascade included), moves the
/// generation, and a removed subscription's id never comes back.
async fn every_subscription_change_moves_the_generation_and_ids_are_never_reused(
    store: Store,
    _: Database,
) {
    let now = noon();
    let id_of = |store: Store, query: &'static str| async move {
        store
            .subscriptions()
            .await
            .unwrap()
            .queries
            .into_iter()
            .find(|(_, q)| q == query)
            .map(|(id, _)| id)
    };
    let mut seen = vec![store.subscriptions_generation().await.unwrap()];
    let mut step = async |name: &str| {
        let g = store.subscriptions_generation().await.unwrap();
        assert!(!seen.contains(&g), "{name}: generation {g} seen before");
        seen.push(g);
    };
    subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, now).await;
    step("add").await;
    let daca = subscribe(&store, "b@x.example", "DACA", Schedule::Immediate, now).await;
    step("add a second").await;
    let b = subscriber_id(&store, "b@x.example").await;
    assert!(
        store
            .set_subscription_paused(b, daca, true, now)
            .await
            .unwrap()
    );
    step("pause").await;
    assert_eq!(
        id_of(store.clone(), "DACA").await,
        None,
        "a paused search is not matched"
    );
    assert_eq!(
        store.subscription_states(b).await.unwrap(),
        [(daca, "DACA".to_string(), true)]
    );
    assert!(
        store
            .set_subscription_paused(b, daca, false, now)
            .await
            .unwrap()
    );
    step("resume").await;
    assert_eq!(id_of(store.clone(), "DACA").await, Some(daca));
    assert!(store.remove_subscriber("B@X.example").await.unwrap());
    step("remove the subscriber, any case (cascade)").await;
    let tps = subscribe(&store, "c@x.example", "TPS", Schedule::Immediate, now).await;
    step("add after remove").await;
    assert!(
        tps > daca,
        "id {daca} of a removed search was reused ({tps})"
    );
    let c = subscriber_id(&store, "c@x.example").await;
    assert!(store.remove_subscription(c, tps).await.unwrap());
    step("remove one search").await;
    assert!(
        !store.remove_subscription(c, tps).await.unwrap(),
        "gone already"
    );
    let visa = subscribe(&store, "c@x.example", "visa", Schedule::Immediate, now).await;
    step("add to a subscriber with no search left").await;
    assert!(
        visa > tps,
        "id {tps} of a removed search was reused ({visa})"
    );
    let active = store.subscriptions().await.unwrap();
    assert_eq!(active.generation, *seen.last().unwrap());
    let queries: Vec<&str> = active.queries.iter().map(|(_, q)| q.as_str()).collect();
    assert_eq!(queries, ["asylum", "visa"]);
}

/// Addresses are one subscriber whatever their ASCII case, as SQLite's NOCASE has it;
/// other letters are not folded (NOCASE does not fold them either).
async fn addresses_compare_case_insensitively_in_ascii_only(store: Store, _: Database) {
    let now = noon();
    let add = |email: &'static str, query: &'static str| {
        let store = store.clone();
        async move {
            store
                .add_subscription(email, query, Schedule::Immediate, Tz::UTC, now)
                .await
                .unwrap()
        }
    };
    assert!(add("Zoe@X.example", "asylum").await);
    assert!(add("zoe@x.EXAMPLE", "parole").await);
    assert!(
        !add("ZOE@x.example", "asylum").await,
        "the same search again"
    );
    assert!(add("Émile@x.example", "TPS").await);
    assert!(add("émile@x.example", "TPS").await);
    let subscribers = store.subscribers().await.unwrap();
    let emails: Vec<&str> = subscribers.iter().map(|s| s.email.as_str()).collect();
    assert_eq!(
        emails,
        ["Zoe@X.example", "Émile@x.example", "émile@x.example"]
    );
    assert_eq!(subscribers[0].queries, ["asylum", "parole"]);
    let zoe = store.subscriber(" zoe@x.example ").await.unwrap().unwrap();
    assert_eq!(zoe.queries, ["asylum", "parole"]);
    assert!(store.resume_subscriber("ZOE@X.EXAMPLE").await.unwrap());
    let email_of = async |email: &str| store.subscriber(email).await.unwrap().map(|s| s.email);
    assert_eq!(
        email_of("ÉMILE@X.EXAMPLE").await.as_deref(),
        Some("Émile@x.example")
    );
    assert_eq!(
        email_of("éMILE@x.example").await.as_deref(),
        Some("émile@x.example")
    );
    assert_eq!(email_of("ÈMILE@x.example").await, None);
    assert!(store.remove_subscriber("ÉMILE@X.EXAMPLE").await.unwrap());
    let emails: Vec<String> = store
        .subscribers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.email)
        .collect();
    assert_eq!(emails, ["Zoe@X.example", "émile@x.example"]);
}

/// A subscriber is found by id and by address in any case, with their schedule, zone
/// and searches; their next digest moves when (and only when) the schedule changes.
async fn subscribers_are_found_by_id_and_by_address_in_any_case(store: Store, _: Database) {
    let now = noon();
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let weekly = Schedule::Weekly {
        day: Weekday::Fri,
        at: at(17, 0),
    };
    assert!(
        store
            .add_subscription("Zoe@X.example", "asylum", weekly, berlin, now)
            .await
            .unwrap()
    );
    let zoe = store.subscriber("zoe@x.EXAMPLE").await.unwrap().unwrap();
    assert_eq!(
        (zoe.email.as_str(), zoe.schedule, zoe.timezone),
        ("Zoe@X.example", weekly, berlin)
    );
    // Saturday noon UTC: next Friday, 17:00 in Berlin (16:00 UTC).
    let friday = Utc.with_ymd_and_hms(2026, 12, 4, 16, 0, 0).unwrap();
    assert_eq!(zoe.next_digest_at, Some(friday));
    assert_eq!((zoe.bounces, zoe.paused_at), (0, None));
    assert_eq!(zoe.queries, ["asylum"]);
    assert_eq!(
        store.subscriber_by_id(zoe.id).await.unwrap(),
        Some(zoe.clone())
    );
    assert_eq!(
        store
            .subscriber_by_id(SubscriberId(zoe.id.0 + 1000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.subscriber("nobody@x.example").await.unwrap(), None);

    let searches = store.subscriptions_of(zoe.id).await.unwrap();
    assert_eq!(searches.len(), 1);
    let (asylum, _) = searches[0];
    assert_eq!(
        store.subscription(asylum).await.unwrap(),
        Some(("asylum".to_string(), "Zoe@X.example".to_string()))
    );
    assert_eq!(
        store
            .subscription(SubscriptionId(asylum.0 + 1000))
            .await
            .unwrap(),
        None
    );

    // The same schedule a day later: the next digest stays where it was.
    let tomorrow = now + chrono::Duration::days(1);
    store
        .add_subscription("ZOE@x.example", "parole", weekly, berlin, tomorrow)
        .await
        .unwrap();
    let zoe = store.subscriber_by_id(zoe.id).await.unwrap().unwrap();
    assert_eq!(zoe.queries, ["asylum", "parole"]);
    assert_eq!(zoe.next_digest_at, Some(friday));
    // Another schedule: computed anew.
    let daily = Schedule::Daily { at: at(8, 0) };
    store
        .add_subscription("zoe@x.example", "visa", daily, Tz::UTC, tomorrow)
        .await
        .unwrap();
    let zoe = store.subscriber_by_id(zoe.id).await.unwrap().unwrap();
    assert_eq!((zoe.schedule, zoe.timezone), (daily, Tz::UTC));
    assert_eq!(
        zoe.next_digest_at,
        Some(Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap())
    );
    assert!(
        store
            .set_schedule(zoe.id, Schedule::Hourly, Tz::UTC, now)
            .await
            .unwrap()
    );
    let zoe = store.subscriber_by_id(zoe.id).await.unwrap().unwrap();
    assert_eq!(zoe.schedule, Schedule::Hourly);
    assert_eq!(zoe.next_digest_at, Some(now + minutes(60)));
    assert!(
        store
            .set_schedule(zoe.id, Schedule::Immediate, Tz::UTC, now)
            .await
            .unwrap()
    );
    let zoe = store.subscriber_by_id(zoe.id).await.unwrap().unwrap();
    assert_eq!(
        (zoe.schedule, zoe.next_digest_at),
        (Schedule::Immediate, None)
    );
    assert!(
        !store
            .set_schedule(
                SubscriberId(zoe.id.0 + 1000),
                Schedule::Hourly,
                Tz::UTC,
                now
            )
            .await
            .unwrap()
    );
}

/// An edited item goes out again, marked updated, to whoever got it; pruning removes
/// old mail and the old items no pending match needs, leaving tombstones that keep a
/// pruned item still in the feed (edited or not) from coming back as new.
async fn edits_are_sent_again_and_pruning_keeps_what_is_pending(store: Store, _: Database) {
    let t0 = noon();
    let t1 = t0 + chrono::Duration::days(40);
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, t0).await;
    let first = [item("k1", "Asylum one", t0), item("k2", "Asylum two", t0)];
    let stored = store_poll(&store, &first, t0, &[asylum]).await;
    assert_eq!((stored.new_items, stored.matches), (2, 2));
    let subscriber = subscriber_id(&store, "a@x.example").await;
    let sent = take(&store, subscriber, t0).await.unwrap();
    let claim = claim_message(&store, sent, t0).await;
    assert!(store.mark_sent(sent, Some(&claim), t0).await.unwrap());

    let second = [
        item("k1", "Asylum one", t0),
        item("k2", "Asylum two (corrected)", t0),
        item("k3", "Asylum three", t1),
    ];
    let stored = store_poll(&store, &second, t1, &[asylum]).await;
    assert_eq!(
        (stored.new_items, stored.updated_items, stored.matches),
        (1, 1, 2)
    );
    let items = store.feed_items("f").await.unwrap();
    assert_eq!(items[1], ("Asylum two (corrected)".to_string(), Some(t1)));

    // k1: old, sent, unchanged: pruned. k2: old but pending again. k3: pending.
    let pruned = store
        .prune(t1 + chrono::Duration::seconds(1), t1)
        .await
        .unwrap();
    assert_eq!(
        (pruned.items, pruned.outbox, pruned.matches),
        (1, 1, 1),
        "{pruned:?}"
    );
    assert!(store.outbox().await.unwrap().is_empty());
    let titles: Vec<String> = store
        .feed_items("f")
        .await
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(titles, ["Asylum three", "Asylum two (corrected)"]);
    assert_eq!(store.feed_statuses().await.unwrap()[0].items, 2);

    let mut third = second.to_vec();
    third[0] = item("k1", "Asylum one, edited after its pruning", t0);
    let stored = store_poll(&store, &third, t1 + minutes(60), &[asylum]).await;
    assert_eq!(
        stored,
        Stored::default(),
        "the pruned item is not new again"
    );
    assert_eq!(
        store.prune(t1, t1).await.unwrap(),
        Default::default(),
        "nothing more"
    );

    let shown = Arc::new(Mutex::new(Vec::new()));
    let seen = shown.clone();
    store
        .take_digest(
            subscriber,
            t1,
            false,
            "tidings.test",
            move |who, parcels| {
                *seen.lock().unwrap() = parcels
                    .email
                    .iter()
                    .map(|e| (e.title.clone(), e.updated))
                    .collect();
                render(who, parcels)
            },
        )
        .await
        .unwrap()
        .unwrap();
    let mut shown = shown.lock().unwrap().clone();
    shown.sort();
    assert_eq!(
        shown,
        [
            ("Asylum three".to_string(), false),
            ("Asylum two (corrected)".to_string(), true)
        ]
    );
}

// ---- digests --------------------------------------------------------------------------------

/// Immediate subscribers are due when they have pending matches; scheduled ones when
/// their time comes (matches or not); `ignore_schedule` takes everyone with pending
/// matches; a paused subscriber is never due.
async fn due_digests_follow_schedules_and_skip_paused_subscribers(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let now_q = subscribe(&store, "now@x.example", "asylum", Schedule::Immediate, t0).await;
    let daily = Schedule::Daily { at: at(8, 0) };
    let day_q = subscribe(&store, "day@x.example", "asylum", daily, t0).await;
    subscribe(&store, "quiet@x.example", "parole", Schedule::Immediate, t0).await;
    let hour_q = subscribe(&store, "hour@x.example", "asylum", Schedule::Hourly, t0).await;
    let now_s = subscriber_id(&store, "now@x.example").await;
    let day_s = subscriber_id(&store, "day@x.example").await;
    let hour_s = subscriber_id(&store, "hour@x.example").await;
    let due = async |at: DateTime<Utc>, ignore: bool| {
        let mut due = store.due_digests(at, ignore).await.unwrap();
        due.sort();
        due
    };
    assert!(
        due(t0, false).await.is_empty(),
        "nothing pending, no time come"
    );
    let eight = Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap();
    assert_eq!(
        due(eight, false).await,
        [day_s, hour_s],
        "their time came, empty or not"
    );

    let items = [item("k1", "Asylum", t0)];
    store_poll(&store, &items, t0, &[now_q, day_q, hour_q]).await;
    assert_eq!(due(t0, false).await, [now_s]);
    assert_eq!(due(t0, true).await, [now_s, day_s, hour_s]);
    assert_eq!(due(t0 + minutes(60), false).await, [now_s, hour_s]);
    assert_eq!(due(eight - minutes(1), false).await, [now_s, hour_s]);
    assert_eq!(due(eight, false).await, [now_s, day_s, hour_s]);

    // Taken: the daily one is next due the day after.
    assert!(take(&store, day_s, eight).await.is_some());
    assert_eq!(due(eight, false).await, [now_s, hour_s]);
    assert_eq!(
        due(eight + chrono::Duration::days(1), false).await,
        [now_s, day_s, hour_s]
    );

    // Paused (its mail bounced): never due, whatever it has pending.
    let id = take(&store, now_s, t0).await.unwrap();
    let claim = claim_message(&store, id, t0).await;
    let paused = store
        .mark_bounced(id, Some(&claim), "550 no such user", 1, t0)
        .await
        .unwrap();
    assert_eq!(paused.as_deref(), Some("now@x.example"));
    store_poll(
        &store,
        &[item("k2", "Asylum again", t0)],
        t0 + minutes(15),
        &[now_q],
    )
    .await;
    assert!(!due(t0, false).await.contains(&now_s));
    assert!(!due(t0, true).await.contains(&now_s));
    assert!(store.resume_subscriber("NOW@x.example").await.unwrap());
    assert_eq!(due(t0, false).await, [now_s]);
}

/// Taking a digest moves the next digest time to the first slot after now (one digest
/// for a round overdue for days), with or without matches; the Message-ID is fixed when
/// it is taken, so a resend carries the same one.
async fn take_digest_moves_the_schedule_and_fixes_the_message_id(store: Store, _: Database) {
    let t0 = noon();
    let new_york: Tz = "America/New_York".parse().unwrap();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let daily = Schedule::Daily { at: at(8, 0) };
    assert!(
        store
            .add_subscription("a@x.example", "asylum", daily, new_york, t0)
            .await
            .unwrap()
    );
    let who = store.subscriber("a@x.example").await.unwrap().unwrap();
    // 07:00 in New York: 08:00 there today is 13:00 UTC.
    let first_slot = Utc.with_ymd_and_hms(2026, 11, 28, 13, 0, 0).unwrap();
    assert_eq!(who.next_digest_at, Some(first_slot));
    let asylum = store.subscriptions_of(who.id).await.unwrap()[0].0;
    let items = [item("k1", "Asylum one", t0), item("k2", "Asylum two", t0)];
    store_poll(&store, &items, t0, &[asylum]).await;

    // Three days late.
    let late = first_slot + chrono::Duration::days(3) + minutes(300);
    let shown = Arc::new(Mutex::new(None));
    let seen = shown.clone();
    let id = store
        .take_digest(who.id, late, false, "tidings.test", move |s, parcels| {
            *seen.lock().unwrap() = Some((
                s.email.clone(),
                s.queries.clone(),
                parcels.email.len(),
                parcels.more_follow,
            ));
            render(s, parcels)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shown.lock().unwrap().clone(),
        Some((
            "a@x.example".to_string(),
            vec!["asylum".to_string()],
            2,
            false
        ))
    );
    let next = Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 0).unwrap();
    let who = store.subscriber_by_id(who.id).await.unwrap().unwrap();
    assert_eq!(who.next_digest_at, Some(next), "the first slot after now");
    let queued = message(&store, id).await;
    let message_id = format!("<digest.{id}.{}.{}@tidings.test>", who.id, late.timestamp());
    assert_eq!(
        (
            queued.message_id.as_str(),
            queued.recipient.as_str(),
            queued.subscriber_id,
            queued.status.as_str(),
            queued.created_at,
            queued.next_attempt_at
        ),
        (
            message_id.as_str(),
            "a@x.example",
            Some(who.id),
            "pending",
            late,
            late
        )
    );
    assert_eq!(queued.body_text, "Asylum one\nAsylum two");

    // Tried, put off, tried again: the same message, the same Message-ID.
    let claim = claim_message(&store, id, late).await;
    let retry_at = late + minutes(10);
    assert!(
        store
            .mark_retry(id, Some(&claim), "421 busy", retry_at)
            .await
            .unwrap()
    );
    let claim = claim_message(&store, id, retry_at).await;
    let again = message(&store, id).await;
    assert_eq!(
        (
            again.message_id.as_str(),
            again.attempts,
            again.last_error.as_deref()
        ),
        (message_id.as_str(), 1, Some("421 busy"))
    );
    assert_eq!(again.claim.as_deref(), Some(claim.as_str()));

    // Nothing pending: no message, but the schedule moves on.
    assert_eq!(take(&store, who.id, next).await, None);
    let who = store.subscriber_by_id(who.id).await.unwrap().unwrap();
    assert_eq!(who.next_digest_at, Some(next + chrono::Duration::days(1)));
    assert_eq!(store.outbox().await.unwrap().len(), 1);
    assert_eq!(
        take(&store, SubscriberId(who.id.0 + 1000), next).await,
        None,
        "no such subscriber"
    );
}

/// Two instances taking the same subscriber's digest at the same instant queue one
/// message, which holds every pending match.
async fn one_digest_taken_twice_at_once_is_queued_once(store: Store, db: Database) {
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let email = format!("s{n}@x.example");
        ids.push(subscribe(&store, &email, "asylum", Schedule::Immediate, now).await);
    }
    let items: Vec<Item> = (0..5)
        .map(|n| item(&format!("k{n}"), "Asylum news", now))
        .collect();
    let stored = store_poll(&store, &items, now, &ids).await;
    assert_eq!(stored.matches, 15);
    let due = store.due_digests(now, false).await.unwrap();
    assert_eq!(due.len(), 3);
    for subscriber in due {
        let queued: Vec<OutboxId> = at_once(&db, 2, move |s| async move {
            s.take_digest(subscriber, now, false, "tidings.test", render_slowly)
                .await
                .unwrap()
        })
        .await
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(queued.len(), 1, "subscriber {subscriber}: {queued:?}");
        let message = message(&store, queued[0]).await;
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
    assert_eq!(store.outbox().await.unwrap().len(), 3);
    assert!(
        store.due_digests(now, true).await.unwrap().is_empty(),
        "nothing left pending"
    );
}

/// Two instances list a daily subscriber as due at the same tick; the first takes their
/// digest. A match stored before the second gets to them waits for tomorrow: the second
/// take queues nothing (the schedule is asked again under the lock), unless forced.
async fn a_scheduled_digest_is_taken_once_per_period_whoever_listed_it(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let daily = Schedule::Daily {
        at: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
    };
    let asylum = subscribe(&store, "ana@x.example", "asylum", daily, t0).await;
    let who = subscriber_id(&store, "ana@x.example").await;
    store_poll(&store, &[item("k1", "Asylum one", t0)], t0, &[asylum]).await;
    let tick = Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap();
    // Both instances' lists.
    assert_eq!(store.due_digests(tick, false).await.unwrap(), [who]);
    assert_eq!(store.due_digests(tick, false).await.unwrap(), [who]);
    let first = take(&store, who, tick).await.expect("the day's digest");
    store_poll(&store, &[item("k2", "Asylum two", tick)], tick, &[asylum]).await;
    let later = tick + chrono::Duration::minutes(1);
    assert_eq!(
        take(&store, who, later).await,
        None,
        "a second digest the same day"
    );
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(outbox[0].id, first);
    let tomorrow = store.subscriber_by_id(who).await.unwrap().unwrap();
    assert_eq!(
        tomorrow.next_digest_at,
        Some(Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap()),
        "the refused take moved nothing"
    );
    // `tidings digest --now` sends what is pending whatever the schedule.
    let forced = store
        .take_digest(who, later, true, "tidings.test", render)
        .await
        .unwrap()
        .expect("a forced digest");
    assert_eq!(message(&store, forced).await.subject, "1 new");
}

/// Values as long as the rules allow are stored by both backends alike: a link of 4,000
/// characters that do not compress (tracking redirects carry kilobytes of base64) and a
/// search of 1,000 CJK characters. A PostgreSQL B-tree entry holds at most 2,704 bytes:
/// the link once failed the poll's whole transaction there, every item of the feed with it.
async fn long_links_and_searches_are_stored_by_every_backend(store: Store, _: Database) {
    let now = noon();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = |alphabet: &[char], n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    };
    let base64: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .chars()
        .collect();
    let cjk: Vec<char> = ('\u{4e00}'..='\u{9fa5}').collect();
    let link = format!("https://news.example/r?u={}", noise(&base64, 4000));
    let query = noise(&cjk, 1000);
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let search = subscribe(&store, "ana@x.example", &query, Schedule::Immediate, now).await;
    assert_eq!(store.subscription(search).await.unwrap().unwrap().0, query);
    let mut long = item("k1", "Asylum ruling", now);
    long.link = Some(link.clone());
    let plain = item("k2", "Visa bulletin", now);
    let stored = store_poll(&store, &[long, plain], now, &[search]).await;
    assert_eq!((stored.new_items, stored.matches), (2, 2));
    let matched = store.subscription_matches(search, 10).await.unwrap();
    assert!(
        matched.iter().any(|m| m.link.as_deref() == Some(&link)),
        "{:?}",
        matched.iter().map(|m| &m.title).collect::<Vec<_>>()
    );
    // The same search again is still the same search.
    assert!(
        !store
            .add_subscription("ana@x.example", &query, Schedule::Immediate, Tz::UTC, now)
            .await
            .unwrap()
    );
}

// ---- the outbox -----------------------------------------------------------------------------

/// Two senders (two instances) claiming in batches at the same instant never get the
/// same message, and between them get every one.
async fn two_senders_claiming_at_once_never_get_the_same_message(store: Store, db: Database) {
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
            .await
            .unwrap();
        let queued = message(&store, id).await;
        assert_eq!(
            (queued.message_id, queued.subscriber_id),
            (
                format!("<note.{id}.{}@tidings.test>", now.timestamp()),
                None
            )
        );
    }
    let lease = Duration::from_secs(60);
    let claimed = at_once(&db, 2, move |s| async move {
        let mut got = Vec::new();
        loop {
            let batch = s.claim_mail(now, lease, 7).await.unwrap();
            if batch.is_empty() {
                return got;
            }
            for m in &batch {
                let claim = m.claim.as_deref().unwrap();
                assert!(s.renew_mail_claim(m.id, claim, now, lease).await.unwrap());
            }
            got.extend(batch);
        }
    })
    .await;
    let (a, b) = (&claimed[0], &claimed[1]);
    let a_ids: HashSet<OutboxId> = a.iter().map(|m| m.id).collect();
    let both: Vec<OutboxId> = b
        .iter()
        .map(|m| m.id)
        .filter(|id| a_ids.contains(id))
        .collect();
    assert!(both.is_empty(), "both claimed {both:?}");
    assert_eq!(a.len() + b.len(), 150, "every message claimed once");
    // A claim token is 24 upper-case hex digits, and only the holder's token marks the row.
    let m = &a[0];
    let claim = m.claim.as_deref().unwrap();
    assert!(
        claim.len() == 24
            && claim
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
        "{claim}"
    );
    let wrong = "0123456789ABCDEF01234567";
    assert!(!store.mark_sent(m.id, Some(wrong), now).await.unwrap());
    assert!(!store.mark_sent(m.id, None, now).await.unwrap());
    assert!(store.mark_sent(m.id, Some(claim), now).await.unwrap());
    assert!(
        !store
            .renew_mail_claim(m.id, claim, now, lease)
            .await
            .unwrap(),
        "sent"
    );
}

/// A sender's claim on a message holds until its lease ends; then another sender takes
/// the message, and whatever the old one reports writes nothing.
async fn a_mail_lease_that_expires_lets_another_sender_take_the_message(
    store: Store,
    db: Database,
) {
    let other = db.open().await;
    let t0 = noon();
    let lease = Duration::from_secs(60);
    let id = store
        .queue_message("a@x.example", "s", "t", "<p>h</p>", "tidings.test", t0)
        .await
        .unwrap();
    let old = store.claim_mail(t0, lease, 10).await.unwrap();
    assert_eq!(old.len(), 1);
    let old = old[0].claim.clone().unwrap();
    let almost = t0 + chrono::Duration::seconds(59);
    assert!(
        other
            .claim_mail(almost, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "held"
    );
    let expired = t0 + chrono::Duration::seconds(60);
    let new = other.claim_mail(expired, lease, 10).await.unwrap();
    assert_eq!(new.len(), 1);
    let new = new[0].claim.clone().unwrap();
    assert_ne!(old, new);

    assert!(
        !store
            .renew_mail_claim(id, &old, expired, lease)
            .await
            .unwrap()
    );
    assert!(!store.mark_sent(id, Some(&old), expired).await.unwrap());
    assert!(
        !store
            .mark_retry(id, Some(&old), "421", expired)
            .await
            .unwrap()
    );
    assert!(!store.mark_failed(id, Some(&old), "550").await.unwrap());
    assert_eq!(
        store
            .mark_bounced(id, Some(&old), "550", 1, expired)
            .await
            .unwrap(),
        None
    );
    let untouched = message(&store, id).await;
    assert_eq!(
        (
            untouched.status.as_str(),
            untouched.attempts,
            untouched.last_error
        ),
        ("pending", 0, None)
    );
    assert_eq!(untouched.claim.as_deref(), Some(new.as_str()));

    // The new holder's results are written.
    assert!(
        other
            .renew_mail_claim(id, &new, expired, lease)
            .await
            .unwrap()
    );
    let retry_at = expired + minutes(5);
    assert!(
        other
            .mark_retry(id, Some(&new), "421 busy", retry_at)
            .await
            .unwrap()
    );
    let retried = message(&store, id).await;
    assert_eq!(
        (
            retried.status.as_str(),
            retried.attempts,
            retried.next_attempt_at,
            retried.claim
        ),
        ("pending", 1, retry_at, None)
    );
    assert!(
        store
            .claim_mail(retry_at - minutes(1), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before its retry time"
    );
    let last = claim_message(&store, id, retry_at).await;
    assert!(store.mark_sent(id, Some(&last), retry_at).await.unwrap());
    assert!(
        !store.mark_sent(id, Some(&last), retry_at).await.unwrap(),
        "once"
    );
    let sent = message(&store, id).await;
    assert_eq!(
        (
            sent.status.as_str(),
            sent.attempts,
            sent.sent_at,
            sent.last_error
        ),
        ("sent", 2, Some(retry_at), None)
    );
    assert!(
        store
            .claim_mail(retry_at + chrono::Duration::days(1), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A failed message can be put back in the queue; one being sent right now, or sent
/// already, cannot.
async fn requeue_puts_failed_mail_back_but_not_mail_sent_or_being_sent(store: Store, _: Database) {
    let t0 = noon();
    let failed = store
        .queue_message("a@x.example", "s", "t", "<p>h</p>", "tidings.test", t0)
        .await
        .unwrap();
    let claim = claim_message(&store, failed, t0).await;
    assert!(
        store
            .mark_failed(failed, Some(&claim), "550 no such user")
            .await
            .unwrap()
    );
    let row = message(&store, failed).await;
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_error.as_deref()),
        ("failed", 1, Some("550 no such user"))
    );
    assert!(
        store
            .claim_mail(t0, Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let t1 = t0 + chrono::Duration::days(1);
    assert!(store.requeue(failed, t1).await.unwrap());
    let row = message(&store, failed).await;
    assert_eq!(
        (
            row.status.as_str(),
            row.attempts,
            row.next_attempt_at,
            row.created_at,
            row.claim
        ),
        ("pending", 0, t1, t1, None)
    );
    let claim = claim_message(&store, failed, t1).await;
    let err = store.requeue(failed, t1).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("being sent right now"),
        "{err:#}"
    );
    assert!(store.mark_sent(failed, Some(&claim), t1).await.unwrap());
    let err = store.requeue(failed, t1).await.unwrap_err();
    assert!(format!("{err:#}").contains("already sent"), "{err:#}");
    assert_eq!(message(&store, failed).await.status, OutboxStatus::Sent);
    assert!(
        !store.requeue(OutboxId(failed.0 + 1000), t1).await.unwrap(),
        "no such message"
    );
}

/// Permanent rejections in a row pause a subscriber after the limit; a delivery in
/// between starts the count over; resuming clears it.
async fn bounces_pause_a_subscriber_after_the_limit(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, t0).await;
    let who = subscriber_id(&store, "a@x.example").await;
    let mut n = 0;
    // A new match, its digest, claimed: (outbox id, claim).
    let mut digest = async || {
        n += 1;
        let now = t0 + minutes(15 * n);
        store_poll(
            &store,
            &[item(&format!("k{n}"), "Asylum", now)],
            now,
            &[asylum],
        )
        .await;
        let id = take(&store, who, now).await.unwrap();
        (id, claim_message(&store, id, now).await, now)
    };
    let state = async || {
        let s = store.subscriber_by_id(who).await.unwrap().unwrap();
        (s.bounces, s.paused_at)
    };
    let bounce = async |(id, claim, now): (OutboxId, String, DateTime<Utc>)| {
        store
            .mark_bounced(id, Some(&claim), "550 mailbox full", 2, now)
            .await
            .unwrap()
    };

    assert_eq!(bounce(digest().await).await, None);
    assert_eq!(state().await, (1, None));
    let (id, claim, now) = digest().await;
    assert!(store.mark_sent(id, Some(&claim), now).await.unwrap());
    assert_eq!(state().await, (0, None), "a delivery starts the count over");
    assert_eq!(bounce(digest().await).await, None);
    let last = digest().await;
    let paused_at = last.2;
    // Queued before the pause, sent after it.
    store_poll(
        &store,
        &[item("in-flight", "Asylum", paused_at)],
        paused_at,
        &[asylum],
    )
    .await;
    let in_flight = take(&store, who, paused_at).await.unwrap();
    assert_eq!(bounce(last).await.as_deref(), Some("a@x.example"));
    assert_eq!(state().await, (2, Some(paused_at)));
    let bounced = store.outbox().await.unwrap();
    let statuses: Vec<(&str, u32)> = bounced
        .iter()
        .map(|m| (m.status.as_str(), m.attempts))
        .collect();
    assert_eq!(
        statuses,
        [
            ("failed", 1),
            ("sent", 1),
            ("failed", 1),
            ("failed", 1),
            ("pending", 0)
        ]
    );
    assert_eq!(bounced[3].last_error.as_deref(), Some("550 mailbox full"));

    // Paused already: another bounce does not pause (nor report) them again.
    let later = paused_at + minutes(15);
    let claim = claim_message(&store, in_flight, later).await;
    let again = store
        .mark_bounced(in_flight, Some(&claim), "550", 2, later)
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(state().await, (3, Some(paused_at)));
    // While paused, nothing new is taken for them, even by a take that got their id
    // from a list made before the pause.
    store_poll(&store, &[item("paused", "Asylum", later)], later, &[asylum]).await;
    assert_eq!(take(&store, who, later).await, None);
    assert_eq!(store.outbox().await.unwrap().len(), 5);
    assert!(store.resume_subscriber("A@X.EXAMPLE").await.unwrap());
    assert_eq!(state().await, (0, None));
    assert!(!store.resume_subscriber("b@x.example").await.unwrap());
}

/// Removing a subscriber removes their searches and pending matches; mail already queued
/// for them is still sent. Unsubscribing from the web is remembered by its token.
async fn removing_a_subscriber_keeps_their_queued_mail(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let asylum = subscribe(&store, "Zoe@x.example", "asylum", Schedule::Immediate, t0).await;
    let zoe = subscriber_id(&store, "zoe@x.example").await;
    store_poll(&store, &[item("k1", "Asylum", t0)], t0, &[asylum]).await;
    let queued = take(&store, zoe, t0).await.unwrap();
    let t1 = t0 + minutes(15);
    store_poll(&store, &[item("k2", "Asylum again", t1)], t1, &[asylum]).await;
    let generation = store.subscriptions_generation().await.unwrap();

    assert!(store.remove_subscriber("ZOE@X.example").await.unwrap());
    assert!(
        !store.remove_subscriber("zoe@x.example").await.unwrap(),
        "gone already"
    );
    assert_eq!(store.subscriber("zoe@x.example").await.unwrap(), None);
    assert_eq!(store.subscriber_by_id(zoe).await.unwrap(), None);
    assert_eq!(store.subscription(asylum).await.unwrap(), None);
    assert_ne!(store.subscriptions_generation().await.unwrap(), generation);
    assert!(
        store.due_digests(t1, true).await.unwrap().is_empty(),
        "no pending match left"
    );
    let kept = message(&store, queued).await;
    assert_eq!(
        (
            kept.recipient.as_str(),
            kept.subscriber_id,
            kept.status.as_str()
        ),
        ("Zoe@x.example", None, "pending")
    );
    let claim = claim_message(&store, queued, t1).await;
    assert!(store.mark_sent(queued, Some(&claim), t1).await.unwrap());

    // From the web, by id, with the link's token.
    subscribe(&store, "b@x.example", "parole", Schedule::Immediate, t1).await;
    let b = subscriber_id(&store, "b@x.example").await;
    assert!(!store.was_unsubscribed("token-b").await.unwrap());
    store.unsubscribe(b, "token-b", t1).await.unwrap();
    assert!(store.was_unsubscribed("token-b").await.unwrap());
    assert_eq!(store.subscriber_by_id(b).await.unwrap(), None);
    store.unsubscribe(b, "token-b", t1).await.unwrap();
    assert!(
        !store.remove_subscriber_by_id(b).await.unwrap(),
        "twice is fine"
    );
    subscribe(&store, "c@x.example", "visa", Schedule::Immediate, t1).await;
    let c = subscriber_id(&store, "c@x.example").await;
    assert!(store.remove_subscriber_by_id(c).await.unwrap());
    assert!(store.subscribers().await.unwrap().is_empty());
}

// ---- sign-ups -------------------------------------------------------------------------------

/// Confirming a sign-up is one transaction: when one of its searches cannot be stored,
/// none is, and the sign-up stays unconfirmed (it can be confirmed again).
async fn a_confirmation_that_fails_part_way_stores_nothing(store: Store, db: Database) {
    let now = noon();
    let id = store
        .create_signup(&signup(
            "zoe@x.example",
            &["asylum", "refused", "parole"],
            "127.0.0.1",
            now,
        ))
        .await
        .unwrap();
    db.execute(
        "CREATE TRIGGER refuse AFTER INSERT ON subscriptions WHEN NEW.query = 'refused'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused by the test'; END; $$;
         CREATE TRIGGER refuse AFTER INSERT ON subscriptions
             FOR EACH ROW WHEN (NEW.query = 'refused') EXECUTE FUNCTION refuse();",
    )
    .await;
    let generation = store.subscriptions_generation().await.unwrap();
    let err = store
        .confirm_signup(id, Schedule::Immediate, Tz::UTC, |_| true, now)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("refused by the test"),
        "{err:#}"
    );
    assert_eq!(store.subscriber("zoe@x.example").await.unwrap(), None);
    assert_eq!(store.signup(id).await.unwrap().unwrap().confirmed_at, None);
    assert_eq!(store.subscriptions_generation().await.unwrap(), generation);

    db.execute(
        "DROP TRIGGER refuse",
        "DROP TRIGGER refuse ON subscriptions",
    )
    .await;
    let subscriber = store
        .confirm_signup(id, Schedule::Immediate, Tz::UTC, |q| q != "parole", now)
        .await
        .unwrap();
    let zoe = store.subscriber("zoe@x.example").await.unwrap().unwrap();
    assert_eq!(zoe.id, subscriber);
    assert_eq!(zoe.queries, ["asylum", "refused"]);
    assert!(
        store
            .signup(id)
            .await
            .unwrap()
            .unwrap()
            .confirmed_at
            .is_some()
    );
}

/// A confirmed sign-up makes (or joins, in any case) the subscriber with the searches
/// that can still match; confirming again changes nothing.
async fn confirming_a_signup_keeps_the_searches_kept_and_twice_is_once(store: Store, _: Database) {
    let t0 = noon();
    let paris: Tz = "Europe/Paris".parse().unwrap();
    let daily = Schedule::Daily { at: at(8, 0) };
    let first = signup(
        "zoe@x.example",
        &["asylum", "parole", "TPS"],
        "192.0.2.1",
        t0,
    );
    let id = store.create_signup(&first).await.unwrap();
    let stored = store.signup(id).await.unwrap().unwrap();
    assert_eq!(stored, first);
    let zoe = store
        .confirm_signup(id, daily, paris, |q| q != "parole", t0)
        .await
        .unwrap();
    let subscriber = store.subscriber_by_id(zoe).await.unwrap().unwrap();
    assert_eq!(subscriber.email, "zoe@x.example");
    assert_eq!(
        subscriber.queries,
        ["asylum", "TPS"],
        "only the searches kept"
    );
    assert_eq!((subscriber.schedule, subscriber.timezone), (daily, paris));
    // 08:00 in Paris is 07:00 UTC, tomorrow.
    let next = Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0).unwrap();
    assert_eq!(subscriber.next_digest_at, Some(next));
    assert_eq!(
        store.signup(id).await.unwrap().unwrap().confirmed_at,
        Some(t0)
    );

    // The link clicked again, days later: the same subscriber, nothing changed.
    let later = t0 + chrono::Duration::days(3);
    let again = store
        .confirm_signup(id, daily, paris, |q| q != "parole", later)
        .await
        .unwrap();
    assert_eq!(again, zoe);
    assert_eq!(store.subscriber_by_id(zoe).await.unwrap(), Some(subscriber));
    assert_eq!(
        store.signup(id).await.unwrap().unwrap().confirmed_at,
        Some(t0)
    );
    assert_eq!(store.subscribers().await.unwrap().len(), 1);

    // Another sign-up for the same address, in another case: the same subscriber.
    let second = signup("ZOE@x.example", &["visa"], "192.0.2.1", later);
    let id = store.create_signup(&second).await.unwrap();
    let same = store
        .confirm_signup(id, daily, paris, |_| true, later)
        .await
        .unwrap();
    assert_eq!(same, zoe);
    let queries = store.subscriber_by_id(zoe).await.unwrap().unwrap().queries;
    assert_eq!(queries, ["asylum", "TPS", "visa"]);

    // Nothing kept and no subscriber yet: an error, and nothing confirmed.
    let third = signup("new@x.example", &["gone"], "192.0.2.1", later);
    let id = store.create_signup(&third).await.unwrap();
    assert!(
        store
            .confirm_signup(id, daily, paris, |_| false, later)
            .await
            .is_err()
    );
    assert_eq!(store.signup(id).await.unwrap().unwrap().confirmed_at, None);
    assert!(
        store
            .confirm_signup(SignupId(id.0 + 1000), daily, paris, |_| true, later)
            .await
            .is_err()
    );
    assert_eq!(store.signup(SignupId(id.0 + 1000)).await.unwrap(), None);
}

/// A client may sign up so many times an hour (refused ones are not recorded); an
/// address gets so many confirmation mails a day (further sign-ups are recorded, not
/// mailed), in any case.
async fn record_signup_holds_the_client_and_address_limits(store: Store, _: Database) {
    let t0 = noon();
    let limits = SignupLimits {
        per_client_per_hour: 2,
        per_address_per_day: 2,
    };
    let record = async |email: &str, client: &str, at: DateTime<Utc>, mail: bool| {
        let signup = signup(email, &["asylum"], client, at);
        if mail {
            store
                .record_signup(&signup, limits, "tidings.test", confirmation)
                .await
                .unwrap()
        } else {
            store
                .record_signup(&signup, limits, "tidings.test", |_| {
                    anyhow::bail!("no confirmation mail was due")
                })
                .await
                .unwrap()
        }
    };
    let recorded = |admission| match admission {
        SignupAdmission::Recorded { id, mailed } => (id, mailed),
        other => panic!("{other:?}"),
    };
    let (first, mailed) = recorded(record("zoe@x.example", "A", t0, true).await);
    assert!(mailed);
    assert!(recorded(record("ZOE@x.example", "B", t0, true).await).1);
    assert!(
        !recorded(record("zoe@X.example", "C", t0, false).await).1,
        "third today"
    );
    assert!(!recorded(record("zoe@x.example", "A", t0 + minutes(10), false).await).1);
    assert_eq!(
        record("other@x.example", "A", t0 + minutes(20), false).await,
        SignupAdmission::TooManyFromClient
    );
    assert_eq!(
        store
            .recent_signups("zoe@x.example", "A", t0)
            .await
            .unwrap(),
        (4, 2),
        "the refused one is not recorded"
    );
    // An hour on, the client may again; a day on (less one sign-up), the address is mailed.
    assert!(!recorded(record("zoe@x.example", "A", t0 + minutes(61), false).await).1);
    let next_day = t0 + chrono::Duration::hours(25);
    assert!(recorded(record("Zoe@x.example", "D", next_day, true).await).1);

    let outbox = store.outbox().await.unwrap();
    let mailed: Vec<(&str, &str)> = outbox
        .iter()
        .map(|m| (m.recipient.as_str(), m.subject.as_str()))
        .collect();
    assert_eq!(mailed.len(), 3);
    assert_eq!(
        mailed[0],
        ("zoe@x.example", format!("confirm {first}").as_str())
    );
    assert_eq!(mailed[1].0, "ZOE@x.example");
    assert_eq!(mailed[2].0, "Zoe@x.example");
    assert_eq!(
        outbox[0].message_id,
        format!("<note.{}.{}@tidings.test>", outbox[0].id, t0.timestamp())
    );
    assert_eq!(store.signup(first).await.unwrap().unwrap().client, "A");
}

/// Sign-up limits hold for requests from one client at the same instant, through two
/// instances: they cannot both pass a limit of one.
async fn sign_up_limits_hold_when_requests_come_at_once(store: Store, db: Database) {
    let limits = SignupLimits {
        per_client_per_hour: 1,
        per_address_per_day: 3,
    };
    for round in 0..5 {
        let client = format!("192.0.2.{round}");
        let admissions = at_once(&db, 2, move |s| {
            let signup = signup("Zoe@x.example", &["asylum"], &client, noon());
            async move {
                // The mail is rendered inside the transaction, after the count and the
                // insert: slowly, so the other request counts while this one is uncommitted.
                s.record_signup(&signup, limits, "tidings.test", |id| {
                    std::thread::sleep(Duration::from_millis(100));
                    confirmation(id)
                })
                .await
                .unwrap()
            }
        })
        .await;
        let recorded = admissions
            .iter()
            .filter(|x| matches!(x, SignupAdmission::Recorded { .. }))
            .count();
        assert_eq!(recorded, 1, "round {round}: {admissions:?}");
    }
    assert_eq!(
        store.outbox().await.unwrap().len(),
        3,
        "three confirmations a day per address, then none"
    );
    assert_eq!(
        store
            .recent_signups("zoe@X.example", "192.0.2.0", noon())
            .await
            .unwrap(),
        (5, 1)
    );
}

// ---- upkeep ---------------------------------------------------------------------------------

/// `/metrics` and `/healthz` counts: pending mail and its age, active and failing feeds
/// (inactive ones not counted), subscribers (one per address, any case).
async fn service_stats_count_what_is_stored(store: Store, _: Database) {
    let t0 = noon();
    assert_eq!(
        store.service_stats().await.unwrap(),
        ServiceStats {
            outbox_pending: 0,
            oldest_pending: None,
            feeds_active: 0,
            feeds_failing: 0,
            subscribers: 0,
        }
    );
    let feeds = [
        feed("ok", "https://ok.example/feed"),
        feed("failing", "https://failing.example/feed"),
        feed("gone", "https://gone.example/feed"),
    ];
    store.sync_feeds(&feeds).await.unwrap();
    let generation = store.subscriptions_generation().await.unwrap();
    for claimed in store.claim_feeds(t0, Duration::ZERO, true).await.unwrap() {
        match claimed.id.as_str() {
            "ok" => {
                let ok = poll(&[], t0, generation);
                store
                    .store_items(&claimed, ok, |_, _, _| Vec::new())
                    .await
                    .unwrap();
            }
            "failing" => {
                store
                    .record_failure(&claimed, t0, "timeout", "timed out", t0)
                    .await
                    .unwrap();
            }
            _ => {
                store.record_gone(&claimed, t0, "HTTP 410").await.unwrap();
            }
        }
    }
    subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, t0).await;
    subscribe(&store, "b@x.example", "asylum", Schedule::Immediate, t0).await;
    subscribe(&store, "B@x.example", "parole", Schedule::Immediate, t0).await;
    let first = store
        .queue_message("a@x.example", "s", "t", "h", "tidings.test", t0)
        .await
        .unwrap();
    let t1 = t0 + minutes(1);
    store
        .queue_message("b@x.example", "s", "t", "h", "tidings.test", t1)
        .await
        .unwrap();
    assert_eq!(
        store.service_stats().await.unwrap(),
        ServiceStats {
            outbox_pending: 2,
            oldest_pending: Some(t0),
            feeds_active: 3,
            feeds_failing: 2,
            subscribers: 2,
        }
    );
    let claim = claim_message(&store, first, t1).await;
    assert!(store.mark_sent(first, Some(&claim), t1).await.unwrap());
    store.sync_feeds(&feeds[..2]).await.unwrap();
    assert_eq!(
        store.service_stats().await.unwrap(),
        ServiceStats {
            outbox_pending: 1,
            oldest_pending: Some(t1),
            feeds_active: 2,
            feeds_failing: 1,
            subscribers: 2,
        },
        "an inactive feed is not counted"
    );
}

/// Another instance opening the database (migrating it, if it had to) finds everything
/// the first one wrote.
async fn another_instance_sees_the_same_database(store: Store, db: Database) {
    let now = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, now).await;
    let other = db.open().await;
    assert_eq!(
        other.subscriptions().await.unwrap(),
        store.subscriptions().await.unwrap()
    );
    assert_eq!(
        other.subscribers().await.unwrap(),
        store.subscribers().await.unwrap()
    );
    subscribe(&other, "b@x.example", "parole", Schedule::Immediate, now).await;
    assert_eq!(
        store.subscriptions().await.unwrap().generation,
        other.subscriptions_generation().await.unwrap(),
        "a change through one instance moves the generation the other reads"
    );
    assert_eq!(store.feed_statuses().await.unwrap().len(), 1);
}

/// A store may be opened, used and dropped (its last handle) in async code, on a
/// runtime's worker, as `App::open` opens it.
async fn a_store_opens_and_closes_inside_async_code(store: Store, db: Database) {
    let elsewhere = tokio::spawn(async move {
        let other = match &db {
            Database::Sqlite(path) => Store::open(path).unwrap(),
            Database::Postgres { url, .. } => Store::connect(url, None).await.unwrap(),
        };
        subscribe(&other, "a@x.example", "asylum", Schedule::Immediate, noon()).await;
        drop(other);
    });
    elsewhere
        .await
        .expect("opened, used and dropped on a worker");
    assert_eq!(store.subscribers().await.unwrap().len(), 1);
}

// ---- several instances ----------------------------------------------------------------------

fn feed_list(fingerprint: &str, written_at: DateTime<Utc>) -> FeedListVersion {
    FeedListVersion {
        fingerprint: fingerprint.into(),
        written_at,
        written_by: format!("host:{fingerprint}.toml"),
    }
}

/// The feed list of the config written last is the database's: an older config's list
/// is kept out (and reported), the same list changes nothing, a newer one applies.
async fn the_feed_list_written_last_wins(store: Store, _: Database) {
    let active = async |store: &Store| -> Vec<String> {
        let mut ids: Vec<String> = store
            .feed_statuses()
            .await
            .unwrap()
            .into_iter()
            .filter(|f| f.active)
            .map(|f| f.id)
            .collect();
        ids.sort();
        ids
    };
    let ab = [
        feed("a", "https://a.example/f"),
        feed("b", "https://b.example/f"),
    ];
    let ac = [
        feed("a", "https://a.example/f"),
        feed("c", "https://c.example/f"),
    ];
    let applied = store.sync_feed_list(&ab, feed_list("ab", noon())).await;
    assert_eq!(applied.unwrap(), FeedListSync::Applied);
    let newer = store
        .sync_feed_list(&ac, feed_list("ac", noon() + minutes(5)))
        .await;
    assert_eq!(newer.unwrap(), FeedListSync::Applied);
    assert_eq!(active(&store).await, ["a", "c"]);

    let older = store
        .sync_feed_list(&ab, feed_list("ab", noon() + minutes(1)))
        .await;
    assert_eq!(
        older.unwrap(),
        FeedListSync::Kept {
            written_at: noon() + minutes(5),
            written_by: "host:ac.toml".into()
        }
    );
    let same = store
        .sync_feed_list(&ac, feed_list("ac", noon() - minutes(60)))
        .await;
    assert_eq!(same.unwrap(), FeedListSync::Unchanged);
    assert_eq!(active(&store).await, ["a", "c"]);
    let tie = store
        .sync_feed_list(&ab, feed_list("ab", noon() + minutes(5)))
        .await;
    assert_eq!(
        tie.unwrap(),
        FeedListSync::Applied,
        "a tie: the last synced wins"
    );
    assert_eq!(active(&store).await, ["a", "b"]);
    let back = store
        .sync_feed_list(&ac, feed_list("ac", noon() + minutes(6)))
        .await;
    assert_eq!(back.unwrap(), FeedListSync::Applied);

    // The database's list carries its intervals and tags to whoever claims its feeds.
    let mut tagged = feed("d", "https://d.example/f");
    tagged.tags = vec!["gov".into(), "uk".into()];
    tagged.interval = Duration::from_secs(3600);
    let newest = store
        .sync_feed_list(&[tagged], feed_list("d", noon() + minutes(9)))
        .await;
    assert_eq!(newest.unwrap(), FeedListSync::Applied);
    let claimed = store
        .claim_feeds(noon(), Duration::from_secs(60), false)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].tags, ["gov", "uk"]);
    assert_eq!(claimed[0].interval, Some(Duration::from_secs(3600)));
}

/// The mail pacer is the database's: senders on different instances, asking at the same
/// moment, get slots one interval apart, never the same slot.
async fn the_mail_pacer_spaces_senders_on_every_instance(_: Store, db: Database) {
    let interval = Duration::from_millis(250);
    let slots = at_once(&db, 4, move |store| async move {
        let mut mine = Vec::new();
        for _ in 0..5 {
            mine.push(store.reserve_mail_slot(noon(), interval).await.unwrap());
        }
        mine
    })
    .await;
    let mut all: Vec<DateTime<Utc>> = slots.into_iter().flatten().collect();
    all.sort();
    let expected: Vec<DateTime<Utc>> = (0..20)
        .map(|i| noon() + chrono::Duration::milliseconds(250 * i))
        .collect();
    assert_eq!(all, expected, "20 slots, 250 ms apart, from now on");
    // Later, after a quiet spell, the next slot is now again.
    let store = db.open().await;
    let later = noon() + minutes(10);
    assert_eq!(
        store.reserve_mail_slot(later, interval).await.unwrap(),
        later
    );
}

/// A setting is created once, by whichever instance asks first; all get that value.
async fn a_setting_is_created_once_and_shared(_: Store, db: Database) {
    let values = at_once(&db, 3, |store| async move {
        let mine = format!("{:p}", &store);
        store.setting_or_insert("secret", &mine).await.unwrap()
    })
    .await;
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    let store = db.open().await;
    assert_eq!(
        store.setting_or_insert("secret", "another").await.unwrap(),
        values[0]
    );
}

/// Instances that report are counted for a minute; feeds due and overdue are counted.
async fn heartbeats_and_due_feeds_are_counted(store: Store, _: Database) {
    let instance = |n: u32| Instance {
        id: format!("host:{n}:0:1"),
        host: "host".into(),
        pid: n,
        pid_scope: "1".into(),
        version: "0.1.0".into(),
        started_at: noon(),
    };
    store.heartbeat(&instance(1), noon()).await.unwrap();
    store
        .heartbeat(&instance(2), noon() - minutes(5))
        .await
        .unwrap();
    store
        .heartbeat(&instance(1), noon() + minutes(1))
        .await
        .unwrap();
    store
        .sync_feeds(&[
            feed("a", "https://a.example/f"),
            feed("b", "https://b.example/f"),
        ])
        .await
        .unwrap();
    let lease = Duration::from_secs(300);
    let stats = store
        .cluster_stats(noon() + minutes(1), lease)
        .await
        .unwrap();
    assert_eq!(
        stats,
        ClusterStats {
            instances_alive: 1,
            feeds_due: 2,
            feeds_overdue: 2,
        },
        "new feeds are due since 1970"
    );
    let claimed = store.claim_feeds(noon(), lease, true).await.unwrap();
    let poll = |feed: &FeedToPoll, next: DateTime<Utc>| {
        let (store, feed) = (store.clone(), feed.clone());
        async move {
            store
                .record_not_modified(&feed, noon(), next, None)
                .await
                .unwrap()
        }
    };
    assert!(poll(&claimed[0], noon() + minutes(15)).await);
    assert!(poll(&claimed[1], noon() - minutes(2)).await);
    let stats = store.cluster_stats(noon(), lease).await.unwrap();
    assert_eq!((stats.feeds_due, stats.feeds_overdue), (1, 0));
    let stats = store
        .cluster_stats(noon() + minutes(4), lease)
        .await
        .unwrap();
    assert_eq!(
        (stats.feeds_due, stats.feeds_overdue),
        (1, 1),
        "due 6 minutes"
    );
    // Gone for a day: forgotten.
    store
        .heartbeat(&instance(3), noon() + minutes(60 * 25))
        .await
        .unwrap();
    let stats = store
        .cluster_stats(noon() + minutes(60 * 25), lease)
        .await
        .unwrap();
    assert_eq!(stats.instances_alive, 1);
}

/// A poll cycle claims due feeds in batches, the longest due first, so that instances
/// share them: each claim takes at most its limit, and what one took the next skips.
async fn due_feeds_are_claimed_in_batches_longest_due_first(store: Store, db: Database) {
    let feeds: Vec<FeedConfig> = (0..10)
        .map(|n| feed(&format!("f{n}"), &format!("https://f{n}.example/feed")))
        .collect();
    store.sync_feeds(&feeds).await.unwrap();
    let lease = Duration::from_secs(60);
    // Poll them all once, each due again at a different time: f9 first, f0 last.
    for f in store.claim_feeds(noon(), lease, false).await.unwrap() {
        let n: i64 = f.id[1..].parse().unwrap();
        let next = noon() + minutes(20 - n);
        assert!(
            store
                .record_not_modified(&f, noon(), next, None)
                .await
                .unwrap()
        );
    }
    let later = noon() + minutes(30);
    let first = store.claim_due_feeds(later, lease, 4).await.unwrap();
    // As a set: the order rows come back in is not the order they were chosen in.
    let ids = |claimed: &[FeedToPoll]| {
        let mut ids = claimed.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&first),
        ["f6", "f7", "f8", "f9"],
        "the longest due first"
    );
    let other = db.open().await;
    let second = other.claim_due_feeds(later, lease, 4).await.unwrap();
    assert_eq!(
        ids(&second),
        ["f2", "f3", "f4", "f5"],
        "another instance takes the next"
    );
    let rest = store.claim_due_feeds(later, lease, 4).await.unwrap();
    assert_eq!(ids(&rest), ["f0", "f1"]);
    assert!(
        store
            .claim_due_feeds(later, lease, 4)
            .await
            .unwrap()
            .is_empty()
    );
    // Not due yet: not claimed.
    let early = db.open().await;
    for f in [first, second, rest].concat() {
        assert!(early.release_claim(&f).await.is_ok());
    }
    let at_noon = early
        .claim_due_feeds(noon() + minutes(12), lease, 10)
        .await
        .unwrap();
    assert_eq!(ids(&at_noon), ["f8", "f9"], "only those due by then");
}

/// A stored time the store cannot read (out of range, written by hand or by a bug) is an
/// error that says so, never a date in 1970 that would pass for real.
async fn a_time_out_of_range_is_an_error_not_1970(store: Store, db: Database) {
    subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, noon()).await;
    assert!(store.subscriber("a@x.example").await.unwrap().is_some());
    db.execute(
        "UPDATE subscribers SET next_digest_at = 4611686018427387904",
        "UPDATE subscribers SET next_digest_at = 4611686018427387904",
    )
    .await;
    for err in [
        store.subscriber("A@x.example").await.map(|_| ()),
        store.subscribers().await.map(|_| ()),
    ] {
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("out of range"), "{err}");
    }
}

/// Connection slots hold for every instance together: `per_host` per host and
/// `concurrency` in all, whichever instance asks; a released or expired slot is free.
async fn fetch_slots_hold_for_every_instance(_: Store, db: Database) {
    let limits = FetchLimits {
        per_host: 2,
        concurrency: 3,
    };
    let lease = Duration::from_secs(60);
    let (a, b) = (db.open().await, db.open().await);
    let take = async |store: &Store, host: &str, now: DateTime<Utc>| {
        store
            .acquire_fetch_slot(host, limits, now, lease)
            .await
            .unwrap()
    };
    let first = take(&a, "gov.uk", noon()).await.expect("a slot");
    let second = take(&b, "gov.uk", noon())
        .await
        .expect("the host's second slot");
    assert_ne!(first, second);
    assert_eq!(
        take(&a, "gov.uk", noon()).await,
        None,
        "per_host = 2 in all"
    );
    let third = take(&b, "uscis.gov", noon()).await.expect("another host");
    assert_eq!(
        take(&a, "state.gov", noon()).await,
        None,
        "concurrency = 3 in all"
    );
    a.release_fetch_slot(&second).await.unwrap();
    let again = take(&a, "gov.uk", noon())
        .await
        .expect("a released slot is free");
    assert_eq!(take(&b, "state.gov", noon()).await, None);
    // A holder that died: its slots free themselves when the lease ends.
    let later = noon() + minutes(2);
    let after = take(&b, "gov.uk", later)
        .await
        .expect("expired slots are free");
    assert!(take(&b, "gov.uk", later).await.is_some());
    assert!(take(&a, "state.gov", later).await.is_some());
    assert_eq!(take(&a, "state.gov", later).await, None, "still 3 in all");
    for token in [first, third, again, after] {
        a.release_fetch_slot(&token).await.unwrap();
    }
    // Many asking at once never get more than the limit.
    let got = at_once(&db, 6, move |store| async move {
        store
            .acquire_fetch_slot("gov.uk", limits, later + minutes(5), lease)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(got.iter().flatten().count(), 2, "{got:?}");
}

// ---- PostgreSQL only ------------------------------------------------------------------------

/// Connecting again to a migrated database keeps its data and applies nothing.
async fn migrations_apply_once_and_reconnecting_is_a_no_op(store: Store, db: Database) {
    let (url, _) = db.postgres();
    let url = url.to_owned();
    subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, noon()).await;
    let generation = store.subscriptions_generation().await.unwrap();
    let again = db.open().await;
    assert_eq!(again.subscribers().await.unwrap().len(), 1, "data survives");
    assert_eq!(again.subscriptions_generation().await.unwrap(), generation);
    let versions: Vec<i32> = blocking(move || {
        sql(&url)
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
    .await;
    assert_eq!(
        versions,
        (1..=postgres_migrations()).collect::<Vec<_>>(),
        "each applied once"
    );
}

/// A schema version this Tidings does not know is refused before anything is written.
async fn a_database_from_a_newer_tidings_is_refused_and_left_as_it_is(_: Store, db: Database) {
    let (url, _) = db.postgres();
    let url = url.to_owned();
    let newer = postgres_migrations() + 1;
    let tables = |url: &str| -> i64 {
        sql(url)
            .query_one(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let (err, before, after) = blocking(move || {
        sql(&url)
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'x', 0)",
                &[&newer],
            )
            .unwrap();
        let before = tables(&url);
        let err = connect_now(&url, None).err().map(|e| format!("{e:#}"));
        (err.expect("refused"), before, tables(&url))
    })
    .await;
    assert!(
        err.contains(&format!(
            "was written by a newer version of Tidings (schema version {newer}"
        )) && !err.contains("migrat"),
        "{err}"
    );
    assert_eq!(after, before, "left as it was");
}

/// Whatever goes wrong, the password is not in the message.
async fn errors_never_show_the_password(_: Store, db: Database) {
    let (url, server) = db.postgres();
    let (url, server) = (url.to_owned(), server.clone());
    blocking(move || {
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
            let err = format!("{:#}", connect_now(&url, password).err().unwrap());
            assert!(!err.contains("hunter2"), "{name}: {err}");
            assert!(!err.is_empty(), "{name}");
        }
        // Given apart, it is the password used (trust ignores it).
        connect_now(&url, Some("hunter2")).unwrap();
    })
    .await;
}

/// Instances starting at the same instant on an empty database take turns: the schema
/// is made once.
async fn three_instances_starting_at_once_migrate_once(_: Store, db: Database) {
    let (_, server) = db.postgres();
    let server = server.clone();
    blocking(move || {
        let url = server.fresh_database();
        let start = Arc::new(Barrier::new(3));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (url, start) = (url.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    connect_now(&url, None).map(|_| ())
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
        assert_eq!(applied, i64::from(postgres_migrations()));
        let generation: i64 = client
            .query_one("SELECT value FROM generations", &[])
            .unwrap()
            .get(0);
        assert_eq!(generation, 1, "the schema's one generation row, as made");
    })
    .await;
}

/// Retention runs on one instance at a time: while another holds the prune job's lock
/// (here a session of our own), a prune does nothing and says so; then it prunes.
async fn a_prune_while_another_instance_prunes_is_skipped(store: Store, db: Database) {
    const PRUNE_JOB_LOCK: i64 = 0x7469_6469_6e67_0004;
    let (url, _) = db.postgres();
    let url = url.to_owned();
    let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let holder = std::thread::spawn(move || {
        let mut other = sql(&url);
        other
            .execute("SELECT pg_advisory_lock($1)", &[&PRUNE_JOB_LOCK])
            .unwrap();
        held.0.send(()).unwrap();
        release.1.recv().unwrap();
    });
    blocking(move || held.1.recv().unwrap()).await;
    let later = noon() + chrono::Duration::days(200);
    let skipped = store.prune(noon(), later).await.unwrap();
    assert!(skipped.skipped, "{skipped:?}");
    release.0.send(()).unwrap();
    blocking(move || holder.join().unwrap()).await;
    // The server lets go of a closed session's locks a moment after the client left.
    let url = db.postgres().0.to_owned();
    blocking(move || {
        let mut client = sql(&url);
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            assert!(
                Instant::now() < deadline,
                "the holder's session never ended"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await;
    let pruned = store.prune(noon(), later).await.unwrap();
    assert!(
        !pruned.skipped,
        "the lock ended with its session: {pruned:?}"
    );
}

/// A write the database refuses as a whole (here through a read-only view of it; a full
/// disk and a server away are the same to the store) is taken as the database being
/// unavailable, with its reason. The view itself, opened only to read, reports no write
/// trouble for it, and the store that can write has none.
async fn a_refused_write_is_unavailable_and_a_read_only_view_no_trouble(
    store: Store,
    db: Database,
) {
    subscribe(
        &store,
        "ana@x.example",
        "asylum",
        Schedule::Immediate,
        noon(),
    )
    .await;
    let config = match &db {
        Database::Sqlite(path) => tidings::config::Database::Sqlite(path.clone()),
        Database::Postgres { url, .. } => tidings::config::Database::Postgres(url.clone()),
    };
    let read = Store::open_database_read_only(&config).await.unwrap();
    assert_eq!(read.write_trouble(), None);
    let error = read.remove_subscriber("ana@x.example").await.unwrap_err();
    let reason = tidings::store::unavailable(&error)
        .unwrap_or_else(|| panic!("not taken as the database refusing writes: {error:#}"));
    assert!(reason.contains("read"), "{reason}");
    // A view opened only to read refuses writes by its nature: no trouble of its own
    // (a command that only looks logs none), and none of the store that writes.
    assert_eq!((read.write_trouble(), read.write_failures()), (None, 0));
    assert_eq!(read.subscribers().await.unwrap().len(), 1);
    assert_eq!((store.write_trouble(), store.write_failures()), (None, 0));
}

/// A deployment whose URL picks its schema (`?options=-c search_path=tidings`, one
/// database shared with other applications) is read in that schema by the read-only view
/// too (`check-config`): its own read-only option is added to the URL's, not put instead.
async fn the_read_only_view_keeps_the_options_of_the_url(_: Store, db: Database) {
    let url = db.postgres().0.to_owned();
    let admin = url.clone();
    blocking(move || sql(&admin).batch_execute("CREATE SCHEMA tidings").unwrap()).await;
    let with_schema = format!("{url}?options=-c%20search_path%3Dtidings");
    let store = Store::connect(&with_schema, None).await.unwrap();
    subscribe(
        &store,
        "ana@x.example",
        "asylum",
        Schedule::Immediate,
        noon(),
    )
    .await;
    let read =
        Store::open_database_read_only(&tidings::config::Database::Postgres(with_schema.clone()))
            .await
            .unwrap();
    assert_eq!(read.subscribers().await.unwrap().len(), 1, "{with_schema}");
    assert!(
        read.remove_subscriber("ana@x.example").await.is_err(),
        "still read-only"
    );
}

/// Instance b's clock runs six minutes ahead of a's (no NTP, a VM resumed from suspend).
/// Leases, connection slots and the pacer were written and compared in each caller's
/// local time, so b saw a's live five-minute claims as ended: two instances polled one
/// feed, sent one message, connected twice to a host with `per_host` 1, and a's mail
/// waited ten minutes behind b's pacer slot. Every instance now goes by the database
/// server's clock ([`Store::now`], measured at connection and with each heartbeat).
async fn instances_whose_clocks_disagree_go_by_the_databases(a: Store, db: Database) {
    fn six_minutes_fast() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::minutes(6)
    }
    let url = db.postgres().0.to_owned();
    let b = Store::connect(&url, None)
        .await
        .unwrap()
        .with_local_clock(six_minutes_fast);
    assert!(b.now() - a.now() > minutes(5), "not measured yet");
    let offset = b.sync_clock().await.unwrap();
    assert!(
        (offset + minutes(6)).abs() < chrono::Duration::seconds(1),
        "{offset}"
    );
    assert!(
        (b.now() - a.now()).abs() < chrono::Duration::seconds(1),
        "one clock"
    );

    a.sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let lease = Duration::from_secs(300);
    assert_eq!(a.claim_feeds(a.now(), lease, true).await.unwrap().len(), 1);
    let stolen = b.claim_feeds(b.now(), lease, true).await.unwrap();
    assert!(stolen.is_empty(), "b took the feed a holds");

    a.queue_message(
        "ana@x.example",
        "hello",
        "text",
        "<p>html</p>",
        "t.example",
        a.now(),
    )
    .await
    .unwrap();
    let mail_lease = Duration::from_secs(60);
    assert_eq!(
        a.claim_mail(a.now(), mail_lease, 10).await.unwrap().len(),
        1
    );
    let stolen = b.claim_mail(b.now(), mail_lease, 10).await.unwrap();
    assert!(stolen.is_empty(), "b claimed the message a is sending");

    let limits = FetchLimits {
        per_host: 1,
        concurrency: 16,
    };
    let first = a.acquire_fetch_slot("gov.example", limits, a.now(), lease);
    assert!(first.await.unwrap().is_some());
    let second = b.acquire_fetch_slot("gov.example", limits, b.now(), lease);
    assert_eq!(second.await.unwrap(), None, "per_host 1, two connections");

    let interval = Duration::from_secs(1);
    b.reserve_mail_slot(b.now(), interval).await.unwrap();
    let now = a.now();
    let wait = a.reserve_mail_slot(now, interval).await.unwrap() - now;
    assert!(wait <= chrono::Duration::seconds(2), "a waits {wait}");
}

/// The database and this process share one clock here (a true offset of 0). The
/// measure once started its stopwatch before asking the pool for a connection: with all
/// eight busy for seconds (a burst of polls, a slow statement), half the wait became
/// "offset", `Store::now` ran ahead by it until the next heartbeat, and the heartbeat
/// warned about NTP. Only the query is timed now.
async fn a_busy_pool_is_not_measured_as_clock_offset(store: Store, db: Database) {
    let at_rest = store.sync_clock().await.unwrap();
    assert!(
        at_rest.abs() < chrono::Duration::milliseconds(200),
        "{at_rest}"
    );
    let url = db.postgres().0.to_owned();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut admin = sql(&url);
        let mut tx = admin.transaction().unwrap();
        tx.batch_execute("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        tx.commit().unwrap();
    });
    blocking(move || locked_rx.recv().unwrap()).await;
    // Eight calls wait on the lock, each holding one of the pool's eight connections.
    let busy: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.subscribers().await.map(|s| s.len()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let offset = store.sync_clock().await.unwrap();
    for call in busy {
        assert_eq!(call.await.unwrap().unwrap(), 0);
    }
    blocking(move || holder.join().unwrap()).await;
    assert!(
        offset.abs() < chrono::Duration::milliseconds(200),
        "one clock, measured {offset} after waiting for a pooled connection"
    );
    assert!((store.now() - Utc::now()).abs() < chrono::Duration::milliseconds(200));
}

/// The online backup is SQLite's; on PostgreSQL it says to use pg_dump, and writes nothing.
async fn backup_to_points_to_pg_dump(store: Store, _: Database) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    let err = format!("{:#}", store.backup_to(&path, false).await.unwrap_err());
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!path.exists());
}

// ---- the harness ----------------------------------------------------------------------------

type Story = fn(Store, Database) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn boxed(
    story: impl Future<Output = ()> + Send + 'static,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(story)
}

// ---- destinations beside email ----------------------------------------------------------------

/// Adds a destination `name` for `subscriber`, active, taking `searches` (every search
/// when empty).
async fn destination(
    store: &Store,
    subscriber: SubscriberId,
    name: &str,
    searches: &[SubscriptionId],
) -> ChannelId {
    store
        .add_channel(
            NewChannel {
                subscriber_id: subscriber,
                name: name.into(),
                kind: ChannelKind::Webhook,
                target: r#"{"kind":"webhook","url":"https://hooks.example/in"}"#.into(),
                secret: Some("whsec_AAAA".into()),
                secret_env: None,
                added_by: ChannelOrigin::Admin,
                confirm_code: None,
                every_search: searches.is_empty(),
                searches: searches.to_vec(),
                limits: None,
                verification: None,
            },
            noon(),
        )
        .await
        .unwrap()
}

/// The outbox rows of destination `name` (`kind:name` as recipient), oldest first.
async fn pushed(store: &Store, name: &str) -> Vec<tidings::store::OutboxMessage> {
    let outbox = store.outbox().await.unwrap();
    outbox
        .into_iter()
        .filter(|m| m.recipient == format!("webhook:{name}"))
        .collect()
}

/// One digest round writes a mail and one event per destination, each with the
/// searches routed there; a search routed away from email is not mailed, unless every
/// destination it goes to is paused (then email takes it: nothing is taken unshown).
/// Unconfirmed destinations get nothing; each match is taken once.
async fn a_digest_goes_to_each_destination_its_searches_choose(store: Store, _: Database) {
    let t0 = noon();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, t0).await;
    let visa = subscribe(&store, "a@x.example", "visa", Schedule::Immediate, t0).await;
    let who = subscriber_id(&store, "a@x.example").await;
    let hook = destination(&store, who, "hook", &[]).await;
    let chat = destination(&store, who, "chat", &[visa]).await;
    store
        .set_search_route(visa, false, vec![chat])
        .await
        .unwrap();
    let hook_row = store.channel(hook).await.unwrap().unwrap();
    assert!(
        !hook_row.every_search,
        "left out of one search: it lists the others"
    );
    assert_eq!(hook_row.searches, vec![asylum]);
    assert_eq!(store.searches_not_to_email(who).await.unwrap(), vec![visa]);
    // Unconfirmed: routed nowhere.
    let mut pending = NewChannel {
        subscriber_id: who,
        name: "later".into(),
        kind: ChannelKind::Telegram,
        target: r#"{"kind":"telegram","chat_id":"1"}"#.into(),
        secret: Some("1:x".into()),
        secret_env: None,
        added_by: ChannelOrigin::Subscriber,
        confirm_code: Some("1234 5678".into()),
        every_search: true,
        searches: Vec::new(),
        limits: None,
        verification: None,
    };
    store.add_channel(pending.clone(), t0).await.unwrap();
    pending.confirm_code = None;
    let taken = store.add_channel(pending, t0).await.unwrap_err();
    assert!(
        taken
            .to_string()
            .contains("already a destination named \"later\""),
        "{taken}"
    );

    store_poll(&store, &[item("k1", "Asylum one", t0)], t0, &[asylum]).await;
    let t0 = t0 + minutes(15);
    store_poll(&store, &[item("k2", "Visa one", t0)], t0, &[visa]).await;
    let first = take(&store, who, t0).await.unwrap();
    let mail = message(&store, first).await;
    assert_eq!(
        (mail.subject.as_str(), mail.body_text.as_str()),
        ("1 new", "Asylum one")
    );
    let hooked = pushed(&store, "hook").await;
    assert_eq!(hooked.len(), 1);
    assert!(
        hooked[0].body_text.contains("Asylum one") && !hooked[0].body_text.contains("Visa one")
    );
    let chatted = pushed(&store, "chat").await;
    assert_eq!(chatted.len(), 1);
    assert!(chatted[0].body_text.contains("Visa one") && !chatted[0].body_text.contains("Asylum"));
    assert!(
        chatted[0].message_id.starts_with("evt_") && chatted[0].message_id != hooked[0].message_id
    );
    assert!(pushed(&store, "later").await.is_empty());
    assert!(
        take(&store, who, t0).await.is_none(),
        "every match was taken"
    );

    // The chat paused: its search goes to email, the waiting event is held.
    assert!(store.pause_channel(chat, "on holiday").await.unwrap());
    assert!(!store.pause_channel(chat, "again").await.unwrap());
    let t1 = t0 + minutes(15);
    store_poll(&store, &[item("k3", "Visa two", t1)], t1, &[visa]).await;
    let second = take(&store, who, t1).await.unwrap();
    assert_eq!(message(&store, second).await.body_text, "Visa two");
    assert_eq!(pushed(&store, "chat").await.len(), 1);
    let claimed = store
        .claim_push(t1, Duration::from_secs(60), 10)
        .await
        .unwrap();
    let names: Vec<&str> = claimed.iter().map(|m| m.channel.name.as_str()).collect();
    assert_eq!(names, vec!["hook"], "a paused destination's digest waits");
    assert!(
        store
            .claim_mail(t1, Duration::from_secs(60), 10)
            .await
            .unwrap()
            .iter()
            .all(|m| !m.recipient.contains(':')),
        "mail senders never get destination messages"
    );
    assert!(store.resume_channel(chat, t1).await.unwrap());
    let claimed = store
        .claim_push(t1, Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].channel.name, "chat");
    assert_eq!(claimed[0].kind, OutboxKind::Push);
}

/// Permanent rejections pause a destination after the limit (at once when gone); a
/// success forgets them; a sender that lost its claim writes nothing; two senders never
/// claim the same message; a notice goes to a destination in any state.
async fn destination_messages_are_claimed_once_and_rejections_pause(store: Store, db: Database) {
    let t0 = noon();
    store
        .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, t0)
        .await
        .unwrap();
    let who = subscriber_id(&store, "a@x.example").await;
    let hook = destination(&store, who, "hook", &[]).await;
    for n in 0..40 {
        store
            .queue_notice(hook, "test", "{}", &format!("evt_{n}"), t0)
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    let claimed = at_once(&db, 2, move |s| async move {
        let mut got = Vec::new();
        loop {
            let batch = s.claim_push(t0, lease, 3).await.unwrap();
            if batch.is_empty() {
                return got;
            }
            got.extend(batch.into_iter().map(|m| m.outbox.message_id));
        }
    })
    .await;
    let mut all: Vec<String> = claimed.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
    assert_eq!(claimed[0].len() + claimed[1].len(), 40, "each claimed once");

    // Digests for another subscriber's destination, one per round.
    let visa = subscribe(&store, "b@x.example", "visa", Schedule::Immediate, t0).await;
    let b = subscriber_id(&store, "b@x.example").await;
    let hook2 = destination(&store, b, "hook2", &[]).await;
    store
        .set_search_route(visa, false, vec![hook2])
        .await
        .unwrap();
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let mut t = t0;
    for n in 0..9 {
        store_poll(
            &store,
            &[item(&format!("v{n}"), &format!("Visa {n}"), t)],
            t,
            &[visa],
        )
        .await;
        take(&store, b, t).await.unwrap();
        t += minutes(15);
    }
    let later = t;
    let all_rows = store.claim_push(later, lease, 100).await.unwrap();
    assert_eq!(
        all_rows.len(),
        49,
        "the lease ran out: 40 notices and 9 digests"
    );
    let (mut rows, notices): (Vec<_>, Vec<_>) =
        all_rows.into_iter().partition(|m| m.channel.id == hook2);
    assert!(rows.iter().all(|m| m.kind == OutboxKind::Push));
    let mut next = || rows.remove(0).outbox;
    let reject = |m: tidings::store::OutboxMessage, gone: bool| {
        let store = store.clone();
        async move {
            store
                .mark_push_rejected(m.id, m.claim.as_deref(), "HTTP 404", 3, gone)
                .await
                .unwrap()
        }
    };
    assert!(reject(next(), false).await.is_none());
    // What a rejected digest carried is pending again, to go where its search goes.
    let again = take(&store, b, later)
        .await
        .expect("the rejected match, again");
    assert!(message(&store, again).await.body_text.contains("Visa 0"));
    assert!(reject(next(), false).await.is_none());
    let ok = next();
    assert!(
        store
            .mark_sent(ok.id, ok.claim.as_deref(), later)
            .await
            .unwrap()
    );
    assert_eq!(
        store.channel(hook2).await.unwrap().unwrap().failures,
        0,
        "a success forgets"
    );
    let stale = next();
    assert!(
        store
            .mark_push_rejected(
                stale.id,
                Some("0123456789ABCDEF01234567"),
                "HTTP 404",
                1,
                true
            )
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.channel(hook2).await.unwrap().unwrap().state,
        ChannelState::Active,
        "a lost claim writes nothing"
    );
    // A notice refused does not count.
    let notice = &notices[0];
    assert_eq!(notice.kind, OutboxKind::Notice);
    store
        .mark_push_rejected(
            notice.outbox.id,
            notice.outbox.claim.as_deref(),
            "HTTP 401",
            1,
            true,
        )
        .await
        .unwrap();
    assert_eq!(store.channel(hook).await.unwrap().unwrap().failures, 0);
    assert_eq!(
        store.channel(hook).await.unwrap().unwrap().state,
        ChannelState::Active
    );
    assert!(reject(next(), false).await.is_none());
    assert!(reject(next(), false).await.is_none());
    let paused = reject(next(), false)
        .await
        .expect("the third in a row pauses");
    assert_eq!((paused.state, paused.failures), (ChannelState::Paused, 3));
    assert_eq!(paused.paused_reason.as_deref(), Some("HTTP 404"));
    assert!(reject(next(), false).await.is_none(), "paused once");
    assert!(store.resume_channel(hook2, later).await.unwrap());
    let gone = reject(next(), true).await.expect("a 410 pauses at once");
    assert_eq!(gone.failures, 1);
    // Notices go whatever the state.
    store
        .queue_notice(hook2, "verify", "{}", "evt_x", later)
        .await
        .unwrap();
    let claimed = store.claim_push(later, lease, 100).await.unwrap();
    let claimed: Vec<_> = claimed
        .into_iter()
        .filter(|m| m.channel.id == hook2)
        .collect();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].kind, claimed[0].outbox.message_id.as_str()),
        (OutboxKind::Notice, "evt_x")
    );
    let backlog = store.push_backlog().await.unwrap();
    assert_eq!(backlog.len(), 1);
    // 39 notices of hook (one rejected), the digest whose claim was lost, the one the
    // rejection made again, and evt_x.
    assert_eq!((backlog[0].0, backlog[0].1), (ChannelKind::Webhook, 42));
}

/// A verification code is checked a limited number of times, even when guesses come
/// at once; routes and searches stay within one subscriber; a removed destination's
/// waiting messages fail, and so do a removed subscriber's.
async fn codes_routes_and_removals_hold(store: Store, db: Database) {
    let t0 = noon();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, t0).await;
    let other = subscribe(&store, "b@x.example", "visa", Schedule::Immediate, t0).await;
    let a = subscriber_id(&store, "a@x.example").await;
    let b = subscriber_id(&store, "b@x.example").await;
    let theirs = destination(&store, b, "theirs", &[]).await;
    let id = store
        .add_channel(
            NewChannel {
                subscriber_id: a,
                name: "mine".into(),
                kind: ChannelKind::Ntfy,
                target: r#"{"kind":"ntfy","url":"https://ntfy.sh/t"}"#.into(),
                secret: None,
                secret_env: None,
                added_by: ChannelOrigin::Subscriber,
                confirm_code: Some("1234 5678".into()),
                every_search: true,
                searches: Vec::new(),
                limits: None,
                verification: None,
            },
            t0,
        )
        .await
        .unwrap();
    let outcomes = at_once(&db, 2, move |s| async move {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(s.confirm_channel(id, "0000 0000", t0).await.unwrap());
        }
        seen
    })
    .await
    .concat();
    let wrong = outcomes
        .iter()
        .filter(|o| matches!(o, Confirmation::Wrong { .. }))
        .count();
    assert_eq!(wrong, 4, "{outcomes:?}");
    assert_eq!(
        store.confirm_channel(id, "12345678", t0).await.unwrap(),
        Confirmation::Locked
    );
    assert_eq!(
        store.channel(id).await.unwrap().unwrap().state,
        ChannelState::Unconfirmed
    );

    let stranger = store
        .set_search_route(asylum, true, vec![theirs])
        .await
        .unwrap_err();
    assert!(
        stranger.to_string().contains("not this subscriber's"),
        "{stranger}"
    );
    let foreign = store
        .add_channel(
            NewChannel {
                subscriber_id: a,
                name: "x".into(),
                kind: ChannelKind::Webhook,
                target: "{}".into(),
                secret: None,
                secret_env: None,
                added_by: ChannelOrigin::Admin,
                confirm_code: None,
                every_search: false,
                searches: vec![other],
                limits: None,
                verification: None,
            },
            t0,
        )
        .await
        .unwrap_err();
    assert!(
        foreign.to_string().contains("not this subscriber's"),
        "{foreign}"
    );
    assert!(
        store
            .channels(Some(a))
            .await
            .unwrap()
            .iter()
            .all(|c| c.name != "x"),
        "nothing stored"
    );

    store
        .queue_notice(id, "verify", "{}", "evt_1", t0)
        .await
        .unwrap();
    store
        .queue_notice(theirs, "test", "{}", "evt_2", t0)
        .await
        .unwrap();
    assert!(store.remove_channel(id).await.unwrap());
    assert!(!store.remove_channel(id).await.unwrap());
    assert!(store.remove_subscriber("b@x.example").await.unwrap());
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 2);
    for m in outbox {
        assert_eq!(
            (m.status, m.last_error.as_deref()),
            (OutboxStatus::Failed, Some("destination removed"))
        );
    }
    assert!(store.channels(None).await.unwrap().is_empty());
    let orphan = store.outbox().await.unwrap().remove(0);
    let refused = store.requeue(orphan.id, t0).await.unwrap_err();
    assert!(
        refused.to_string().contains("destination was removed"),
        "{refused}"
    );
}

/// (name, story) for each story named.
macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        [$((stringify!($story), (|store, db| boxed($story(store, db))) as Story)),*]
    };
}

// ---- articles (full-text feeds) ---------------------------------------------------------------

fn done(
    state: ArticleState,
    text: Option<&str>,
    matches: &[SubscriptionId],
    generation: i64,
) -> ArticleDone {
    ArticleDone {
        state,
        text: text.map(str::to_string),
        error: None,
        matches: matches.to_vec(),
        matcher_generation: generation,
    }
}

/// An item of a full-text feed is stored unmatched, its article pending; one worker at a
/// time holds it; a try that failed comes back when due; a worker whose claim lapsed, or
/// whose matcher is stale, writes nothing; the article and the matches are written once;
/// an edit with the same link is matched with the stored article, a new link is fetched
/// again; the digest carries the article.
async fn a_full_text_item_waits_for_its_article_and_is_matched_once(store: Store, db: Database) {
    let mut full = feed("f", "https://f.example/feed");
    full.options.full_text = true;
    full.options.content_selector = Some("div.entry".into());
    store.sync_feeds(&[full]).await.unwrap();
    let now = noon();
    let asylum = subscribe(&store, "a@example.org", "asylum", Schedule::Immediate, now).await;
    let mut linked = item("a", "Ruling", now - minutes(5));
    linked.link = Some("https://f.example/a".into());
    linked.summary = "Teaser.".into();
    let unlinked = item("b", "No link", now - minutes(5));
    let stored = store_poll(&store, &[linked.clone(), unlinked], now, &[asylum]).await;
    assert_eq!(
        (stored.new_items, stored.matches, stored.articles_pending),
        (2, 1, 1),
        "the item without a link is matched at once; the other waits"
    );

    // Two workers at once: one gets it.
    let claimed = at_once(&db, 2, move |s| async move {
        s.claim_articles(now, Duration::from_secs(60), 10)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(claimed[0].len() + claimed[1].len(), 1, "{claimed:?}");
    let first = claimed.into_iter().flatten().next().unwrap();
    assert_eq!(
        (
            first.link.as_str(),
            first.feed_id.as_str(),
            first.content_selector.as_deref(),
            first.summary.as_str(),
            first.attempts
        ),
        ("https://f.example/a", "f", Some("div.entry"), "Teaser.", 0)
    );
    assert!(
        store
            .claim_articles(now, Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "held"
    );

    // A try failed: pending, not matched, back when due.
    assert!(
        store
            .retry_article(&first, "timed out", now + minutes(2))
            .await
            .unwrap()
    );
    let counts = &store.article_counts().await.unwrap()["f"];
    assert_eq!(
        (counts.pending, counts.last_error.as_deref()),
        (1, Some("timed out"))
    );
    let early = store.claim_articles(now + minutes(1), Duration::from_secs(60), 10);
    assert!(early.await.unwrap().is_empty());
    let lapsing = store
        .claim_articles(now + minutes(3), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(lapsing.len(), 1);
    assert_eq!(lapsing[0].attempts, 1);
    // Its lease lapses; another worker takes it over.
    let taken = store
        .claim_articles(now + minutes(5), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_ne!(taken[0].claim, lapsing[0].claim);
    let generation = store.subscriptions_generation().await.unwrap();
    let story = Some("The asylum ruling in full.");
    assert_eq!(
        store
            .finish_article(
                &lapsing[0],
                done(ArticleState::Ok, story, &[asylum], generation),
                now
            )
            .await
            .unwrap(),
        ArticleOutcome::ClaimLost
    );
    assert_eq!(
        store
            .finish_article(
                &taken[0],
                done(ArticleState::Ok, story, &[asylum], generation - 1),
                now
            )
            .await
            .unwrap(),
        ArticleOutcome::StaleMatcher
    );
    assert_eq!(store.article_counts().await.unwrap()["f"].pending, 1);
    assert_eq!(
        store
            .finish_article(
                &taken[0],
                done(ArticleState::Ok, story, &[asylum], generation),
                now
            )
            .await
            .unwrap(),
        ArticleOutcome::Matched(1)
    );
    assert_eq!(
        store
            .finish_article(
                &taken[0],
                done(ArticleState::Ok, story, &[asylum], generation),
                now
            )
            .await
            .unwrap(),
        ArticleOutcome::ClaimLost,
        "once"
    );
    let status = store.feed_statuses().await.unwrap();
    assert_eq!(
        (
            status[0].articles.ok,
            status[0].articles.pending,
            status[0].articles.last_error.as_deref()
        ),
        (1, 0, None),
        "read at last: no failure left to show"
    );

    // The digest carries the article.
    let who = subscriber_id(&store, "a@example.org").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in = seen.clone();
    store
        .take_digest(who, now, false, "tidings.test", move |s, parcels| {
            seen_in.lock().unwrap().extend(
                parcels
                    .email
                    .iter()
                    .map(|e| (e.title.clone(), e.article.clone())),
            );
            render(s, parcels)
        })
        .await
        .unwrap()
        .unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("No link".to_string(), None),
            ("Ruling".to_string(), story.map(str::to_string))
        ]
    );

    // An edit, same link: matched with the stored article, not fetched again.
    let mut edited = linked.clone();
    edited.title = "Ruling (corrected)".into();
    let later = now + minutes(60);
    let feed = claim_one(&store, later).await;
    let generation = store.subscriptions_generation().await.unwrap();
    let articles = Arc::new(Mutex::new(Vec::new()));
    let articles_in = articles.clone();
    let outcome = store
        .store_items(
            &feed,
            poll(&[edited.clone()], later, generation),
            move |_, article, _| {
                articles_in
                    .lock()
                    .unwrap()
                    .push(article.map(str::to_string));
                vec![asylum]
            },
        )
        .await
        .unwrap();
    let StoreOutcome::Stored(stored) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((stored.updated_items, stored.articles_pending), (1, 0));
    assert_eq!(*articles.lock().unwrap(), [story.map(str::to_string)]);
    // A new link (text unchanged): fetched again, its item not matched until then.
    edited.link = Some("https://f.example/a-v2".into());
    let stored = store_poll(&store, &[edited], later + minutes(60), &[asylum]).await;
    assert_eq!((stored.matches, stored.articles_pending), (0, 1));
    let again = store
        .claim_articles(later + minutes(60), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(
        (again.len(), again[0].link.as_str(), again[0].attempts),
        (1, "https://f.example/a-v2", 0)
    );
}

/// A poll that edits an item while its article is being fetched: the article's write is
/// refused until it is matched on the new text; a new link that brings the same story
/// sends nothing again.
async fn an_article_is_matched_on_the_items_text_as_it_is_when_written(store: Store, _: Database) {
    let mut full = feed("f", "https://f.example/feed");
    full.options.full_text = true;
    store.sync_feeds(&[full]).await.unwrap();
    let now = noon();
    let asylum = subscribe(&store, "a@example.org", "asylum", Schedule::Immediate, now).await;
    let mut teaser = item("a", "Ruling", now - minutes(5));
    teaser.link = Some("https://f.example/a".into());
    store_poll(&store, std::slice::from_ref(&teaser), now, &[asylum]).await;
    let claimed = store
        .claim_articles(now, Duration::from_secs(600), 10)
        .await
        .unwrap()
        .remove(0);
    teaser.summary = "Edited while the page was on its way.".into();
    let stored = store_poll(
        &store,
        std::slice::from_ref(&teaser),
        now + minutes(1),
        &[asylum],
    )
    .await;
    assert_eq!(stored.updated_items, 1);
    let generation = store.subscriptions_generation().await.unwrap();
    let story = Some("The asylum story.");
    assert_eq!(
        store
            .finish_article(
                &claimed,
                done(ArticleState::Ok, story, &[asylum], generation),
                now
            )
            .await
            .unwrap(),
        ArticleOutcome::TextChanged
    );
    let fresh = store.reread_article(&claimed).await.unwrap().unwrap();
    assert_eq!(fresh.summary, "Edited while the page was on its way.");
    assert_eq!(
        store
            .finish_article(
                &fresh,
                done(ArticleState::Ok, story, &[asylum], generation),
                now
            )
            .await
            .unwrap(),
        ArticleOutcome::Matched(1)
    );
    let who = subscriber_id(&store, "a@example.org").await;
    take(&store, who, now + minutes(2)).await.unwrap();

    // A new link (a tracking parameter) and the same story: fetched, not sent again.
    teaser.link = Some("https://f.example/a?ref=2".into());
    let later = now + minutes(60);
    let stored = store_poll(&store, std::slice::from_ref(&teaser), later, &[asylum]).await;
    assert_eq!(stored.articles_pending, 1);
    let again = store
        .claim_articles(later, Duration::from_secs(600), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        store
            .finish_article(
                &again,
                done(ArticleState::Ok, story, &[asylum], generation),
                later
            )
            .await
            .unwrap(),
        ArticleOutcome::Matched(0)
    );
    assert_eq!(take(&store, who, later).await, None, "nothing new to send");
}

/// Runs `story` on its own runtime, on a fresh database of `backend`.
fn run(story: Story, backend: &Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Sqlite => Database::Sqlite(dir.path().join("tidings.db")),
        Backend::Postgres(server) => Database::Postgres {
            url: server.fresh_database(),
            server: server.clone(),
        },
    };
    let store = database.open_now();
    runtime.block_on(story(store, database));
}

enum Backend {
    Sqlite,
    Postgres(Arc<PgServer>),
}

/// Languages: a new item that can be alerted gets its language (detected, or as
/// declared), and the closure that matches it is told; a search crosses languages only
/// by its own subscriber's say; a sign-up's language becomes its subscriber's; the manage
/// page's choice is stored.
async fn languages_of_items_searches_and_subscribers(store: Store, _: Database) {
    store
        .sync_feeds(&[feed("f", "https://f.example/feed")])
        .await
        .unwrap();
    let now = noon();
    let asylum = subscribe(&store, "a@x.example", "asylum", Schedule::Immediate, now).await;
    let other = subscribe(&store, "b@x.example", "visa", Schedule::Immediate, now).await;
    let mut spanish = item("es", "¿Qué cambia con la nueva regla de asilo?", now);
    spanish.summary = "El gobierno publicó una norma que limita las solicitudes de asilo en la \
                       frontera sur, y los abogados señalan que será impugnada."
        .into();
    let mut creole = item("ht", "Nouvo dat pou TPS Ayiti", now);
    creole.declared_lang = Some("ht-HT".into());
    let feed = claim_one(&store, now).await;
    let generation = store.subscriptions_generation().await.unwrap();
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = told.clone();
    let outcome = store
        .store_items(
            &feed,
            poll(&[spanish, creole], now, generation),
            move |item, _, lang| {
                seen.lock()
                    .unwrap()
                    .push((item.key.clone(), lang.map(str::to_string)));
                Vec::new()
            },
        )
        .await
        .unwrap();
    assert!(matches!(outcome, StoreOutcome::Stored(_)), "{outcome:?}");
    let mut told = told.lock().unwrap().clone();
    told.sort();
    assert_eq!(
        told,
        [
            ("es".to_string(), Some("es".to_string())),
            ("ht".to_string(), Some("ht".to_string()))
        ]
    );
    let mut stored: Vec<(String, Option<String>)> = store
        .items_since(now - minutes(60))
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.title, i.lang))
        .collect();
    stored.sort();
    assert_eq!(stored[0].1.as_deref(), Some("ht"), "{stored:?}");
    assert_eq!(stored[1].1.as_deref(), Some("es"), "{stored:?}");

    let a = subscriber_id(&store, "a@x.example").await;
    let b = subscriber_id(&store, "b@x.example").await;
    let before = store.subscriptions_generation().await.unwrap();
    assert!(
        !store.set_crosses_languages(a, other, true).await.unwrap(),
        "not a's search"
    );
    assert!(store.set_crosses_languages(a, asylum, true).await.unwrap());
    assert!(
        !store.set_crosses_languages(a, asylum, true).await.unwrap(),
        "already so"
    );
    let active = store.subscriptions().await.unwrap();
    assert_eq!(active.crossing, [asylum]);
    assert_ne!(active.generation, before, "the matcher must be rebuilt");
    assert_eq!(
        store.searches_crossing_languages(a).await.unwrap(),
        [asylum]
    );
    assert!(
        store
            .searches_crossing_languages(b)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.subscriber_by_id(a).await.unwrap().unwrap().locale,
        "en"
    );
    assert!(store.set_locale(a, "es").await.unwrap());
    assert_eq!(
        store.subscriber_by_id(a).await.unwrap().unwrap().locale,
        "es"
    );
    let mut zoe = signup("zoe@x.example", &["TPS"], "192.0.2.9", now);
    zoe.locale = "es".into();
    let id = store.create_signup(&zoe).await.unwrap();
    assert_eq!(store.signup(id).await.unwrap().unwrap().locale, "es");
    let zoe = store
        .confirm_signup(id, Schedule::Immediate, chrono_tz::UTC, |_| true, now)
        .await
        .unwrap();
    assert_eq!(
        store.subscriber_by_id(zoe).await.unwrap().unwrap().locale,
        "es"
    );
}

/// Items of different feeds with the same link, or nearly the same text, are one story;
/// a subscriber who got it hears of another outlet as they chose: never (no match kept),
/// in their next digest (a quiet match that does not make them due), or always.
async fn one_story_across_feeds_and_new_outlets_as_chosen(store: Store, _: Database) {
    const WIRE: &str = "U.S. Citizenship and Immigration Services said Tuesday it will \
        extend the automatic extension of employment authorization documents to 540 days \
        for asylum applicants who file Form I-765 on time, citing processing backlogs.";
    let t0 = noon();
    store
        .sync_feeds(&[
            feed("a", "https://a.example/feed"),
            feed("b", "https://b.example/feed"),
            feed("c", "https://c.example/feed"),
        ])
        .await
        .unwrap();
    let mut subs = Vec::new();
    for who in ["next", "never", "always"] {
        let email = format!("{who}@x.example");
        subs.push(subscribe(&store, &email, "asylum", Schedule::Immediate, t0).await);
    }
    let [next, never, always] = [
        subscriber_id(&store, "next@x.example").await,
        subscriber_id(&store, "never@x.example").await,
        subscriber_id(&store, "always@x.example").await,
    ];
    assert!(
        store
            .set_new_outlets(never, NewOutlets::Never)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_new_outlets(always, NewOutlets::Always)
            .await
            .unwrap()
    );
    let story_item = |key: &str, title: &str, link: &str, text: &str| Item {
        link: Some(link.into()),
        summary: text.into(),
        ..item(key, title, t0)
    };
    // Stores `item` as feed `feed`'s poll at `now`, matched by every search.
    let poll_feed = async |feed: &str, item: Item, now: DateTime<Utc>| {
        let claimed = store.claim_feeds(now, Duration::ZERO, false).await.unwrap();
        let to_poll = claimed.into_iter().find(|f| f.id == feed).unwrap();
        let generation = store.subscriptions_generation().await.unwrap();
        let subs = subs.clone();
        match store
            .store_items(&to_poll, poll(&[item], now, generation), move |_, _, _| {
                subs.clone()
            })
            .await
            .unwrap()
        {
            StoreOutcome::Stored(stored) => stored,
            other => panic!("{other:?}"),
        }
    };
    // What a digest took: (title, story, more coverage).
    let take_seen = async |subscriber: SubscriberId, now: DateTime<Utc>| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let taken = store
            .take_digest(subscriber, now, false, "tidings.test", move |s, parcels| {
                out.lock().unwrap().extend(
                    parcels
                        .email
                        .iter()
                        .map(|e| (e.title.clone(), e.story, e.more_coverage)),
                );
                render(s, parcels)
            })
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        (taken, seen)
    };

    let a = story_item(
        "ka",
        "USCIS extends EAD to 540 days",
        "https://a.example/ead",
        WIRE,
    );
    assert_eq!(poll_feed("a", a, t0).await.matches, 3);
    let copy = format!("WASHINGTON — {WIRE} The post appeared first on B.");
    let b = story_item(
        "kb",
        "Agency extends work permits",
        "https://b.example/1",
        &copy,
    );
    assert_eq!(poll_feed("b", b, t0 + minutes(1)).await.matches, 3);
    for subscriber in [next, never, always] {
        let (taken, seen) = take_seen(subscriber, t0 + minutes(2)).await;
        assert!(taken.is_some());
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].1, seen[1].1, "one story: {seen:?}");
        assert!(seen.iter().all(|s| !s.2), "{seen:?}");
    }

    // A third outlet, with the first one's link.
    let c = story_item(
        "kc",
        "Work permits extended",
        "https://a.example/ead",
        "Short.",
    );
    let stored = poll_feed("c", c, t0 + minutes(3)).await;
    assert_eq!(stored.matches, 2, "nothing kept for who wants nothing more");
    let due = store.due_digests(t0 + minutes(4), false).await.unwrap();
    assert_eq!(due, [always], "a quiet match does not make a digest due");
    assert_eq!(take_seen(next, t0 + minutes(4)).await.0, None);
    assert_eq!(take_seen(never, t0 + minutes(4)).await.0, None);
    let (taken, seen) = take_seen(always, t0 + minutes(4)).await;
    assert!(taken.is_some());
    assert_eq!(
        seen,
        [("Work permits extended".to_string(), seen[0].1, false)]
    );

    // Wanting every outlet after all: what waited goes out now, as news.
    assert!(
        store
            .set_new_outlets(next, NewOutlets::Always)
            .await
            .unwrap()
    );
    assert_eq!(
        store.due_digests(t0 + minutes(5), false).await.unwrap(),
        [next]
    );
    let (_, seen) = take_seen(next, t0 + minutes(5)).await;
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].2);
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let started = Instant::now();
    let server = if args.list {
        None
    } else {
        PgServer::start_or_skip("the store contract on PostgreSQL (postgres::*)").map(Arc::new)
    };
    if server.is_some() {
        eprintln!("PostgreSQL test server started in {:?}", started.elapsed());
    }
    let contract = stories![
        a_baseline_poll_stores_everything_and_matches_only_what_is_new,
        a_worker_that_lost_its_feed_claim_writes_nothing,
        a_released_claim_frees_the_feed_at_once,
        claims_held_counts_live_claims_and_their_end,
        claims_of_gone_owners_are_taken_over_at_once,
        two_workers_claiming_at_once_never_get_the_same_feed,
        storing_with_a_stale_matcher_writes_nothing,
        the_body_hash_is_kept_per_url,
        feed_statuses_follow_ok_not_modified_failure_and_gone,
        sync_feeds_deactivates_removed_feeds_and_restarts_a_moved_one,
        every_subscription_change_moves_the_generation_and_ids_are_never_reused,
        addresses_compare_case_insensitively_in_ascii_only,
        subscribers_are_found_by_id_and_by_address_in_any_case,
        edits_are_sent_again_and_pruning_keeps_what_is_pending,
        due_digests_follow_schedules_and_skip_paused_subscribers,
        take_digest_moves_the_schedule_and_fixes_the_message_id,
        one_digest_taken_twice_at_once_is_queued_once,
        a_scheduled_digest_is_taken_once_per_period_whoever_listed_it,
        long_links_and_searches_are_stored_by_every_backend,
        two_senders_claiming_at_once_never_get_the_same_message,
        a_mail_lease_that_expires_lets_another_sender_take_the_message,
        requeue_puts_failed_mail_back_but_not_mail_sent_or_being_sent,
        bounces_pause_a_subscriber_after_the_limit,
        removing_a_subscriber_keeps_their_queued_mail,
        a_confirmation_that_fails_part_way_stores_nothing,
        confirming_a_signup_keeps_the_searches_kept_and_twice_is_once,
        record_signup_holds_the_client_and_address_limits,
        sign_up_limits_hold_when_requests_come_at_once,
        service_stats_count_what_is_stored,
        another_instance_sees_the_same_database,
        a_store_opens_and_closes_inside_async_code,
        the_feed_list_written_last_wins,
        the_mail_pacer_spaces_senders_on_every_instance,
        a_setting_is_created_once_and_shared,
        heartbeats_and_due_feeds_are_counted,
        fetch_slots_hold_for_every_instance,
        due_feeds_are_claimed_in_batches_longest_due_first,
        a_time_out_of_range_is_an_error_not_1970,
        a_full_text_item_waits_for_its_article_and_is_matched_once,
        an_article_is_matched_on_the_items_text_as_it_is_when_written,
        a_digest_goes_to_each_destination_its_searches_choose,
        destination_messages_are_claimed_once_and_rejections_pause,
        one_story_across_feeds_and_new_outlets_as_chosen,
        languages_of_items_searches_and_subscribers,
        codes_routes_and_removals_hold,
        a_refused_write_is_unavailable_and_a_read_only_view_no_trouble,
    ];
    let postgres_only = stories![
        migrations_apply_once_and_reconnecting_is_a_no_op,
        a_database_from_a_newer_tidings_is_refused_and_left_as_it_is,
        errors_never_show_the_password,
        three_instances_starting_at_once_migrate_once,
        backup_to_points_to_pg_dump,
        a_prune_while_another_instance_prunes_is_skipped,
        the_read_only_view_keeps_the_options_of_the_url,
        instances_whose_clocks_disagree_go_by_the_databases,
        a_busy_pool_is_not_measured_as_clock_offset,
    ];
    let mut trials = Vec::new();
    for (name, story) in contract {
        trials.push(Trial::test(format!("sqlite::{name}"), move || {
            run(story, &Backend::Sqlite);
            Ok(())
        }));
    }
    for (name, story) in contract.into_iter().chain(postgres_only) {
        let server = server.clone();
        trials.push(Trial::ignorable_test(
            format!("postgres::{name}"),
            move || -> Result<Completion, Failed> {
                let Some(server) = server else {
                    return Ok(Completion::ignored_with("PostgreSQL is not installed"));
                };
                run(story, &Backend::Postgres(server));
                Ok(Completion::Completed)
            },
        ));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials (and their clones of the server) are gone: this stops it.
    drop(server);
    conclusion.exit_code()
}
