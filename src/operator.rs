//! `tokenmint operator`: not yet available.

use crate::cli::OperatorArgs;

pub async fn run(_args: OperatorArgs) -> Result<(), crate::BoxError> {
    Err("`tokenmint operator` is not yet available in this build".into())
}
