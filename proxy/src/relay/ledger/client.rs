//! The ledger's client side: what each client message records before it is forwarded,
//! and what the server will owe for it.

use std::sync::Arc;
use std::time::Instant;

use super::*;

impl Ledger {
    /// Decides what to do with one complete client message (`tag`, `body`). After
    /// [`Action::Wait`] nothing has changed: ask again once the server has answered more.
    pub fn client(&mut self, tag: u8, body: &[u8], now: Instant) -> Result<Action, Violation> {
        if self.copy_stream {
            return match tag {
                fe::COPY_DATA | fe::FLUSH | fe::TERMINATE => Ok(Action::Forward),
                fe::COPY_DONE | fe::COPY_FAIL => {
                    self.copy_stream = false;
                    self.push(Sent::CopyEnd);
                    Ok(Action::Forward)
                }
                // Ignored by a server that is copying; never sent, so never ambiguous.
                fe::SYNC => Ok(Action::Drop),
                other => Err(Violation::Protocol(format!(
                    "message {:?} sent in the middle of COPY data",
                    printable(other)
                ))),
            };
        }
        match tag {
            fe::COPY_DATA => {
                self.copy_stream = self.in_flight_copies > 0;
                if !matches!(self.last(), Some(Sent::CopyData)) {
                    self.push(Sent::CopyData);
                }
                return Ok(Action::Forward);
            }
            fe::COPY_DONE | fe::COPY_FAIL => {
                self.push(Sent::CopyEnd);
                return Ok(Action::Forward);
            }
            fe::FLUSH | fe::TERMINATE => return Ok(Action::Forward),
            fe::SYNC => {
                self.open = None;
                self.ended_unsynced = false;
                self.push(Sent::Sync);
                return Ok(Action::Forward);
            }
            _ => {}
        }
        // Anything else waits until the Queries in flight are answered: one may be reading
        // COPY data. (A Query behind an unfinished extended-protocol segment whose earlier
        // message failed is skipped by the server without a word; the error's skip ends it
        // here too, so what waits behind it is released then. A Query sent while the server
        // is known to be skipping gets no answer at all until the Sync behind it: nothing
        // waits for it.)
        if self.in_flight_queries > 0 && !self.server_skips_new() {
            return Ok(Action::Wait);
        }
        match tag {
            fe::QUERY => self.query(fe::query(body)?, now),
            fe::PARSE => {
                let p = fe::parse(body)?;
                self.parse(p.statement, p.sql, p.param_types)
            }
            fe::BIND => self.bind(&fe::bind(body)?),
            fe::EXECUTE => self.execute(fe::execute(body)?.portal, now),
            fe::DESCRIBE => {
                let statement = match fe::target(body, "Describe")? {
                    Target::Statement(n) => Some(name(n)),
                    Target::Portal(_) => None,
                };
                self.push(Sent::Describe { statement });
                Ok(Action::Forward)
            }
            fe::CLOSE => {
                let (statement, name) = match fe::target(body, "Close")? {
                    Target::Statement(n) => (true, n),
                    Target::Portal(n) => (false, n),
                };
                self.open = None;
                self.push(Sent::Close {
                    statement,
                    name: self::name(name),
                });
                Ok(Action::Forward)
            }
            fe::FUNCTION_CALL => {
                // Answered in its turn; behind other work the answer could come out of order.
                if !self.idle() {
                    return Err(Violation::FunctionCall);
                }
                self.push(Sent::Refused {
                    code: sqlstate::FEATURE_NOT_SUPPORTED,
                    message: FUNCTION_CALL_REFUSED,
                });
                Ok(Action::Refuse)
            }
            other => Err(Violation::Protocol(format!(
                "unexpected message type {:?}",
                printable(other)
            ))),
        }
    }

