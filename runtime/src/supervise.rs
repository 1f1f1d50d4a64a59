//! Supervision: how the orchestrator keeps its team of agents alive.
//!
//! Each agent sits in a [`Slot`], a watch channel holding its current `ActorRef` (or why it is
//! down). Callers always go through the slot, so after a restart they reach the new actor
//! without anyone handing them a new reference. A [`Team`] knows how to spawn every member
//! again with the arguments it was first given, and applies the [`RestartPolicy`]: a member
//! that fails more often than the policy allows is marked down for good, with the reason, and
//! every request to it fails with that reason instead of hanging.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ractor::{Actor, ActorCell, ActorId, ActorRef, SpawnErr, SupervisionEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::audit::{AuditRecord, EventKind};
use crate::context::RunContext;
use crate::events::RunEvent;
use crate::ids::AgentName;

/// How many restarts an agent gets within a window before the run gives up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy { max_restarts: 3, window: Duration::from_secs(60) }
    }
}

/// The restarts an agent has had, to apply the policy's sliding window.
#[derive(Debug, Default)]
pub struct RestartLog {
    at: VecDeque<Instant>,
}

impl RestartLog {
    /// Records a failure at `now`; returns the restart's number within the window, or `None`
    /// when the policy allows no more.
    pub fn admit(&mut self, now: Instant, policy: RestartPolicy) -> Option<u32> {
        while self.at.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            self.at.pop_front();
        }
        if self.at.len() as u32 >= policy.max_restarts {
            return None;
        }
        self.at.push_back(now);
        Some(self.at.len() as u32)
    }
}

/// Where an agent is, as its callers see it.
pub enum SlotState<M: ractor::Message> {
    Starting,
    Up(ActorRef<M>),
    Restarting { attempt: u32, reason: String },
    Down(String),
}

/// The receiving side of an agent's slot: what callers hold.
pub struct Slot<M: ractor::Message> {
    agent: AgentName,
    rx: watch::Receiver<SlotState<M>>,
    /// For a slot nobody supervises ([`Slot::fixed`]), the sender, kept so the slot stays open.
    _fixed: Option<Arc<watch::Sender<SlotState<M>>>>,
}

impl<M: ractor::Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot { agent: self.agent, rx: self.rx.clone(), _fixed: self._fixed.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("the {} is down: {}", .0.label(), .1)]
    Down(AgentName, String),
    #[error("the {} did not come up within {:?}", .0.label(), .1)]
    NotReady(AgentName, Duration),
}

impl<M: ractor::Message> Slot<M> {
    /// A slot for an actor that is not restarted, such as the orchestrator the CLI talks to.
    pub fn fixed(agent: AgentName, actor: ActorRef<M>) -> Slot<M> {
        let (tx, rx) = watch::channel(SlotState::Up(actor));
        Slot { agent, rx, _fixed: Some(Arc::new(tx)) }
    }

    pub fn agent(&self) -> AgentName {
        self.agent
    }

    /// The agent's current reference, waiting (bounded) while it starts or restarts. With
    /// `not` set, a reference to that (failed) actor does not count: the caller wants its
    /// successor.
    pub async fn ready(
        &self,
        within: Duration,
        not: Option<ActorId>,
    ) -> Result<ActorRef<M>, SlotError> {
        let mut rx = self.rx.clone();
        let wait = rx.wait_for(|s| match s {
            SlotState::Up(r) => Some(r.get_id()) != not,
            SlotState::Down(_) => true,
            _ => false,
        });
        let outcome = match tokio::time::timeout(within, wait).await {
            Ok(Ok(state)) => match &*state {
                SlotState::Up(r) => Ok(r.clone()),
                SlotState::Down(reason) => Err(SlotError::Down(self.agent, reason.clone())),
                _ => unreachable!("wait_for returned on a state it does not accept"),
            },
            Ok(Err(_)) => Err(SlotError::Down(self.agent, "its supervisor has stopped".into())),
            Err(_) => Err(SlotError::NotReady(self.agent, within)),
        };
        outcome
    }
}

/// A team member the supervisor can (re)spawn.
#[async_trait]
trait Member: Send + Sync {
    fn agent(&self) -> AgentName;
    async fn spawn(&self, supervisor: ActorCell) -> Result<ActorCell, SpawnErr>;
    fn mark(&self, state: MarkState);
}

enum MarkState {
    Restarting { attempt: u32, reason: String },
    Down(String),
}

struct Managed<A: Actor> {
    agent: AgentName,
    actor: A,
    args: A::Arguments,
    tx: watch::Sender<SlotState<A::Msg>>,
}

