//! Identifiers that every message and audit event carries: the run and the agents.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One invocation of agentctl that changes or inspects databases (`run`, `plan`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    pub fn new() -> RunId {
        RunId(Uuid::new_v4())
    }
}

impl From<Uuid> for RunId {
    fn from(id: Uuid) -> RunId {
        RunId(id)
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

/// Who sent or received a message, or made a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentName {
    Orchestrator,
    SchemaAnalysis,
    Planning,
    DataMapping,
    Execution,
    Validation,
    Guidance,
    /// The operator, through the command line or the REPL.
    Operator,
    /// The runtime itself: supervision, the audit writer.
    Runtime,
}

impl AgentName {
    /// The six agents the orchestrator spawns and supervises, in start order.
    pub const TEAM: [AgentName; 6] = [
        AgentName::SchemaAnalysis,
        AgentName::Planning,
        AgentName::DataMapping,
        AgentName::Execution,
        AgentName::Validation,
        AgentName::Guidance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentName::Orchestrator => "orchestrator",
            AgentName::SchemaAnalysis => "schema_analysis",
            AgentName::Planning => "planning",
            AgentName::DataMapping => "data_mapping",
            AgentName::Execution => "execution",
            AgentName::Validation => "validation",
            AgentName::Guidance => "guidance",
            AgentName::Operator => "operator",
            AgentName::Runtime => "runtime",
        }
    }

    /// How an operator reads the name: "schema analysis agent".
    pub fn label(self) -> &'static str {
        match self {
            AgentName::Orchestrator => "orchestrator",
            AgentName::SchemaAnalysis => "schema analysis agent",
            AgentName::Planning => "planning agent",
            AgentName::DataMapping => "data mapping agent",
            AgentName::Execution => "execution agent",
            AgentName::Validation => "validation agent",
            AgentName::Guidance => "user guidance agent",
            AgentName::Operator => "operator",
            AgentName::Runtime => "runtime",
        }
    }

    pub const ALL: [AgentName; 9] = [
        AgentName::Orchestrator,
        AgentName::SchemaAnalysis,
        AgentName::Planning,
        AgentName::DataMapping,
        AgentName::Execution,
        AgentName::Validation,
        AgentName::Guidance,
        AgentName::Operator,
        AgentName::Runtime,
    ];
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        let wanted = wanted.trim_end_matches("_agent");
        AgentName::ALL
            .into_iter()
            .find(|a| {
                a.as_str() == wanted || (wanted == "schema" && *a == AgentName::SchemaAnalysis)
            })
            .ok_or_else(|| {
                let names: Vec<&str> = AgentName::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown agent `{s}`; expected one of {}", names.join(", "))
            })
    }
}
