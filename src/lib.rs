//! tokenmint: mints vendor-style API tokens (JWTs) into Kubernetes Secrets and keeps them fresh.
//!
//! Module map:
//! - [`crd`]: the three custom resources and their status types (what users write).
//! - [`consumers`]: the workloads that read each token Secret, and how (the operator's
//!   workload watch and its index).
//! - [`token`]: pure token logic: claim layouts, durations, renewal arithmetic, filter validation.
//! - [`keyring`]: signing keys, JWT signing/verification and the JWKS.
//! - [`key_store`]: the ServiceKeys (by key digest) and the keyring that the REST routes and
//!   the token-file agent look up.

pub mod admission;
pub mod agent;
pub mod cli;
pub mod clock;
pub mod consumers;
pub mod crd;
pub mod desired;
pub mod fence;
pub mod http;
pub mod key_store;
pub mod keyring;
pub mod labels;
pub mod manifests;
pub mod operator;
pub mod outage;
pub mod private_file;
pub mod reconcile;
pub mod revocation;
pub mod serve;
pub mod stop;
pub mod telemetry;
pub mod token;
pub mod tokenreview;
pub mod watch;

/// The error of a subcommand: printed to the user and turned into a non-zero exit code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
