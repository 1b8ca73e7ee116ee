//! The meter: every session of the proxy, fed by the transports, turning
//! what completes into events for the outbox. The transports call it after
//! they relayed a message, never before, and it never blocks them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aforo_proto::v1 as pb;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::event::{EventContext, to_event};
use crate::jsonrpc::{Framed, RequestId};
use crate::metrics::Metrics;
use crate::session::{Agent, Direction, Metered, Observation, Outcome, Session, Transport};

pub struct Meter {
    sessions: Mutex<HashMap<String, Session>>,
    context: EventContext,
    outbox: mpsc::Sender<pb::Event>,
    metrics: Arc<Metrics>,
    call_timeout: Duration,
    session_idle: Duration,
}

impl Meter {
    pub fn new(
        context: EventContext,
        outbox: mpsc::Sender<pb::Event>,
        metrics: Arc<Metrics>,
        call_timeout: Duration,
        session_idle: Duration,
    ) -> Meter {
        Meter {
            sessions: Mutex::new(HashMap::new()),
            context,
            outbox,
            metrics,
            call_timeout,
            session_idle,
        }
    }

    pub fn server(&self) -> &str {
        &self.context.server
    }

    fn now(identity: Option<Agent>) -> Observation {
        Observation {
            now: Instant::now(),
            at: Utc::now(),
            identity,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map usable: sessions are
        // plain data, at worst one message short.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the messages of one relayed wire unit to the session `key`
    /// (created on first sight).
    pub fn observe(
        &self,
        key: &str,
        transport: Transport,
        direction: Direction,
        framed: &[Framed],
        identity: Option<Agent>,
    ) {
        let seen = Self::now(identity);
        let done = {
            let mut sessions = self.sessions();
            let session = sessions
                .entry(key.to_owned())
                .or_insert_with(|| Session::new(key.to_owned(), transport, seen.at, seen.now));
            let done = session.observe_all(direction, framed, &seen);
            self.metrics.sessions.set(sessions.len() as u64);
            done
        };
        self.emit(done);
    }

    /// Whether a session is known (e.g. an SSE stream's session).
    pub fn has(&self, key: &str) -> bool {
        self.sessions().contains_key(key)
    }

    /// Ends the requests of `key` still waiting, with `outcome`; keeps the session.
    pub fn abandon(&self, key: &str, outcome: Outcome) {
        let seen = Self::now(None);
        let done = match self.sessions().get_mut(key) {
            Some(session) => session.abandon(outcome, &seen),
            None => return,
        };
        self.emit(done);
    }

    /// Moves a session seen under a provisional key to its real one.
    pub fn rekey(&self, old: &str, new: &str, transport: Transport) {
        let mut sessions = self.sessions();
        if let Some(mut session) = sessions.remove(old) {
            session.rekey(new.to_owned(), transport);
            sessions.insert(new.to_owned(), session);
        }
    }

    /// Ends the given requests of `key` if they still wait, with `outcome`.
    pub fn abandon_requests(&self, key: &str, ids: &[RequestId], outcome: Outcome) {
        let seen = Self::now(None);
        let done = match self.sessions().get_mut(key) {
            Some(session) => session.abandon_requests(ids, outcome, &seen),
            None => return,
        };
        self.emit(done);
    }

    /// Ends the session `key`: waiting requests with `outcome`, then its summary.
    pub fn close(&self, key: &str, outcome: Outcome) {
        let seen = Self::now(None);
        let session = {
            let mut sessions = self.sessions();
            let session = sessions.remove(key);
            self.metrics.sessions.set(sessions.len() as u64);
            session
        };
        if let Some(session) = session {
            self.emit(session.close(outcome, &seen));
        }
    }

    /// Ends every session (the proxy is stopping).
    pub fn close_all(&self, outcome: Outcome) {
        let keys: Vec<String> = self.sessions().keys().cloned().collect();
        for key in keys {
            self.close(&key, outcome);
        }
    }

    /// Times out calls past the call timeout and ends idle sessions; run
    /// every second or so.
    pub fn sweep(&self) {
        let seen = Self::now(None);
        let mut done = Vec::new();
        let idle: Vec<String> = {
            let mut sessions = self.sessions();
            for session in sessions.values_mut() {
                done.extend(session.expire(self.call_timeout, &seen));
            }
            sessions
                .values()
                .filter(|s| {
                    s.pending() == 0
                        && seen.now.saturating_duration_since(s.last_active()) >= self.session_idle
                })
                .map(|s| s.key().to_owned())
                .collect()
        };
        self.emit(done);
        for key in idle {
            self.close(&key, Outcome::TimedOut);
        }
    }

    fn emit(&self, done: Vec<Metered>) {
        for metered in done {
            if let Metered::ToolCall(call) = &metered {
                self.metrics.tool_call(call.outcome.as_str());
                tracing::debug!(
                    tool = %call.tool, session = %call.session, agent = %call.agent.id,
                    outcome = call.outcome.as_str(), latency_us = call.latency.as_micros() as u64,
                    "tools/call"
                );
            }
            let Some(event) = to_event(&self.context, &metered) else {
                continue;
            };
            if let Err(err) = self.outbox.try_send(event) {
                self.metrics.events_dropped.inc();
                tracing::error!(
                    "EVENT LOST: the spool writer is {} ({}); the proxy keeps relaying, but this call is not metered",
                    match err {
                        mpsc::error::TrySendError::Full(_) => "behind by its whole queue",
                        mpsc::error::TrySendError::Closed(_) => "stopped",
                    },
                    "see the errors before this one"
                );
            }
        }
    }
}
