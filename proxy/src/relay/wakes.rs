//! Per-side wake-ups for the relay's one task. `select!` polls every branch whenever the
//! task wakes: a wake-up for the client's socket also polled the server side's read (and
//! the halt), which found nothing. Here each branch has its own waker and is polled only
//! after that waker fired: a round trip polls each side once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

struct Flag {
    woken: AtomicBool,
    /// The relay's task, shared by its branches.
    task: Arc<AtomicWaker>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// The relay's task as its branches wake it: registered once per poll of the task, not
/// once per branch.
pub(super) struct Task {
    waker: Arc<AtomicWaker>,
}

impl Task {
    pub(super) fn new() -> Task {
        Task {
            waker: Arc::new(AtomicWaker::new()),
        }
    }

    /// A branch of this task, not polled yet (so its first poll happens).
    pub(super) fn branch(&self) -> Branch {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: self.waker.clone(),
        });
        Branch {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Call at the start of every poll of the task, before its branches: a branch's wake
    /// between this and the branch's check then reaches the task.
    pub(super) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }
}

/// One branch of the relay's task: its waker, and whether it fired.
pub(super) struct Branch {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Branch {
    /// Polls `f` with this branch's waker if it fired since `f`'s last poll; otherwise
    /// `f` still waits for what it waited for, and is not polled. The task must have been
    /// registered ([`Task::register`]) in this poll.
    pub(super) fn poll<F: Future + ?Sized>(&self, f: Pin<&mut F>) -> Poll<F::Output> {
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        f.poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A branch is polled first, then only after its own waker fired; its wake-up reaches
    /// the task that polls it.
    #[test]
    fn a_branch_is_polled_only_after_its_waker_fired() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let polls = AtomicUsize::new(0);
        let saved = std::sync::Mutex::new(None::<Waker>);
        let f = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            *saved.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        });
        let mut f = std::pin::pin!(f);
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        let relay = Task::new();
        let branch = relay.branch();
        relay.register(&cx);
        assert!(branch.poll(f.as_mut()).is_pending());
        relay.register(&cx);
        assert!(branch.poll(f.as_mut()).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "polled again without a wake-up"
        );
        let fired = saved.lock().unwrap().take().unwrap();
        fired.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was not woken");
        relay.register(&cx);
        assert!(branch.poll(f.as_mut()).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "not polled after its wake-up"
        );
    }
}
