//! Authentication strategies, one file each. A strategy adds credentials to
//! a request; the token-based ones get and cache a token first, and renew it
//! when the API rejects it.

pub mod session;
pub mod signed;
pub mod static_creds;
