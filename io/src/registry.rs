//! One reactor registration per fd per hub, shared by `moss::net` and the
//! monkey hooks.
//!
//! epoll takes each (fd, open file) once. A socket used by both sides —
//! a `moss::net` socket converted to std and read by hooked std code, or
//! the reverse, possibly after a trip through another thread — used to
//! collide with its own earlier registration (`EEXIST`): the hooks fell
//! back to a thread-blocking `poll(2)`, `moss::net` failed every wait. So
//! each thread keeps one table, indexed by fd number, of the registrations
//! its hub holds, and both sides ask it.
//!
//! # Owners
//!
//! A slot records who uses it: the `moss::net` socket (a process-unique
//! uid) and the hooks (the fd's generation in their table, bumped by every
//! `close`/`dup2` they see). A request from an owner the slot records gets
//! it at once. Otherwise:
//!
//! * the same kind of owner with another tag means the fd number was
//!   closed and reused (two live sockets never share a number; the hooks'
//!   generation moved on): the old registration is dropped and a new one
//!   made;
//! * the other kind of owner, while one of its waits is in progress (it
//!   holds a reference, or, waiting through the registration's id, is
//!   parked on it): the fd is open for both, so it is the same file, and
//!   the registration is shared;
//! * the other kind of owner, idle: it may be stale (its file closed behind
//!   its back), so the registration is made anew (`EPOLL_CTL_DEL`, `ADD`).
//!
//! A slot whose registration belongs to another hub (a forked child
//! inherits this table with the parent's hub ids) is replaced likewise.
//!
//! # Exclusive registrations
//!
//! A `moss::net` socket caches the registration it gets (see `net/fd.rs`)
//! and waits through its id while the hub's slot says it is exclusive:
//! this table marks it so while it lists the registration for one kind of
//! owner only, and not once it shares it or no longer lists it.
//!
//! # Dropping late
//!
//! A registration dropped while waits hold it deregisters only when the
//! last of them lets go, possibly after the fd was closed. By then the
//! number may name a newer file with a registration of its own in this
//! table, which `EPOLL_CTL_DEL` by number would remove: so [`Reg`] checks
//! the table first and, superseded, leaks its slot in the hub instead (the
//! kernel dropped the closed file's epoll entry already). Otherwise the
//! deregistration is harmless: the number is closed, or names a file this
//! epoll does not hold.

use std::cell::RefCell;
use std::io;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::rc::Rc;

use moss_runtime::reactor::{self, Registration};

/// Who asks for a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A `moss::net` socket (or subprocess pipe), by its uid.
    Net(u64),
    /// The monkey hooks, by the fd's generation.
    Hook(u64),
}

/// A registration in a slot (see "Dropping late").
pub(crate) struct Reg {
    reg: ManuallyDrop<Registration>,
}

impl Deref for Reg {
    type Target = Registration;
    fn deref(&self) -> &Registration {
        &self.reg
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        let fd = self.reg.fd();
        // The table holds a slot for this fd that is not us: a newer
        // registration that a deregistration by number would remove.
        // Unknown (the table is busy or gone): leak, the safe side.
        let superseded = SLOTS
            .try_with(|t| match t.try_borrow() {
                Ok(t) => t
                    .get(fd as usize)
                    .is_some_and(|s| s.as_ref().is_some_and(|s| !std::ptr::eq(&*s.reg, self))),
                Err(_) => true,
            })
            .unwrap_or(false);
        if !superseded {
            // SAFETY: dropped once, here; `self.reg` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.reg) };
        }
    }
}

struct Slot {
    reg: Rc<Reg>,
    /// The `moss::net` socket using it, 0 for none (uids start at 1).
    net: u64,
    /// The hooks' generation of the fd, if the hooks use it.
    hook: Option<u64>,
}

impl Slot {
    fn owned_by(&self, owner: Owner) -> bool {
        match owner {
            Owner::Net(uid) => self.net == uid,
            Owner::Hook(g) => self.hook == Some(g),
        }
    }

    /// The slot's tag of `owner`'s kind is another one: the fd number was
    /// reused since.
    fn stale_for(&self, owner: Owner) -> bool {
        match owner {
            Owner::Net(_) => self.net != 0,
            Owner::Hook(_) => self.hook.is_some(),
        }
    }

    fn claim(&mut self, owner: Owner) {
        match owner {
            Owner::Net(uid) => self.net = uid,
            Owner::Hook(g) => self.hook = Some(g),
        }
    }
}

