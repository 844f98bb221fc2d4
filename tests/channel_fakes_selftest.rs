//! Proves the fake push services in `support::channels` answer as the real APIs do.

mod support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use support::articles::PUBLIC;
use support::channels::{
    DiscordWebhook, Fault, MatrixHomeserver, MattermostWebhook, NtfyMessage, NtfyServer,
    SlackWebhook, TelegramApi, WebhookReceiver,
};

const WAIT: Duration = Duration::from_secs(5);

fn public() -> IpAddr {
    IpAddr::V4(PUBLIC)
}

/// POSTs (or PUTs) `body` as JSON with extra `headers`; the status, headers and body.
async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

async fn post(url: &str, body: &Value) -> (StatusCode, reqwest::header::HeaderMap, String) {
    send(reqwest::Method::POST, url, &[], body).await
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

// ---------------------------------------------------------------------------

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Standard Webhooks headers for `body`, signed with `secret` at `timestamp`.
fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = B64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = B64.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

async fn deliver(url: &str, headers: &[(String, String)], body: &[u8]) -> StatusCode {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn webhook_receiver_verifies_standard_webhooks_signatures() {
    let receiver = WebhookReceiver::start_on(public(), SECRET).await;
    assert!(receiver.base().starts_with("http://127.0.0.2:"));
    let url = receiver.url("/tidings");
    let body = br#"{"type":"item.matched","data":{"title":"H-1B cap"}}"#;
    let now = unix_now();

    let signed = sign(SECRET, "msg_1", now, body);
    assert_eq!(deliver(&url, &signed, body).await, StatusCode::OK);
    let event = &receiver.accepted_events()[0];
    assert_eq!(event["data"]["title"], "H-1B cap");

    // A second signature in the list that verifies is enough.
    let mut rotated = sign("whsec_b2xkIHNlY3JldA==", "msg_2", now, body);
    rotated[2].1 = format!("{} {}", rotated[2].1, sign(SECRET, "msg_2", now, body)[2].1);
    assert_eq!(deliver(&url, &rotated, body).await, StatusCode::OK);

    let tampered = br#"{"type":"item.matched","data":{"title":"H-2B cap"}}"#;
    assert_eq!(
        deliver(&url, &sign(SECRET, "msg_3", now, body), tampered).await,
        401
    );
    let old = sign(SECRET, "msg_4", now - 301, body);
    assert_eq!(deliver(&url, &old, body).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        deliver(&url, &signed[..2], body).await,
        StatusCode::BAD_REQUEST
    );

    // A replayed id is acknowledged but not delivered again.
    assert_eq!(deliver(&url, &signed, body).await, StatusCode::OK);
    assert_eq!(receiver.duplicates(), ["msg_1"]);
    assert_eq!(receiver.accepted_events().len(), 2);
    let rejected: Vec<u16> = receiver
        .rejected()
        .iter()
        .map(|(status, _)| *status)
        .collect();
    assert_eq!(rejected, [401, 400, 400]);
    assert_eq!(receiver.rejected()[1].1, "message timestamp too old");

    receiver.fail_next(1, Fault::RateLimited(Duration::from_millis(1500)));
    let response = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    receiver.fail_next(1, Fault::Status(503));
    let signed = sign(SECRET, "msg_5", now, body);
    assert_eq!(deliver(&url, &signed, body).await, 503);
    assert_eq!(deliver(&url, &signed, body).await, StatusCode::OK);
    assert_eq!(receiver.wait_for(4, WAIT).await.len(), 4);
    assert_eq!(receiver.accepted_events().len(), 3);
    let first = &receiver.requests()[0];
    assert_eq!(first.header("webhook-id"), Some("msg_1"));
    assert_eq!(first.body, body);

    receiver.set_secret("whsec_b2xkIHNlY3JldA==");
    let signed = sign("whsec_b2xkIHNlY3JldA==", "msg_6", now, body);
    assert_eq!(deliver(&url, &signed, body).await, StatusCode::OK);
}

#[tokio::test]
async fn telegram_sends_messages_and_answers_its_errors() {
    let telegram = TelegramApi::start_on(public(), "123:ABC", &["42", "@news"]).await;
    let send = telegram.url("/bot123:ABC/sendMessage");
    let message = json!({
        "chat_id": 42, "text": "<b>H-1B</b> cap &amp; more", "parse_mode": "HTML",
        "link_preview_options": { "is_disabled": true },
    });
    let (status, _, body) = post(&send, &message).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json_of(&body);
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["message_id"], 1);
    assert_eq!(body["result"]["chat"]["id"], 42);
    assert_eq!(body["result"]["text"], "H-1B cap & more");
    assert_eq!(telegram.messages(), [message]);

    let cases = [
        (
            telegram.url("/bot123:XYZ/sendMessage"),
            json!({"chat_id": 42, "text": "x"}),
            401,
            "Unauthorized",
        ),
        (
            send.clone(),
            json!({"chat_id": 7, "text": "x"}),
            400,
            "Bad Request: chat not found",
        ),
        (
            send.clone(),
            json!({"chat_id": "@news", "text": "é".repeat(4097)}),
            400,
            "Bad Request: message is too long",
        ),
        (
            send.clone(),
            json!({"chat_id": 42, "text": "<b>open", "parse_mode": "HTML"}),
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
        ),
        (
            send.clone(),
            json!({"chat_id": 42, "text": "a<br>b", "parse_mode": "HTML"}),
            400,
            "Bad Request: can't parse entities: Unsupported start tag \"br\" at byte offset 1",
        ),
    ];
    for (url, message, code, description) in cases {
        let (status, _, body) = post(&url, &message).await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(
            json_of(&body),
            json!({"ok": false, "error_code": code, "description": description})
        );
    }
    // 4096 characters once the entities are parsed is fine.
    let long = format!("<i>{}</i>", "&lt;".repeat(4096));
    let (status, _, _) = post(
        &send,
        &json!({"chat_id": 42, "text": long, "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    telegram.fail_next(1, Fault::RateLimited(Duration::from_secs(3)));
    telegram.fail_next(1, Fault::Status(403));
    let (status, headers, body) = post(&send, &json!({"chat_id": 42, "text": "x"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get("retry-after").is_none());
    let expected = json!({
        "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    });
    assert_eq!(json_of(&body), expected);
    let (status, _, body) = post(&send, &json!({"chat_id": 42, "text": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json_of(&body)["description"],
        "Forbidden: bot was blocked by the user"
    );
    assert_eq!(telegram.accepted(), 2);
}

#[tokio::test]
async fn slack_webhook_answers_as_slack() {
    let slack = SlackWebhook::start("/services/T000/B000/XXXX").await;
    let (status, headers, body) = post(&slack.endpoint(), &json!({"text": "New items"})).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert!(header(&headers, "content-type").starts_with("text/plain"));
    let blocks =
        json!({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*x*"}}]});
    assert_eq!(post(&slack.endpoint(), &blocks).await.0, StatusCode::OK);
    let (status, _, body) = post(&slack.endpoint(), &json!({"text": "x".repeat(40_001)})).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(slack.truncated(), 1);
    assert_eq!(slack.messages()[0], json!({"text": "New items"}));

    let (status, _, body) = post(&slack.endpoint(), &json!({"username": "x"})).await;
    assert_eq!((status.as_u16(), body.as_str()), (400, "no_text"));
    let (status, _, body) = post(
        &slack.url("/services/T000/B000/YYYY"),
        &json!({"text": "x"}),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (404, "no_service"));
    slack.fail_next(1, Fault::Status(410));
    let (status, _, body) = post(&slack.endpoint(), &json!({"text": "x"})).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (410, "channel_is_archived")
    );

    slack.fail_next(1, Fault::RateLimited(Duration::from_secs(30)));
    let (status, headers, body) = post(&slack.endpoint(), &json!({"text": "x"})).await;
    assert_eq!((status.as_u16(), body.as_str()), (429, "rate_limited"));
    assert_eq!(header(&headers, "retry-after"), "30");
    assert_eq!(slack.wait_for(3, WAIT).await.len(), 3);
}

#[tokio::test]
async fn discord_webhook_answers_as_discord() {
    let discord = DiscordWebhook::start_on(public(), "1111", "tok").await;
    let (status, _, body) = post(&discord.endpoint(), &json!({"content": "New items"})).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let embed = json!({"embeds": [{"title": "H-1B", "url": "https://example.org/a"}], "username": "Tidings"});
    let (status, _, body) = post(&format!("{}?wait=true", discord.endpoint()), &embed).await;
    assert_eq!(status, StatusCode::OK);
    let message = json_of(&body);
    assert_eq!(message["webhook_id"], "1111");
    assert_eq!(message["embeds"][0]["title"], "H-1B");
    assert_eq!(discord.messages(), [json!({"content": "New items"}), embed]);

    let (status, _, body) = post(&discord.endpoint(), &json!({"content": "x".repeat(2001)})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let expected = json!({
        "code": 50035,
        "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}},
        "message": "Invalid Form Body",
    });
    assert_eq!(json_of(&body), expected);
    let (status, _, body) = post(&discord.endpoint(), &json!({"content": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(&body),
        json!({"code": 50006, "message": "Cannot send an empty message"})
    );
    let (status, _, body) = post(
        &discord.url("/api/webhooks/1111/bad"),
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), json_of(&body)["code"].clone()),
        (401, json!(50027))
    );
    let (status, _, body) = post(
        &discord.url("/api/webhooks/2222/tok"),
        &json!({"content": "x"}),
    )
    .await;
    assert_eq!(
        json_of(&body),
        json!({"code": 10015, "message": "Unknown Webhook"})
    );
    assert_eq!(status, StatusCode::NOT_FOUND);

    discord.fail_next(1, Fault::RateLimited(Duration::from_millis(1500)));
    let (status, headers, body) = post(&discord.endpoint(), &json!({"content": "x"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let expected =
        json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false});
    assert_eq!(json_of(&body), expected);
    assert_eq!(header(&headers, "retry-after"), "2");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&headers, "x-ratelimit-reset-after"), "1.500");
    assert_eq!(discord.accepted(), 2);
}

#[tokio::test]
async fn mattermost_webhook_answers_as_mattermost() {
    let mattermost = MattermostWebhook::start("abc123").await;
    let (status, _, body) = post(
        &mattermost.endpoint(),
        &json!({"text": "New items", "username": "tidings"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let form = reqwest::Client::new()
        .post(mattermost.endpoint())
        .form(&[("payload", r#"{"text":"from a form"}"#)])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let long = "é".repeat(16_384);
    assert_eq!(
        post(&mattermost.endpoint(), &json!({"text": long})).await.0,
        StatusCode::OK
    );
    let posts = mattermost.posts();
    assert_eq!(posts.len(), 4);
    assert_eq!((posts[2].chars().count(), posts[3].as_str()), (16_383, "é"));
    assert_eq!(mattermost.messages()[1]["text"], "from a form");

    let (status, _, body) = post(&mattermost.endpoint(), &json!({"text": ""})).await;
    let body = json_of(&body);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["id"], "web.incoming_webhook.text.app_error");
    assert_eq!(body["message"], "No text specified.");
    assert_eq!(body["status_code"], 400);
    let (status, _, body) = post(&mattermost.url("/hooks/nope"), &json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(&body)["id"],
        "web.incoming_webhook.invalid.app_error"
    );

    mattermost.fail_next(1, Fault::RateLimited(Duration::from_secs(1)));
    let (status, headers, _) = post(&mattermost.endpoint(), &json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(header(&headers, "x-ratelimit-reset"), "1");
    assert_eq!(mattermost.accepted(), 3);
}

#[tokio::test]
async fn ntfy_publishes_both_ways_and_answers_as_ntfy() {
    let ntfy = NtfyServer::start_on(public(), Some("tk_secret")).await;
    let auth = ("authorization", "Bearer tk_secret");
    let response = reqwest::Client::new()
        .post(ntfy.url("/immigration"))
        .header(auth.0, auth.1)
        .header("Title", "=?UTF-8?B?VmlzYSBidWxsZXRpbiDinJM=?=")
        .header("Tags", "warning, visa")
        .header("Priority", "high")
        .header("Click", "https://example.org/a")
        .header("Markdown", "yes")
        .body("**New** items")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = json_of(&response.text().await.unwrap());
    assert_eq!(
        (body["event"].as_str(), body["topic"].as_str()),
        (Some("message"), Some("immigration"))
    );
    assert_eq!(body["title"], "Visa bulletin ✓");
    assert!(body["id"].as_str().is_some_and(|id| id.len() == 12));

    let published = json!({
        "topic": "immigration", "message": "x".repeat(5000), "title": "Long", "tags": ["a"],
        "priority": 2, "markdown": false,
    });
    let (status, _, body) = send(reqwest::Method::POST, &ntfy.base(), &[auth], &published).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["attachment"]["name"], "attachment.txt");
    let messages = ntfy.messages();
    let first = NtfyMessage {
        topic: "immigration".into(),
        message: "**New** items".into(),
        title: Some("Visa bulletin ✓".into()),
        tags: vec!["warning".into(), "visa".into()],
        priority: Some(4),
        click: Some("https://example.org/a".into()),
        markdown: true,
        attachment: false,
    };
    assert_eq!(messages[0], first);
    assert!(messages[1].attachment && messages[1].priority == Some(2) && messages[1].tags == ["a"]);

    let message = json!({"topic": "immigration", "message": "x"});
    let (status, _, body) = send(reqwest::Method::POST, &ntfy.base(), &[], &message).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json_of(&body)["code"], 40301);
    let (status, _, body) = send(
        reqwest::Method::POST,
        &ntfy.base(),
        &[("authorization", "Bearer no")],
        &message,
    )
    .await;
    let expected = json!({
        "code": 40101, "http": 401, "error": "unauthorized", "link": "https://ntfy.sh/docs/publish/#authentication",
    });
    assert_eq!((status.as_u16(), json_of(&body)), (401, expected));

    ntfy.fail_next(1, Fault::RateLimited(Duration::from_secs(10)));
    let (status, headers, body) =
        send(reqwest::Method::POST, &ntfy.base(), &[auth], &message).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get("retry-after").is_none());
    let expected = json!({
        "code": 42901, "http": 429, "error": "limit reached: too many requests",
        "link": "https://ntfy.sh/docs/publish/#limitations",
    });
    assert_eq!(json_of(&body), expected);
    assert_eq!(ntfy.accepted(), 2);
}

#[tokio::test]
async fn matrix_send_is_idempotent_per_transaction() {
    let matrix =
        MatrixHomeserver::start("syt_token", "@bot:example.org", &["!abc:example.org"]).await;
    let url = |txn: &str| {
        matrix.url(&format!(
            "/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/{txn}"
        ))
    };
    let auth = [("authorization", "Bearer syt_token")];
    let content = json!({"msgtype": "m.text", "body": "New items", "format": "org.matrix.custom.html", "formatted_body": "<b>New</b> items"});
    let (status, _, first) = send(reqwest::Method::PUT, &url("t1"), &auth, &content).await;
    assert_eq!(status, StatusCode::OK);
    let event_id = json_of(&first)["event_id"].clone();
    assert!(event_id.as_str().is_some_and(|id| id.starts_with('$')));
    let by_query = format!("{}?access_token=syt_token", url("t1"));
    let (status, _, again) = send(reqwest::Method::PUT, &by_query, &[], &content).await;
    assert_eq!(
        (status, json_of(&again)["event_id"].clone()),
        (StatusCode::OK, event_id)
    );
    assert_eq!(
        matrix.events(),
        [(
            "!abc:example.org".to_owned(),
            "t1".to_owned(),
            content.clone()
        )]
    );
    assert_eq!(matrix.duplicates(), ["t1"]);

    let (status, _, body) = send(reqwest::Method::PUT, &url("t2"), &[], &content).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(&body),
        json!({"errcode": "M_MISSING_TOKEN", "error": "Missing access token"})
    );
    let (status, _, body) = send(
        reqwest::Method::PUT,
        &url("t2"),
        &[("authorization", "Bearer nope")],
        &content,
    )
    .await;
    let expected = json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed.", "soft_logout": false});
    assert_eq!((status.as_u16(), json_of(&body)), (401, expected));
    let other = matrix.url("/_matrix/client/v3/rooms/%21zzz%3Aexample.org/send/m.room.message/t2");
    let (status, _, body) = send(reqwest::Method::PUT, &other, &auth, &content).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let expected = json!({"errcode": "M_FORBIDDEN", "error": "User @bot:example.org not in room !zzz:example.org"});
    assert_eq!(json_of(&body), expected);

    matrix.fail_next(1, Fault::RateLimited(Duration::from_millis(2000)));
    let (status, headers, body) = send(reqwest::Method::PUT, &url("t3"), &auth, &content).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let expected = json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 2000});
    assert_eq!(json_of(&body), expected);
    assert_eq!(header(&headers, "retry-after"), "2");
    // Not cached: the retry is sent.
    assert_eq!(
        send(reqwest::Method::PUT, &url("t3"), &auth, &content)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(matrix.events().len(), 2);
}

#[tokio::test]
async fn faults_delay_and_drop() {
    let slack = SlackWebhook::start("/services/T/B/X").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    slack.fail_next(1, Fault::Delay(Duration::from_millis(100)));
    let error = client
        .post(slack.endpoint())
        .body(r#"{"text":"slow"}"#)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    // A delayed request was served on arrival; only its answer was late.
    assert_eq!(slack.messages().len(), 1);

    slack.fail_next(1, Fault::Drop);
    let error = client
        .post(slack.endpoint())
        .body(r#"{"text":"x"}"#)
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_timeout() && error.status().is_none(), "{error}");
    let requests = slack.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].status, None);
    assert!(requests[1].at >= requests[0].at);
    assert_eq!(slack.wait_for(2, Duration::from_millis(50)).await.len(), 1);
}
