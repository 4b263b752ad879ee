//! The ledger's server side: each server message paired, in order, with what it answers.

use std::sync::Arc;
use std::time::Instant;

use super::*;

impl Ledger {
    /// Pairs one server message with what it answers; `emit` receives the outcome of every
    /// record that ends. Messages that answer nothing are checked here; the rest go to the
    /// handler for what they are: COPY, an error, or the answer to a simple Query or to an
    /// extended-protocol message.
    pub fn server(
        &mut self,
        tag: u8,
        body: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        match tag {
            be::NOTICE_RESPONSE | be::NOTIFICATION_RESPONSE => return Ok(()),
            be::PARAMETER_STATUS => return check_parameter(body, self.read_only),
            _ => {}
        }
        if self.skipping {
            self.skip(now, emit);
        }
        if self.phase != Phase::CopyIn {
            // Copy messages outside COPY are read and ignored.
            while matches!(self.queue.front(), Some(Sent::CopyData | Sent::CopyEnd)) {
                self.pop();
            }
        }
        let Some(front) = self.queue.front() else {
            // The server ending the session (shutdown, terminated backend) owes no request.
            return match tag {
                be::ERROR_RESPONSE if be::error_fields(body)?.is_fatal() => Ok(()),
                _ => Err(Violation::Unpaired(printable(tag))),
            };
        };
        match (front, tag) {
            (_, be::COPY_IN_RESPONSE | be::COPY_OUT_RESPONSE | be::COPY_DATA | be::COPY_DONE) => {
                self.on_copy(tag, now, emit)
            }
            (_, be::ERROR_RESPONSE) => self.on_error(tag, body, now, emit),
            (Sent::Query { .. }, _) => self.on_query(tag, body, now, emit),
            _ => self.on_extended(tag, body, now, emit),
        }
    }

    /// A simple Query: each statement answers (rows, then its tag), then ReadyForQuery.
    fn on_query(
        &mut self,
        tag: u8,
        body: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        let phase = self.phase;
        let front = self.queue.front_mut().expect("the dispatcher checked");
        match (front, tag) {
            (Sent::Query { .. }, be::ROW_DESCRIPTION) if phase == Phase::Start => {
                self.phase = Phase::Rows
            }
            (Sent::Query { rows, .. }, be::DATA_ROW) if phase == Phase::Rows => *rows += 1,
            (
                Sent::Query {
                    rec,
                    next,
                    since,
                    rows,
                    ..
                },
                be::COMMAND_COMPLETE | be::EMPTY_QUERY,
            ) if phase != Phase::Described => {
                let tag_text = command_tag(tag, body)?;
                let total = be::tag_rows(tag_text).map(|t| t.max(*rows));
                emit(Finished {
                    seq: rec.seq(),
                    index: Some(*next),
                    outcome: Outcome::Ok {
                        tag: tag_text,
                        rows: total,
                    },
                    since: *since,
                });
                *next += 1;
                *since = now;
                *rows = 0;
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
            }
            (Sent::Query { .. }, be::READY_FOR_QUERY) if phase == Phase::Start => {
                let Some(Sent::Query {
                    rec,
                    next,
                    count,
                    touches,
                    ..
                }) = self.pop()
                else {
                    unreachable!()
                };
                for i in next..count {
                    emit(Finished {
                        seq: rec.seq(),
                        index: Some(i),
                        outcome: Outcome::NotExecuted {
                            reason: "the server did not run this statement",
                        },
                        since: now,
                    });
                }
                self.apply_touches(touches);
                self.drop_unnamed_statement(emit);
                self.ready(body, emit)?;
            }
            _ => return Err(Violation::Unpaired(printable(tag))),
        }
        Ok(())
    }