    /// Whether a held message would still [`Action::Wait`], without deciding anything. If
    /// the server meanwhile started COPY FROM STDIN, it waits for copy data that the client
    /// sent (if at all) behind this message: the session cannot go on.
    pub fn probe(&self, tag: u8, body: &[u8]) -> Result<bool, Violation> {
        if self.copy_stream
            || matches!(
                tag,
                fe::COPY_DATA
                    | fe::COPY_DONE
                    | fe::COPY_FAIL
                    | fe::FLUSH
                    | fe::TERMINATE
                    | fe::SYNC
            )
        {
            return Ok(false);
        }
        // (Unless the client already ended the copy: then its end comes.)
        let copy_ended = self
            .queue
            .iter()
            .skip(1)
            .any(|s| matches!(s, Sent::CopyEnd));
        if self.phase == Phase::CopyIn && !copy_ended {
            return Err(Violation::Protocol(format!(
                "message {:?} sent where the database expects COPY data",
                printable(tag)
            )));
        }
        if self.in_flight_queries > 0 && !self.server_skips_new() {
            return Ok(true);
        }
        Ok(match tag {
            fe::BIND => self.expected_statement(fe::bind(body)?.statement).is_none(),
            fe::EXECUTE => self.expected_portal(fe::execute(body)?.portal).is_none(),
            _ => false,
        })
    }

    fn query(&mut self, text: &str, now: Instant) -> Result<Action, Violation> {
        self.open = None;
        let seen = sql::inspect(text, self.caller);
        let text: Arc<str> = Arc::from(seen.text.as_ref());
        if let Some(refusal) = seen.refuse.or_else(|| self.read_only_refusal(&seen)) {
            return self.refuse(text, seen.redacted, refusal);
        }
        if self.ended_unsynced {
            return self.refuse_in_segment(text, seen.redacted);
        }
        let rec = Rec::Batch(self.intents.len());
        let count = seen.statements.len();
        self.intents.push(Intent::Query {
            text,
            redacted: seen.redacted,
            statements: seen.statements,
        });
        self.push(Sent::Query {
            rec,
            count,
            next: 0,
            since: now,
            rows: 0,
            touches: seen.touches,
        });
        Ok(Action::Forward)
    }

    /// In a read-only session, why `seen` may not run.
    fn read_only_refusal(&self, seen: &sql::Inspection<'_>) -> Option<sql::Refusal> {
        if !self.read_only {
            return None;
        }
        sql::read_only::refusal(&seen.text, &seen.statements)
    }

    /// A read-only session runs a statement after a transaction-ending one, before the
    /// Sync: recorded as refused, and the session ends (the server is inside the segment,
    /// so the proxy's own answer could not be put in order, even if nothing is in flight).
    fn refuse_in_segment(&mut self, text: Arc<str>, redacted: bool) -> Result<Action, Violation> {
        let refusal = sql::Refusal::ReadOnlyAfterTransactionEnd;
        self.intents.push(Intent::Refused {
            text,
            redacted,
            refusal,
        });
        Err(Violation::Refused(refusal))
    }

    /// Records a refused text. With nothing else in flight and no transaction open, the
    /// proxy answers it and the session goes on; otherwise its answer could not be put in
    /// order, and the session ends.
    fn refuse(
        &mut self,
        text: Arc<str>,
        redacted: bool,
        refusal: sql::Refusal,
    ) -> Result<Action, Violation> {
        self.intents.push(Intent::Refused {
            text,
            redacted,
            refusal,
        });
        if !self.idle() || self.status != b'I' {
            return Err(Violation::Refused(refusal));
        }
        self.push(Sent::Refused {
            code: refusal.sqlstate(),
            message: refusal.message(),
        });
        Ok(Action::Refuse)
    }

    fn parse(&mut self, name: &str, text: &str, types: Vec<u32>) -> Result<Action, Violation> {
        self.open = None;
        let seen = sql::inspect(text, self.caller);
        let recorded: Arc<str> = Arc::from(seen.text.as_ref());
        if let Some(refusal) = seen.refuse.or_else(|| self.read_only_refusal(&seen)) {
            return self.refuse(recorded, seen.redacted, refusal);
        }
        let prepared = Arc::new(Prepared {
            id: self.next_id,
            plain: crate::audit::record::is_plain(&recorded),
            text: Some(recorded),
            redacted: seen.redacted,
            param_types: types,
            copy: seen.copy,
            touches: seen.touches,
        });
        self.next_id += 1;
        let rec = self.intents.len();
        let name = self::name(name);
        let steps = Steps {
            parse: true,
            ..Steps::default()
        };
        self.intents.push(Intent::Extended {
            steps,
            statement: name.clone(),
            portal: self::name(""),
            prepared: prepared.clone(),
            params: None,
        });
        self.push(Sent::Parse {
            name,
            prepared,
            part: Part {
                rec: Rec::Batch(rec),
                last: true,
            },
        });
        self.open = Some((rec, steps));
        Ok(Action::Forward)
    }

