//! What a server connection still owes its client: one entry per frontend message that
//! gets an answer, in order, so that the pooler knows when the connection is idle (and can
//! go back to the pool), which answers it must hold back (the ParseComplete of a statement
//! it prepared itself) and where to put answers it makes up (a ParseComplete for a
//! statement the connection already has). Pure: fed message types, it says what to do.
//!
//! The protocol's rules it follows: every extended-protocol message is answered by one
//! message ending it (ParseComplete, BindComplete, ...), Execute by rows ending in
//! CommandComplete, EmptyQueryResponse or PortalSuspended, Sync and a simple Query by
//! ReadyForQuery; after an ErrorResponse the server skips everything up to the next Sync.

use std::collections::VecDeque;

/// A frontend message still to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Parse of `statement` (the server's name, `None` for the unnamed one). `swallow`: the
    /// pooler sent it on its own, and the client must not see its ParseComplete.
    Parse {
        statement: Option<String>,
        swallow: bool,
    },
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// A simple Query or a FunctionCall: answered up to ReadyForQuery.
    Query,
    /// An answer the pooler makes up, sent to the client when everything before it is
    /// answered (dropped, as the server would, after an error before the next Sync).
    Reply(Vec<u8>),
}

/// What to do with a backend message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Hold it back from the client.
    pub swallow: bool,
    /// Server statement names whose Parse failed or was skipped after an error: the
    /// connection does not have them.
    pub unprepared: Vec<String>,
}

/// The answers a server connection owes, oldest first.
#[derive(Debug, Default)]
pub struct Tracker {
    queue: VecDeque<Expect>,
    /// Extended-protocol messages were sent since the last Sync: the server is inside an
    /// implicit transaction even if it said idle.
    unsynced: bool,
}

impl Tracker {
    /// Records a message sent (or, for a `Reply`, answered by the pooler).
    pub fn sent(&mut self, expect: Expect) {
        match expect {
            Expect::Sync | Expect::Query => self.unsynced = false,
            _ => self.unsynced = true,
        }
        self.queue.push_back(expect);
    }

    /// Records a Flush or another message nothing answers.
    pub fn sent_unanswered(&mut self) {
        self.unsynced = true;
    }

    /// The made-up answers now due, in order.
    pub fn replies(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(Expect::Reply(_)) = self.queue.front() {
            if let Some(Expect::Reply(bytes)) = self.queue.pop_front() {
                out.push(bytes);
            }
        }
        out
    }

