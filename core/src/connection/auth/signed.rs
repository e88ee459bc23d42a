//! Signed requests (Pozvonim): a token request signed with the API key, then
//! every request signed with the token. The signature is md5 of a template
//! over `secret` and `query`, where `query` is PHP's
//! `http_build_query(ksort($params))` of every parameter of the request.

use crate::connection::request::Request;
use crate::connection::{CallError, Connection};
use crate::provider::model::LoginRequest;
use indexmap::IndexMap;
use serde_json::Value;

/// The signature of a set of parameters.
pub fn signature(
    conn: &Connection,
    template: &str,
    secret: &str,
    params: &serde_json::Map<String, Value>,
) -> Result<String, String> {
    let query = crate::php::build_sorted_query(params);
    let text = conn.render_sign(template, secret, &query)?;
    Ok(crate::lua::md5_hex(text.as_bytes()))
}

/// Gets a token with a request signed by the login secret.
pub async fn login(
    conn: &Connection,
    login: &LoginRequest,
    login_secret: &str,
    sign_param: &str,
    sign_template: &str,
    token_path: &str,
) -> Result<String, CallError> {
    let mut req = super::login_request(conn, login)?;
    let fail = |req: &Request, e: String| conn.error("login", req, e);
    let secret = conn.render_config(login_secret).map_err(|e| fail(&req, e))?;
    crate::secrets::register(&secret);
    let sign = signature(conn, sign_template, &secret, &req.query).map_err(|e| fail(&req, e))?;
    req.query.insert(sign_param.to_owned(), Value::String(sign));
    let body = conn.send_plain("login", &req).await?;
    conn.pick_token("login", &req, &body, token_path)
}

/// Adds the fixed parameters and the signature.
pub fn apply(
    conn: &Connection,
    req: &mut Request,
    token: &str,
    params: &IndexMap<String, String>,
    sign_param: &str,
    sign_template: &str,
    default: crate::provider::model::Location,
) -> Result<(), String> {
    for (k, v) in params {
        req.set(default, k, Value::String(conn.render_config(v)?));
    }
    let sign = signature(conn, sign_template, token, &req.signed_params())?;
    // Send the parameters in the order they were signed in.
    req.query = crate::php::ksort(&req.query);
    match &mut req.body {
        crate::connection::request::Body::Form(m) => *m = crate::php::ksort(m),
        crate::connection::request::Body::Json(m) => *m = crate::php::ksort_json(m),
        _ => {}
    }
    req.set(default, sign_param, Value::String(sign));
    Ok(())
}
