//! picluster: build ready-to-flash Raspberry Pi OS images for a K3s cluster.

pub mod base;
pub mod bmap;
pub mod bootfs;
pub mod flash;
pub mod partition;
pub mod region;
pub mod rootfs;
pub mod usedblocks;
