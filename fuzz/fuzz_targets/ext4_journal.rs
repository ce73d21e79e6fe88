#![no_main]
//! JBD2 journal recovery on hostile bytes: the input is a journal (block 0 its superblock),
//! replayed for a filesystem of a fixed size. Errors are expected; any panic, hang or
//! unbounded allocation is a finding.

use libfuzzer_sys::fuzz_target;
use transplant_fs::ext4::journal_replay::replay_bytes;

fuzz_target!(|data: &[u8]| {
    let _ = replay_bytes(data, 1 << 20);
});
