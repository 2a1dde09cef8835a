//! Reconcilers of the three kinds (the operator).
