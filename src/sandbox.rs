//! `flow sandbox` and `flow run --sandbox`: the bundled simulators.

use anyhow::Result;
use flow_core::workflow::ProviderOverride;
use flow_sandbox::faults::{Fault, Faults};
use flow_sandbox::{Options, Simulator};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `flow sandbox`.
#[derive(clap::Args, Clone)]
pub struct SandboxArgs {
    /// The first port; the simulators take it and the next four (neiros,
    /// eyenewton, pozvonim, solos, roistat). Free ports by default.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=65531))]
    pub port_base: Option<u16>,
    /// Records in each simulated list (at most 1 000 000: the simulators
    /// hold their data in memory).
    #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1_000_000))]
    pub records: usize,
    /// Seed of the simulated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How long a Pozvonim token lives, in seconds.
    #[arg(long, default_value_t = 4 * 3600)]
    pub token_lifetime: u64,
    /// Share of requests (0 to 1) answered with a fault.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Faults to choose from: 429, 5xx, slow, drop (comma-separated; all by default).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// How long a slow answer waits, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub delay_ms: u64,
}

impl Default for SandboxArgs {
    fn default() -> Self {
        SandboxArgs {
            port_base: None,
            records: 50,
            seed: 42,
            token_lifetime: 4 * 3600,
            fault_rate: 0.0,
            faults: Vec::new(),
            delay_ms: 2000,
        }
    }
}

impl SandboxArgs {
    pub fn options(&self) -> Result<Options, String> {
        let mut kinds = Vec::new();
        for f in &self.faults {
            kinds.push(Fault::parse(f).ok_or_else(|| format!("`{f}` is not a fault; use 429, 5xx, slow or drop"))?);
        }
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(format!("--fault-rate must be between 0 and 1, not {}", self.fault_rate));
        }
        Ok(Options {
            port_base: self.port_base,
            records: self.records,
            seed: self.seed,
            token_lifetime: Duration::from_secs(self.token_lifetime),
            faults: Faults {
                rate: self.fault_rate,
                kinds,
                delay: Duration::from_millis(self.delay_ms),
            },
        })
    }
}

/// The overrides that point every connection of a provider at its simulator.
pub fn overrides(sims: &[Simulator]) -> HashMap<String, ProviderOverride> {
    sims.iter()
        .map(|s| {
            let config = s
                .config
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect();
            (
                s.provider.to_owned(),
                ProviderOverride {
                    origin: s.origin(),
                    config,
                },
            )
        })
        .collect()
}

/// `flow sandbox`: runs the simulators until interrupted.
pub fn serve(args: SandboxArgs) -> Result<ExitCode> {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let sims = match flow_sandbox::start(&opts).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start the simulators: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        outln!(
            "flow sandbox: {} records per list, seed {}; Ctrl-C stops it.",
            opts.records,
            opts.seed
        );
        outln!("Point flow at it with:");
        for s in &sims {
            let up = s.provider.to_ascii_uppercase();
            outln!("  export FLOW_{up}_BASE_URL={}", s.base_url());
            for (k, v) in &s.config {
                outln!("  export FLOW_{up}_{}={v}", k.to_ascii_uppercase());
            }
        }
        tokio::signal::ctrl_c().await?;
        Ok(ExitCode::SUCCESS)
    })
}
