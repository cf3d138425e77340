//! A fork-join gang of persistent worker threads, built for one pattern: run `f(0..pieces)`
//! many thousand times a second, each call a few microseconds of work.
//!
//! Why not rayon: handing a job from a thread outside a rayon pool costs a wake-up of a
//! sleeping worker and a hand-back, about 20 µs here — as long as stepping 4096 CartPoles on
//! one core. In a gang the calling thread runs piece 0 itself, and workers spin for a short
//! while after each job before they park, so back-to-back steps pay only an atomic handshake.
//! Pieces are fixed ranges chosen by the caller, so results never depend on timing.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How a worker waits for the next job: PAUSE-spinning for `SPIN`, then polling with
/// `yield_now` (which hands the core to any other runnable thread, such as the agent's) until
/// `PARK_AFTER`, then parking.
///
/// Measured at 4096 CartPole envs on 2 threads (M env-steps/s): parking after a few µs of
/// spinning gave bursts at ≈150 instead of ≈280. A parked worker is woken on its waker's CPU
/// (Linux's wake-affine placement), and the two threads then share one core until the load
/// balancer separates them. Never parking gave a steady ≈250–300. Yielding keeps the worker
/// runnable (so it is not re-placed) without denying the core to others.
const SPIN: Duration = Duration::from_micros(50);
const PARK_AFTER: Duration = Duration::from_millis(5);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Option<Job>>,
    remaining: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is written only by the thread in `Gang::run` before it publishes the epoch
// (SeqCst), and read by workers only after they observe that epoch; `run` does not return
// until every worker has finished with it.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// `threads - 1` workers plus the calling thread.
pub struct Gang {
    shared: Arc<Shared>,
    workers: Vec<(Thread, JoinHandle<()>)>,
}

impl Gang {
    /// A gang that runs `threads` pieces at once (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let helpers = threads.saturating_sub(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut workers = Vec::with_capacity(helpers);
        for w in 0..helpers {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("gradgym-env-{}", w + 1))
                .spawn(move || worker(&shared, w))?;
            workers.push((handle.thread().clone(), handle));
        }
        Ok(Self { shared, workers })
    }

    /// Pieces run at once.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i < self.threads()`, `f(0)` on the calling thread, and returns
    /// when all are done. A panic in any piece is re-raised here after all pieces finish.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        // SAFETY: erasing the lifetime is sound because this function waits below until no
        // worker uses the pointer any more (also when `f(0)` panics: the guard waits).
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        unsafe { *self.shared.job.get() = Some(job) };
        self.shared.remaining.store(self.workers.len(), SeqCst);
        self.shared.epoch.fetch_add(1, SeqCst);
        for (w, (thread, _)) in self.workers.iter().enumerate() {
            if self.shared.sleeping[w].swap(false, SeqCst) {
                thread.unpark();
            }
        }
        // The caller PAUSE-spins 2¹⁴ polls (a fraction of a millisecond), then yields until
        // the workers are done. It used to spin 2²⁰ polls (tens of ms) first, so when a busy
        // machine had descheduled a worker, the caller held its core spinning and each step
        // took ms instead of µs: 4096 CartPoles on 2 threads beside two busy processes ran
        // at 0.5 M env-steps/s, and run at about 110 M now (about 250–300 M on an idle
        // machine, as before, within its noise).
        struct WaitForWorkers<'a>(&'a Shared);
        impl Drop for WaitForWorkers<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.remaining.load(SeqCst) != 0 {
                    spins += 1;
                    if spins < 1 << 14 {
                        std::hint::spin_loop();
                    } else {
                        spins = 1 << 14;
                        std::thread::yield_now();
                    }
                }
            }
        }
        let guard = WaitForWorkers(&self.shared);
        f(0);
        drop(guard);
        if self.shared.panicked.swap(false, SeqCst) {
            resume_unwind(Box::new("a gradgym worker thread panicked"));
        }
    }
}

fn worker(shared: &Shared, w: usize) {
    let mut seen = 0u64;
    loop {
        let mut polls = 0u32;
        let mut waiting_since: Option<Instant> = None;
        let epoch = loop {
            let epoch = shared.epoch.load(SeqCst);
            if epoch != seen || shared.shutdown.load(SeqCst) {
                break epoch;
            }
            polls = polls.wrapping_add(1);
            // The clock costs more than a poll: read it every 256 polls.
            if polls % 256 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let waited = waiting_since.get_or_insert_with(Instant::now).elapsed();
            if waited < SPIN {
                std::hint::spin_loop();
                continue;
            }
            if waited < PARK_AFTER {
                std::thread::yield_now();
                continue;
            }
            waiting_since = None;
            shared.sleeping[w].store(true, SeqCst);
            // Re-check after announcing sleep, so a job published in between is not missed.
            if shared.epoch.load(SeqCst) == seen && !shared.shutdown.load(SeqCst) {
                std::thread::park();
            }
            shared.sleeping[w].store(false, SeqCst);
        };
        if shared.shutdown.load(SeqCst) {
            return;
        }
        seen = epoch;
        // SAFETY: published before `epoch` and kept alive by `run` until `remaining` is 0.
        let job = unsafe { (*shared.job.get()).expect("a job is published with the epoch") };
        let f = unsafe { &*job };
        if catch_unwind(AssertUnwindSafe(|| f(w + 1))).is_err() {
            shared.panicked.store(true, SeqCst);
        }
        shared.remaining.fetch_sub(1, SeqCst);
    }
}

impl Drop for Gang {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        for (thread, _) in &self.workers {
            thread.unpark();
        }
        for (_, handle) in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_piece_runs_once_per_call() {
        let gang = Gang::new(3).unwrap();
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..10_000 {
            gang.run(&|i| {
                counts[i].fetch_add(1, SeqCst);
            });
        }
        assert!(counts.iter().all(|c| c.load(SeqCst) == 10_000));
    }

    #[test]
    fn wakes_parked_workers() {
        let gang = Gang::new(2).unwrap();
        let hits = AtomicUsize::new(0);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            gang.run(&|_| {
                hits.fetch_add(1, SeqCst);
            });
        }
        assert_eq!(hits.load(SeqCst), 6);
    }

    #[test]
    fn a_worker_panic_reaches_the_caller() {
        let gang = Gang::new(2).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| gang.run(&|i| assert!(i != 1, "boom"))));
        assert!(result.is_err());
        // The gang still works afterwards.
        let hits = AtomicUsize::new(0);
        gang.run(&|_| {
            hits.fetch_add(1, SeqCst);
        });
        assert_eq!(hits.load(SeqCst), 2);
    }
}
