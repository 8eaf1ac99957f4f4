//! The step journal, `/var/lib/picluster/state.json`: which step of which
//! stage ran, how often, how it ended. Written atomically after every change,
//! so power loss at any point leaves the previous or the next state, and the
//! next run resumes at the first step not done. Every step is idempotent.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil::{Perms, create_dirs, read_optional, write_atomic};
use crate::host::Host;
use picluster_profiles::bundle::node_paths;

pub const JOURNAL_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Stage1,
    Stage2,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Stage1 => "stage1",
            Stage::Stage2 => "stage2",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub stage: Stage,
    pub step: String,
    pub status: Status,
    pub attempts: u32,
    /// What the step found or did, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The last failure (kept after a later success, for the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    /// Version of the agent that last wrote the journal.
    pub agent_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub steps: Vec<StepRecord>,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            format: JOURNAL_FORMAT,
            agent_version: crate::VERSION.to_string(),
            node: None,
            cluster: None,
            steps: Vec::new(),
        }
    }

    pub fn path(host: &Host) -> PathBuf {
        host.path(node_paths::JOURNAL)
    }

    /// The journal at `path`, or `None` when there is none yet.
    pub fn read(path: &Path) -> Result<Option<Journal>> {
        let Some(bytes) = read_optional(path)? else {
            return Ok(None);
        };
        let j = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a picluster journal", path.display()))?;
        Ok(Some(j))
    }

    /// The journal for a run: an unreadable one is set aside (every step is
    /// idempotent, so starting over is safe) rather than blocking the node.
    pub fn load(host: &Host) -> Result<Journal> {
        let path = Journal::path(host);
        match Journal::read(&path) {
            Ok(Some(j)) => Ok(j),
            Ok(None) => Ok(Journal::new()),
            Err(e) => {
                let aside = path.with_extension(format!("json.broken-{}", host.env.now()));
                std::fs::rename(&path, &aside).with_context(|| {
                    format!(
                        "cannot move the unreadable journal {} aside",
                        path.display()
                    )
                })?;
                host.log.warn(&format!(
                    "{e:#}; moved it to {} and starting over (every step is safe to repeat)",
                    aside.display()
                ));
                Ok(Journal::new())
            }
        }
    }

    pub fn save(&mut self, host: &Host) -> Result<()> {
        self.agent_version = crate::VERSION.to_string();
        let path = Journal::path(host);
        if let Some(dir) = path.parent() {
            create_dirs(dir)?;
        }
        let mut text = serde_json::to_string_pretty(self).expect("journal serialises");
        text.push('\n');
        write_atomic(&path, text.as_bytes(), Some(Perms::root(0o644)))
    }

    /// Record what a running step is waiting for, on disk, so `status` (and
    /// the boot test) can say why it has not finished. The step's final
    /// account replaces it when the step ends.
    pub fn note_waiting(host: &Host, stage: Stage, step: &str, what: &str) -> Result<()> {
        let Some(mut j) = Journal::read(&Journal::path(host))? else {
            return Ok(());
        };
        let now = host.env.now();
        if let Some(r) = j
            .steps
            .iter_mut()
            .find(|r| r.stage == stage && r.step == step && r.status == Status::Running)
        {
            r.detail = Some(what.to_string());
            r.updated_at = now;
            j.save(host)?;
        }
        Ok(())
    }

    pub fn get(&self, stage: Stage, step: &str) -> Option<&StepRecord> {
        self.steps
            .iter()
            .find(|r| r.stage == stage && r.step == step)
    }

    fn get_mut(&mut self, stage: Stage, step: &str) -> &mut StepRecord {
        let i = self
            .steps
            .iter()
            .position(|r| r.stage == stage && r.step == step)
            .expect("steps are registered before they run");
        &mut self.steps[i]
    }

    /// Register the steps of a stage (pending) so `status` shows the whole plan.
    pub fn plan(&mut self, stage: Stage, steps: &[&str], now: i64) {
        for name in steps {
            if self.get(stage, name).is_none() {
                self.steps.push(StepRecord {
                    stage,
                    step: name.to_string(),
                    status: Status::Pending,
                    attempts: 0,
                    detail: None,
                    last_error: None,
                    started_at: None,
                    finished_at: None,
                    updated_at: now,
                });
            }
        }
    }

    /// Mark every step of every stage pending again (a new bundle arrived).
    pub fn reset(&mut self, now: i64) {
        for r in &mut self.steps {
            r.status = Status::Pending;
            r.detail = None;
            r.finished_at = None;
            r.updated_at = now;
        }
    }

    /// Whether every registered step of `stage` is done.
    pub fn stage_done(&self, stage: Stage) -> bool {
        let mut steps = self.steps.iter().filter(|r| r.stage == stage).peekable();
        steps.peek().is_some() && steps.all(|r| r.status == Status::Done)
    }
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new()
    }
}

/// One step of a stage. `run` returns a one-line account of what it did.
pub struct Step<C> {
    pub name: &'static str,
    pub run: fn(&mut C) -> Result<String>,
}

/// How a stage run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Stopped early on request (tests simulating power loss).
    Interrupted,
}

/// Run the steps of `stage` not yet done, recording each in the journal.
/// `stop_after` (tests) stops as if the power went after that many steps ran.
pub fn run_steps<C>(
    host: &Host,
    journal: &mut Journal,
    stage: Stage,
    steps: &[Step<C>],
    ctx: &mut C,
    stop_after: Option<usize>,
) -> Result<Outcome> {
    let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
    journal.plan(stage, &names, host.env.now());
    journal.save(host)?;
    let mut ran = 0;
    for step in steps {
        let record = journal.get(stage, step.name).expect("planned");
        if record.status == Status::Done {
            host.log.info(&format!(
                "{stage} {}: already done{}",
                step.name,
                record
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
            continue;
        }
        if stop_after == Some(ran) {
            return Ok(Outcome::Interrupted);
        }
        let now = host.env.now();
        let r = journal.get_mut(stage, step.name);
        r.status = Status::Running;
        r.attempts += 1;
        r.started_at = Some(now);
        r.finished_at = None;
        r.updated_at = now;
        let attempt = r.attempts;
        journal.save(host)?;
        // The outcome gets the step's one info line; the start is for the journal.
        host.log.debug(&format!(
            "{stage} {}: starting{}",
            step.name,
            if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            }
        ));
        let result = (step.run)(ctx);
        let now = host.env.now();
        let r = journal.get_mut(stage, step.name);
        r.updated_at = now;
        match result {
            Ok(detail) => {
                r.status = Status::Done;
                r.finished_at = Some(now);
                host.log
                    .info(&format!("{stage} {}: done: {detail}", step.name));
                r.detail = Some(detail);
                journal.save(host)?;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                r.status = Status::Failed;
                r.last_error = Some(msg.clone());
                host.log
                    .error(&format!("{stage} {} failed: {msg}", step.name));
                journal.save(host)?;
                return Err(e.context(format!("{stage} step \"{}\" failed", step.name)));
            }
        }
        ran += 1;
    }
    Ok(Outcome::Completed)
}
