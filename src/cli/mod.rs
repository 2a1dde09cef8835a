//! Command lines.
//!
//! - `args`: the flags of the `tokenmint` binary (CONTRACT §1), re-exported here so
//!   `crate::cli::ServeArgs` and friends keep their paths.
//! - `kubectl tokenmint` (CONTRACT §11), the command line for the people who run tokenmint: the
//!   same binary invoked as `kubectl-tokenmint` ([`plugin`]). One module per sub-command
//!   ([`status`], [`inspect`], [`renew`], [`revoke`], [`check`], [`completion`]); each gathers
//!   a report through the API and renders it apart, so the text is testable; [`output`] holds
//!   the shared formatting, [`target`] the `KIND/NAME` arguments and the objects read,
//!   [`rights`] the API rights each command uses, [`annotate`] what renew and revoke share,
//!   [`connect`] the kubeconfig.

mod args;

pub mod annotate;
pub mod check;
pub mod completion;
pub mod connect;
pub mod inspect;
pub mod output;
pub mod plugin;
pub mod renew;
pub mod revoke;
pub mod rights;
pub mod status;
pub mod target;

pub use args::*;
