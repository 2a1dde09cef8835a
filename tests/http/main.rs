//! The REST routes of `tokenmint serve`: one test binary, split by concern.

mod binding;
mod cluster;
mod common;
mod keyless;
mod manifests;
mod props;
mod revocation;
mod routes;
mod socket;
#[path = "../support/mod.rs"]
mod support;
mod tenancy;
