//! The subcommands, each a function taking its parsed arguments.

pub mod build;
pub mod fetch;
pub mod flash;
pub mod images;
pub mod init;
pub mod inspect;
pub mod kubeconfig;
pub mod plan;
pub mod status;
