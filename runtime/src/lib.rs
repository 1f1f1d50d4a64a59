//! agentctl's runtime: the plumbing every agent stands on.
//!
//! Spawning and supervising actors ([`supervise`]) and the work each agent supervises
//! ([`jobs`]), the envelope every message travels in and the courier that delivers it
//! ([`envelope`]), the typed payloads agents exchange ([`domain`]), the audit trail ([`audit`],
//! [`audit_writer`]), the event stream the CLI shows ([`events`]), secret redaction
//! ([`redact`]), quoting names for SQL ([`sql`]), configuration ([`config`]), reading
//! PostgreSQL's dates and timestamps ([`time`]), rows of text values kept in one buffer
//! ([`text_rows`]) and the traits agents reach the world through ([`ports`]) and the error they
//! all return ([`error`]).
//!
//! This crate does no I/O of its own beyond reading configuration: databases, LLMs and
//! containers are reached through traits that `tools` implements.

pub mod audit;
pub mod audit_writer;
pub mod config;
pub mod context;
pub mod domain;
pub mod envelope;
pub mod error;
pub mod events;
pub mod ids;
pub mod jobs;
pub mod mapping;
pub mod ports;
pub mod redact;
pub mod sql;
pub mod supervise;
pub mod text_rows;
pub mod time;

pub use ids::{AgentName, RunId};
