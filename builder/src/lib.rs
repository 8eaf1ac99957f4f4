//! picluster: build ready-to-flash Raspberry Pi OS images for a K3s cluster.

pub mod agent;
pub mod assemble;
pub mod atomic;
pub mod base;
pub mod bmap;
pub mod bootfiles;
pub mod bootfs;
pub mod cache;
pub mod cli;
pub mod cmd;
pub mod compress;
pub mod copy;
pub mod decompress;
pub mod digest;
pub mod fetch;
pub mod flash;
pub mod interrupt;
pub mod k3s;
pub mod nodemap;
pub mod obtain;
pub mod partition;
pub mod progress;
pub mod region;
pub mod rootfs;
pub mod usedblocks;
pub mod writeback;
