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
    // One call at a time, so that the requests a simulator received while
    // this call ran are this call's own (tests run in parallel threads).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sim = simulator(provider);
    let before = sim.journal.all().len();
    let mut cmd = super::flow();
    cmd.arg("call").arg(format!("{provider}.{action}"));
    let up = provider.to_ascii_uppercase();
    cmd.env(format!("FLOW_{up}_BASE_URL"), sim.base_url());
    for (k, v) in &sim.config {
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
