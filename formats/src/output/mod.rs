//! Outputs of `convert`: where copied extents go. Every output appears whole or not at
//! all: it is written under a temporary name in the destination's folder and renamed only
//! after an fsync, so a crash or Ctrl-C never leaves a half image under the final name.

pub mod device;
pub mod qcow2;
pub mod raw;
pub mod staged;
pub mod vhdx;
pub mod vmdk;
pub mod writepool;

pub use device::{DeviceOptions, DeviceSink};
pub use qcow2::{Qcow2Options, Qcow2Sink};
pub use raw::RawSink;
pub use staged::StagedFile;
pub use vhdx::{VhdxOptions, VhdxSink};
pub use vmdk::{VmdkOptions, VmdkSparseSink, VmdkStreamSink};
