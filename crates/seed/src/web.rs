//! The read-only fleet page: what `shoal status --watch` shows, in a browser,
//! for people without shell access to the deploy host.
//!
//! One task samples the tracker once a second into a [`FleetView`] (the same
//! model the terminal view draws); every open page gets each new view over
//! server-sent events, so the cost of a sample does not grow with viewers.
//!
//! Read-only by construction: the only routes are `GET`/`HEAD` of the page,
//! its script and style, `/api/fleet`, `/events` and `/chart.svg`, none of
//! which reach anything that changes the tracker; any other method on any path
//! is refused with 405 before routing. The page has no TLS or login of its
//! own, so the config only accepts a loopback address, and requests whose
//! `Host` is not a loopback name are refused (a web page elsewhere cannot use
//! DNS rebinding to read it through a viewer's browser).

use crate::tracker::Tracker;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_view::{FleetView, Watcher, unix_ms};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the page's picture is refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Hosts not heard from for this long show as unreachable.
pub const STALE_AFTER_S: u64 = 15;
/// Deploy log lines read per sample, for the error list.
const LOG_LINES: usize = 50;

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The latest view and its JSON.
#[derive(Clone, Default)]
struct Sample {
    view: Arc<FleetView>,
    json: Arc<String>,
}

#[derive(Clone)]
struct App {
    latest: watch::Receiver<Sample>,
    port: u16,
}

/// Starts the page on `addr` (port 0 picks one) over `tracker`; returns the
/// bound address. The sampling stops when the tracker is dropped (the page
/// then shows its last picture); the server runs as long as the process.
pub async fn serve(addr: SocketAddr, tracker: Weak<Tracker>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let (tx, rx) = watch::channel(Sample::default());
    tokio::spawn(sample(tracker, tx));
    let app = App {
        latest: rx,
        port: bound.port(),
    };
    let router = axum::Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/api/fleet", get(fleet_json))
        .route("/chart.svg", get(chart))
        .route("/events", get(events))
        // Browsers ask for it on every page; no icon, and no 404 in their console.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the fleet page stopped");
        }
    });
    Ok(bound)
}

/// Samples the tracker until it is gone (or no page can listen any more).
async fn sample(tracker: Weak<Tracker>, tx: watch::Sender<Sample>) {
    let mut watcher = Watcher::new(STALE_AFTER_S, None);
    while let Some(t) = tracker.upgrade() {
        let state = t.state();
        let log = t.log(LOG_LINES);
        drop(t);
        let view = watcher.observe(&state, &log, Instant::now(), unix_ms());
        let json = serde_json::to_string(&view).expect("a fleet view serializes");
        if tx
            .send(Sample {
                view: Arc::new(view),
                json: Arc::new(json),
            })
            .is_err()
        {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// Refuses what the page never does: any method but GET and HEAD, and a Host
/// that is not a loopback name for this port. Sets the security headers.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "this page is read-only\n",
        )
            .into_response();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !loopback_host(host, app.port) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this page answers only to a loopback Host (127.0.0.1, [::1] or localhost)\n",
        )
            .into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// "127.0.0.1:PORT", "[::1]:PORT" or "localhost:PORT" (the port may be left
/// out only by a client on the default port, which this page never uses).
fn loopback_host(host: &str, port: u16) -> bool {
    let Some((name, p)) = host.rsplit_once(':') else {
        return false;
    };
    p.parse::<u16>().ok() == Some(port)
        && (name == "localhost"
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

async fn fleet_json(State(app): State<App>) -> impl IntoResponse {
    let json = app.latest.borrow().json.clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.as_ref().clone(),
    )
}

async fn chart(State(app): State<App>) -> Response {
    let view = app.latest.borrow().view.clone();
    match Watcher::chart_svg(&view) {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Every new view as a `fleet` event, the latest one first.
async fn events(
    State(app): State<App>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut rx = app.latest.clone();
    rx.mark_changed();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let json = rx.borrow_and_update().json.clone();
        Some((Ok(Event::default().event("fleet").data(json.as_str())), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_on_this_port() {
        for ok in [
            "127.0.0.1:9466",
            "localhost:9466",
            "[::1]:9466",
            "127.1.2.3:9466",
        ] {
            assert!(loopback_host(ok, 9466), "{ok}");
        }
        for bad in [
            "evil.example:9466",
            "127.0.0.1:80",
            "127.0.0.1",
            "10.0.0.1:9466",
            "",
            "localhost.evil.example:9466",
        ] {
            assert!(!loopback_host(bad, 9466), "{bad}");
        }
    }
}
