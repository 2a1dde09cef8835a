//! Pure token logic, free of Kubernetes and I/O so it is unit tested in isolation.

pub mod assess;
pub mod claims;
pub mod duration;
pub mod filter;
pub mod mint;
pub mod renew;