    fn bind(&mut self, b: &fe::Bind<'_>) -> Result<Action, Violation> {
        let Some((statement, prepared)) = self.expected_statement(b.statement) else {
            return Ok(Action::Wait);
        };
        let portal = self.portals.key(b.portal);
        self.params_buf.clear();
        params::to_json_into(
            &mut self.params_buf,
            &b.params,
            &prepared.param_types,
            self.param_cap,
        );
        let params: Arc<str> = Arc::from(self.params_buf.as_str());
        if self.params_buf.capacity() > 64 * 1024 {
            // A large Bind's buffer is not kept for the session's life.
            self.params_buf = String::new();
        }
        // Joins the Parse of the same statement sent just before, if there is one.
        let rec = match self.join(b.statement, |steps| steps == Steps::PARSE) {
            Some(rec) => {
                if let Intent::Extended {
                    steps,
                    portal: p,
                    params: ps,
                    ..
                } = &mut self.intents[rec]
                {
                    steps.bind = true;
                    *p = portal.clone();
                    *ps = Some(params.clone());
                }
                rec
            }
            None => {
                self.intents.push(Intent::Extended {
                    steps: Steps {
                        bind: true,
                        ..Steps::default()
                    },
                    statement: statement.clone(),
                    portal: portal.clone(),
                    prepared: prepared.clone(),
                    params: Some(params.clone()),
                });
                self.intents.len() - 1
            }
        };
        self.push(Sent::Bind {
            portal,
            statement,
            expect: prepared.id,
            params,
            part: Part {
                rec: Rec::Batch(rec),
                last: true,
            },
        });
        if let Intent::Extended { steps, .. } = &self.intents[rec] {
            self.open = Some((rec, *steps));
        }
        Ok(Action::Forward)
    }

    fn execute(&mut self, portal: &str, now: Instant) -> Result<Action, Violation> {
        let Some(expected) = self.expected_portal(portal) else {
            return Ok(Action::Wait);
        };
        if self.read_only {
            let text = match &expected {
                Expected::Bound(p) => p.prepared.text.clone(),
                _ => None,
            };
            if self.ended_unsynced {
                let text = text.unwrap_or_else(|| Arc::from(""));
                return self.refuse_in_segment(text, false);
            }
            self.ended_unsynced = text.is_some_and(|t| sql::read_only::ends_transaction(&t));
        }
        let name = self::name(portal);
        let (rec, copy, fetch, touches) = match expected {
            // A fetch of an execution in flight or suspended: the same record.
            Expected::Running { rec, copy } => (rec, copy, true, Touches::default()),
            expected => {
                let copy = matches!(&expected, Expected::Bound(p) if p.prepared.copy);
                let touches = match &expected {
                    Expected::Bound(p) => p.prepared.touches,
                    _ => Touches::default(),
                };
                let rec = match self.join(portal, |steps| steps.bind && !steps.execute) {
                    Some(rec) => {
                        if let Intent::Extended { steps, .. } = &mut self.intents[rec] {
                            steps.execute = true;
                        }
                        rec
                    }
                    None => {
                        let (statement, prepared, params) = match expected {
                            Expected::Bound(p) => (p.statement, p.prepared, Some(p.params)),
                            _ => (self::name(""), Prepared::unknown(), None),
                        };
                        self.intents.push(Intent::Extended {
                            steps: Steps {
                                execute: true,
                                ..Steps::default()
                            },
                            statement,
                            portal: name.clone(),
                            prepared,
                            params,
                        });
                        self.intents.len() - 1
                    }
                };
                (Rec::Batch(rec), copy, false, touches)
            }
        };
        self.open = None;
        self.push(Sent::Execute {
            portal: name,
            part: Part { rec, last: true },
            since: now,
            rows: 0,
            fetch,
            copy,
            touches,
        });
        Ok(Action::Forward)
    }

