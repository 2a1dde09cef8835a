//! Shared test support: a fake Kubernetes API server.
#![allow(dead_code)]

pub mod fake_api;
pub mod operator;
