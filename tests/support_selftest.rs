//! Proves the test servers in `support` speak real HTTP and SMTP.

mod support;

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use support::{FEED_LAST_MODIFIED, FeedServer, Route, SmtpServer};

const RSS: &str = "<rss version=\"2.0\"><channel><title>t</title></channel></rss>";

#[tokio::test]
async fn feed_server_serves_conditional_gets() {
    let server = FeedServer::start().await;
    server.set("/feed.xml", Route::feed("application/rss+xml", RSS));
    let client = reqwest::Client::new();

    let first = client
        .get(server.url("/feed.xml"))
        .header("x-probe", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["content-type"], "application/rss+xml");
    assert_eq!(first.headers()[LAST_MODIFIED], FEED_LAST_MODIFIED);
    let etag = first.headers()[ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2);
    assert_eq!(first.text().await.unwrap(), RSS);

    let second = client
        .get(server.url("feed.xml"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(second.headers()[ETAG], etag.as_str());
    assert!(second.bytes().await.unwrap().is_empty());

    let third = client
        .get(server.url("/feed.xml"))
        .header(IF_MODIFIED_SINCE, FEED_LAST_MODIFIED)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::NOT_MODIFIED);

    // A stale ETag wins over a matching date.
    let fourth = client
        .get(server.url("/feed.xml"))
        .header(IF_NONE_MATCH, "\"stale\"")
        .header(IF_MODIFIED_SINCE, FEED_LAST_MODIFIED)
        .send()
        .await
        .unwrap();
    assert_eq!(fourth.status(), StatusCode::OK);

    assert_eq!(server.hits("/feed.xml"), 4);
    assert_eq!(server.not_modified("/feed.xml"), 2);
    let requests = server.requests("/feed.xml");
    assert_eq!(requests.len(), 4);
    assert!(requests[0].contains(&("x-probe".to_owned(), "one".to_owned())));
    assert!(requests[1].contains(&("if-none-match".to_owned(), etag.clone())));

    // Replacing the body changes the ETag, so the old one no longer matches.
    server.set("/feed.xml", Route::feed("application/rss+xml", "<rss/>"));
    let changed = client
        .get(server.url("/feed.xml"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()[ETAG], etag.as_str());
    assert_eq!(changed.text().await.unwrap(), "<rss/>");
}

#[tokio::test]
async fn feed_server_unknown_status_headers_and_query() {
    let server = FeedServer::start().await;
    let client = reqwest::Client::new();

    let missing = client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.hits("/nope"), 1);
    assert_eq!(server.hits("/never"), 0);
    assert!(server.requests("/never").is_empty());

    server.set(
        "/down",
        Route::status(503, "maintenance").header("retry-after", "120"),
    );
    let down = client
        .get(server.url("/down?since=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers()["retry-after"], "120");
    assert!(down.headers().get(ETAG).is_none());
    assert_eq!(down.text().await.unwrap(), "maintenance");
    assert_eq!(server.hits("/down"), 1);

    server.set("/moved", Route::status(301, "").header("location", "/feed"));
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = no_redirect.get(server.url("/moved")).send().await.unwrap();
    assert_eq!(moved.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(moved.headers()["location"], "/feed");
}

#[tokio::test]
async fn feed_server_delay_and_drop() {
    let server = FeedServer::start().await;
    server.set(
        "/slow",
        Route::feed("application/atom+xml", "<feed/>").delay(Duration::from_millis(500)),
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = impatient.get(server.url("/slow")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(server.hits("/slow"), 1);

    let url = server.url("/slow");
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(reqwest::Client::new().get(url).send().await.is_err());
}

fn transport(server: &SmtpServer) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn message(to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from("Tidings <tidings@example.org>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(body.to_owned())
        .unwrap()
}

#[tokio::test]
async fn smtp_two_messages_on_one_transport() {
    let server = SmtpServer::start().await;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
        .credentials(Credentials::new("user".into(), "secret".into()))
        .build();

    mailer
        .send(message("alice@example.com", "First", "Hello Alice"))
        .await
        .unwrap();
    // lettre returns connections to its pool from a spawned task; let it run
    // so the second message reuses the connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    mailer
        .send(message("bob@example.com", "Second", "Hello Bob"))
        .await
        .unwrap();

    let messages = server.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].mail_from, "tidings@example.org");
    assert_eq!(messages[0].rcpt_to, ["alice@example.com"]);
    assert_eq!(messages[1].rcpt_to, ["bob@example.com"]);
    let first = String::from_utf8(messages[0].data.clone()).unwrap();
    assert!(first.contains("Subject: First\r\n"), "{first}");
    assert!(first.contains("Hello Alice"), "{first}");
    assert!(first.ends_with("\r\n"));
    let second = String::from_utf8(messages[1].data.clone()).unwrap();
    assert!(second.contains("Subject: Second\r\n"), "{second}");

    // One pooled connection carried both messages: it authenticated once.
    assert_eq!(server.auth_seen(), ["AUTH PLAIN AHVzZXIAc2VjcmV0"]);
    assert_eq!(
        server.credentials(),
        [("user".to_owned(), "secret".to_owned())]
    );
}

#[tokio::test]
async fn smtp_auth_login_and_anonymous() {
    let server = SmtpServer::start().await;
    let login = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
        .credentials(Credentials::new("bob".into(), "hunter2".into()))
        .authentication(vec![Mechanism::Login])
        .build();
    login
        .send(message("carol@example.com", "Login", "via LOGIN"))
        .await
        .unwrap();
    transport(&server)
        .send(message("dave@example.com", "Anon", "no auth"))
        .await
        .unwrap();

    assert_eq!(server.messages().len(), 2);
    assert_eq!(server.auth_seen(), ["AUTH LOGIN Ym9i aHVudGVyMg=="]);
    assert_eq!(
        server.credentials(),
        [("bob".to_owned(), "hunter2".to_owned())]
    );
}

#[tokio::test]
async fn smtp_raw_data_is_unstuffed_and_large_messages_work() {
    let server = SmtpServer::start().await;
    let mailer = transport(&server);
    let envelope = Envelope::new(
        Some("from@example.org".parse().unwrap()),
        vec![
            "one@example.com".parse().unwrap(),
            "two@example.com".parse().unwrap(),
        ],
    )
    .unwrap();

    let raw = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend: caf\u{e9}";
    mailer.send_raw(&envelope, raw.as_bytes()).await.unwrap();

    let long_line = "x".repeat(200_000);
    let mut large = format!("Subject: large\r\n\r\n{long_line}\r\n");
    while large.len() < 3_000_000 {
        large.push_str(&"0123456789".repeat(99));
        large.push_str("\r\n");
    }
    mailer.send_raw(&envelope, large.as_bytes()).await.unwrap();

    let messages = server.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].mail_from, "from@example.org");
    assert_eq!(messages[0].rcpt_to, ["one@example.com", "two@example.com"]);
    // lettre terminates the body with "\r\n.\r\n", so the last line gains a CRLF.
    assert_eq!(messages[0].data, format!("{raw}\r\n").into_bytes());
    assert_eq!(messages[1].data.len(), large.len() + 2);
    assert!(messages[1].data.starts_with(large.as_bytes()));
}

#[tokio::test]
async fn smtp_fail_next_is_transient_then_succeeds() {
    let server = SmtpServer::start().await;
    server.fail_next(1, 451, "try later");
    let mailer = transport(&server);

    let err = mailer
        .send(message("alice@example.com", "Retry", "one"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(server.messages().is_empty());

    mailer
        .send(message("alice@example.com", "Retry", "two"))
        .await
        .unwrap();
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert!(String::from_utf8_lossy(&messages[0].data).contains("two"));

    server.fail_next(1, 550, "no such user");
    let err = mailer
        .send(message("alice@example.com", "Bounce", "three"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn smtp_reject_rcpt_is_permanent() {
    let server = SmtpServer::start().await;
    server.reject_rcpt("ghost@example.com", 550, "no such user");
    let mailer = transport(&server);

    let err = mailer
        .send(message("ghost@example.com", "Hi", "boo"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");

    mailer
        .send(message("alice@example.com", "Hi", "still works"))
        .await
        .unwrap();
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["alice@example.com"]);
}

#[tokio::test]
async fn smtp_wait_for_times_out_and_drop_stops_server() {
    let server = SmtpServer::start().await;
    let started = std::time::Instant::now();
    assert!(
        server
            .wait_for(1, Duration::from_millis(100))
            .await
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(100));

    let mailer = transport(&server);
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        mailer
            .send(message("alice@example.com", "Gone", "x"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn smtp_speaks_the_protocol_by_hand() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let server = SmtpServer::start().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let mut expect = async |send: &str, code: &str| {
        if !send.is_empty() {
            writer.write_all(send.as_bytes()).await.unwrap();
        }
        let line = lines.next_line().await.unwrap().unwrap();
        assert!(line.starts_with(code), "{send:?} -> {line:?}");
    };
    expect("", "220 ").await;
    expect("HELO client\r\n", "250 ").await;
    expect("DATA\r\n", "503 ").await;
    expect("RCPT TO:<a@b>\r\n", "503 ").await;
    expect("MAIL FROM:<>\r\n", "250 ").await;
    expect("DATA\r\n", "554 ").await;
    expect("RCPT TO:<a@b>\r\n", "250 ").await;
    expect("RSET\r\n", "250 ").await;
    expect("NOOP\r\n", "250 ").await;
    expect("VRFY a@b\r\n", "500 ").await;
    expect("AUTH CRAM-MD5\r\n", "504 ").await;
    expect("AUTH PLAIN\r\n", "334 ").await;
    expect("*\r\n", "501 ").await;
    expect("mail from:<x@y> SIZE=10\r\n", "250 ").await;
    expect("rcpt to:<a@b>\r\n", "250 ").await;
    expect("data\r\n", "354 ").await;
    expect("line\r\n.\r\n", "250 ").await;
    expect("QUIT\r\n", "221 ").await;

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mail_from, "x@y");
    assert_eq!(messages[0].data, b"line\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_concurrent_senders_and_wait_for() {
    let server = SmtpServer::start().await;
    let mailer = transport(&server);
    let senders: Vec<_> = (0..4)
        .map(|i| {
            let mailer = mailer.clone();
            tokio::spawn(async move {
                let to = format!("user{i}@example.com");
                mailer.send(message(&to, "Concurrent", "hi")).await
            })
        })
        .collect();

    let messages = server.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 4);
    for sender in senders {
        sender.await.unwrap().unwrap();
    }
    let mut recipients: Vec<_> = messages.iter().map(|m| m.rcpt_to[0].clone()).collect();
    recipients.sort();
    assert_eq!(
        recipients,
        (0..4)
            .map(|i| format!("user{i}@example.com"))
            .collect::<Vec<_>>()
    );
}
