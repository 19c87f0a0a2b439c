//! The manager thread of a [`ProcessPool`](super::ProcessPool) (the workers'
//! own loop is in `pool_worker.rs`).
//!
//! The manager owns every worker's socket (parent end, non-blocking) and
//! pidfd and blocks in `poll(2)` on them plus the pool's wake socket. Each
//! round it:
//!
//! 1. forks a replacement for every dead worker (retrying every 100 ms if a
//!    fork fails; with no worker left at all, queued tasks fail instead of
//!    waiting forever). With an initializer, a new worker gets no task
//!    before its `READY` frame; one whose initializer failed (an
//!    `INIT_FAILED` frame, or death before `READY`) fails the start of the
//!    pool, or, later, breaks it: queued and later tasks fail with
//!    [`PoolError::Initializer`] and no more workers are forked. A worker
//!    that reaches `max_tasks_per_child` exits on its own and is replaced
//!    like a dead one (it had no task left, so nothing fails);
//! 2. hands queued tasks to the least loaded workers, and fails everything
//!    on `terminate`. A worker may hold several tasks (it runs them in
//!    order): up to 1 ms worth by a moving average of task times, at most
//!    64, so tiny tasks never wait for a manager round trip while a long
//!    task does not hold short ones behind it;
//! 3. writes pending request bytes, reads replies and completes tasks
//!    (outside the pool's lock: completing wakes the caller's hub);
//! 4. detects deaths (pidfd readable, socket hang-up or send error): reads
//!    any reply the worker still sent, reaps it, and fails the first task it
//!    had not answered (the one it was running) with
//!    [`PoolError::WorkerDied`]; its later tasks never started, so they go
//!    back to the front of the queue for the other workers.
//!
//! Frames in both directions are `[len: u32 LE][body]`. A request body is
//! `[trampoline: u64][function: u64][postcard arguments]`; a reply body is
//! `[status: u8][postcard result or message]`; an empty request asks the
//! worker to exit. Once the pool is closed and drained, or terminated, the
//! manager stops the workers (exit request, then SIGKILL after a grace
//! period, or SIGKILL at once), reaps them all and exits.
//!
//! Fds private to pools are listed in a process-wide registry so that every
//! child forked by moss (workers of any pool, [`Process`](super::Process)
//! children) closes them: otherwise a child would hold another worker's
//! socket open and hide its hang-up.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::PoolError;
use super::frame::{self, FrameBuf};
use super::pool_worker::worker_main;
use super::process_pool::{REPLY_INIT_FAILED, REPLY_READY, Reply, Shared, Task};
use crate::hub::Hub;
use crate::sys::fd;
use crate::sys::poll;
use crate::sys::process::{self, Exit, Forked};
use crate::thread::Oneshot;

/// How long closed-pool workers get to exit on request before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(100);
/// Most tasks sent to one worker at once (see [`Ewma`]).
const MAX_DEPTH: usize = 64;

static PRIVATE_FDS: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

fn register(fd: RawFd) {
    PRIVATE_FDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(fd);
}

fn unregister(fd: RawFd) {
    if let Some(s) = PRIVATE_FDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        s.remove(&fd);
    }
}

/// The pool-private fds, to be closed by a child right after `fork` (take
/// the snapshot before forking: the child must not lock anything).
pub(crate) fn private_fds() -> Vec<RawFd> {
    PRIVATE_FDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

/// Starts the manager thread; it reports on `started` once the workers run.
pub(crate) fn start(
    shared: Arc<Shared>,
    wake_r: OwnedFd,
    started: Arc<Oneshot<io::Result<()>>>,
) -> io::Result<()> {
    let wake_rfd = wake_r.as_raw_fd();
    register(wake_rfd);
    let wake_w = shared.wake_fd();
    register(wake_w);
    let r = std::thread::Builder::new()
        .name("moss-process-pool".into())
        // Workers are forked from this thread and run tasks on its stack.
        .stack_size(8 << 20)
        .spawn(move || {
            let mut m = Manager {
                shared,
                wake_r,
                workers: Vec::new(),
                retry_at: None,
                service: Ewma(Duration::from_millis(1)),
                starting: true,
                init_failure: None,
            };
            m.run(&started);
            unregister(m.wake_r.as_raw_fd());
            unregister(wake_w);
            m.shared.manager_exited();
        });
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            // The closure (and with it `wake_r`) is gone.
            unregister(wake_rfd);
            unregister(wake_w);
            Err(e)
        }
    }
}

