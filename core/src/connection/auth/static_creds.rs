//! Fixed credentials from the connection's config in headers or the query
//! (Roistat's `Api-key` and `?project=`, solOS's two headers). Credentials in
//! the body (EyeNewton's `token`/`userId`) are added to the parameters before
//! the request is built, so they land inside an envelope too.

use crate::connection::request::Request;
use crate::connection::Connection;
use indexmap::IndexMap;

pub fn apply(
    conn: &Connection,
    req: &mut Request,
    headers: &IndexMap<String, String>,
    query: &IndexMap<String, String>,
) -> Result<(), String> {
    for (k, v) in headers {
        req.headers.push((k.clone(), conn.render_config(v)?));
    }
    for (k, v) in query {
        req.query
            .insert(k.clone(), serde_json::Value::String(conn.render_config(v)?));
    }
    Ok(())
}
