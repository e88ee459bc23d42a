//! The journal of received requests and the fault switch: a layer in front
//! of every simulator that records each request and, at a chosen rate,
//! answers 429 or 503, answers slowly, or drops the connection mid-answer.

use crate::{Journal, Received};
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which faults to inject, and how often.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The share of requests that get a fault, from 0 to 1.
    pub rate: f64,
    /// The faults to choose from; empty means all of them.
    pub kinds: Vec<Fault>,
    /// How long a slow answer waits.
    pub delay: Duration,
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After: 1`.
    TooMany,
    /// `503 Service Unavailable`.
    Unavailable,
    /// The answer comes after `delay`.
    Slow,
    /// The connection drops in the middle of the answer.
    Drop,
}

impl Fault {
    /// Parses `429`, `5xx`, `slow`, `drop`.
    pub fn parse(s: &str) -> Option<Fault> {
        match s.trim() {
            "429" => Some(Fault::TooMany),
            "5xx" | "503" => Some(Fault::Unavailable),
            "slow" => Some(Fault::Slow),
            "drop" => Some(Fault::Drop),
            _ => None,
        }
    }
}

/// Puts the journal and the fault switch in front of a router.
pub fn wrap(router: Router, journal: Journal, faults: Faults, seed: u64) -> Router {
    let rng = Arc::new(Mutex::new(crate::data::Rng::new(seed, "faults")));
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let (journal, faults, rng) = (journal.clone(), faults.clone(), rng.clone());
        async move { handle(req, next, journal, faults, rng).await }
    }))
}

async fn handle(
    req: Request,
    next: Next,
    journal: Journal,
    faults: Faults,
    rng: Arc<Mutex<crate::data::Rng>>,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    if let Ok(mut j) = journal.0.lock() {
        j.push(received);
    }
    let fault = {
        let mut r = rng.lock().unwrap_or_else(|p| p.into_inner());
        let roll = (r.below(1_000_000) as f64) / 1_000_000.0;
        if roll < faults.rate {
            let all = [Fault::TooMany, Fault::Unavailable, Fault::Slow, Fault::Drop];
            let kinds: &[Fault] = if faults.kinds.is_empty() { &all } else { &faults.kinds };
            Some(kinds[r.below(kinds.len() as u64) as usize])
        } else {
            None
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match fault {
        None => next.run(req).await,
        Some(Fault::TooMany) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "Too Many Requests",
        )
            .into_response(),
        Some(Fault::Unavailable) => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
        Some(Fault::Slow) => {
            tokio::time::sleep(faults.delay).await;
            next.run(req).await
        }
        Some(Fault::Drop) => {
            let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![
                Ok(b"{\"data\": [".as_slice()),
                Err(std::io::Error::other("connection dropped by the fault switch")),
            ];
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("content-length", "4096")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}