struct Worker {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    sock: OwnedFd,
    /// Tasks sent and not answered, oldest first. The worker runs them in
    /// order, so only the first can have started.
    in_flight: VecDeque<Task>,
    /// When the worker began the current first task (as far as we know).
    started_at: Instant,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: FrameBuf,
    dead: bool,
    /// It may get tasks: its initializer (if any) has returned.
    ready: bool,
    /// Tasks it may still be sent (`max_tasks_per_child`), if limited.
    budget: Option<usize>,
    /// Its initializer's panic message.
    init_failed: Option<String>,
}

impl Worker {
    fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        std::iter::once(self.sock.as_raw_fd()).chain(self.pidfd.as_ref().map(|f| f.as_raw_fd()))
    }

    /// Whether it can take one more task now (`depth`: see [`Ewma`]).
    fn can_take(&self, depth: usize) -> bool {
        !self.dead && self.ready && self.budget != Some(0) && self.in_flight.len() < depth
    }

    fn send(&mut self, t: Task) {
        if let Some(b) = &mut self.budget {
            *b -= 1;
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(&t.frame);
        if self.in_flight.is_empty() {
            self.started_at = Instant::now();
        }
        self.in_flight.push_back(t);
    }

    /// Sends pending request bytes; marks the worker dead on a send error.
    fn flush(&mut self) {
        while self.out_pos < self.out.len() {
            match fd::write(self.sock.as_raw_fd(), &self.out[self.out_pos..], true) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Reads what the worker sent and moves every complete reply to `done`;
    /// feeds each task's service time to `service`. Marks the worker dead
    /// at EOF or on an error.
    fn read(&mut self, done: &mut Vec<(Arc<Reply>, Vec<u8>)>, service: &mut Ewma) {
        loop {
            match self.inbuf.fill(self.sock.as_raw_fd()) {
                Ok(0) => {
                    self.dead = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        let now = Instant::now();
        while let Some(body) = self.inbuf.frame() {
            if !self.ready {
                // The initializer's report comes first.
                let report = &self.inbuf.buf[body];
                match report.first() {
                    Some(&REPLY_READY) => self.ready = true,
                    Some(&REPLY_INIT_FAILED) => {
                        self.init_failed = Some(String::from_utf8_lossy(&report[1..]).into_owned());
                        self.dead = true;
                    }
                    _ => self.dead = true, // a protocol error
                }
                continue;
            }
            // A reply without a task would be a protocol error; drop it.
            if let Some(t) = self.in_flight.pop_front() {
                service.add(now.saturating_duration_since(self.started_at));
                self.started_at = now;
                done.push((t.reply, self.inbuf.buf[body].to_vec()));
            }
        }
    }
}

/// A moving average of task service times, which sets how many tasks may
/// wait in a worker's socket behind the running one: many for tiny tasks
/// (the worker never waits for the manager), one for long tasks (a task is
/// never stuck behind a long one while another worker is idle).
struct Ewma(Duration);

impl Ewma {
    fn add(&mut self, d: Duration) {
        self.0 = (self.0 * 7 + d) / 8;
    }

    fn depth(&self) -> usize {
        let per_ms = Duration::from_millis(1).as_nanos() / self.0.as_nanos().max(1);
        (per_ms as usize).clamp(1, MAX_DEPTH)
    }
}

struct Manager {
    shared: Arc<Shared>,
    wake_r: OwnedFd,
    /// `None`: a vacant slot waiting for a replacement.
    workers: Vec<Option<Worker>>,
    retry_at: Option<Instant>,
    service: Ewma,
    /// Until the first workers are ready (`ProcessPool::new` waits).
    starting: bool,
    /// Why an initializer failed while `starting`.
    init_failure: Option<String>,
}

impl Manager {
    fn run(&mut self, started: &Oneshot<io::Result<()>>) {
        for _ in 0..self.shared.size {
            match self.spawn_worker() {
                Ok(w) => self.workers.push(Some(w)),
                Err(e) => {
                    self.kill_all(&PoolError::Terminated);
                    started.set(Err(e));
                    return;
                }
            }
        }
        self.publish_pids();
        let terminated = loop {
            if self.starting {
                if let Some(why) = self.init_failure.take() {
                    self.kill_all(&PoolError::Terminated);
                    started.set(Err(io::Error::other(format!(
                        "the ProcessPool initializer failed in a worker: {why}"
                    ))));
                    return;
                }
                if self.workers.iter().flatten().all(|w| w.ready) {
                    self.starting = false;
                    started.set(Ok(()));
                }
            }
            if let Some(terminated) = self.round() {
                break terminated;
            }
        };
        if terminated {
            self.kill_all(&PoolError::Terminated);
        } else {
            self.stop_gracefully();
        }
    }

    /// One round of the loop; `Some(terminated)` when the manager must stop.
    fn round(&mut self) -> Option<bool> {
        let mut failed: Vec<(Arc<Reply>, PoolError)> = Vec::new();
        let needed = {
            let s = self.shared.lock();
            !(s.terminated || (s.closed && s.queue.is_empty()))
        };
        if needed {
            // Before assigning, so fresh workers get work this round.
            self.fill_vacancies(&mut failed);
        }
        {
            let mut s = self.shared.lock();
            if s.terminated {
                failed.extend(s.queue.drain(..).map(|t| (t.reply, PoolError::Terminated)));
                drop(s);
                self.complete_failed(failed);
                return Some(true);
            }
            // Idle workers first, then pipeline up to the current depth,
            // always to the least loaded worker.
            let depth = self.service.depth();
            while !s.queue.is_empty() {
                let best = self
                    .workers
                    .iter_mut()
                    .flatten()
                    .filter(|w| w.can_take(depth))
                    .min_by_key(|w| w.in_flight.len());
                let Some(w) = best else { break };
                w.send(s.queue.pop_front().expect("not empty"));
            }
            let idle = self
                .workers
                .iter()
                .flatten()
                .all(|w| w.in_flight.is_empty());
            if s.closed && s.queue.is_empty() && idle {
                drop(s);
                self.complete_failed(failed);
                return Some(false);
            }
        }
        self.complete_failed(failed);
        for w in self.workers.iter_mut().flatten() {
            w.flush();
        }

        let mut fds = vec![poll::poll_fd(&self.wake_r, true, false)];
        let mut owners = Vec::new(); // (worker index, is pidfd)
        for (i, w) in self.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            fds.push(poll::poll_fd(&w.sock, true, w.out_pos < w.out.len()));
            owners.push((i, false));
            if let Some(p) = &w.pidfd {
                fds.push(poll::poll_fd(p, true, false));
                owners.push((i, true));
            }
        }
        let any_dead = self.workers.iter().flatten().any(|w| w.dead);
        let timeout = if any_dead {
            Some(Duration::ZERO)
        } else {
            self.retry_at
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        if poll::poll(&mut fds, timeout).is_err() {
            std::thread::sleep(RETRY); // EINVAL/ENOMEM: try again later
        }
        if poll::poll_readable(&fds[0]) {
            // Drain first, then clear the flag: a submitter that still sees
            // the flag set has pushed its task before, and the next round
            // looks at the queue after this point; one that sees it clear
            // writes a fresh byte.
            let mut buf = [0u8; 64];
            while matches!(fd::read(self.wake_r.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
            self.shared.wake_pending.store(false, Ordering::SeqCst);
        }

        let mut done: Vec<(Arc<Reply>, Vec<u8>)> = Vec::new();
        for (p, &(i, is_pidfd)) in fds[1..].iter().zip(&owners) {
            let w = self.workers[i].as_mut().expect("polled workers exist");
            if is_pidfd {
                if poll::poll_readable(p) {
                    w.dead = true;
                }
                continue;
            }
            if poll::poll_writable(p) {
                w.flush();
            }
            if poll::poll_readable(p) {
                w.read(&mut done, &mut self.service);
            }
        }
        let mut failed = Vec::new();
        let mut requeue = Vec::new();
        let mut init_failures = Vec::new();
        for slot in &mut self.workers {
            if slot.as_ref().is_some_and(|w| w.dead) {
                let mut w = slot.take().expect("checked");
                // Replies sent just before dying count.
                w.read(&mut done, &mut self.service);
                let (exit, mut tasks) = reap(&mut w);
                if !w.ready {
                    let why = w.init_failed.take().unwrap_or_else(|| match exit {
                        Some(Exit::Signal(s)) => format!("the worker died from signal {s}"),
                        Some(Exit::Code(c)) => format!("the worker exited with code {c}"),
                        None => "the worker died".to_owned(),
                    });
                    init_failures.push(why);
                }
                if let Some(t) = tasks.pop_front() {
                    let (signal, exit_code) = match exit {
                        Some(Exit::Signal(s)) => (Some(s), None),
                        Some(Exit::Code(c)) => (None, Some(c)),
                        None => (None, None),
                    };
                    let pid = w.pid as u32;
                    failed.push((
                        t.reply,
                        PoolError::WorkerDied {
                            pid,
                            signal,
                            exit_code,
                        },
                    ));
                }
                // The others never started: they go to another worker.
                requeue.extend(tasks);
            }
        }
        if !requeue.is_empty() {
            let mut s = self.shared.lock();
            for t in requeue.into_iter().rev() {
                s.queue.push_front(t);
            }
        }
        if let Some(why) = init_failures.pop() {
            if self.starting {
                self.init_failure = Some(why);
            } else {
                // Forking more workers would fail the same way, forever.
                let e = PoolError::Initializer { message: why };
                let mut s = self.shared.lock();
                failed.extend(s.queue.drain(..).map(|t| (t.reply, e.clone())));
                s.broken = Some(e);
            }
        }
        let n = done.len();
        for (r, body) in done {
            r.set(Ok(body));
        }
        if n > 0 {
            self.shared.finished(n);
        }
        self.complete_failed(failed);
        self.shared.run_orphans();
        None
    }

    fn complete_failed(&self, failed: Vec<(Arc<Reply>, PoolError)>) {
        let n = failed.len();
        for (r, e) in failed {
            r.set(Err(e));
        }
        if n > 0 {
            self.shared.finished(n);
        }
    }

    fn fill_vacancies(&mut self, failed: &mut Vec<(Arc<Reply>, PoolError)>) {
        if !self.workers.iter().any(Option::is_none) || self.init_failure.is_some() {
            return;
        }
        if self.shared.lock().broken.is_some() {
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        let mut last_err = None;
        for i in 0..self.workers.len() {
            if self.workers[i].is_none() {
                match self.spawn_worker() {
                    Ok(w) => self.workers[i] = Some(w),
                    Err(e) => last_err = Some(e),
                }
            }
        }
        self.publish_pids();
        if let Some(e) = last_err {
            self.retry_at = Some(Instant::now() + RETRY);
            if self.workers.iter().all(Option::is_none) {
                let mut s = self.shared.lock();
                failed.extend(s.queue.drain(..).map(|t| (t.reply, PoolError::io(&e))));
            }
        }
    }

    fn publish_pids(&self) {
        let pids = self
            .workers
            .iter()
            .flatten()
            .map(|w| w.pid as u32)
            .collect();
        self.shared.lock().pids = pids;
    }

    fn spawn_worker(&mut self) -> io::Result<Worker> {
        let (parent, child) = fd::socketpair()?;
        let close_in_child = private_fds();
        let me = std::process::id() as libc::pid_t;
        // The child side below forgets the parent's hub first, closes fds,
        // then runs `worker_main`, which never returns (it leaves through
        // `exit_now`); tasks run on this manager thread's stack.
        // SAFETY: so the child follows `fork`'s contract: it takes no lock of the
        // parent's other threads (the pool documents that tasks must not rely
        // on them) and never returns into the parent's frames.
        match unsafe { process::fork() }? {
            Forked::Child => {
                // A worker stuck in a task (or in a lock the fork copied
                // held) must not outlive the pool's process.
                process::die_with_parent(me);
                Hub::forget_after_fork();
                for fd in close_in_child {
                    // SAFETY: pool-private fds; their owners (this manager,
                    // other pools' managers and shared states) never run or
                    // drop in the worker, which never returns from here.
                    unsafe { fd::close_raw(fd) };
                }
                // SAFETY: as above: `parent` is never dropped in the worker.
                unsafe { fd::close_raw(parent.as_raw_fd()) };
                worker_main(child.as_raw_fd(), self.shared.config)
            }
            Forked::Parent(pid) => {
                drop(child);
                fd::set_nonblocking(parent.as_raw_fd(), true)?;
                let pidfd = process::pidfd_open(pid).ok();
                let w = Worker {
                    pid,
                    pidfd,
                    sock: parent,
                    in_flight: VecDeque::new(),
                    started_at: Instant::now(),
                    out: Vec::new(),
                    out_pos: 0,
                    inbuf: FrameBuf::new(),
                    dead: false,
                    ready: self.shared.config.initializer.is_none(),
                    budget: self.shared.config.max_tasks_per_child,
                    init_failed: None,
                };
                w.fds().for_each(register);
                Ok(w)
            }
        }
    }

    /// SIGKILLs and reaps every worker; running tasks fail with `why`.
    fn kill_all(&mut self, why: &PoolError) {
        let mut failed = Vec::new();
        for w in self.workers.iter_mut().flatten() {
            let _ = process::signal(w.pid, libc::SIGKILL);
        }
        for mut w in self.workers.drain(..).flatten() {
            let (_, tasks) = reap(&mut w);
            failed.extend(tasks.into_iter().map(|t| (t.reply, why.clone())));
        }
        self.complete_failed(failed);
    }

    /// Asks idle workers to exit, waits up to [`GRACE`], then kills the rest.
    fn stop_gracefully(&mut self) {
        for w in self.workers.iter_mut().flatten() {
            if w.out_pos == w.out.len() {
                w.out.clear();
                w.out_pos = 0;
            }
            // An empty frame is the exit request.
            w.out.extend_from_slice(&frame::start());
            w.flush();
        }
        let end = Instant::now() + GRACE;
        loop {
            let mut live = Vec::new();
            for slot in &mut self.workers {
                if let Some(w) = slot
                    && matches!(process::try_wait(w.pid), Ok(Some(_)) | Err(_))
                {
                    let mut w = slot.take().expect("checked");
                    w.pid = 0; // reaped above
                    let _ = reap(&mut w);
                    continue;
                }
                if let Some(w) = slot {
                    live.push(poll::poll_fd(
                        w.pidfd.as_ref().unwrap_or(&w.sock),
                        true,
                        false,
                    ));
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if live.is_empty() || left.is_zero() {
                break;
            }
            let _ = poll::poll(&mut live, Some(left.min(Duration::from_millis(50))));
        }
        self.kill_all(&PoolError::Terminated);
    }
}

/// Closes a dead (or stopping) worker's fds and reaps it (SIGKILL first if
/// it has not exited, so this never waits long). `pid == 0` means already
/// reaped. Returns how it ended and the tasks it had not answered.
fn reap(w: &mut Worker) -> (Option<Exit>, VecDeque<Task>) {
    w.fds().for_each(unregister);
    let exit = if w.pid == 0 {
        None
    } else {
        match process::try_wait(w.pid) {
            Ok(Some(e)) => Some(e),
            Ok(None) => {
                let _ = process::signal(w.pid, libc::SIGKILL);
                process::wait_blocking(w.pid).ok()
            }
            Err(_) => None,
        }
    };
    (exit, std::mem::take(&mut w.in_flight))
}
