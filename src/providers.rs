//! `flow providers` and `flow call`: look at providers and try one action.

use crate::ExitCode;
use anyhow::Result;
use flow_core::connection::{resolve_config, Connection};
use flow_core::provider::model::Auth;
use flow_core::provider::{Descriptor, Registry};
use flow_core::record::{Inlet, Outlet};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::Arc;

fn auth_name(d: &Descriptor) -> &'static str {
    match d.auth {
        Auth::None => "none",
        Auth::Static { .. } => "static",
        Auth::Session { .. } => "session",
        Auth::Signed { .. } => "signed",
    }
}

/// The method an action is sent with (an envelope's, for RPC providers).
fn method_of(d: &Descriptor, a: &flow_core::provider::model::Action) -> &'static str {
    d.envelope.as_ref().map(|e| e.method).unwrap_or(a.method).as_str()
}

pub fn list(registry: &Registry, json: bool) -> Result<()> {
    if json {
        let all: Vec<Value> = registry
            .iter()
            .map(|(d, o)| {
                json!({"name": d.name, "title": d.title, "auth": auth_name(d), "origin": o.describe(),
                       "actions": d.actions.keys().collect::<Vec<_>>()})
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for (d, origin) in registry.iter() {
        outln!(
            "{:<12} {:<8} {:>3} actions  {}  ({})",
            d.name,
            auth_name(d),
            d.actions.len(),
            d.title.as_deref().unwrap_or(""),
            origin.describe()
        );
        let names: Vec<&str> = d.actions.keys().map(String::as_str).collect();
        outln!("             {}", names.join(", "));
    }
    Ok(())
}

pub fn show(d: &Descriptor, json: bool) -> Result<()> {
    if json {
        let actions: Map<String, Value> = d
            .actions
            .iter()
            .map(|(name, a)| {
                let params: Map<String, Value> = a
                    .params
                    .iter()
                    .map(|(p, spec)| {
                        (
                            p.clone(),
                            json!({"type": format!("{:?}", spec.kind).to_lowercase(), "required": spec.required,
                                           "in": format!("{:?}", a.location_of(spec)).to_lowercase(),
                                           "default": spec.default, "description": spec.description}),
                        )
                    })
                    .collect();
                (
                    name.clone(),
                    json!({"description": a.description, "method": method_of(d, a), "path": a.path,
                                      "rpc": a.rpc, "records": a.records, "writes": a.is_write(), "params": params}),
                )
            })
            .collect();
        let config: Map<String, Value> = d
            .config
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    json!({"required": c.required, "secret": c.secret, "description": c.description}),
                )
            })
            .collect();
        let doc = json!({"name": d.name, "title": d.title, "description": d.description, "docs": d.docs,
                         "base_url": d.base_url, "auth": auth_name(d), "config": config, "actions": actions});
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    outln!("{} — {}", d.name, d.title.as_deref().unwrap_or(""));
    if let Some(desc) = &d.description {
        outln!("{}", desc.trim());
    }
    outln!("base URL: {}   auth: {}", d.base_url, auth_name(d));
    outln!(
        "\nconfig (FLOW_{}_<KEY> or --config key=value):",
        d.name.to_ascii_uppercase()
    );
    for (k, c) in &d.config {
        let marks = [c.required.then_some("required"), c.secret.then_some("secret")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        outln!("  {k:<14} {marks:<18} {}", c.description.as_deref().unwrap_or(""));
    }
    outln!("\nactions:");
    for (name, a) in &d.actions {
        let kind = if a.records.is_some() {
            "list"
        } else if a.is_write() {
            "write"
        } else {
            "read"
        };
        outln!(
            "  {name:<28} {:<6} {kind:<5} {}",
            method_of(d, a),
            a.description.as_deref().unwrap_or("").lines().next().unwrap_or("")
        );
        for (p, spec) in &a.params {
            let req = if spec.required { "required" } else { "" };
            outln!(
                "      {p:<24} {:<8} {req:<8} {}",
                format!("{:?}", spec.kind).to_lowercase(),
                spec.description.as_deref().unwrap_or("").lines().next().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// Text from the command line: JSON when it parses as JSON, text otherwise.
fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub fn call(
    registry: &Registry,
    target: String,
    params: Vec<(String, String)>,
    config: Vec<(String, String)>,
    base_url: Option<String>,
) -> Result<ExitCode> {
    let Some((provider, action)) = target.split_once('.') else {
        eprintln!("error: `{target}` should be `<provider>.<action>`");
        return Ok(ExitCode::from(2));
    };
    let d = match registry.require(provider) {
        Ok(d) => Arc::clone(d),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // An action that is not there says so before any config is asked for.
    if let Err(e) = flow_core::connection::action_of(&d, action) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let mut given = Map::new();
    let prefix = format!("FLOW_{}_", d.name.to_ascii_uppercase().replace('-', "_"));
    for key in d.config.keys() {
        if let Ok(v) = std::env::var(format!("{prefix}{}", key.to_ascii_uppercase())) {
            given.insert(key.clone(), Value::String(v));
        }
    }
    for (k, v) in config {
        given.insert(k, Value::String(v));
    }
    let config = match resolve_config(&d, &given) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e} (set {prefix}<KEY> or pass --config key=value)");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let base_url = base_url.or_else(|| flow_core::connection::base_url_from_env(&d.name));
    let conn = match Connection::new(&d.name, Arc::clone(&d), config, base_url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // A text parameter gets the text exactly as typed: read as JSON,
    // `12345678901234567890123` or `1.50` would come back changed.
    let declared = flow_core::connection::action_of(&d, action).map(|a| &a.params).ok();
    let params: Map<String, Value> = params
        .into_iter()
        .map(|(k, v)| {
            let kind = declared.and_then(|p| p.get(&k)).map(|p| p.kind);
            let text = matches!(
                kind,
                Some(flow_core::provider::model::ParamType::String | flow_core::provider::model::ParamType::Date)
            );
            // `"1"`, a JSON string, is still the string inside the quotes.
            let v = match value(&v) {
                quoted @ Value::String(_) => quoted,
                _ if text => Value::String(v),
                parsed => parsed,
            };
            (k, v)
        })
        .collect();
    if let Err(e) = conn.action(action).and_then(|_| conn.check_params(action, &params)) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let mut outlet = Outlet::none();
        let mut inlet: Inlet = outlet.channel();
        let printer = tokio::spawn(async move {
            let stdout = std::io::stdout();
            while let Some(Ok(batch)) = inlet.next().await {
                let mut buf = Vec::with_capacity(batch.len().saturating_mul(256).min(1 << 20));
                if batch.write_jsonl(&mut buf).is_err() || stdout.lock().write_all(&buf).is_err() {
                    return;
                }
            }
        });
        let r = conn.stream(action, &params, &outlet, &|_| {}, None, None).await;
        drop(outlet);
        let _ = printer.await;
        r
    });
    match result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {}", flow_core::secrets::mask(&e.0));
            Ok(ExitCode::from(1))
        }
    }
}