    /// Parse, Bind, Describe, Execute, Close and Sync, each answered in order.
    fn on_extended(
        &mut self,
        tag: u8,
        body: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        let phase = self.phase;
        let front = self.queue.front_mut().expect("the dispatcher checked");
        match (front, tag) {
            (Sent::Parse { .. }, be::PARSE_COMPLETE) => {
                let Some(Sent::Parse {
                    name,
                    prepared,
                    part,
                }) = self.pop()
                else {
                    unreachable!()
                };
                self.statements.set(&name, Some(prepared));
                if part.last {
                    emit(ok(part.rec.seq(), "PARSE", now));
                }
            }
            (Sent::Bind { .. }, be::BIND_COMPLETE) => {
                let Some(Sent::Bind {
                    portal,
                    statement,
                    expect,
                    params,
                    part,
                }) = self.pop()
                else {
                    unreachable!()
                };
                let prepared = self
                    .statements
                    .get(&statement)
                    .cloned()
                    .unwrap_or_else(Prepared::unknown);
                if prepared.id != expect {
                    return Err(Violation::Attribution {
                        statement: statement.to_string(),
                    });
                }
                self.portals.set(
                    &portal,
                    Some(Portal {
                        statement,
                        prepared,
                        params,
                        execution: None,
                    }),
                );
                if part.last {
                    emit(ok(part.rec.seq(), "BIND", now));
                }
            }
            (
                Sent::Describe {
                    statement: Some(name),
                },
                be::PARAMETER_DESCRIPTION,
            ) if phase == Phase::Start => {
                let name = name.clone();
                let types = be::parameter_types(body)?;
                if let Some(p) = self.statements.get(&name) {
                    let described = Arc::new(Prepared {
                        id: p.id,
                        text: p.text.clone(),
                        plain: p.plain,
                        redacted: p.redacted,
                        param_types: types,
                        copy: p.copy,
                        touches: p.touches,
                    });
                    self.statements.set(&name, Some(described));
                }
                self.phase = Phase::Described;
            }
            (Sent::Describe { statement }, be::ROW_DESCRIPTION | be::NO_DATA)
                if phase
                    == (if statement.is_some() {
                        Phase::Described
                    } else {
                        Phase::Start
                    }) =>
            {
                self.pop();
                self.phase = Phase::Start;
            }
            (Sent::Execute { rows, .. }, be::DATA_ROW) if phase == Phase::Start => *rows += 1,
            (
                Sent::Execute { .. },
                be::COMMAND_COMPLETE | be::EMPTY_QUERY | be::PORTAL_SUSPENDED,
            ) if phase != Phase::Described
                && (tag != be::PORTAL_SUSPENDED || phase == Phase::Start) =>
            {
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
                let Some(Sent::Execute {
                    portal,
                    part,
                    rows,
                    touches,
                    ..
                }) = self.pop()
                else {
                    unreachable!()
                };
                let seq = part.rec.seq();
                if let Some(p) = self.portals.get_mut(&portal) {
                    p.execution = Some(seq);
                }
                self.last_executed = Some((seq, now));
                self.apply_touches(touches);
                if !part.last {
                    return Ok(());
                }
                let Some(run) = self.runs.get_mut(&seq) else {
                    return Ok(());
                };
                run.rows += rows;
                run.pending -= 1;
                run.started = true;
                let tag_text = command_tag(tag, body)?;
                if tag == be::PORTAL_SUSPENDED || run.pending > 0 {
                    // Kept only when the run goes on: the common case ends here and uses
                    // the tag without copying it.
                    if tag != be::PORTAL_SUSPENDED && run.completed.is_none() {
                        run.completed = Some(tag_text.to_string());
                    }
                    return Ok(());
                }
                let run = self.runs.remove(&seq).expect("present");
                // A later Execute of a completed portal returns no rows: the first tag
                // says what the execution did.
                let tag_text = run.completed.as_deref().unwrap_or(tag_text);
                let total = be::tag_rows(tag_text)
                    .map(|t| t.max(run.rows))
                    .or((run.rows > 0).then_some(run.rows));
                emit(Finished {
                    seq,
                    index: None,
                    outcome: Outcome::Ok {
                        tag: tag_text,
                        rows: total,
                    },
                    since: run.since,
                });
            }
            (Sent::Close { .. }, be::CLOSE_COMPLETE) => {
                let Some(Sent::Close { statement, name }) = self.pop() else {
                    unreachable!()
                };
                if statement {
                    self.statements.set(&name, None);
                } else {
                    self.portals.set(&name, None);
                }
            }
            (Sent::Sync, be::READY_FOR_QUERY) => {
                self.pop();
                self.ready(body, emit)?;
            }
            _ => return Err(Violation::Unpaired(printable(tag))),
        }
        Ok(())
    }

