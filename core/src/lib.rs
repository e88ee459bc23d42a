//! The flow engine.
//!
//! `flow` runs integration pipelines described as data: a workflow file chains
//! steps that read records, map them with sandboxed Lua, and write them out.
//! This crate holds everything but the command line: the workflow model and
//! its validation, templates, the Lua sandbox, record streams, sources and
//! sinks, and the executor. The `flow` binary is a thin layer over it.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod connection;
pub mod dates;
pub mod diagnostic;
mod jsonscan;
pub mod lua;
pub mod phone;
pub mod php;
pub mod process;
pub mod provider;
pub mod rawjson;
pub mod record;
pub mod secrets;
pub mod select;
pub mod sink;
pub mod source;
pub mod state;
pub mod template;
pub mod units;
pub mod workflow;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use workflow::{load_workflow, LoadedWorkflow, RunOptions, RunReport, RunStatus};
