//! The seven agents. Each is a ractor actor with its own message enum; requests carry an
//! [`runtime::envelope::Envelope`] and answer through an `RpcReplyPort`. Agent logic is plain
//! functions over the typed payloads of `runtime::domain`; the world is reached only through the
//! traits of `runtime::ports`, so nothing here imports a database or network client.

pub mod checks;
pub mod code;
pub mod data_mapping;
pub mod differential;
pub mod execution;
#[cfg(test)]
mod fake;
pub mod forecast;
pub mod guidance;
pub mod llm;
pub mod orchestrator;
pub mod pipeline;
pub mod planning;
pub mod schema_analysis;
pub mod schema_gen;
pub mod transform;
pub mod validation;
