//! portcullis: a private OCI Distribution v1.1 registry with tag rules and promotion gates.
//!
//! Modules in reading order: configuration, the HTTP server and API, the registry's domain core,
//! the store's layout and typed access to it (`metadata`, over crate `storage`), the names
//! everything is keyed by, metrics, promotion, and the proxy (the only code that talks to other
//! registries).

pub mod cli;
pub mod client;
pub mod config;
pub mod logging;
pub mod server;
pub mod tls;
pub mod api;
pub mod console;
pub mod auth;
pub mod registry;
pub mod metadata;
pub mod names;
pub mod human;
pub mod policy;
pub mod metrics;
pub mod promote;
pub mod proxy;
pub mod admission;
pub mod fsck;
pub mod gc;
pub mod lease;
pub mod scrub;
pub mod signing;