thread_local! {
    /// This thread's registrations, indexed by fd number.
    static SLOTS: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// A registration handed out by [`get`].
pub(crate) struct Got {
    pub(crate) reg: Rc<Reg>,
    /// Made just now: it has seen no readiness edge yet.
    pub(crate) fresh: bool,
    /// Both `moss::net` and the hooks use it: readiness edges may be
    /// consumed by either, so neither may skip a syscall on a hint.
    pub(crate) shared: bool,
}

/// This thread's registration of `fd` for `owner`, made (or taken over, see
/// the module docs) if needed. The caller has made `fd` non-blocking.
#[inline]
pub(crate) fn get(fd: RawFd, owner: Owner) -> io::Result<Got> {
    let idx = usize::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative fd"))?;
    let hub = reactor::hub_id();
    let found = SLOTS.try_with(|t| {
        let mut t = t.borrow_mut();
        let slot = t.get_mut(idx)?.as_mut()?;
        if slot.reg.hub_id() != hub {
            return None;
        }
        if slot.owned_by(owner) {
            return Some(Got {
                reg: slot.reg.clone(),
                fresh: false,
                shared: slot.net != 0 && slot.hook.is_some(),
            });
        }
        if !slot.stale_for(owner) && (Rc::strong_count(&slot.reg) > 1 || slot.reg.has_waiters()) {
            slot.claim(owner);
            slot.reg.set_exclusive(false);
            return Some(Got {
                reg: slot.reg.clone(),
                fresh: false,
                shared: true,
            });
        }
        None
    });
    match found {
        Ok(Some(g)) => Ok(g),
        Ok(None) => register(idx, fd, owner),
        Err(_) => Err(exiting()),
    }
}

/// The error of I/O that needs a registration while this thread's
/// registrations are already destroyed (its thread-locals are; see the
/// runtime's thread-exit notes).
#[cold]
fn exiting() -> io::Error {
    io::Error::other("moss::net: this thread is exiting (its I/O registrations are gone)")
}

#[cold]
fn register(idx: usize, fd: RawFd, owner: Owner) -> io::Result<Got> {
    // The old slot goes first (outside the borrow: dropping it may
    // deregister the fd), so that its deregistration cannot hit the new one.
    let old = SLOTS
        .try_with(|t| t.borrow_mut().get_mut(idx).and_then(Option::take))
        .map_err(|_| exiting())?;
    if let Some(old) = old {
        // Waits may keep it alive: no longer listed, it is nobody's alone.
        old.reg.set_exclusive(false);
    }
    let reg = Rc::new(Reg {
        reg: ManuallyDrop::new(Registration::new(fd)?),
    });
    reg.set_exclusive(true);
    let mut slot = Slot {
        reg: reg.clone(),
        net: 0,
        hook: None,
    };
    slot.claim(owner);
    SLOTS
        .try_with(|t| {
            let mut t = t.borrow_mut();
            if t.len() <= idx {
                t.resize_with(idx + 1, || None);
            }
            t[idx] = Some(slot);
        })
        .map_err(|_| exiting())?;
    Ok(Got {
        reg,
        fresh: true,
        shared: false,
    })
}

/// `owner` is done with `fd` on this thread (its socket is dropped, or the
/// hooks saw it closed). The slot goes when nobody uses it any more; its
/// registration deregisters now, or when the last wait holding it ends.
/// Safe during thread-local destruction (then it does nothing).
pub(crate) fn release(fd: RawFd, owner: Owner) {
    let Ok(idx) = usize::try_from(fd) else { return };
    let removed = SLOTS
        .try_with(|t| {
            let mut t = t.try_borrow_mut().ok()?;
            let entry = t.get_mut(idx)?;
            let slot = entry.as_mut()?;
            if !slot.owned_by(owner) {
                return None;
            }
            match owner {
                Owner::Net(_) => slot.net = 0,
                Owner::Hook(_) => slot.hook = None,
            }
            if slot.net == 0 && slot.hook.is_none() {
                entry.take()
            } else {
                // One kind of owner is left: it has it alone.
                slot.reg.set_exclusive(true);
                None
            }
        })
        .ok()
        .flatten();
    if let Some(slot) = removed {
        // Waits may keep it alive: no longer listed, it is nobody's alone.
        slot.reg.set_exclusive(false);
    }
}
