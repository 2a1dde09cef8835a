//! `kubectl tokenmint` over the fake API server: every sub-command's output and exit code, the
//! rights each command uses, the binary run by its plugin name, and the README's examples.

mod annotate;
mod binary;
mod check;
mod inspect;
mod readme;
mod rights;
mod status;
#[path = "../support/mod.rs"]
mod support;
mod world;
