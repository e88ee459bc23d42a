//! The bundled simulators, started once per test process on free ports.
#![allow(dead_code)]

use flow_sandbox::{Options, Simulator};
use std::sync::OnceLock;

/// The running simulators (started on first use, kept until the process ends).
pub fn simulators() -> &'static [Simulator] {
    static SIMS: OnceLock<Vec<Simulator>> = OnceLock::new();
    SIMS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let sims = flow_sandbox::start(&Options {
                    records: 25,
                    ..Options::default()
                })
                .await
                .expect("sandbox");
                tx.send(sims).expect("send");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("sandbox started")
    })
}

/// One simulator by provider name.
pub fn simulator(provider: &str) -> &'static Simulator {
    simulators().iter().find(|s| s.provider == provider).expect("simulator")
}

/// `flow call <provider>.<action>` against the simulator, with its
/// credentials in the environment, and `--param` for each pair. Returns the
/// output and the requests the simulator received during the call.
pub fn call(
    provider: &str,
    action: &str,
    params: &[(&str, &str)],
) -> (std::process::Output, Vec<flow_sandbox::Received>) {
    call_custom(provider, action, params, &[], None)
}

/// Like [`call`], with some config values replaced and, optionally, a
/// folder of descriptors that replaces the bundled ones.
pub fn call_custom(
    provider: &str,
    action: &str,
    params: &[(&str, &str)],
    config: &[(&str, &str)],
    providers: Option<&std::path::Path>,
) -> (std::process::Output, Vec<flow_sandbox::Received>) {
    // One call at a time, so that the requests a simulator received while
    // this call ran are this call's own (tests run in parallel threads).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sim = simulator(provider);
    let before = sim.journal.all().len();
    let mut cmd = super::flow();
    if let Some(dir) = providers {
        cmd.arg("--providers").arg(dir);
    }
    cmd.arg("call").arg(format!("{provider}.{action}"));
    let up = provider.to_ascii_uppercase();
    cmd.env(format!("FLOW_{up}_BASE_URL"), sim.base_url());
    for (k, v) in &sim.config {
        let v = config.iter().find(|(key, _)| key == k).map_or(v.as_str(), |(_, v)| *v);
        cmd.env(format!("FLOW_{up}_{}", k.to_ascii_uppercase()), v);
    }
    for (k, v) in params {
        cmd.arg("--param").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("flow call");
    let received = sim.journal.all()[before..].to_vec();
    (out, received)
}

/// The JSON lines `flow call` printed.
pub fn records(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A config value the provider's simulator gives.
pub fn config(provider: &str, key: &str) -> String {
    simulator(provider)
        .config
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no config `{key}` for {provider}"))
}

/// A header of a received request (names are lower case).
pub fn header<'a>(r: &'a flow_sandbox::Received, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The JSON body of a received request.
pub fn body(r: &flow_sandbox::Received) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", r.body))
}

/// Tests that change a simulator's data run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The records of a call that must succeed.
pub fn ok(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "flow call failed ({:?}):\n{}",
        out.status.code(),
        super::stderr(out)
    );
    records(out)
}
