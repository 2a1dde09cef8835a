//! REST routes of `tokenmint serve`.
