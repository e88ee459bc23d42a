//! Session login (Neiros): a login request returns a token, picked from the
//! response by JSONPath, cached for its lifetime and sent as a header or a
//! query parameter. When the API rejects it, the connection logs in again
//! once and repeats the request.

use crate::connection::request::Request;
use crate::connection::{CallError, Connection};
use crate::provider::model::LoginRequest;
use indexmap::IndexMap;
use serde_json::Value;

/// Logs in and returns the token.
pub async fn login(conn: &Connection, login: &LoginRequest, token_path: &str) -> Result<String, CallError> {
    let req = super::login_request(conn, login)?;
    let body = conn.send_plain("login", &req).await?;
    conn.pick_token("login", &req, &body, token_path)
}

/// Adds the token where the descriptor says.
pub fn apply(
    conn: &Connection,
    req: &mut Request,
    token: &str,
    headers: &IndexMap<String, String>,
    query: &IndexMap<String, String>,
) -> Result<(), String> {
    for (k, v) in headers {
        req.headers.push((k.clone(), conn.render_with_token(v, token)?));
    }
    for (k, v) in query {
        req.query
            .insert(k.clone(), Value::String(conn.render_with_token(v, token)?));
    }
    Ok(())
}
