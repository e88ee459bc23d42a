//! Authentication strategies, one file each. A strategy adds credentials to
//! a request; the token-based ones get and cache a token first, and renew it
//! when the API rejects it.

pub mod session;
pub mod signed;
pub mod static_creds;

use super::request::{Body, Request};
use super::{CallError, Connection};
use crate::provider::model::LoginRequest;
use serde_json::Value;

/// The login or token request of a descriptor, its templates rendered.
pub fn login_request(conn: &Connection, login: &LoginRequest) -> Result<Request, CallError> {
    let mut req = Request::new(login.method, conn.url(&login.path));
    for (k, v) in &login.query {
        let value = conn.render_config(v).map_err(|e| conn.error("login", &req, e))?;
        req.query.insert(k.clone(), Value::String(value));
    }
    if !login.body.is_empty() {
        let mut body = serde_json::Map::new();
        for (k, v) in &login.body {
            let value = conn.render_config(v).map_err(|e| conn.error("login", &req, e))?;
            body.insert(k.clone(), Value::String(value));
        }
        req.body = Body::Json(body);
    }
    Ok(req)
}
