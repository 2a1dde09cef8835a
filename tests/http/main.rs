//! The REST routes of `tokenmint serve` (issue 4): one test binary, split by concern.

mod cluster;
mod common;
mod manifests;
mod props;
mod routes;
mod socket;
