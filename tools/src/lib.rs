//! What agentctl's agents use to touch the world. This crate and `sandbox` are the only ones
//! that speak to PostgreSQL (sqlx), Docker (bollard) or an LLM (async-openai); agents see the
//! traits of `runtime::ports`, which the types here implement.
//!
//! - [`bench`]: measurements that choose designs (UUID layouts).
//! - [`pg`]: connecting, and one-line errors that say which database and why.
//! - [`control`]: the `agentctl` control schema (migrations, runs, the audit trail's storage).
//! - [`catalog`]: reading a database's structure from `pg_catalog`.
//! - [`cluster`]: a private PostgreSQL cluster from the machine's binaries (`demo`, tests).
//! - [`rows`]: streaming a source table's rows in key order (`COPY ... TO STDOUT`).
//! - [`target`]: writing batches of migrated rows with their control records, atomically.
//! - [`binary`]: mapped text values in their columns' binary COPY forms.
//! - [`row_hash`]: the sync baseline's row hash, computed from those binary forms.
//! - [`dataset`]: the reference legacy database (generated, with documented dirt) and the
//!   modern target schema.

pub mod bench;
pub mod binary;
pub mod catalog;
pub mod cluster;
pub mod code;
pub mod control;
pub mod dataset;
pub mod diff;
pub mod llm;
pub mod pg;
pub mod row_hash;
pub mod rows;
pub mod sync;
pub mod target;
