//! Throttling of failed logins, per client address and per user name.
//!
//! A fixed window per key: after `limit` failures within `window`, the key is blocked until the
//! window that saw its first failure ends. Only failures count; the caller checks
//! [`LoginLimiter::blocked`] before trying credentials, so a blocked client cannot even guess.
//! Time is passed in, so tests need no clock. The HTTP side (a tower layer that refuses a blocked
//! address before the request is read) is in `api::auth`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the login throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failed logins one client address may make per window.
    pub per_address: u32,
    /// Failed logins against one user name per window.
    pub per_user: u32,
    /// Length of the window.
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { per_address: 20, per_user: 10, window: Duration::from_secs(300) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

/// Keys kept before expired windows are swept.
const SWEEP_AT: usize = 10_000;

/// Failure counts, shared by every request (and kept across configuration reloads).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    windows: Mutex<HashMap<Key, (u32, Instant)>>,
}

impl LoginLimiter {
    /// How long `address` is still blocked, if it is.
    pub fn address_blocked(&self, config: &ThrottleConfig, address: IpAddr, now: Instant) -> Option<Duration> {
        self.blocked(Key::Address(address), config.per_address, config.window, now)
    }

    /// How long `user` is still blocked, if it is.
    pub fn user_blocked(&self, config: &ThrottleConfig, user: &str, now: Instant) -> Option<Duration> {
        self.blocked(Key::User(user.to_owned()), config.per_user, config.window, now)
    }

    /// Counts one failed login of `user` (when known) from `address`.
    pub fn record_failure(&self, config: &ThrottleConfig, address: IpAddr, user: Option<&str>, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (_, started)| now.saturating_duration_since(*started) < config.window);
        }
        let keys = std::iter::once(Key::Address(address)).chain(user.map(|user| Key::User(user.to_owned())));
        for key in keys {
            let entry = windows.entry(key).or_insert((0, now));
            if now.saturating_duration_since(entry.1) >= config.window {
                *entry = (0, now);
            }
            entry.0 = entry.0.saturating_add(1);
        }
    }

    fn blocked(&self, key: Key, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (failures, started) = windows.get(&key)?;
        let elapsed = now.saturating_duration_since(*started);
        (*failures >= limit && elapsed < window).then(|| window - elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let config = ThrottleConfig { per_address: 3, per_user: 2, window: Duration::from_secs(60) };
        let limiter = LoginLimiter::default();
        let start = Instant::now();
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "127.0.0.2".parse().unwrap();

        limiter.record_failure(&config, here, Some("alice"), start);
        assert_eq!(limiter.user_blocked(&config, "alice", start), None);
        limiter.record_failure(&config, here, Some("alice"), start + Duration::from_secs(1));
        assert_eq!(limiter.user_blocked(&config, "alice", start + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(limiter.user_blocked(&config, "bob", start), None);
        assert_eq!(limiter.address_blocked(&config, here, start), None);
        limiter.record_failure(&config, here, None, start + Duration::from_secs(2));
        assert!(limiter.address_blocked(&config, here, start + Duration::from_secs(2)).is_some());
        assert_eq!(limiter.address_blocked(&config, there, start), None);

        // The window ends: both are free again, and counting starts over.
        let later = start + Duration::from_secs(61);
        assert_eq!(limiter.user_blocked(&config, "alice", later), None);
        assert_eq!(limiter.address_blocked(&config, here, later), None);
        limiter.record_failure(&config, here, Some("alice"), later);
        assert_eq!(limiter.user_blocked(&config, "alice", later), None);
    }
}
