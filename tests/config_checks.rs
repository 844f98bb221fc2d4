//! What a new admin trips over, checked on the real binary: every problem of a config file
//! at once and in order, searches naming feeds or tags that do not exist (refused when
//! added, named when a reload leaves them dangling), metrics present from the start,
//! one-shot commands that stay quiet, and a daemon that says what it listens on and what
//! each reload changed.

mod support;

use std::path::{Path, PathBuf};

use support::Daemon;

/// A config in `dir` with `feeds` (id, tags) on loopback URLs that are never fetched in
/// time to matter, mail to files, both listeners on ephemeral ports, and `extra` appended.
fn write_config(dir: &Path, feeds: &[(&str, &[&str])], extra: &str) -> PathBuf {
    let mut text = String::from(
        "[poll]\ninterval = \"1h\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n\
         [service]\nadmin_listen = \"127.0.0.1:0\"\n",
    );
    text.push_str(extra);
    for (id, tags) in feeds {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        text.push_str(&format!(
            "\n[[feeds]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:9/{id}.xml\"\ntags = [{}]\n",
            tags.join(", ")
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_series_at_zero_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[], "");
    let daemon = Daemon::start(&config, &[], &[]);
    let admin = daemon.admin().await;
    let (code, body) = get(&format!("{admin}/metrics")).await;
    assert_eq!(code, 200);
    for line in [
        "tidings_config_reloads_total{result=\"ok\"} 0",
        "tidings_config_reloads_total{result=\"error\"} 0",
        "tidings_polls_total{result=\"updated\"} 0",
        "tidings_polls_total{result=\"not_modified\"} 0",
        "tidings_polls_total{result=\"failed\"} 0",
        "tidings_mail_total{result=\"sent\"} 0",
        "tidings_mail_total{result=\"retrying\"} 0",
        "tidings_mail_total{result=\"failed\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }
}
