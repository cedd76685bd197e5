//! `--limit N`: only the first N rows (in manifest order) that need a change are written.
//! Rows are read concurrently and finish their reads in any order, so a row that needs a
//! change takes its place in the canary only once every row dispatched before it has
//! decided; a row that needs none never waits. Each dispatched row holds a [`Turn`], which
//! decides "no change" if it is dropped undecided (a failed read, a conflict, a stop).

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

pub(super) struct Canary {
    limit: u64,
    state: Mutex<State>,
    decided: Notify,
}

#[derive(Default)]
struct State {
    /// Rows dispatched so far (the next turn's number).
    dealt: u64,
    /// Every turn before this one has decided.
    next: u64,
    /// Turns at or after `next` that have decided.
    ahead: BTreeSet<u64>,
    /// Rows given a write.
    taken: u64,
}

impl Canary {
    pub(super) fn new(limit: u64) -> Canary {
        Canary {
            limit,
            state: Mutex::new(State::default()),
            decided: Notify::new(),
        }
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// The next row's turn; call in dispatch (manifest) order.
    pub(super) fn deal(&self) -> Turn<'_> {
        let mut s = self.lock();
        let number = s.dealt;
        s.dealt += 1;
        Turn {
            canary: self,
            number,
            done: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decide(&self, number: u64) {
        let mut s = self.lock();
        s.ahead.insert(number);
        loop {
            let next = s.next;
            if !s.ahead.remove(&next) {
                break;
            }
            s.next += 1;
        }
        drop(s);
        self.decided.notify_waiters();
    }
}

/// One row's place in the canary's order.
pub(super) struct Turn<'a> {
    canary: &'a Canary,
    number: u64,
    done: bool,
}

impl Turn<'_> {
    /// The row needs a change: whether it is written (one of the first `limit` such rows),
    /// once every row before it has decided.
    pub(super) async fn wants_write(mut self) -> bool {
        let canary = self.canary;
        loop {
            let decided = canary.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            {
                let mut s = canary.lock();
                if s.taken >= canary.limit {
                    break;
                }
                if s.next == self.number {
                    s.taken += 1;
                    drop(s);
                    self.done = true;
                    canary.decide(self.number);
                    return true;
                }
            }
            decided.await;
        }
        self.done = true;
        canary.decide(self.number);
        false
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.canary.decide(self.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_first_rows_in_order_that_need_a_change_are_written_whoever_reads_first() {
        let canary = Arc::new(Canary::new(2));
        let [t0, t1, t2, t3, t4] = [(); 5].map(|()| canary.deal());
        // Row 4 and row 2 finish their reads first and need a change: they wait for the
        // rows before them. Row 0 needs none; row 1 fails (dropped); row 3 needs one.
        let late = tokio::join!(t4.wants_write(), t2.wants_write(), async {
            tokio::task::yield_now().await;
            drop(t0);
            drop(t1);
            t3.wants_write().await
        });
        assert_eq!(late, (false, true, true), "rows 2 and 3, not 4");
    }

    #[tokio::test]
    async fn once_the_canary_is_full_a_row_does_not_wait() {
        let canary = Canary::new(1);
        let first = canary.deal();
        let _undecided = canary.deal();
        let third = canary.deal();
        assert!(first.wants_write().await);
        assert!(
            !third.wants_write().await,
            "full: no wait for the second row"
        );
    }
}
