//! The room index: roomId -> [`RoomInfo`], and each process's [`Load`] kept in step.

use std::collections::HashMap;

use routing::ProcessId;

use super::{Room, RoomEvent, RoomInfo};

/// Rooms and CCU of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub rooms: u32,
    pub ccu: u64,
}

/// roomId -> [`RoomInfo`], with each process's [`Load`] kept up to date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomIndex {
    rooms: HashMap<String, RoomInfo>,
    loads: HashMap<ProcessId, Load>,
}

impl RoomIndex {
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn lookup(&self, room_id: &str) -> Option<&RoomInfo> {
        self.rooms.get(room_id)
    }

    pub fn load(&self, process_id: &ProcessId) -> Option<Load> {
        self.loads.get(process_id).copied()
    }

    /// The roomIds of `process_id`'s rooms, sorted.
    pub fn rooms_of(&self, process_id: &ProcessId) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.process_id == *process_id)
            .map(|(id, _)| id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn apply(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Upsert(room) => {
                self.add_load(&room.info);
                if let Some(old) = self.rooms.insert(room.room_id, room.info) {
                    self.remove_load(&old);
                }
            }
            RoomEvent::Delete(room_id) => {
                if let Some(old) = self.rooms.remove(&room_id) {
                    self.remove_load(&old);
                }
            }
        }
    }

    /// Makes the index exactly `rooms` (a full read of a source).
    pub fn replace_all(&mut self, rooms: impl IntoIterator<Item = Room>) {
        *self = Self::default();
        for room in rooms {
            self.apply(RoomEvent::Upsert(room));
        }
    }

    /// Drops the rooms of every process `live` says is gone.
    pub fn retain_processes(&mut self, live: impl Fn(&ProcessId) -> bool) {
        self.rooms.retain(|_, r| live(&r.process_id));
        self.loads.retain(|p, _| live(p));
    }

    fn add_load(&mut self, info: &RoomInfo) {
        let load = self.loads.entry(info.process_id.clone()).or_default();
        load.rooms += 1;
        load.ccu += u64::from(info.clients);
    }

    fn remove_load(&mut self, info: &RoomInfo) {
        if let Some(load) = self.loads.get_mut(&info.process_id) {
            load.rooms = load.rooms.saturating_sub(1);
            load.ccu = load.ccu.saturating_sub(u64::from(info.clients));
            if load.rooms == 0 {
                self.loads.remove(&info.process_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ProcessId {
        ProcessId::parse(s).unwrap()
    }

    fn room(id: &str, p: &str, clients: u32) -> Room {
        Room {
            room_id: id.into(),
            info: RoomInfo {
                process_id: pid(p),
                name: "n".into(),
                clients,
                max_clients: None,
                locked: false,
                public_address: None,
            },
        }
    }

    #[test]
    fn index_keeps_loads_in_step() {
        let mut idx = RoomIndex::default();
        idx.apply(RoomEvent::Upsert(room("r1", "a", 2)));
        idx.apply(RoomEvent::Upsert(room("r2", "a", 3)));
        idx.apply(RoomEvent::Upsert(room("r3", "b", 1)));
        assert_eq!(idx.load(&pid("a")), Some(Load { rooms: 2, ccu: 5 }));
        // A room moving to another process (or its count changing) moves its load.
        idx.apply(RoomEvent::Upsert(room("r2", "b", 4)));
        assert_eq!(idx.load(&pid("a")), Some(Load { rooms: 1, ccu: 2 }));
        assert_eq!(idx.load(&pid("b")), Some(Load { rooms: 2, ccu: 5 }));
        assert_eq!(idx.rooms_of(&pid("b")), ["r2", "r3"]);
        idx.apply(RoomEvent::Delete("r1".into()));
        idx.apply(RoomEvent::Delete("unknown".into()));
        assert_eq!(idx.load(&pid("a")), None);
        assert_eq!(idx.lookup("r3").map(|r| r.process_id.as_str()), Some("b"));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn rooms_of_a_vanished_process_leave_with_it() {
        let mut idx = RoomIndex::default();
        idx.replace_all([room("r1", "a", 1), room("r2", "b", 1), room("r3", "b", 1)]);
        idx.retain_processes(|p| p.as_str() == "a");
        assert_eq!(idx.len(), 1);
        assert!(idx.lookup("r2").is_none());
        assert_eq!(idx.load(&pid("b")), None);
        idx.replace_all([room("r9", "c", 0)]);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.load(&pid("a")), None);
    }
}