    /// COPY FROM STDIN starting, COPY TO STDOUT starting and streaming.
    fn on_copy(
        &mut self,
        tag: u8,
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        let phase = self.phase;
        let front = self.queue.front_mut().expect("the dispatcher checked");
        match (front, tag) {
            (Sent::Query { .. } | Sent::Execute { copy: true, .. }, be::COPY_IN_RESPONSE)
                if matches!(phase, Phase::Start | Phase::Rows) =>
            {
                self.phase = Phase::CopyIn;
                self.start_copy_in(now, emit)?;
            }
            (Sent::Query { .. } | Sent::Execute { .. }, be::COPY_OUT_RESPONSE)
                if phase == Phase::Start =>
            {
                self.phase = Phase::CopyOut
            }
            (Sent::Query { .. } | Sent::Execute { .. }, be::COPY_DATA | be::COPY_DONE)
                if phase == Phase::CopyOut => {}
            _ => return Err(Violation::Unpaired(printable(tag))),
        }
        Ok(())
    }

    /// An ErrorResponse: it ends the statement of a Query (and skips the rest of its string), a
    /// failed commit at Sync, or the extended-protocol message at the front (the server then
    /// skips to the Sync).
    fn on_error(
        &mut self,
        tag: u8,
        body: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        let phase = self.phase;
        let front = self.queue.front_mut().expect("the dispatcher checked");
        match (front, tag) {
            (
                Sent::Query {
                    rec,
                    next,
                    since,
                    count,
                    ..
                },
                be::ERROR_RESPONSE,
            ) => {
                let fields = be::error_fields(body)?;
                let seq = rec.seq();
                // After its last statement, an error is the implicit transaction's commit.
                let (index, step) = if *next >= *count && *count > 0 {
                    (None, Some("commit"))
                } else {
                    (Some(*next), None)
                };
                emit(Finished {
                    seq,
                    index,
                    outcome: Outcome::Error {
                        code: &fields.code,
                        message: &fields.message,
                        step,
                    },
                    since: *since,
                });
                for i in *next + 1..*count {
                    emit(Finished {
                        seq,
                        index: Some(i),
                        outcome: Outcome::NotExecuted {
                            reason: "an earlier statement in the same query string failed",
                        },
                        since: now,
                    });
                }
                *next = (*count).max(*next + 1);
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
            }
            // The implicit transaction's commit at Sync failed (a deferred constraint): what
            // ran in it did not last. Recorded as the last execution's outcome (`commit`),
            // as for a query string.
            (Sent::Sync, be::ERROR_RESPONSE) => {
                if let Some((seq, since)) = self.last_executed.take() {
                    let fields = be::error_fields(body)?;
                    emit(Finished {
                        seq,
                        index: None,
                        outcome: Outcome::Error {
                            code: &fields.code,
                            message: &fields.message,
                            step: Some("commit"),
                        },
                        since,
                    });
                }
            }
            (
                Sent::Parse { .. }
                | Sent::Bind { .. }
                | Sent::Describe { .. }
                | Sent::Execute { .. }
                | Sent::Close { .. },
                be::ERROR_RESPONSE,
            ) => {
                let fields = be::error_fields(body)?;
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
                let front = self.pop().expect("checked");
                self.fail(front, &fields, now, emit);
                self.skipping = true;
                self.skip(now, emit);
            }
            _ => return Err(Violation::Unpaired(printable(tag))),
        }
        Ok(())
    }

