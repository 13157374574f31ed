//! The test hook: [`Hub::hold_room`] holds a room's lock from another thread, so a test can
//! prove that joins and leaves elsewhere do not wait for a busy room (`tests/room_lock.rs`).
//!
//! Hidden from the docs and never called by the server; it must not grow into an API.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Hub;
use super::room::Room;

impl Hub {
    /// Test hook: holds `room`'s lock from another thread until the returned guard drops, so a
    /// test can prove that joins and leaves elsewhere do not wait for a busy room. `None` if the
    /// room does not exist.
    #[doc(hidden)]
    pub fn hold_room(&self, room: &str) -> Option<RoomHold> {
        let room = self.find(room)?;
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = room.clone();
        let thread = std::thread::spawn(move || {
            let _guard = holder.lock();
            let _ = held_tx.send(());
            // Until the hold is dropped (the sender goes away).
            let _ = release_rx.recv();
        });
        held_rx.recv().ok()?;
        Some(RoomHold {
            room,
            release: Some(release_tx),
            thread: Some(thread),
        })
    }
}

/// A room lock held by [`Hub::hold_room`]; dropping it releases the lock.
#[doc(hidden)]
pub struct RoomHold {
    room: Arc<Room>,
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RoomHold {
    /// How many times anyone has had to wait for this room's lock.
    pub fn waiters(&self) -> u64 {
        self.room.contended.load(Ordering::Relaxed)
    }
}

impl Drop for RoomHold {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
