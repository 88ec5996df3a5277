use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn config(errors: ErrorSeries) -> PrometheusConfig {
    PrometheusConfig {
        url: "http://127.0.0.1:1/metrics".parse().unwrap(),
        requests: "http_requests_total".into(),
        errors,
        latency: "http_request_duration_seconds".into(),
    }
}

/// An endpoint's page: requests by code, and a latency histogram over two handlers.
fn page(ok: u64, server_errors: u64, client_errors: u64, fast: [u64; 4], slow: [u64; 4]) -> String {
    let bucket = |handler: &str, counts: [u64; 4]| {
        let [a, b, c, inf] = counts;
        format!(
            "http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\"0.1\"}} {a}\n\
             http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\"0.5\"}} {b}\n\
             http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\"1\"}} {c}\n\
             http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\"+Inf\"}} {inf}\n\
             http_request_duration_seconds_sum{{handler=\"{handler}\"}} 1.5\n\
             http_request_duration_seconds_count{{handler=\"{handler}\"}} {inf}\n"
        )
    };
    format!(
        "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
         http_requests_total{{code=\"200\",path=\"/a,b=c\"}} {ok}\n\
         http_requests_total{{code=\"503\",path=\"/q\\\"uoted}}\"}} {server_errors}\n\
         http_requests_total{{code=\"404\",path=\"/\"}} {client_errors} 1700000000000\n\
         http_requests_total_created{{code=\"200\"}} 1.7e9\n\
         process_cpu_seconds_total 12.5\n\
         # TYPE http_request_duration_seconds histogram\n{}{}",
        bucket("fast", fast),
        bucket("slow", slow)
    )
}

fn read(body: &str, config: &PrometheusConfig) -> Totals {
    let mut t = Totals::default();
    t.read(body, config, &format!("{}_bucket", config.latency));
    t
}

#[test]
fn totals_sum_series_and_survive_odd_label_values() {
    let c = config(ErrorSeries::ServerErrors);
    let t = read(&page(90, 6, 4, [1, 2, 3, 4], [0, 0, 1, 2]), &c);
    assert!(t.requests_seen);
    assert_eq!(t.requests, 100.0, "every series of the counter, not _created");
    assert_eq!(t.errors, 6.0, "5xx only");
    assert_eq!(t.buckets, vec![(0.1, 1.0), (0.5, 2.0), (1.0, 4.0), (f64::INFINITY, 6.0)]);
    assert!(!read("other_metric 1\n", &c).requests_seen);
}

#[test]
fn selectors_parse_and_match_like_promql() {
    let s: Selector = r#"app_errors_total{kind=~"db|net", severity!="debug"}"#.parse().unwrap();
    assert_eq!(s.name(), "app_errors_total");
    assert!(s.matches(r#"kind="db",severity="error""#));
    assert!(!s.matches(r#"kind="dbx",severity="error""#), "regexes match whole values");
    assert!(!s.matches(r#"kind="net",severity="debug""#));
    assert!(s.matches(r#"kind="net""#), "an absent label is the empty string");
    let plain: Selector = "errors_total".parse().unwrap();
    assert!(plain.matches(r#"anything="x""#));
    let quoted: Selector = r#"e{path="a\"b,c"}"#.parse().unwrap();
    assert!(quoted.matches(r#"path="a\"b,c""#));

    for bad in ["", "9lives", "e{code=500}", "e{code=\"5\"", "e{=\"x\"}", "e{code~\"x\"}", "e{code=~\"(\"}"] {
        assert!(bad.parse::<Selector>().is_err(), "{bad:?} accepted");
    }
    let message = "e{code=~\"(\"}".parse::<Selector>().unwrap_err();
    assert!(!message.contains('\n'), "one line: {message:?}");
}

#[test]
fn custom_error_selector_counts_its_own_series() {
    let c = config(ErrorSeries::Selector(r#"http_requests_total{code=~"4..|5.."}"#.parse().unwrap()));
    assert_eq!(read(&page(90, 6, 4, [0; 4], [0; 4]), &c).errors, 10.0);
}

#[test]
fn quantile_interpolates_like_histogram_quantile() {
    let b = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
    // Rank 99 of 100 lies in (0.5, 1]: 9 of its 10 observations in.
    assert!((quantile(0.99, &b).unwrap() - 0.95).abs() < 1e-12);
    assert!((quantile(0.5, &b).unwrap() - 0.1).abs() < 1e-12);
    assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None, "no observations");
    assert_eq!(quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]), Some(0.1), "in +Inf: the largest bound");
    assert_eq!(quantile(0.99, &[(0.1, 1.0), (1.0, 10.0)]), None, "no +Inf bucket");
}

#[test]
fn rates_come_from_increases_between_scrapes() {
    let c = config(ErrorSeries::ServerErrors);
    let before = read(&page(90, 6, 4, [10, 20, 30, 30], [0, 0, 5, 10]), &c);
    let after = read(&page(170, 16, 14, [60, 100, 110, 110], [0, 10, 15, 20]), &c);
    let (mut scratch, mut out) = (Vec::new(), Readings::default());
    rates(&before, &after, 2.0, &mut scratch, &mut out);
    assert_eq!(out.get(m::REQUEST_RATE), Some(50.0), "100 requests in 2 s");
    assert_eq!(out.get(m::ERROR_RATE), Some(0.1), "10 of 100 were 5xx");
    // Increases: 50 under 0.1, 90 under 0.5, 90 under 1, 90 in all: rank 89.1 of 90
    // lies in (0.1, 0.5] at 39.1 of its 40.
    let p99 = out.get(m::LATENCY_P99).unwrap();
    assert!((p99 - (0.1 + 0.4 * 39.1 / 40.0)).abs() < 1e-12, "p99 {p99}");

    // The application restarted: counters count from zero again.
    let restarted = read(&page(8, 2, 0, [1, 1, 2, 2], [0, 0, 0, 0]), &c);
    out.clear();
    rates(&after, &restarted, 1.0, &mut scratch, &mut out);
    assert_eq!(out.get(m::REQUEST_RATE), Some(10.0));
    assert_eq!(out.get(m::ERROR_RATE), Some(0.2));
    assert_eq!(out.get(m::LATENCY_P99), Some(1.0 - 0.5 * (2.0 - 1.98) / 1.0), "rank 1.98 of 2 within (0.5, 1]");

    // Idle: no requests, no errors, no latency.
    out.clear();
    rates(&restarted, &restarted, 1.0, &mut scratch, &mut out);
    assert_eq!(out.get(m::REQUEST_RATE), Some(0.0));
    assert_eq!(out.get(m::ERROR_RATE), Some(0.0));
    assert_eq!(out.get(m::LATENCY_P99), None);
}

/// A one-shot HTTP server on 127.0.0.1: answers each connection with the next page.
async fn serve(pages: Vec<(u16, String)>) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap()).parse().unwrap();
    tokio::spawn(async move {
        for (status, body) in pages {
            let (mut conn, _) = listener.accept().await.unwrap();
            // Read the request head; this server never keeps a connection open.
            let mut head = Vec::new();
            let mut byte = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut byte).await.unwrap();
                assert!(n > 0, "client closed before sending a request");
                head.extend_from_slice(&byte[..n]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("GET /metrics "), "{head}");
            assert!(head.to_ascii_lowercase().contains("accept: text/plain;version=0.0.4"), "{head}");
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(response.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
        }
    });
    url
}

#[tokio::test]
async fn scraper_reads_a_live_endpoint_and_survives_its_failures() {
    let url = serve(vec![
        (200, page(90, 6, 4, [10, 20, 30, 30], [0, 0, 5, 10])),
        (500, "broken".into()),
        (500, "still broken".into()),
        (200, page(170, 16, 14, [60, 100, 110, 110], [0, 10, 15, 20])),
    ])
    .await;
    let mut scraper =
        Scraper::new(PrometheusConfig { url, ..config(ErrorSeries::ServerErrors) }, Duration::from_secs(5)).unwrap();
    let (mut health, mut out) = (Health::default(), Readings::default());
    let t0 = Instant::now();

    scraper.sample(t0, &mut health, &mut out).await;
    assert!(out.is_empty(), "first scrape: no rates, got {out:?}");
    for tick in 1..=2 {
        scraper.sample(t0 + Duration::from_secs(tick), &mut health, &mut out).await;
        assert!(out.is_empty(), "failed scrape: metrics absent, got {out:?}");
    }
    assert_eq!(health.warnings(), 1, "two failed scrapes, one warning");
    // Measured from the last good scrape, 4 s before.
    scraper.sample(t0 + Duration::from_secs(4), &mut health, &mut out).await;
    assert_eq!(out.get(m::REQUEST_RATE), Some(25.0));
    assert_eq!(out.get(m::ERROR_RATE), Some(0.1));
    assert!(out.get(m::LATENCY_P99).is_some());

    // The server is gone: refused connections are one more outage, one more warning.
    out.clear();
    scraper.sample(t0 + Duration::from_secs(5), &mut health, &mut out).await;
    scraper.sample(t0 + Duration::from_secs(6), &mut health, &mut out).await;
    assert!(out.is_empty());
    assert_eq!(health.warnings(), 2);
}
