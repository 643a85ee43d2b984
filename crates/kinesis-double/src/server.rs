//! HTTP/1.1 transport (hyper): the accept loop, one task per connection, the JSON 1.1
//! envelope (`X-Amz-Target`, status codes, error bodies) and the request-level faults:
//! reset, injected 5xx, slow answers and dropped answers.
//!
//! Closing a connection from inside a request: each connection task keeps a duplicate of
//! the socket and a kill switch; the handler flips the switch and never completes, the task
//! drops the hyper connection (and for a reset first sets `SO_LINGER 0` on the duplicate,
//! so the close is an RST).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::faults::{FaultScope, RequestFault, SlowPhase};
use super::json;
use super::ops;
use super::state::{CounterCells, Shared};

/// Accept connections until `cancel` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone(), cancel.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fake kinesis: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Per-connection kill switch, flipped by a handler that wants the connection gone.
#[derive(Default)]
struct ConnCtl {
    kill: Notify,
    reset: AtomicBool,
}

impl ConnCtl {
    fn kill(&self, reset: bool) {
        self.reset.store(reset, Relaxed);
        self.kill.notify_one();
    }
}

/// Split a stream into the one hyper drives and a duplicate handle to the same socket.
fn with_twin(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let twin = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, twin))
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (stream, twin) = match with_twin(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "fake kinesis: cannot duplicate socket");
            return;
        }
    };
    let ctl = Arc::new(ConnCtl::default());
    let svc = {
        let ctl = ctl.clone();
        service_fn(move |req| handle(shared.clone(), ctl.clone(), req))
    };
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = &mut conn => {}
        _ = ctl.kill.notified() => {
            if ctl.reset.load(Relaxed) {
                // Linger 0 on the shared socket: the last close below sends an RST.
                if let Ok(t) = TcpStream::from_std(twin) {
                    let _ = t.set_zero_linger();
                }
            }
            // Leaving drops the hyper connection and closes the socket unanswered.
        }
        _ = cancel.cancelled() => {}
    }
}

fn answer(status: u16, body: Vec<u8>, request: u64) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(json::CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(&format!(
        "fa4e0000-0000-4000-8000-{:012x}",
        request & 0xffff_ffff_ffff
    )) {
        h.insert("x-amzn-requestid", id);
    }
    resp
}

fn error_answer(
    shared: &Shared,
    status: u16,
    code: &str,
    message: &str,
    request: u64,
) -> Response<Full<Bytes>> {
    if status < 500 {
        CounterCells::add(&shared.counters.client_errors, 1);
    }
    answer(status, json::error_body(code, message), request)
}

async fn handle(
    sh: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = sh.counters.requests.fetch_add(1, Relaxed) + 1;
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let has_auth = match req.headers().get(AUTHORIZATION) {
        Some(v) => {
            sh.saw_authorization(v.to_str().unwrap_or(""));
            true
        }
        None => false,
    };
    let is_post = req.method() == Method::POST;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let msg = format!("Could not read the request body: {e}");
            return Ok(error_answer(&sh, 400, "SerializationException", &msg, n));
        }
    };
    let op = match target
        .as_deref()
        .and_then(|t| t.strip_prefix(json::TARGET_PREFIX))
    {
        Some(op) if is_post => op,
        _ => {
            let msg = "Expected POST / with X-Amz-Target: Kinesis_20131202.<Operation>.";
            return Ok(error_answer(&sh, 400, "UnknownOperationException", msg, n));
        }
    };
    if sh.require_auth && !has_auth {
        let msg = "Missing Authentication Token";
        return Ok(error_answer(
            &sh,
            400,
            "MissingAuthenticationTokenException",
            msg,
            n,
        ));
    }
    let is_put = ops::is_put(op);
    if is_put {
        CounterCells::add(&sh.counters.put_requests, 1);
    }
    let fate = {
        let mut dice = sh.dice();
        if is_put || dice.plan().scope == FaultScope::All {
            dice.request()
        } else {
            Default::default()
        }
    };
    match fate.kind {
        RequestFault::Reset => {
            CounterCells::add(&sh.counters.resets, 1);
            ctl.kill(true);
            return std::future::pending().await;
        }
        RequestFault::Http500 => {
            CounterCells::add(&sh.counters.http_5xx, 1);
            let body = json::error_body("InternalFailure", "Internal service failure.");
            return Ok(answer(500, body, n));
        }
        RequestFault::Http503 => {
            CounterCells::add(&sh.counters.http_5xx, 1);
            let body = json::error_body("ServiceUnavailable", "Service Unavailable.");
            return Ok(answer(503, body, n));
        }
        RequestFault::None | RequestFault::DropResponse => {}
    }
    if let Some((delay, phase)) = fate.slow {
        CounterCells::add(&sh.counters.slow_responses, 1);
        if phase == SlowPhase::BeforeAccept {
            tokio::time::sleep(delay).await;
        }
    }
    let result = ops::dispatch(&sh, op, &body, n);
    if let Some((delay, SlowPhase::AfterAccept)) = fate.slow {
        tokio::time::sleep(delay).await;
    }
    if fate.kind == RequestFault::DropResponse {
        CounterCells::add(&sh.counters.dropped_responses, 1);
        ctl.kill(false);
        return std::future::pending().await;
    }
    Ok(match result {
        Ok(body) => answer(200, body, n),
        Err(e) => error_answer(&sh, e.status(), e.code, &e.message, n),
    })
}
