//! Tokens already verified: devices reconnect with the same token, and after a restart all of
//! them do at once. An RSA verification per reconnect is what made the original server slow;
//! remembering the verdict makes a reconnect storm cost a hash and a map lookup per device.
//!
//! - Keyed by the SHA-256 of the device id and the token together, never the token itself: the
//!   cache holds no credential, and a hit means that this device offered this exact token
//!   before and it passed (its `sub` is this device). The same token offered by another device
//!   misses and is verified in full, which refuses it as before.
//! - What is kept is what the claims check needs again: the time window (`nbf`, `exp`, leeway
//!   applied). Expiry is re-checked at every use, so a cached token expires exactly when an
//!   uncached one would.
//! - Only accepted tokens are cached; a refused token is verified again each time (its cost is
//!   the sender's problem, and caching refusals would let junk evict good entries).
//! - Bounded: when full, the entry used longest ago goes (approximately: a second-chance clock
//!   over the slots), so a flood of fresh tokens cannot grow memory.
//! - Small, since a server keeps one entry per device it serves: 56 bytes a slot and a 16-byte
//!   index entry keyed by the key's first 8 bytes (the slot holds the whole key, so two keys
//!   sharing those bytes cannot be taken for each other; the later one takes the place).
//! - One cache per verifier, and a verifier has one key for life: a new key means a new
//!   verifier, hence an empty cache.

use std::collections::HashMap;
use std::sync::Mutex;

use iot_ws_core::{DeviceId, TokenRejected, UnixSeconds};
use sha2::{Digest, Sha256};

/// Entries kept by default: a platform instance holds tens of thousands of devices.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// SHA-256 of a device id and a token (see [`TokenCache::key`]).
pub type Key = [u8; 32];

/// The seconds a verified token is valid in, leeway applied: `from <= now < until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// `nbf` less the leeway; `i64::MIN` without `nbf`.
    pub from: i64,
    /// `exp` plus the leeway; `i64::MAX` without `exp` (no second reaches it).
    pub until: i64,
}

impl Window {
    /// The same verdict `check_claims` gave, at `now`.
    pub fn check(&self, now: UnixSeconds) -> Result<(), TokenRejected> {
        if now.0 >= self.until {
            return Err(TokenRejected::Expired);
        }
        if now.0 < self.from {
            return Err(TokenRejected::NotYetValid);
        }
        Ok(())
    }
}

struct Slot {
    key: Key,
    window: Window,
    /// Used since the clock hand last passed: spared once.
    recent: bool,
}

struct Inner {
    /// The first 8 bytes of a slot's key → the slot.
    index: HashMap<u64, u32>,
    slots: Vec<Slot>,
    hand: usize,
}

/// A bounded map from (device, token) to the token's validity window.
pub struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// A removed slot's key: no SHA-256 output is expected to be all zeros.
const NO_KEY: Key = [0; 32];

