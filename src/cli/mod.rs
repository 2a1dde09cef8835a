//! Command lines. `args`: the flags of the `tokenmint` binary (CONTRACT §1), re-exported here
//! so `crate::cli::ServeArgs` and friends keep their paths.

mod args;

pub use args::*;
