//! Route handlers, one module per vendor whose documented routes they serve.

pub mod databrain;
pub mod datasentinel;
pub mod nexla;
pub mod nibi;
pub mod oauth;
pub mod system;

use super::error::{ApiError, Flavor};
use crate::keyring::Keyring;
use crate::token::mint::Minter;

/// A minter over the current keyring and the configured issuer.
pub(crate) fn minter<'a>(keyring: &'a Keyring, issuer: &'a str) -> Minter<'a> {
    Minter { keyring, issuer }
}

/// Signing failures are ours, not the client's.
pub(crate) fn signing_failed(flavor: Flavor, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(flavor, format_args!("signing failed: {e}"))
}
