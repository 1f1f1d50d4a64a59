//! agentctl's integration tests, one binary: every module runs against real PostgreSQL
//! clusters started by `tests::PgCluster` (see `tests/lib.rs`).

mod audit;
mod chat;
mod cli;
mod corpus;
mod dataset;
mod execution;
mod faults;
mod llm;
mod planning;
mod proof;
mod sandboxing;
mod shape;
mod supervision;
mod sync;
mod terminal;
