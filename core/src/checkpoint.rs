//! Page checkpoints: how far a paginated read got with every record of its
//! pages handled, so that a resumed run reads on from there.
//!
//! Each page a tracked read fetches gets a [`Mark`] that travels with its
//! records. A step that knows what "handled" means for it passes the marks
//! on with the records it makes from them (a Lua step) or settles them once
//! its work on those records is done (a `for_each` whose writes completed).
//! Any step that does not know drops them unsettled, which holds the
//! checkpoint back: a file written at the end of the run, a spool read by a
//! later step, a failed write. A page is done when every copy of its mark
//! was settled; the checkpoint is the number of leading pages done, saved
//! each time it moves.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Saves a checkpoint: the number of leading pages whose records were all
/// handled, counted from the first page of the read.
pub type Save = Box<dyn Fn(u64) + Send + Sync>;

/// Follows the pages of one read.
pub struct Tracker {
    /// Pages done before this run started (skipped by it).
    base: u64,
    state: Mutex<Progress>,
    save: Save,
}

#[derive(Default)]
struct Progress {
    /// The first page (of this run) not yet done.
    next: u64,
    /// Pages done after a gap.
    done: BTreeSet<u64>,
}

impl Tracker {
    /// A tracker for a read that starts `base` pages in.
    pub fn new(base: u64, save: Save) -> Arc<Self> {
        Arc::new(Tracker {
            base,
            state: Mutex::new(Progress::default()),
            save,
        })
    }

    /// Pages an earlier run handled, which this read skips.
    pub fn skipped(&self) -> u64 {
        self.base
    }

    /// The mark of the `index`th page this run fetches (from 0).
    pub fn mark(self: &Arc<Self>, index: u64) -> Marks {
        Marks(vec![Mark {
            page: Arc::new(PageMark {
                tracker: Arc::clone(self),
                index,
                holders: AtomicUsize::new(1),
                failed: AtomicBool::new(false),
            }),
            settled: false,
        }])
    }

    fn page_done(&self, index: u64) {
        let Ok(mut p) = self.state.lock() else {
            return;
        };
        p.done.insert(index);
        let before = p.next;
        loop {
            let next = p.next;
            if !p.done.remove(&next) {
                break;
            }
            p.next += 1;
        }
        if p.next > before {
            // Saved under the lock, so checkpoints are saved in order.
            (self.save)(self.base + p.next);
        }
    }
}

struct PageMark {
    tracker: Arc<Tracker>,
    index: u64,
    /// Copies of the mark not yet settled or dropped.
    holders: AtomicUsize,
    /// A copy was dropped unsettled: the page is never done.
    failed: AtomicBool,
}

impl PageMark {
    fn release(&self, handled: bool) {
        if !handled {
            self.failed.store(true, Ordering::Release);
        }
        if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 && !self.failed.load(Ordering::Acquire) {
            self.tracker.page_done(self.index);
        }
    }
}

/// One copy of a page's mark.
struct Mark {
    page: Arc<PageMark>,
    settled: bool,
}

impl Clone for Mark {
    fn clone(&self) -> Self {
        self.page.holders.fetch_add(1, Ordering::AcqRel);
        Mark {
            page: Arc::clone(&self.page),
            settled: false,
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        if !self.settled {
            self.page.release(false);
        }
    }
}

/// The page marks records carry (none for records that do not come from a
/// tracked read).
#[derive(Clone, Default)]
pub struct Marks(Vec<Mark>);

impl Marks {
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These records were handled.
    pub fn settle(self) {
        for mut m in self.0 {
            m.settled = true;
            m.page.release(true);
        }
    }

    /// The pages marked, by their index in the read.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|m| m.page.index)
    }

    /// Adds other marks to these.
    pub fn extend(&mut self, other: Marks) {
        self.0.extend(other.0);
    }
}

impl std::fmt::Debug for Marks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|m| m.page.index)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(base: u64) -> (Arc<Tracker>, Arc<Mutex<Vec<u64>>>) {
        let saved = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&saved);
        let t = Tracker::new(base, Box::new(move |n| s.lock().unwrap().push(n)));
        (t, saved)
    }

    #[test]
    fn the_checkpoint_moves_over_leading_pages_done() {
        let (t, saved) = tracker(10);
        let (m0, m1, m2) = (t.mark(0), t.mark(1), t.mark(2));
        m1.settle();
        assert!(saved.lock().unwrap().is_empty(), "page 0 is not done yet");
        m0.settle();
        assert_eq!(*saved.lock().unwrap(), vec![12]);
        m2.settle();
        assert_eq!(*saved.lock().unwrap(), vec![12, 13]);
    }

    #[test]
    fn every_copy_must_be_settled() {
        let (t, saved) = tracker(0);
        let m = t.mark(0);
        let copy = m.clone();
        m.settle();
        assert!(saved.lock().unwrap().is_empty());
        copy.settle();
        assert_eq!(*saved.lock().unwrap(), vec![1]);
    }

    #[test]
    fn a_copy_dropped_unsettled_holds_the_checkpoint_back() {
        let (t, saved) = tracker(0);
        let m = t.mark(0);
        let copy = m.clone();
        drop(copy);
        m.settle();
        let m1 = t.mark(1);
        m1.settle();
        assert!(
            saved.lock().unwrap().is_empty(),
            "page 0 failed, so nothing after it counts"
        );
    }
}
