//! Workflows: the file format, loading with precise errors, validation, and
//! the executor that runs the steps as a graph of record streams.

mod execute;
pub(crate) mod load;
pub mod model;
mod positions;
mod report;
mod validate;

pub use execute::{run, Observer, ProviderOverride, RunOptions};
pub use load::{load_workflow, load_workflow_with, parse_yaml, LoadedWorkflow, ScriptSource};
pub use positions::Positions;
pub use report::{RunReport, RunStatus, StepReport, StepStatus, STEP_FIELDS};

/// The JSON Schema of the workflow file format.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(model::Workflow);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
