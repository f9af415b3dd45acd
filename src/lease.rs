//! Work that one process does at a time across every replica and CLI run (a collection pass, a
//! scrub pass): [`hold`] takes the lease `leases/<name>` (waiting while another process holds
//! it), renews it at a third of its time to live while the work runs, stops the work when the
//! lease is lost (taken over after it expired), and gives it up at the end; [`every`] runs such a
//! pass in the server at the period the configuration in force says. The reads and conditional
//! writes are `Registry::take_lease` and friends (`registry::collect`).

use std::future::Future;
use std::time::Duration;

use crate::config::Config;
use crate::registry::{Registry, RegistryError};

/// What [`hold`]'s work returned, and whether it first waited for another holder.
#[derive(Debug)]
pub struct Held<T> {
    /// The work's outcome.
    pub value: T,
    /// Whether another process held the lease and this one waited for it.
    pub waited: bool,
}

/// Runs `work` while holding the lease `name` (see the module doc).
pub async fn hold<T>(
    registry: &Registry,
    name: &str,
    ttl: Duration,
    work: impl Future<Output = Result<T, RegistryError>>,
) -> Result<Held<T>, RegistryError> {
    let holder = uuid::Uuid::new_v4().to_string();
    let mut waited = false;
    let etag = loop {
        if let Some(etag) = registry.take_lease(name, &holder, ttl).await? {
            break etag;
        }
        if !waited {
            tracing::info!(lease = name, "another process holds the lease; waiting for it");
        }
        waited = true;
        tokio::time::sleep((ttl / 4).min(Duration::from_secs(1))).await;
    };
    let held = std::sync::Mutex::new(etag);
    let renew = async {
        loop {
            tokio::time::sleep(ttl / 3).await;
            let current = held.lock().expect("lease lock is never poisoned").clone();
            match registry.renew_lease(name, &holder, &current, ttl).await {
                Ok(Some(etag)) => *held.lock().expect("lease lock is never poisoned") = etag,
                Ok(None) => return RegistryError::Unavailable(format!("the {name} lease was taken over; the pass stopped")),
                // A store that fails now may answer at the next renewal, before the lease ends.
                Err(err) => tracing::warn!(lease = name, error = %err, "cannot renew the lease"),
            }
        }
    };
    let outcome = tokio::select! {
        done = work => done,
        lost = renew => Err(lost),
    };
    let current = held.lock().expect("lease lock is never poisoned").clone();
    if let Err(err) = registry.release_lease(name, &current).await {
        tracing::warn!(lease = name, error = %err, "cannot release the lease; it expires on its own");
    }
    outcome.map(|value| Held { value, waited })
}

/// Runs `pass` every `period` of the configuration in force (read at each turn, so a reload
/// changes it), the first one period after start; while `period` is `None`, looks again each
/// minute.
pub async fn every<F: Future<Output = ()>>(registry: &Registry, period: impl Fn(&Config) -> Option<Duration>, mut pass: impl FnMut() -> F) {
    loop {
        let Some(every) = period(&registry.config()) else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        };
        tokio::time::sleep(every).await;
        pass().await;
    }
}
