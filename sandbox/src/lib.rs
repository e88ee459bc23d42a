//! Strict local simulators of the five APIs flow ships providers for, so
//! that workflows run end to end with no account and no network.
//!
//! Each simulator checks what the real API checks (credentials, tokens and
//! their lifetime, signatures, required fields), answers in the real API's
//! shapes, keeps a deterministic seeded data set that writes really change,
//! records every request it receives (for contract tests), and can inject
//! faults (429, 5xx, slow answers, dropped connections) at a chosen rate.

// Handlers answer a refused request with the finished HTTP response as the
// error value; it is built once per refused request, so its size is no cost.
#![allow(clippy::result_large_err)]

pub mod data;
pub mod eyenewton;
pub mod faults;
pub mod neiros;
pub mod pozvonim;
pub mod roistat;
pub mod solos;

use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the simulators behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first port; the five simulators take it and the four after it.
    /// None picks free ports.
    pub port_base: Option<u16>,
    /// How many records each list holds.
    pub records: usize,
    /// The seed of the data set.
    pub seed: u64,
    /// How long a token lives (Pozvonim documents 4 hours).
    pub token_lifetime: Duration,
    /// Faults to inject.
    pub faults: faults::Faults,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port_base: None,
            records: 50,
            seed: 42,
            token_lifetime: Duration::from_secs(4 * 3600),
            faults: faults::Faults::default(),
        }
    }
}

/// One request a simulator received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The HTTP method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: String,
}

/// Every request a simulator received, in order.
#[derive(Debug, Clone, Default)]
pub struct Journal(pub Arc<Mutex<Vec<Received>>>);

impl Journal {
    /// A copy of what was received so far.
    pub fn all(&self) -> Vec<Received> {
        self.0.lock().map(|j| j.clone()).unwrap_or_default()
    }
}

/// A running simulator.
#[derive(Debug, Clone)]
pub struct Simulator {
    /// The provider's name, as in its descriptor.
    pub provider: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Config values a connection needs against it (credentials).
    pub config: Vec<(&'static str, String)>,
    /// What it received.
    pub journal: Journal,
}

impl Simulator {
    /// The base URL a connection uses: the simulator's address and the
    /// path of the real API's base URL, under which it answers.
    pub fn base_url(&self) -> String {
        let path = match self.provider {
            "neiros" => neiros::BASE_PATH,
            "solos" => solos::BASE_PATH,
            "eyenewton" => eyenewton::BASE_PATH,
            "pozvonim" => pozvonim::BASE_PATH,
            "roistat" => roistat::BASE_PATH,
            _ => "",
        };
        format!("{}{path}", self.origin())
    }

    /// The simulator's scheme, host and port.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type Build = fn(&Options) -> (Router, Vec<(&'static str, String)>);

/// The simulators, in port order.
pub const SIMULATORS: &[(&str, Build)] = &[
    ("neiros", neiros::build),
    ("eyenewton", eyenewton::build),
    ("pozvonim", pozvonim::build),
    ("solos", solos::build),
    ("roistat", roistat::build),
];

/// Starts every simulator on 127.0.0.1 inside the current tokio runtime.
pub async fn start(opts: &Options) -> std::io::Result<Vec<Simulator>> {
    let mut out = Vec::new();
    for (i, (name, build)) in SIMULATORS.iter().enumerate() {
        let port = match opts.port_base {
            Some(b) => b.checked_add(i as u16).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("port {b} leaves no room for the next four simulators; take one up to 65531"),
                )
            })?,
            None => 0,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (router, config) = build(opts);
        let journal = Journal::default();
        let app = faults::wrap(router, journal.clone(), opts.faults.clone(), opts.seed);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
                tracing::error!(provider = name, "Simulator stopped: {e}");
            }
        });
        out.push(Simulator {
            provider: name,
            addr,
            config,
            journal,
        });
    }
    Ok(out)
}
