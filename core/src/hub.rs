//! Which session currently holds which device: the routing table, as pure data.

use alloc::collections::BTreeMap;

use crate::message::DeviceId;

/// A connection's identity, chosen by the host (unique for the life of the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Device id -> current session, and back.
///
/// A device has at most one current session; registering it again displaces the older one,
/// which the host then closes as superseded. Only the current session's end removes the device.
#[derive(Clone, Debug, Default)]
pub struct Hub {
    by_device: BTreeMap<DeviceId, SessionId>,
    by_session: BTreeMap<SessionId, DeviceId>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `session` the device's current session. Returns the session it displaced, if any:
    /// the host tells that one it is superseded.
    pub fn register(&mut self, session: SessionId, device: DeviceId) -> Option<SessionId> {
        // A session holds one device: re-registering under another id drops the old route.
        self.remove(session);
        let displaced = self.by_device.insert(device.clone(), session);
        if let Some(old) = displaced {
            self.by_session.remove(&old);
        }
        self.by_session.insert(session, device);
        displaced
    }

    /// The device's current session, if it is connected.
    pub fn route(&self, device: &DeviceId) -> Option<SessionId> {
        self.by_device.get(device).copied()
    }

    /// Forgets `session`. Returns its device only if `session` was still the device's current
    /// one: then, and only then, is the device really disconnected.
    pub fn remove(&mut self, session: SessionId) -> Option<DeviceId> {
        let device = self.by_session.remove(&session)?;
        if self.by_device.get(&device) == Some(&session) {
            self.by_device.remove(&device);
            Some(device)
        } else {
            None
        }
    }

    /// The device a session currently holds.
    pub fn device_of(&self, session: SessionId) -> Option<&DeviceId> {
        self.by_session.get(&session)
    }

    /// How many devices are connected.
    pub fn len(&self) -> usize {
        self.by_device.len()
    }

    /// Whether no device is connected.
    pub fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    /// Every connected device with its session.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, SessionId)> {
        self.by_device.iter().map(|(d, s)| (d, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str) -> DeviceId {
        DeviceId(id.into())
    }

    #[test]
    fn registered_device_is_routable() {
        let mut hub = Hub::new();
        assert_eq!(hub.register(SessionId(1), dev("a")), None);
        assert_eq!(hub.route(&dev("a")), Some(SessionId(1)));
        assert_eq!(hub.route(&dev("b")), None);
    }

    #[test]
    fn newer_registration_displaces_the_older_session() {
        let mut hub = Hub::new();
        hub.register(SessionId(1), dev("a"));
        assert_eq!(hub.register(SessionId(2), dev("a")), Some(SessionId(1)));
        assert_eq!(hub.route(&dev("a")), Some(SessionId(2)));
    }

    #[test]
    fn displaced_session_end_does_not_remove_the_device() {
        let mut hub = Hub::new();
        hub.register(SessionId(1), dev("a"));
        hub.register(SessionId(2), dev("a"));
        assert_eq!(hub.remove(SessionId(1)), None);
        assert_eq!(hub.route(&dev("a")), Some(SessionId(2)));
        assert_eq!(hub.remove(SessionId(2)), Some(dev("a")));
        assert!(hub.is_empty());
    }

    #[test]
    fn session_switching_device_frees_the_old_id() {
        let mut hub = Hub::new();
        hub.register(SessionId(1), dev("a"));
        hub.register(SessionId(1), dev("b"));
        assert_eq!(hub.route(&dev("a")), None);
        assert_eq!(hub.device_of(SessionId(1)), Some(&dev("b")));
        assert_eq!(hub.len(), 1);
    }

    #[test]
    fn counts_connected_devices_not_sessions() {
        let mut hub = Hub::new();
        assert!(hub.is_empty());
        hub.register(SessionId(1), dev("a"));
        hub.register(SessionId(2), dev("b"));
        hub.register(SessionId(3), dev("b"));
        assert_eq!(hub.len(), 2);
        assert!(!hub.is_empty());
        let mut listed: alloc::vec::Vec<_> = hub.iter().map(|(d, s)| (d.clone(), s)).collect();
        listed.sort_by_key(|(_, s)| s.0);
        assert_eq!(listed, [(dev("a"), SessionId(1)), (dev("b"), SessionId(3))]);
    }

    #[test]
    fn unknown_session_removal_is_a_no_op() {
        let mut hub = Hub::new();
        assert_eq!(hub.remove(SessionId(9)), None);
    }
}
