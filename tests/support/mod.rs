//! Shared test support: a fake Kubernetes API server, an operator replica against it, and
//! in-process helpers.
#![allow(dead_code)]

pub mod fake_api;
pub mod inproc;
pub mod operator;