#[async_trait]
impl<A> Member for Managed<A>
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    fn agent(&self) -> AgentName {
        self.agent
    }

    async fn spawn(&self, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        let name = format!("{}-{}", self.agent, uuid::Uuid::new_v4().simple());
        let (actor_ref, _join) =
            A::spawn_linked(Some(name), self.actor.clone(), self.args.clone(), supervisor).await?;
        let cell = actor_ref.get_cell();
        self.tx.send_replace(SlotState::Up(actor_ref));
        Ok(cell)
    }

    fn mark(&self, state: MarkState) {
        self.tx.send_replace(match state {
            MarkState::Restarting { attempt, reason } => SlotState::Restarting { attempt, reason },
            MarkState::Down(reason) => SlotState::Down(reason),
        });
    }
}

/// The agents one supervisor runs, how to start them again, and their restart history.
pub struct Team {
    ctx: Arc<RunContext>,
    policy: RestartPolicy,
    members: Vec<Box<dyn Member>>,
    /// Which member a live actor is, to recognise a supervision event's sender.
    by_actor: HashMap<ActorId, usize>,
    restarts: HashMap<AgentName, RestartLog>,
}

impl Team {
    pub fn new(ctx: Arc<RunContext>, policy: RestartPolicy) -> Team {
        Team {
            ctx,
            policy,
            members: Vec::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
        }
    }

    /// Registers a member (not started yet) and returns the slot its callers use.
    pub fn add<A>(&mut self, agent: AgentName, actor: A, args: A::Arguments) -> Slot<A::Msg>
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        let (tx, rx) = watch::channel(SlotState::Starting);
        self.members.push(Box::new(Managed { agent, actor, args, tx }));
        Slot { agent, rx, _fixed: None }
    }

    /// Spawns every member linked to `supervisor`.
    pub async fn start(&mut self, supervisor: &ActorCell) -> Result<(), SpawnErr> {
        for i in 0..self.members.len() {
            let cell = self.members[i].spawn(supervisor.clone()).await?;
            self.by_actor.insert(cell.get_id(), i);
        }
        Ok(())
    }

    /// Handles a supervision event from a member: records it and restarts the member when the
    /// policy allows, or marks it down with the reason. Events about actors that are not
    /// members are ignored.
    pub async fn on_event(&mut self, event: SupervisionEvent, supervisor: &ActorCell) {
        // Read what is needed and let the event go before any await: it holds a non-Sync box.
        let (actor, reason) = match &event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, why) => (
                cell.get_id(),
                format!(
                    "stopped unexpectedly{}",
                    why.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
                ),
            ),
            _ => return,
        };
        drop(event);
        let Some(index) = self.by_actor.remove(&actor) else { return };
        let member = &self.members[index];
        let agent = member.agent();
        let log = self.restarts.entry(agent).or_default();
        let attempt = log.admit(Instant::now(), self.policy);
        self.ctx.events.publish(RunEvent::AgentFailed {
            run_id: self.ctx.run_id,
            agent,
            reason: reason.clone(),
            restart: attempt,
        });
        match attempt {
            Some(attempt) => {
                self.ctx.audit.record(AuditRecord::new(
                    AgentName::Orchestrator,
                    EventKind::Error,
                    format!("the {} {reason}; restarting it (restart {attempt} of {})", agent.label(), self.policy.max_restarts),
                    json!({"agent": agent, "reason": reason, "restart": attempt, "policy": self.policy}),
                ));
                member.mark(MarkState::Restarting { attempt, reason: reason.clone() });
                match member.spawn(supervisor.clone()).await {
                    Ok(cell) => {
                        self.by_actor.insert(cell.get_id(), index);
                    }
                    Err(e) => {
                        let why = format!("{reason}, and restarting it failed: {e}");
                        self.give_up(index, why);
                    }
                }
            }
            None => {
                let why = format!(
                    "{reason} (more than {} restarts within {}s, so the run gives up on it)",
                    self.policy.max_restarts,
                    self.policy.window.as_secs()
                );
                self.give_up(index, why);
            }
        }
    }

    fn give_up(&self, index: usize, why: String) {
        let member = &self.members[index];
        let agent = member.agent();
        self.ctx.audit.record(AuditRecord::new(
            AgentName::Orchestrator,
            EventKind::Error,
            format!("the {} is down: {why}", agent.label()),
            json!({"agent": agent, "reason": why}),
        ));
        member.mark(MarkState::Down(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_limited_within_the_window_only() {
        let policy = RestartPolicy { max_restarts: 2, window: Duration::from_secs(60) };
        let mut log = RestartLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0, policy), Some(1));
        assert_eq!(log.admit(t0 + Duration::from_secs(1), policy), Some(2));
        assert_eq!(log.admit(t0 + Duration::from_secs(2), policy), None);
        // Once the first failure falls out of the window, the agent may be restarted again.
        assert_eq!(log.admit(t0 + Duration::from_millis(60_500), policy), Some(2));
        assert_eq!(log.admit(t0 + Duration::from_millis(60_600), policy), None);
    }
}
