//! The container image's settings, checked without Docker: the `Dockerfile`'s edits of the
//! shipped config are applied with `sed` exactly as its `RUN` line does, and the binary reads
//! the result with the image's environment. The pages every digest links to must listen on
//! an interface a published port reaches, the ports must be exposed, and the public address
//! must come from the environment.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap()
}

/// The `-e 's|…|…|'` expressions of the Dockerfile's `sed -i` over the config.
fn sed_expressions(dockerfile: &str) -> Vec<String> {
    let start = dockerfile
        .find("RUN sed -i")
        .expect("the Dockerfile edits the config with sed");
    let block = &dockerfile[start..];
    let block = &block[..block.find("/etc/tidings/config.toml").unwrap()];
    block
        .split("-e '")
        .skip(1)
        .map(|rest| rest[..rest.find('\'').unwrap()].to_string())
        .collect()
}

/// `ENV NAME=value` lines of the final image.
fn env_lines(dockerfile: &str) -> Vec<(String, String)> {
    dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_image_serves_the_pages_on_a_published_port_at_the_address_from_the_environment() {
    let dockerfile = dockerfile();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::copy(Path::new(ROOT).join("config.toml"), &config).unwrap();
    let mut sed = Command::new("sed");
    sed.arg("-i");
    let expressions = sed_expressions(&dockerfile);
    assert!(expressions.len() >= 4, "{expressions:?}");
    for e in &expressions {
        // The image's paths do not exist here: keep the state in the temp dir.
        let e = e.replace("/var/lib/tidings", &dir.path().display().to_string());
        sed.arg("-e").arg(e);
    }
    assert!(sed.arg(&config).status().unwrap().success());

    let mut tidings = Command::new(env!("CARGO_BIN_EXE_tidings"));
    tidings
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap());
    for (k, v) in env_lines(&dockerfile) {
        if k != "TIDINGS_CONFIG" {
            tidings.env(k, v);
        }
    }
    let out = tidings
        .env("TIDINGS_BASE_URL", "https://alerts.example.org/news/")
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "subscriber pages: http://0.0.0.0:8080/ (public at https://alerts.example.org/news/)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("links to https://alerts.example.org/news/ (from TIDINGS_BASE_URL)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("admin: http://0.0.0.0:9108/healthz"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("database: {}/tidings.db", dir.path().display())),
        "{stdout}"
    );

    let exposed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(exposed.contains(&"8080"), "{exposed:?}");
    assert!(exposed.contains(&"9108"), "{exposed:?}");
}

#[test]
fn a_public_address_from_the_environment_that_is_not_a_url_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env("TIDINGS_BASE_URL", "alerts.example.org")
        .args(["--config", &format!("{ROOT}/config.toml"), "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "TIDINGS_BASE_URL: expected an http(s) URL like \"https://alerts.example.org/\", found \"alerts.example.org\""
        ),
        "{stderr}"
    );
}
