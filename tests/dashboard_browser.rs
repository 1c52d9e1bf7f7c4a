//! The dashboard in a real browser: headless Debian chromium (installed by
//! scripts/setup-peers.sh) loads `/` twice while echo load runs. Each time
//! the page must have fetched live data and drawn its charts (a line per
//! shard, a bar per shard, a bar per close reason), and between the two
//! loads the message count must grow. A screenshot is taken; set
//! `UPDATE_DASHBOARD_PNG=1` to copy it to docs/dashboard.png, the picture
//! the README shows (otherwise it stays under the target dir, so a test
//! run leaves the tree clean).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Upper bound on the load generator's run, so it ends even if a step hangs.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// Runs headless chromium on `url` with `extra` flags; returns stdout.
async fn chromium(url: String, budget_ms: u32, extra: Vec<String>) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run ./scripts/setup-peers.sh (it installs Debian's chromium)"
    );
    let profile = tempdir();
    let dir = profile.clone();
    let out = within(
        GUARD * 3,
        "chromium",
        tokio::task::spawn_blocking(move || {
            Command::new(CHROMIUM)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                // Virtual time lets the page's one-second timer fire
                // budget/1000 times (pausing while each fetch is in flight)
                // before the DOM is dumped or the screenshot taken.
                .arg(format!("--virtual-time-budget={budget_ms}"))
                .args(extra)
                .arg(url)
                .output()
        }),
    )
    .await
    .unwrap()
    .expect("run chromium");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "msgtrans-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The text of the element with `id`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

/// The markup of the `<svg id="...">` element.
fn svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    &dom[at..at + dom[at..].find("</svg>").unwrap()]
}

/// Values of attribute `name` on every `<tag` in `markup`.
fn attrs<'a>(markup: &'a str, tag: &str, name: &str) -> Vec<&'a str> {
    markup
        .split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|el| {
            let el = &el[..el.find('>').unwrap_or(el.len())];
            let key = format!("{name}=\"");
            // The first attribute follows the tag's space, the rest their own.
            let at = if el.starts_with(&key) {
                0
            } else {
                el.find(&format!(" {key}"))? + 1
            };
            let rest = &el[at + key.len()..];
            Some(&rest[..rest.find('"')?])
        })
        .collect()
}

/// Checks one dump of the page; returns the total messages received it shows.
fn check_dom(dom: &str, shards: usize) -> u64 {
    assert_eq!(text_of(dom, "status"), "live", "the page fetched /stats.json");
    assert_eq!(text_of(dom, "shards"), shards.to_string());
    let rate = svg(dom, "chart-rate");
    let lines = attrs(rate, "polyline", "points");
    assert_eq!(lines.len(), shards, "one rate line per shard");
    for pts in &lines {
        assert!(pts.split_whitespace().count() >= 2, "a line needs two samples: {pts}");
    }
    let queue = attrs(svg(dom, "chart-queue"), "polyline", "points");
    assert_eq!(queue.len(), shards, "one queue line per shard");
    let bars = attrs(svg(dom, "chart-sessions"), "rect", "data-value");
    assert_eq!(bars.len(), shards, "one session bar per shard");
    let open: u64 = bars.iter().map(|v| v.parse::<u64>().unwrap()).sum();
    assert!(open >= 1, "sessions are open under load");
    let closes = svg(dom, "chart-closes");
    assert_eq!(attrs(closes, "rect", "data-reason").len(), msgtrans::CloseKind::COUNT);
    let reasons = attrs(closes, "rect", "data-reason");
    let values = attrs(closes, "rect", "data-value");
    let peer_closed = reasons
        .iter()
        .position(|r| *r == "peer_closed")
        .expect("a peer_closed bar");
    assert!(values[peer_closed].parse::<u64>().unwrap() >= 3, "the closes are drawn");
    // Over the whole history: virtual time fires the page's timer with
    // little real time between fetches, so any one sample may see none of
    // the load's bursts.
    let rates: Vec<f64> = attrs(rate, "polyline", "data-max")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        rates.iter().any(|r| *r > 0.0),
        "some shard shows messages per second: {rates:?}"
    );
    text_of(dom, "total-msgs-in").parse().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_live_charts_in_headless_chromium() {
    let server = start_inline_echo(builder().metrics("127.0.0.1:0".parse().unwrap())).await;
    let mut events = pump_events(&server);
    // Something for the closes chart.
    for _ in 0..3 {
        let c = RawClient::connect(addr(&server)).await;
        let id = events.established(c.local_addr()).await;
        drop(c);
        events.closed(id).await;
    }
    // Echo load on four connections until told to stop (or LOAD_LIMIT).
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..4u32 {
        let (a, stop) = (addr(&server), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            let mut c = RawClient::connect(a).await;
            let p = one_way(i + 1, 0, b"", vec![0x5a; 64]);
            let started = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_LIMIT {
                for _ in 0..16 {
                    c.send(&p).await;
                }
                for _ in 0..16 {
                    c.recv().await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let url = format!("http://{}/", server.metrics_addr().unwrap());
    let first = check_dom(
        &chromium(url.clone(), 4000, vec!["--dump-dom".into()]).await,
        server.shards(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = check_dom(
        &chromium(url.clone(), 4000, vec!["--dump-dom".into()]).await,
        server.shards(),
    );
    assert!(second > first, "the count grows under load: {first} then {second}");

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    // A longer budget, so the lines in the picture have some history.
    chromium(
        url,
        20_000,
        vec![
            format!("--screenshot={}", png.display()),
            "--window-size=1100,720".into(),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 10_000,
        "a page with charts, not a blank one ({} bytes)",
        bytes.len()
    );
    if std::env::var_os("UPDATE_DASHBOARD_PNG").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::copy(&png, &docs).expect("copy to docs/");
    }

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    server.stop().await;
}