    /// The open record, if `name` continues it (same statement for a Bind after a Parse,
    /// same portal for an Execute after a Bind) and its steps pass `fits`. The message that
    /// ended it so far no longer does.
    fn join(&mut self, name: &str, fits: impl Fn(Steps) -> bool) -> Option<usize> {
        let (rec, steps) = self.open?;
        let same = match &self.intents[rec] {
            Intent::Extended {
                statement, portal, ..
            } => {
                if steps == Steps::PARSE {
                    **statement == *name
                } else {
                    **portal == *name
                }
            }
            _ => false,
        };
        if !same || !fits(steps) {
            return None;
        }
        for s in self.batch.iter_mut().rev() {
            if let Sent::Parse { part, .. } | Sent::Bind { part, .. } = s {
                if part.rec == Rec::Batch(rec) {
                    part.last = false;
                    break;
                }
            }
        }
        Some(rec)
    }

    /// The statement a Bind of `name` will bind: the server's confirmed one, or the latest
    /// change in flight; `None` while a change in flight behind a Sync is not settled. With
    /// `name` as the ledger keeps it (one lookup for both).
    fn expected_statement(&self, name: &str) -> Option<(Arc<str>, Arc<Prepared>)> {
        let named = !name.is_empty();
        let confirmed = || match self.statements.get_with_key(name) {
            Some((key, p)) => (key, p.clone()),
            None => (self::name(name), Prepared::unknown()),
        };
        if !(self.in_flight_statements.contains(name) || named && self.in_flight_touches > 0) {
            return Some(confirmed());
        }
        let mut behind_sync = false;
        for s in self.batch.iter().rev().chain(self.queue.iter().rev()) {
            if s.statement_name() == Some(name) {
                if behind_sync {
                    return None;
                }
                return Some(match s {
                    Sent::Parse { prepared, name, .. } => (name.clone(), prepared.clone()),
                    _ => (self.statements.key(name), Prepared::unknown()),
                });
            }
            if named && s.touches().statements {
                return Some((self.statements.key(name), Prepared::unknown()));
            }
            behind_sync |= matches!(s, Sent::Sync);
        }
        Some(confirmed())
    }

    /// The portal bound by the open record's Bind, when an Execute of `name` continues that
    /// record (most drivers send Bind, Execute). Nothing that names a portal can come
    /// between them without closing the record, so this is what the search of what is in
    /// flight ([`Ledger::expected_portal`]) would find; it answers first. (The open record lives
    /// only within one client scan, under the ledger's lock, until `commit`: no server
    /// answer is paired between that Bind and this Execute.)
    fn open_bind(&self, name: &str) -> Option<Portal> {
        let (rec, steps) = self.open?;
        if !steps.bind || steps.execute {
            return None;
        }
        match &self.intents[rec] {
            Intent::Extended {
                statement,
                portal,
                prepared,
                params: Some(params),
                ..
            } if **portal == *name => Some(Portal {
                statement: statement.clone(),
                prepared: prepared.clone(),
                params: params.clone(),
                execution: None,
            }),
            _ => None,
        }
    }

    /// The portal an Execute of `name` will run; `None` while a change in flight behind a
    /// Sync is not settled.
    fn expected_portal(&self, name: &str) -> Option<Expected> {
        if let Some(bound) = self.open_bind(name) {
            return Some(Expected::Bound(bound));
        }
        let named = !name.is_empty();
        let confirmed = || match self.portals.get(name) {
            Some(p) => match p.execution.filter(|seq| self.runs.contains_key(seq)) {
                Some(seq) => Expected::Running {
                    rec: Rec::Seq(seq),
                    copy: p.prepared.copy,
                },
                None => Expected::Bound(p.clone()),
            },
            None => Expected::Unknown,
        };
        if !(self.in_flight_portals.contains(name) || named && self.in_flight_touches > 0) {
            return Some(confirmed());
        }
        let mut behind_sync = false;
        for s in self.batch.iter().rev().chain(self.queue.iter().rev()) {
            if s.portal_name() == Some(name) {
                return match s {
                    // Behind a Sync the transaction (and the portal) may have ended, or the
                    // change may have failed: wait for the answer.
                    _ if behind_sync => None,
                    // An execution in flight in this segment: more rows of the same record.
                    Sent::Execute { part, copy, .. } => Some(Expected::Running {
                        rec: part.rec,
                        copy: *copy,
                    }),
                    Sent::Bind {
                        statement,
                        params,
                        expect,
                        ..
                    } => Some(Expected::Bound(Portal {
                        statement: statement.clone(),
                        prepared: self.prepared_by_id(*expect, statement),
                        params: params.clone(),
                        execution: None,
                    })),
                    _ => Some(Expected::Unknown),
                };
            }
            if named && s.touches().portals {
                return Some(Expected::Unknown);
            }
            behind_sync |= matches!(s, Sent::Sync);
        }
        Some(confirmed())
    }