    /// A DataRow, counted without the rest of [`Ledger::server`] when it pairs the common
    /// way (rows of the statement or execution at the front); false when it needs the full
    /// pairing.
    #[inline]
    pub fn data_row(&mut self) -> bool {
        if self.skipping {
            return false;
        }
        match (self.queue.front_mut(), self.phase) {
            (Some(Sent::Execute { rows, .. }), Phase::Start)
            | (Some(Sent::Query { rows, .. }), Phase::Rows) => {
                *rows += 1;
                true
            }
            _ => false,
        }
    }

    /// Refusals now at the front: the proxy's own answers (code, message, status for
    /// ReadyForQuery), for the relay to send in their turn.
    pub fn due_refusals(&mut self) -> Vec<(&'static str, &'static str, u8)> {
        let mut out = Vec::new();
        while let Some(Sent::Refused { .. }) = self.queue.front() {
            if let Some(Sent::Refused { code, message }) = self.pop() {
                out.push((code, message, self.status));
            }
        }
        out
    }

    /// The server began COPY FROM STDIN for the front entry. It reads the Syncs sent before
    /// the first copy data and ignores them. After an Execute, a message other than copy
    /// data is read as a protocol violation: consumed, not run, and the server then skips
    /// to the next Sync. (After a Query no such message was sent: the client side holds
    /// everything but copy data back until the Query is answered.)
    fn start_copy_in(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        while let Some(s) = self.queue.get(1) {
            match s {
                Sent::Sync => {
                    let s = self.queue.remove(1).expect("present");
                    self.forget(&s);
                }
                Sent::CopyData | Sent::CopyEnd => return Ok(()),
                _ if matches!(self.queue.front(), Some(Sent::Execute { .. })) => {
                    let s = self.queue.remove(1).expect("present");
                    self.forget(&s);
                    let consumed = |seq, index| Finished {
                        seq,
                        index,
                        outcome: Outcome::NotExecuted {
                            reason: "read by the server as a protocol violation during COPY",
                        },
                        since: now,
                    };
                    match s {
                        Sent::Query { rec, count, .. } => {
                            for i in 0..count.max(1) {
                                emit(consumed(rec.seq(), Some(i)));
                            }
                        }
                        Sent::Parse { part, .. } | Sent::Bind { part, .. } if part.last => {
                            emit(consumed(part.rec.seq(), None))
                        }
                        Sent::Execute { part, .. } if part.last => {
                            if let Some(run) = self.runs.get_mut(&part.rec.seq()) {
                                run.pending -= 1;
                                if run.pending == 0 {
                                    self.runs.remove(&part.rec.seq());
                                    emit(consumed(part.rec.seq(), None));
                                }
                            }
                        }
                        _ => {}
                    }
                    return Ok(());
                }
                _ => {
                    return Err(Violation::Protocol(
                        "the database started COPY FROM STDIN, but the client had sent \
                         other messages instead of data"
                            .into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// COPY FROM STDIN of the front entry ended. The server has read the client's copy
    /// messages up to the CopyDone (or, after an error, ignores the rest as they come): they
    /// are consumed, with the Syncs read among them.
    fn consume_copy(&mut self) {
        while let Some(s) = self.queue.get(1) {
            let end = matches!(s, Sent::CopyEnd);
            if !matches!(s, Sent::CopyData | Sent::CopyEnd | Sent::Sync) {
                break;
            }
            let s = self.queue.remove(1).expect("present");
            self.forget(&s);
            if end {
                break;
            }
        }
    }

    /// The outcome of the message the server rejected, if it ends (or is part of) a record.
    fn fail(
        &mut self,
        front: Sent,
        fields: &be::ErrorFields,
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) {
        let step = match &front {
            Sent::Parse { .. } => "parse",
            Sent::Bind { .. } => "bind",
            Sent::Describe { .. } => "describe",
            Sent::Close { .. } => "close",
            _ => "execute",
        };
        let failed = |seq, since| Finished {
            seq,
            index: None,
            outcome: Outcome::Error {
                code: &fields.code,
                message: &fields.message,
                step: Some(step),
            },
            since,
        };
        // A record that joined several messages ends with its first failure; the rest of it
        // is skipped without a second outcome.
        self.failed = None;
        match front {
            Sent::Parse { part, .. } => {
                emit(failed(part.rec.seq(), now));
                self.failed = Some(part.rec.seq());
            }
            Sent::Bind { part, portal, .. } => {
                // Perhaps made before the error, perhaps not: its content is not known.
                self.portals.set(&portal, None);
                emit(failed(part.rec.seq(), now));
                self.failed = Some(part.rec.seq());
            }
            Sent::Execute { part, touches, .. } => {
                self.apply_touches(touches);
                let seq = part.rec.seq();
                if let Some(run) = self.runs.remove(&seq).filter(|_| part.last) {
                    match run.completed {
                        // The execution had completed; this later Execute of its portal
                        // failed on its own (the portal was gone) and ran nothing.
                        Some(tag) => emit(Finished {
                            seq,
                            index: None,
                            outcome: Outcome::Ok {
                                tag: &tag,
                                rows: Some(run.rows),
                            },
                            since: run.since,
                        }),
                        None => emit(failed(seq, run.since)),
                    }
                    self.failed = Some(seq);
                }
            }
            _ => {}
        }
    }

    /// What the server skips until the next Sync after an error: executions that did not
    /// run, changes that did not happen, whole Query messages.
    fn skip(&mut self, now: Instant, emit: &mut dyn FnMut(Finished<'_>)) {
        let skipped = |seq, index| Finished {
            seq,
            index,
            outcome: Outcome::NotExecuted {
                reason: "an earlier message in the same pipeline failed",
            },
            since: now,
        };
        loop {
            match self.queue.front() {
                None => return,
                Some(Sent::Sync) => {
                    return;
                }
                _ => {}
            }
            match self.pop().expect("checked") {
                Sent::Query { rec, count, .. } => {
                    for i in 0..count.max(1) {
                        emit(skipped(rec.seq(), Some(i)));
                    }
                }
                Sent::Parse { part, .. } | Sent::Bind { part, .. }
                    if part.last && self.failed != Some(part.rec.seq()) =>
                {
                    emit(skipped(part.rec.seq(), None));
                }
                Sent::Execute { part, .. } => {
                    let seq = part.rec.seq();
                    let Some(run) = self.runs.get_mut(&seq).filter(|_| part.last) else {
                        continue;
                    };
                    run.pending -= 1;
                    if run.pending > 0 {
                        continue;
                    }
                    let run = self.runs.remove(&seq).expect("present");
                    if self.failed == Some(seq) {
                        continue;
                    }
                    if run.started {
                        // A later fetch was skipped: the execution ran, with these rows.
                        emit(Finished {
                            seq,
                            index: None,
                            outcome: Outcome::Ok {
                                tag: "PORTAL CLOSED",
                                rows: Some(run.rows),
                            },
                            since: run.since,
                        });
                    } else {
                        emit(skipped(seq, None));
                    }
                }
                _ => {}
            }
        }
    }

    /// ReadyForQuery: the transaction status; portals end with the transaction.
    fn ready(&mut self, body: &[u8], emit: &mut dyn FnMut(Finished<'_>)) -> Result<(), Violation> {
        self.status = be::ready_status(body)?;
        self.skipping = false;
        self.failed = None;
        self.last_executed = None;
        if self.status == b'I' {
            self.portals.clear();
            let ended: Vec<u64> = self
                .runs
                .iter()
                .filter(|(_, r)| r.pending == 0)
                .map(|(s, _)| *s)
                .collect();
            self.close_runs(ended, emit);
        }
        Ok(())
    }

    /// Suspended executions of portals that are gone ended with the rows they returned
    /// (those with an Execute still in flight end with its answer).
    fn close_runs(&mut self, seqs: Vec<u64>, emit: &mut dyn FnMut(Finished<'_>)) {
        for seq in seqs {
            if !self.runs.iter().any(|(s, r)| *s == seq && r.pending == 0) {
                continue;
            }
            let run = self.runs.remove(&seq).expect("present");
            emit(Finished {
                seq,
                index: None,
                outcome: Outcome::Ok {
                    tag: "PORTAL CLOSED",
                    rows: Some(run.rows),
                },
                since: run.since,
            });
        }
    }

    /// A simple Query ran (postgres.c, `exec_simple_query`): the server dropped the unnamed
    /// statement with every portal bound from it, and ran the query in the unnamed portal,
    /// which it dropped at the end. Within a Flush-terminated segment this is all a Query
    /// changes; with a transaction block open, named portals of other statements survive.
    fn drop_unnamed_statement(&mut self, emit: &mut dyn FnMut(Finished<'_>)) {
        self.statements.unnamed = None;
        let mut dropped: Vec<u64> = Vec::new();
        if let Some(p) = self.portals.unnamed.take() {
            dropped.extend(p.execution);
        }
        self.portals.named.retain(|_, p| {
            if p.statement.is_empty() {
                dropped.extend(p.execution);
                return false;
            }
            true
        });
        self.close_runs(dropped, emit);
    }

    /// SQL-level PREPARE, DEALLOCATE, DECLARE, CLOSE or DISCARD ran (or tried to): named
    /// statements or portals may now hold anything.
    fn apply_touches(&mut self, t: Touches) {
        if t.statements {
            for p in self.statements.named.values_mut() {
                *p = Prepared::unknown();
            }
        }
        if t.portals {
            for p in self.portals.named.values_mut() {
                p.prepared = Prepared::unknown();
                p.execution = None;
            }
        }
    }

    fn pop(&mut self) -> Option<Sent> {
        let s = self.queue.pop_front()?;
        self.forget(&s);
        Some(s)
    }

    /// The session ended: what was still owed an answer never got one.
    pub fn abort(&mut self, now: Instant, emit: &mut dyn FnMut(Finished<'_>)) {
        let unknown = |seq, index, since| Finished {
            seq,
            index,
            outcome: Outcome::Unknown {
                reason: "the session ended before the database answered",
            },
            since,
        };
        while let Some(s) = self.pop() {
            match s {
                Sent::Query {
                    rec,
                    next,
                    count,
                    since,
                    ..
                } => {
                    for i in next..count.max(next + 1) {
                        emit(unknown(rec.seq(), Some(i), since));
                    }
                }
                Sent::Parse { part, .. } | Sent::Bind { part, .. } if part.last => {
                    emit(unknown(part.rec.seq(), None, now))
                }
                Sent::Execute { part, .. } if part.last => {
                    if let Some(run) = self.runs.remove(&part.rec.seq()) {
                        emit(unknown(part.rec.seq(), None, run.since));
                    }
                }
                _ => {}
            }
        }
        // Suspended executions end with the session.
        for (seq, run) in self.runs.drain() {
            emit(Finished {
                seq,
                index: None,
                outcome: Outcome::Ok {
                    tag: "PORTAL CLOSED",
                    rows: Some(run.rows),
                },
                since: run.since,
            });
        }
    }
}

fn command_tag(tag: u8, body: &[u8]) -> Result<&str, Violation> {
    match tag {
        be::EMPTY_QUERY => Ok("EMPTY"),
        be::PORTAL_SUSPENDED => Ok("SUSPENDED"),
        _ => Ok(be::command_tag(body)?),
    }
}

fn ok(seq: u64, tag: &'static str, since: Instant) -> Finished<'static> {
    Finished {
        seq,
        index: None,
        outcome: Outcome::Ok { tag, rows: None },
        since,
    }
}

/// ParameterStatus: the settings the proxy lexes by must keep their pinned values, and a
/// read-only session must stay read-only.
fn check_parameter(body: &[u8], read_only: bool) -> Result<(), Violation> {
    let (name, value) = be::parameter_status(body)?;
    if sql::keeps_pinned_value(name, value)
        && (!read_only || sql::read_only::keeps_read_only(name, value))
    {
        Ok(())
    } else {
        Err(Violation::Setting {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}
