//! The sample cluster file `picluster init` writes, and the example key in it
//! that validation refuses until the user puts their own.

/// The commented sample cluster file `picluster init` writes.
pub const SAMPLE_CLUSTER: &str = include_str!("../examples/cluster.toml");

/// The example key in [`SAMPLE_CLUSTER`], replaced by `picluster init` with the user's own.
pub const SAMPLE_SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAY6kRfOp9z+7vh4YP9lIZNJ7Ul58UKL/YKalSULXWUA example@picluster";
