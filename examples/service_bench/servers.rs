//! The servers this benchmark runs as child processes (`--serve KIND`):
//! the two moss examples, compiled in from their own sources, and the
//! hyper peer. redis-server is the real one, started in `tools.rs`.

use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use super::http;
use super::kv;

/// A server this binary can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// examples/kv_server on one hub.
    Kv,
    /// examples/http_server on one hub.
    Http,
    /// hyper 1 (HTTP/1.1) on a tokio current-thread runtime, the same routes.
    Hyper,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Http => "http",
            Kind::Hyper => "hyper",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Kv, Kind::Http, Kind::Hyper]
            .into_iter()
            .find(|k| k.key() == s)
    }

    /// Serves `l` until the process exits.
    pub fn serve(self, l: TcpListener) {
        match self {
            Kind::Kv => serve_kv(l),
            Kind::Http => serve_http(l),
            Kind::Hyper => serve_hyper(l),
        }
    }
}

/// kv_server on `threads` hubs sharing a store of `shards` shards, on
/// `SO_REUSEPORT` listeners of one port (as the example runs with
/// `--threads`); reports the port like every serving child.
pub fn serve_kv_threads(threads: usize, shards: usize) {
    let ls = Arc::new(super::listen::Listeners::bind(0).expect("bind"));
    super::bench::announce(ls.addr().port());
    let store = Arc::new(kv::store::Store::new(shards));
    moss::run_per_core(threads, move |hub| {
        let server = kv::conn::server(ls.take().expect("bind"), store.clone(), Default::default())
            .expect("kv server");
        kv::conn::run(&server, &store, hub, threads).expect("kv serve");
    });
}

fn serve_kv(l: TcpListener) {
    // One hub: one shard, as kv_server's default.
    let store = Arc::new(kv::store::Store::new(1));
    let server =
        kv::conn::server(l.into(), store.clone(), kv::conn::Config::default()).expect("kv server");
    moss::run(|| kv::conn::run(&server, &store, 0, 1)).expect("kv serve");
}

fn serve_http(l: TcpListener) {
    let server = http::conn::server(l.into(), http::conn::Config::default()).expect("http server");
    moss::run(|| server.serve_forever()).expect("http serve");
}

/// hyper with what http_server does by default: a header read timeout
/// (hyper's needs a timer), responses of a pipelined batch flushed together.
fn serve_hyper(l: TcpListener) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let cfg = http::conn::Config::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        l.set_nonblocking(true).expect("non-blocking");
        let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
        loop {
            let Ok((s, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(cfg.timeout)
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(s), service_fn(move |r| route(r, cfg)))
                    .await;
            });
        }
    });
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn reply(
    status: u16,
    ty: &'static str,
    body: impl Into<hyper::body::Bytes>,
) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ty)
        .body(Body::new(body.into()))
        .expect("a valid response")
}

/// http_server's routes (its own routing function), answered by hyper.
async fn route(
    req: hyper::Request<hyper::body::Incoming>,
    cfg: http::conn::Config,
) -> Result<hyper::Response<Body>, Infallible> {
    use http::request::Route;
    use http_body_util::BodyExt;

    Ok(
        match http::request::route(req.method().as_str(), req.uri().path()) {
            Route::Hello => reply(200, "text/plain", http::conn::HELLO),
            Route::Echo => {
                let body = http_body_util::Limited::new(req.into_body(), cfg.max_body);
                match body.collect().await {
                    Ok(b) => reply(200, "application/octet-stream", b.to_bytes()),
                    Err(_) => reply(413, "text/plain", &b"request body too large\n"[..]),
                }
            }
            Route::Bytes(n) if n > cfg.max_bytes => reply(
                400,
                "text/plain",
                &b"N is larger than the server's limit\n"[..],
            ),
            Route::Bytes(n) => {
                let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                reply(200, "application/octet-stream", body)
            }
            Route::MethodNotAllowed(allow) => {
                let mut r = reply(405, "text/plain", &b"method not allowed\n"[..]);
                r.headers_mut().insert(
                    hyper::header::ALLOW,
                    hyper::header::HeaderValue::from_static(allow),
                );
                r
            }
            Route::NotFound => reply(404, "text/plain", &b"not found\n"[..]),
        },
    )
}
