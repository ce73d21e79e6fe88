//! Guest inspection and rewriting: what a Linux guest names of its old hardware, and the
//! edits that move it to a new target (KVM with virtio, KVM with virtio-scsi, or physical
//! hardware).
//!
//! The crate is layered so every piece can be tested on plain text and bytes:
//! - [`devname`] parses and prints device names (`/dev/sda1`, `UUID=...`, `/dev/xvda`);
//! - [`context`] holds what a conversion knows (target, the guest's volumes, MAC plan) and
//!   answers "what does this old device name become";
//! - [`edit`] is the record of every change and warning, for reports and `--dry-run`;
//! - the patchers (`patch::*`) turn one file's text into new text plus edits;
//! - `initramfs` reads and rewrites initramfs archives; `inspect` describes the guest.
//!
//! Patchers never touch a filesystem: the orchestration above them reads guest files,
//! calls them, and writes the results through the `fs` crate into an overlay.

pub mod context;
pub mod devname;
pub mod diff;
pub mod edit;
pub mod guest_files;
pub mod initramfs;
pub mod inspect;
pub mod net;
pub mod patch;
pub mod v2v;

pub use context::{Context, DeviceNaming, GuestVolume, MacFate, NetworkMode, Target};
pub use devname::{Bus, DevRef};
pub use edit::{Edit, LineEditor, Patched, Warning};
pub use guest_files::{GuestFiles, GuestFilesMut, MemGuest};