    /// The statement with `id` as the client side knows it (in flight or confirmed).
    fn prepared_by_id(&self, id: u64, name: &str) -> Arc<Prepared> {
        if let Some(p) = self.statements.get(name).filter(|p| p.id == id) {
            return p.clone();
        }
        for s in self.batch.iter().rev().chain(self.queue.iter().rev()) {
            if let Sent::Parse { prepared, .. } = s {
                if prepared.id == id {
                    return prepared.clone();
                }
            }
        }
        match self.statements.get(name) {
            Some(p) if p.id == id => p.clone(),
            _ => Prepared::unknown(),
        }
    }

    fn last(&self) -> Option<&Sent> {
        self.batch.last().or_else(|| self.queue.back())
    }

    fn push(&mut self, s: Sent) {
        if let Some(n) = s.statement_name() {
            self.in_flight_statements.add(n);
        }
        if let Some(n) = s.portal_name() {
            self.in_flight_portals.add(n);
        }
        let t = s.touches();
        if t.statements || t.portals {
            self.in_flight_touches += 1;
        }
        if s.may_copy() {
            self.in_flight_copies += 1;
        }
        if self.holds_back(&s) {
            self.in_flight_queries += 1;
        }
        self.batch.push(s);
    }

    /// The records to write for the batch, in order.
    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    /// The batch's records were accepted from sequence number `first_seq` on: its entries
    /// join the queue, for the server side.
    pub fn commit(&mut self, first_seq: u64) {
        let resolve = |rec: &mut Rec| {
            if let Rec::Batch(i) = *rec {
                *rec = Rec::Seq(first_seq + i as u64);
            }
        };
        // Drained, not taken: the batch keeps its capacity for the next one.
        let mut batch = std::mem::take(&mut self.batch);
        for mut s in batch.drain(..) {
            match &mut s {
                Sent::Query { rec, .. } => resolve(rec),
                Sent::Parse { part, .. } | Sent::Bind { part, .. } => resolve(&mut part.rec),
                Sent::Execute {
                    part, fetch, since, ..
                } => {
                    resolve(&mut part.rec);
                    let seq = part.rec.seq();
                    match self.runs.get_mut(&seq) {
                        Some(run) => run.pending += 1,
                        None if !*fetch => {
                            self.runs.insert(
                                seq,
                                Run {
                                    since: *since,
                                    rows: 0,
                                    pending: 1,
                                    started: false,
                                    completed: None,
                                },
                            );
                        }
                        // The execution it would fetch from ended meanwhile: the server
                        // answers this one with no rows, and the record has its outcome.
                        None => part.last = false,
                    }
                }
                _ => {}
            }
            self.queue.push_back(s);
        }
        self.batch = batch;
        self.intents.clear();
        self.open = None;
    }

    /// The batch's records were refused by the audit log: nothing of it is forwarded.
    pub fn abandon(&mut self) {
        for s in std::mem::take(&mut self.batch) {
            self.forget(&s);
        }
        self.intents.clear();
        self.open = None;
        self.copy_stream = false;
    }

    /// The server is skipping to the next Sync after an error, and no Sync is on its way:
    /// whatever the client sends now, a Query too, is skipped without a word until the
    /// client's next Sync. Waiting for an answer to it would wait for ever when that Sync is
    /// held behind the wait.
    fn server_skips_new(&self) -> bool {
        self.skipping && !self.queue.iter().any(|s| matches!(s, Sent::Sync))
    }

    /// Undoes the in-flight counts of an entry leaving the batch or the queue.
    pub(super) fn forget(&mut self, s: &Sent) {
        if let Some(n) = s.statement_name() {
            self.in_flight_statements.remove(n);
        }
        if let Some(n) = s.portal_name() {
            self.in_flight_portals.remove(n);
        }
        let t = s.touches();
        if t.statements || t.portals {
            self.in_flight_touches -= 1;
        }
        if s.may_copy() {
            self.in_flight_copies -= 1;
        }
        if self.holds_back(s) {
            self.in_flight_queries -= 1;
        }
    }
}