fn short(key: &Key) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_le_bytes(first)
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        let capacity = capacity.min(u32::MAX as usize);
        let inner = Inner { index: HashMap::new(), slots: Vec::new(), hand: 0 };
        TokenCache { capacity, inner: Mutex::new(inner) }
    }

    /// The key of `token` offered by `device`: the id's length first, so that no two
    /// (id, token) pairs hash the same bytes.
    pub fn key(device: &DeviceId, token: &str) -> Key {
        let id = device.as_str().as_bytes();
        let mut hasher = Sha256::new();
        hasher.update((id.len() as u64).to_le_bytes());
        hasher.update(id);
        hasher.update(token.as_bytes());
        hasher.finalize().into()
    }

    /// The token's window, if this device's token was verified before.
    pub fn get(&self, key: &Key) -> Option<Window> {
        let mut inner = self.lock();
        let i = *inner.index.get(&short(key))? as usize;
        let slot = &mut inner.slots[i];
        if slot.key != *key {
            return None;
        }
        slot.recent = true;
        Some(slot.window)
    }

    /// Remembers a verified token, evicting one entry if full.
    pub fn insert(&self, key: Key, window: Window) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some(&i) = inner.index.get(&short(&key)) {
            let slot = &mut inner.slots[i as usize];
            slot.key = key;
            slot.window = window;
            return;
        }
        let slot = Slot { key, window, recent: false };
        let i = if inner.slots.len() < self.capacity {
            inner.slots.push(slot);
            inner.slots.len() - 1
        } else {
            let victim = inner.evict();
            let old = short(&inner.slots[victim].key);
            // A removed slot's index entry is gone already, and its zero key may be another's.
            if inner.index.get(&old) == Some(&(victim as u32)) {
                inner.index.remove(&old);
            }
            inner.slots[victim] = slot;
            victim
        };
        inner.index.insert(short(&key), i as u32);
    }

    /// Forgets a token (one that no longer passes, so it is not looked up again).
    pub fn remove(&self, key: &Key) {
        let mut inner = self.lock();
        let Some(&i) = inner.index.get(&short(key)) else { return };
        let slot = &mut inner.slots[i as usize];
        if slot.key != *key {
            return;
        }
        // Leave the slot in place (indices stay valid); make it the next victim.
        slot.key = NO_KEY;
        slot.recent = false;
        inner.index.remove(&short(key));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that
        // matters: at worst an entry is missing and the token is verified again.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// The clock: skip (and clear) recently used slots, take the first that is not.
    fn evict(&mut self) -> usize {
        loop {
            let i = self.hand % self.slots.len();
            self.hand = i + 1;
            if !std::mem::replace(&mut self.slots[i].recent, false) {
                return i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(from: i64, until: i64) -> Window {
        Window { from, until }
    }

    const ALWAYS: Window = Window { from: i64::MIN, until: i64::MAX };

    fn key(device: &str, token: &str) -> Key {
        TokenCache::key(&DeviceId(device.into()), token)
    }

    /// A key sharing `other`'s first 8 bytes (its index entry) and nothing else.
    fn twin(other: &Key) -> Key {
        let mut twin = *other;
        twin[31] ^= 1;
        twin
    }

    #[test]
    fn a_cached_token_is_found_for_its_own_device_only() {
        let cache = TokenCache::new(4);
        let k = key("d1", "a.b.c");
        assert_eq!(cache.get(&k), None);
        cache.insert(k, ALWAYS);
        assert_eq!(cache.get(&k), Some(ALWAYS));
        assert_eq!(cache.get(&key("d1", "a.b.d")), None, "another token");
        assert_eq!(cache.get(&key("d2", "a.b.c")), None, "the same token, another device");
        // The id's length is hashed in: "d1" + "2a.b" is not "d12" + "a.b".
        assert_ne!(key("d1", "2a.b"), key("d12", "a.b"));
    }

    #[test]
    fn the_window_is_rechecked_at_every_use() {
        let w = window(100, 200);
        assert_eq!(w.check(UnixSeconds(99)), Err(TokenRejected::NotYetValid));
        assert_eq!(w.check(UnixSeconds(100)), Ok(()));
        assert_eq!(w.check(UnixSeconds(199)), Ok(()));
        assert_eq!(w.check(UnixSeconds(200)), Err(TokenRejected::Expired));
        assert_eq!(ALWAYS.check(UnixSeconds(i64::MAX - 1)), Ok(()));
        assert_eq!(ALWAYS.check(UnixSeconds(i64::MIN)), Ok(()));
    }

    #[test]
    fn keys_sharing_an_index_entry_are_never_taken_for_each_other() {
        let cache = TokenCache::new(4);
        let k = key("d1", "t");
        cache.insert(k, window(1, 2));
        assert_eq!(cache.get(&twin(&k)), None, "the slot holds the whole key");
        cache.remove(&twin(&k));
        assert_eq!(cache.get(&k), Some(window(1, 2)), "removing the twin leaves the entry");
        cache.insert(twin(&k), window(3, 4));
        assert_eq!((cache.get(&twin(&k)), cache.get(&k)), (Some(window(3, 4)), None), "the later one takes the place");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn inserting_again_updates_the_window() {
        let cache = TokenCache::new(4);
        let k = key("d", "t");
        cache.insert(k, window(1, 2));
        cache.insert(k, window(5, 6));
        assert_eq!((cache.get(&k), cache.len()), (Some(window(5, 6)), 1));
    }

    #[test]
    fn a_full_cache_evicts_an_entry_not_used_recently() {
        let cache = TokenCache::new(3);
        let k: Vec<Key> = (0..5).map(|i| key("d", &format!("t{i}"))).collect();
        for k in &k[..3] {
            cache.insert(*k, ALWAYS);
        }
        assert!(cache.get(&k[0]).is_some());
        cache.insert(k[3], ALWAYS);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&k[0]).is_some(), "recently used: spared");
        assert!(cache.get(&k[1]).is_none(), "oldest unused: evicted");
        assert!(cache.get(&k[2]).is_some() && cache.get(&k[3]).is_some());
        for k in &k {
            cache.insert(*k, ALWAYS);
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn removed_tokens_are_gone_and_their_slot_is_reused() {
        let cache = TokenCache::new(2);
        let (a, b, c) = (key("d", "a"), key("d", "b"), key("d", "c"));
        cache.insert(a, ALWAYS);
        cache.insert(b, ALWAYS);
        cache.remove(&a);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.len(), 1);
        cache.insert(c, ALWAYS);
        assert!(cache.get(&b).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn evicting_a_removed_slot_leaves_other_entries_indexed() {
        // A removed slot's key is all zeros; an entry whose key starts with 8 zero bytes must
        // keep its index entry when that slot is reused.
        let cache = TokenCache::new(2);
        let zeros = {
            let mut k = [0; 32];
            k[31] = 7;
            k
        };
        let a = key("d", "a");
        cache.insert(a, ALWAYS);
        cache.insert(zeros, ALWAYS);
        cache.remove(&a);
        cache.insert(key("d", "b"), ALWAYS);
        assert_eq!(cache.get(&zeros), Some(ALWAYS));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let cache = TokenCache::new(0);
        cache.insert(key("d", "a"), ALWAYS);
        assert_eq!(cache.len(), 0);
    }
}
