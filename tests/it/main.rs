//! agentctl's integration tests, one binary: every module runs against real PostgreSQL
//! clusters started by `tests::PgCluster` (see `tests/lib.rs`).

mod audit;
mod cli;
mod dataset;
mod execution;
mod planning;
mod proof;
mod supervision;
