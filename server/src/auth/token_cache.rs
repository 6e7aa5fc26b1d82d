//! Tokens already verified: devices reconnect with the same token, and after a restart all of
//! them do at once. An RSA verification per reconnect is what made the original server slow;
//! remembering the verdict makes a reconnect storm cost a hash and a map lookup per device.
//!
//! - Keyed by the SHA-256 of the token, never the token itself: the cache holds no credential.
//! - What is kept is what the claims check needs again: the device id (`sub`) and the time
//!   window (`nbf`, `exp`, leeway applied). Expiry is re-checked at every use, so a cached token
//!   expires exactly when an uncached one would.
//! - Only accepted tokens are cached; a refused token is verified again each time (its cost is
//!   the sender's problem, and caching refusals would let junk evict good entries).
//! - Bounded: when full, the entry used longest ago goes (approximately: a second-chance clock
//!   over the slots), so a flood of fresh tokens cannot grow memory.
//! - One cache per verifier, and a verifier has one key for life: a new key means a new
//!   verifier, hence an empty cache.

use std::collections::HashMap;
use std::sync::Mutex;

use iot_ws_core::{DeviceId, TokenRejected, UnixSeconds};
use sha2::{Digest, Sha256};

/// Entries kept by default: a platform instance holds tens of thousands of devices.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// What a verified token admits, for re-checking without the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admits {
    pub device: DeviceId,
    /// First second of validity (`nbf` minus leeway); `None`: no `nbf`.
    pub from: Option<i64>,
    /// First second of invalidity (`exp` plus leeway); `None`: never expires.
    pub until: Option<i64>,
}

impl Admits {
    /// The same verdict `check_claims` gave, at `now`.
    pub fn check(&self, device: &DeviceId, now: UnixSeconds) -> Result<(), TokenRejected> {
        if self.device != *device {
            return Err(TokenRejected::Subject);
        }
        if self.until.is_some_and(|until| now.0 >= until) {
            return Err(TokenRejected::Expired);
        }
        if self.from.is_some_and(|from| now.0 < from) {
            return Err(TokenRejected::NotYetValid);
        }
        Ok(())
    }
}

struct Slot {
    hash: TokenHash,
    admits: Admits,
    /// Used since the clock hand last passed: spared once.
    recent: bool,
}

struct Inner {
    index: HashMap<TokenHash, usize>,
    slots: Vec<Slot>,
    hand: usize,
}

/// A bounded map from token hash to what the token admits.
pub struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        let inner = Inner { index: HashMap::new(), slots: Vec::new(), hand: 0 };
        TokenCache { capacity, inner: Mutex::new(inner) }
    }

    pub fn hash(token: &str) -> TokenHash {
        Sha256::digest(token.as_bytes()).into()
    }

    /// What the token admits, if it was verified before.
    pub fn get(&self, hash: &TokenHash) -> Option<Admits> {
        let mut inner = self.lock();
        let i = *inner.index.get(hash)?;
        let slot = &mut inner.slots[i];
        slot.recent = true;
        Some(slot.admits.clone())
    }

    /// Remembers a verified token, evicting one entry if full.
    pub fn insert(&self, hash: TokenHash, admits: Admits) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some(&i) = inner.index.get(&hash) {
            inner.slots[i].admits = admits;
            return;
        }
        let slot = Slot { hash, admits, recent: false };
        if inner.slots.len() < self.capacity {
            let i = inner.slots.len();
            inner.slots.push(slot);
            inner.index.insert(hash, i);
            return;
        }
        let victim = inner.evict();
        let old = inner.slots[victim].hash;
        inner.index.remove(&old);
        inner.slots[victim] = slot;
        inner.index.insert(hash, victim);
    }

    /// Forgets a token (one that no longer passes, so it is not looked up again).
    pub fn remove(&self, hash: &TokenHash) {
        let mut inner = self.lock();
        if let Some(i) = inner.index.remove(hash) {
            // Leave the slot in place (indices stay valid); make it the next victim.
            inner.slots[i].hash = [0; 32];
            inner.slots[i].recent = false;
        }
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

    fn admits(device: &str, from: Option<i64>, until: Option<i64>) -> Admits {
        Admits { device: DeviceId(device.into()), from, until }
    }

    fn dev(d: &str) -> DeviceId {
        DeviceId(d.into())
    }

    #[test]
    fn a_cached_token_is_found_by_its_hash_only() {
        let cache = TokenCache::new(4);
        let h = TokenCache::hash("a.b.c");
        assert_eq!(cache.get(&h), None);
        cache.insert(h, admits("d1", None, None));
        assert_eq!(cache.get(&h), Some(admits("d1", None, None)));
        assert_eq!(cache.get(&TokenCache::hash("a.b.d")), None);
    }

    #[test]
    fn expiry_and_not_before_are_rechecked_at_every_use() {
        let a = admits("d1", Some(100), Some(200));
        assert_eq!(a.check(&dev("d1"), UnixSeconds(99)), Err(TokenRejected::NotYetValid));
        assert_eq!(a.check(&dev("d1"), UnixSeconds(100)), Ok(()));
        assert_eq!(a.check(&dev("d1"), UnixSeconds(199)), Ok(()));
        assert_eq!(a.check(&dev("d1"), UnixSeconds(200)), Err(TokenRejected::Expired));
        assert_eq!(a.check(&dev("d2"), UnixSeconds(150)), Err(TokenRejected::Subject));
        assert_eq!(admits("d1", None, None).check(&dev("d1"), UnixSeconds(i64::MAX)), Ok(()));
    }

    #[test]
    fn a_full_cache_evicts_an_entry_not_used_recently() {
        let cache = TokenCache::new(3);
        let h: Vec<TokenHash> = (0..5).map(|i| TokenCache::hash(&format!("t{i}"))).collect();
        for h in &h[..3] {
            cache.insert(*h, admits("d", None, None));
        }
        assert!(cache.get(&h[0]).is_some());
        cache.insert(h[3], admits("d", None, None));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&h[0]).is_some(), "recently used: spared");
        assert!(cache.get(&h[1]).is_none(), "oldest unused: evicted");
        for h in &h {
            cache.insert(*h, admits("d", None, None));
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn removed_tokens_are_gone_and_their_slot_is_reused() {
        let cache = TokenCache::new(2);
        let (a, b, c) = (TokenCache::hash("a"), TokenCache::hash("b"), TokenCache::hash("c"));
        cache.insert(a, admits("d", None, None));
        cache.insert(b, admits("d", None, None));
        cache.remove(&a);
        assert_eq!(cache.get(&a), None);
        cache.insert(c, admits("d", None, None));
        assert!(cache.get(&b).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_zero_capacity_cache_keeps_nothing() {
        let cache = TokenCache::new(0);
        cache.insert(TokenCache::hash("a"), admits("d", None, None));
        assert_eq!(cache.len(), 0);
    }
}
