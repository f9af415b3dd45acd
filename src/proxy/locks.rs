//! Single flight for small upstream work (a manifest fetch, a tag check): requests for the same
//! key wait on one lock, and each looks again at what the one before it stored before it asks
//! the upstream, so concurrent pulls of one tag cost the upstream one request. A waiter that
//! gives up (its client left) just stops waiting; the holder's work is not shared state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The locks in use, by key; entries whose lock nobody holds or waits for are dropped.
#[derive(Default)]
pub struct Locks {
    held: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Map size beyond which dead entries are swept.
const SWEEP_AT: usize = 1024;

impl Locks {
    /// Waits for the lock of `key`.
    pub async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut held = self.held.lock().expect("locks map is never poisoned");
            if held.len() >= SWEEP_AT {
                held.retain(|_, lock| lock.strong_count() > 0);
            }
            match held.get(&key).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    held.insert(key, Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key() {
        let locks = Arc::new(Locks::default());
        let first = locks.lock("a".into()).await;
        // Another key is free.
        drop(locks.lock("b".into()).await);
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { drop(locks.lock("a".into()).await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second holder waits");
        drop(first);
        waiting.await.unwrap();
        assert!(locks.held.lock().unwrap().values().all(|lock| lock.strong_count() == 0));
    }
}
