//! `tokenmint serve`: not yet available.

use crate::cli::ServeArgs;

pub async fn run(_args: ServeArgs) -> Result<(), crate::BoxError> {
    Err("`tokenmint serve` is not yet available in this build".into())
}
