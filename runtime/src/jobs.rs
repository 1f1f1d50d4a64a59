//! An agent's own work, supervised: each long piece of it (an entity's migration, validation or
//! differential analysis) runs in a [`Worker`] actor linked to the agent, and the agent applies
//! one restart policy to it from its supervision events.
//!
//! A worker of restartable work that fails with an error whose kind restarting may mend
//! ([`crate::error::ErrorKind::worth_restarting`]), or that panics, is started again after 2, 4,
//! 8 s and so on, as often as the run's [`RestartPolicy`] allows (the one the orchestrator
//! applies to its agents), each restart a decision in the trail; the work must be safe to
//! repeat (it resumes from what is committed). Any other failure, or one restart too many,
//! answers the request with the error. When the agent stops, [`end_workers`] kills its workers
//! and waits for them, so nothing they do outlives the agent: a batch in flight is dropped (its transaction
//! rolls back) and no audit record comes after the run's last.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor::{SpawnErr, SupervisionEvent};
use serde_json::json;

use crate::context::RunContext;
use crate::envelope::AgentError;
use crate::error::ToolError;
use crate::ids::AgentName;
use crate::supervise::{RestartLog, RestartPolicy};

/// The first pause before a restart; it doubles with each.
const FIRST_PAUSE: Duration = Duration::from_secs(2);

/// One attempt at a job, given how many restarts came before it.
type Work =
    Arc<dyn Fn(u32) -> Pin<Box<dyn Future<Output = Result<(), ToolError>> + Send>> + Send + Sync>;

/// Answers the job's request with its final failure (once; later calls do nothing).
type GiveUp = Arc<dyn Fn(ToolError) + Send + Sync>;

/// What the trail and the operator call a job.
#[derive(Clone, Debug)]
pub struct JobName {
    /// The entity, as the restart decision's detail names it.
    pub entity: String,
    /// Its target table, as the restart decision's summary names it.
    pub table: String,
    /// What a restart does, in words ("starting again from its last checkpoint"); `None` for
    /// work that is never started again by itself.
    pub again: Option<String>,
    /// What the job does, the context of its error ("migrating dispatch_case").
    pub doing: String,
}

struct Job {
    name: JobName,
    work: Work,
    give_up: GiveUp,
    /// Restarts so far, and those within the policy's window.
    restarts: u32,
    log: RestartLog,
}

/// The jobs an agent supervises, by the worker actor running each.
pub struct Jobs {
    ctx: Arc<RunContext>,
    agent: AgentName,
    policy: RestartPolicy,
    running: HashMap<ActorId, Job>,
}

impl Jobs {
    pub fn new(ctx: Arc<RunContext>, agent: AgentName, policy: RestartPolicy) -> Jobs {
        Jobs { ctx, agent, policy, running: HashMap::new() }
    }

    /// Starts `work` in a worker linked to `supervisor`; its value (or its final failure)
    /// answers `reply`. `work` is given how many restarts came before the attempt.
    pub async fn start<T, F, Fut>(
        &mut self,
        supervisor: &ActorCell,
        name: JobName,
        reply: RpcReplyPort<Result<T, AgentError>>,
        work: F,
    ) -> Result<(), SpawnErr>
    where
        T: Send + 'static,
        F: Fn(u32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ToolError>> + Send + 'static,
    {
        let reply = Arc::new(Mutex::new(Some(reply)));
        let answer = move |r: Result<T, AgentError>| {
            if let Some(port) = reply.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = port.send(r);
            }
        };
        let answer = Arc::new(answer);
        let (agent, doing) = (self.agent, name.doing.clone());
        let give_up: GiveUp = {
            let answer = answer.clone();
            Arc::new(move |e: ToolError| answer(Err(AgentError::of(agent, e.context(&doing)))))
        };
        let work = Arc::new(work);
        let work: Work = Arc::new(move |restarts| {
            let (work, answer) = (work.clone(), answer.clone());
            Box::pin(async move {
                let value = work(restarts).await?;
                answer(Ok(value));
                Ok(())
            })
        });
        let job = Job { name, work, give_up, restarts: 0, log: RestartLog::default() };
        self.spawn(supervisor, job, Duration::ZERO).await
    }

    async fn spawn(
        &mut self,
        supervisor: &ActorCell,
        job: Job,
        pause: Duration,
    ) -> Result<(), SpawnErr> {
        let args = WorkerArgs { work: job.work.clone(), restarts: job.restarts, pause };
        match Actor::spawn_linked(None, Worker, args, supervisor.clone()).await {
            Ok((worker, _)) => {
                self.running.insert(worker.get_id(), job);
                Ok(())
            }
            Err(e) => {
                (job.give_up)(ToolError::system(format!("its worker did not start: {e}")));
                Err(e)
            }
        }
    }

    /// Applies the restart policy to a supervision event about one of the jobs' workers; events
    /// about other actors are not the jobs' and are left alone (`false`).
    pub async fn on_event(&mut self, event: SupervisionEvent, supervisor: &ActorCell) -> bool {
        let (actor, error) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(failure(err))),
            _ => return false,
        };
        // Let the event go before any await: it holds a box that is not Sync.
        drop(event);
        let Some(mut job) = self.running.remove(&actor) else { return false };
        let Some(error) = error else { return true };
        let admitted = match &job.name.again {
            Some(again) if error.kind.worth_restarting() => {
                job.log.admit(Instant::now(), self.policy).map(|n| (again.clone(), n))
            }
            _ => None,
        };
        let Some((again, restart)) = admitted else {
            (job.give_up)(error);
            return true;
        };
        job.restarts += 1;
        let pause = FIRST_PAUSE * 2u32.saturating_pow(restart - 1);
        self.ctx.decision(
            self.agent,
            format!(
                "{}: {again} in {}s (restart {restart} of {})",
                job.name.table,
                pause.as_secs(),
                self.policy.max_restarts
            ),
            format!("it stopped: {error}"),
            json!({"entity": job.name.entity, "attempt": restart, "error": error.message}),
        );
        let _ = self.spawn(supervisor, job, pause).await;
        true
    }
}

/// A worker's failure as a [`ToolError`]: the one its work returned, or a panic's message.
fn failure(err: &ActorProcessingErr) -> ToolError {
    match err.downcast_ref::<ToolError>() {
        Some(e) => e.clone(),
        None => ToolError::system(format!("its worker panicked: {err}")),
    }
}

/// Kills the workers linked to `agent` and waits until each has stopped.
pub async fn end_workers(agent: &ActorCell) {
    let workers = agent.get_children();
    let ended = workers.iter().map(|w| w.kill_and_wait(Some(Duration::from_secs(10))));
    futures::future::join_all(ended).await;
}

/// The actor one attempt at a job runs in: it waits its pause, does the work inside its own
/// handler (so its supervisor sees it fail or panic) and stops when the work is done.
struct Worker;

struct WorkerArgs {
    work: Work,
    restarts: u32,
    pause: Duration,
}

/// The worker's one message, sent to itself once it has started.
struct Begin;

impl Actor for Worker {
    type Msg = Begin;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Begin>,
        args: WorkerArgs,
    ) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.cast(Begin)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Begin>,
        _: Begin,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        tokio::time::sleep(state.pause).await;
        (state.work)(state.restarts).await?;
        myself.stop(None);
        Ok(())
    }
}