    /// Nothing is owed and no implicit transaction is open: after a ReadyForQuery, the
    /// connection may serve another client.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && !self.unsynced
    }

    /// Accounts for a backend message of type `tag`.
    pub fn received(&mut self, tag: u8) -> Outcome {
        let mut outcome = Outcome::default();
        // Asynchronous messages (notices, parameter changes, notifications) answer nothing.
        if matches!(tag, b'N' | b'S' | b'A') {
            return outcome;
        }
        let Some(front) = self.queue.front() else {
            return outcome;
        };
        let ends = match (front, tag) {
            (Expect::Query, b'Z') => true,
            (Expect::Query, _) => false,
            (_, b'E') => {
                // The server skips to the next Sync, and answers nothing before it.
                while let Some(entry) = self.queue.front() {
                    if *entry == Expect::Sync {
                        break;
                    }
                    if let Some(Expect::Parse {
                        statement: Some(name),
                        ..
                    }) = self.queue.pop_front()
                    {
                        outcome.unprepared.push(name);
                    }
                }
                return outcome;
            }
            (Expect::Parse { swallow, .. }, b'1') => {
                outcome.swallow = *swallow;
                true
            }
            (Expect::Bind, b'2') | (Expect::Close, b'3') | (Expect::Sync, b'Z') => true,
            (Expect::DescribeStatement | Expect::DescribePortal, b'T' | b'n') => true,
            (Expect::Execute, b'C' | b'I' | b's') => true,
            _ => false,
        };
        if ends {
            self.queue.pop_front();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, swallow: bool) -> Expect {
        Expect::Parse {
            statement: Some(name.into()),
            swallow,
        }
    }

    /// Sends `sent`, then feeds `received` one by one, draining replies after each step;
    /// returns the client's view: each backend tag forwarded (or `-` when swallowed),
    /// replies as `r`, and the names unprepared.
    fn run(sent: Vec<Expect>, received: &str) -> (String, Vec<String>, bool) {
        let mut t = Tracker::default();
        let mut seen = String::new();
        for e in sent {
            t.sent(e);
            for _ in t.replies() {
                seen.push('r');
            }
        }
        let mut unprepared = Vec::new();
        for tag in received.bytes() {
            let out = t.received(tag);
            seen.push(if out.swallow { '-' } else { char::from(tag) });
            unprepared.extend(out.unprepared);
            for _ in t.replies() {
                seen.push('r');
            }
        }
        (seen, unprepared, t.idle())
    }

    /// What was sent, what the server answered, what the client sees, the statements left
    /// unprepared, and whether the connection is idle after.
    type Case = (
        &'static str,
        Vec<Expect>,
        &'static str,
        &'static str,
        Vec<&'static str>,
        bool,
    );

    #[test]
    fn answers_are_matched_to_what_was_sent() {
        use Expect::*;
        let reply = || Reply(b"1".to_vec());
        let cases: Vec<Case> = vec![
            ("simple query", vec![Query], "TDDCZ", "TDDCZ", vec![], true),
            (
                "query with an error still ends at ReadyForQuery",
                vec![Query],
                "ENZ",
                "ENZ",
                vec![],
                true,
            ),
            (
                "parse bind execute sync",
                vec![parse("s1", false), Bind, Execute, Sync],
                "12DCZ",
                "12DCZ",
                vec![],
                true,
            ),
            (
                "an injected parse is swallowed",
                vec![parse("s1", true), Bind, Execute, Sync],
                "12CZ",
                "-2CZ",
                vec![],
                true,
            ),
            (
                "a made-up ParseComplete waits for the answers before it",
                vec![Bind, Execute, reply(), Bind, Execute, Sync],
                "2DC2CZ",
                "2DCr2CZ",
                vec![],
                true,
            ),
            (
                "a made-up answer first is due at once",
                vec![reply(), Bind, Execute, Sync],
                "2CZ",
                "r2CZ",
                vec![],
                true,
            ),
            (
                "an error skips to the sync, dropping made-up answers and parses",
                vec![Bind, Execute, reply(), parse("s2", false), Bind, Sync],
                "EZ",
                "EZ",
                vec!["s2"],
                true,
            ),
            (
                "a failed parse is not prepared",
                vec![parse("s1", false), Bind, Sync],
                "EZ",
                "EZ",
                vec!["s1"],
                true,
            ),
            (
                "answers after the sync go on",
                vec![Bind, Execute, Sync, reply(), Bind, Execute, Sync],
                "EZ2CZ",
                "EZr2CZ",
                vec![],
                true,
            ),
            (
                "describe statement then rows",
                vec![parse("s1", false), DescribeStatement, Sync],
                "1tTZ",
                "1tTZ",
                vec![],
                true,
            ),
            (
                "notices and parameter changes are passed on anywhere",
                vec![Bind, Execute, Sync],
                "2NSDCAZ",
                "2NSDCAZ",
                vec![],
                true,
            ),
            (
                "without a sync the server is not idle",
                vec![parse("s1", false), Bind, Execute],
                "12C",
                "12C",
                vec![],
                false,
            ),
            (
                "a pipeline is idle after its last sync",
                vec![Bind, Execute, Sync, Bind, Execute, Sync],
                "2CZ",
                "2CZ",
                vec![],
                false,
            ),
            (
                "portal suspended ends an execute",
                vec![Bind, Execute, Execute, Sync],
                "2DsDCZ",
                "2DsDCZ",
                vec![],
                true,
            ),
        ];
        for (what, sent, received, want, want_unprepared, want_idle) in cases {
            let (seen, unprepared, idle) = run(sent, received);
            assert_eq!(seen, want, "{what}");
            assert_eq!(unprepared, want_unprepared, "{what}");
            assert_eq!(idle, want_idle, "{what}");
        }
    }

    #[test]
    fn a_flush_leaves_the_server_busy_until_a_sync() {
        let mut t = Tracker::default();
        t.sent(Expect::Bind);
        t.sent_unanswered();
        t.received(b'2');
        assert!(!t.idle());
        t.sent(Expect::Sync);
        t.received(b'Z');
        assert!(t.idle());
    }
}
