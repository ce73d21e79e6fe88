//! Journals built block by block, for what real tools do not write on demand: hostile
//! logs (loops, tags off the block or the filesystem, bad checksums), sequence numbers
//! that wrap, a log that wraps around the ring, pending fast commits. The layouts follow
//! the kernel's; real journals are tested against e2fsck in fs/tests/ext4_journal_replay.rs.

use super::be::{crc32_be, put_be32};
use super::jsb::{blocktype, feature, MAGIC};
use super::replay_bytes;
use crate::error::Error;
use crate::ext4::csum::crc32c;

const BS: usize = 1024;
const UUID: [u8; 16] = *b"0123456789abcdef";

struct J {
    incompat: u32,
    blocks: Vec<Vec<u8>>,
    seed: u32,
}

fn header(b: &mut [u8], kind: u32, seq: u32) {
    put_be32(b, 0, MAGIC);
    put_be32(b, 4, kind);
    put_be32(b, 8, seq);
}

impl J {
    /// A journal of `len` blocks whose log starts at block `start` with transaction `seq`.
    fn new(len: usize, compat: u32, incompat: u32, start: u32, seq: u32) -> J {
        let mut sb = vec![0u8; BS];
        header(&mut sb, blocktype::SUPERBLOCK_V2, 0);
        put_be32(&mut sb, 0xC, BS as u32);
        put_be32(&mut sb, 0x10, len as u32);
        put_be32(&mut sb, 0x14, 1);
        put_be32(&mut sb, 0x18, seq);
        put_be32(&mut sb, 0x1C, start);
        put_be32(&mut sb, 0x24, compat);
        put_be32(&mut sb, 0x28, incompat);
        sb[0x30..0x40].copy_from_slice(&UUID);
        let mut j = J {
            incompat,
            blocks: vec![vec![0u8; BS]; len],
            seed: crc32c(!0, &UUID),
        };
        if j.csum() {
            sb[0x50] = 4;
            let c = crc32c(!0, &sb);
            put_be32(&mut sb, 0xFC, c);
        }
        j.blocks[0] = sb;
        j
    }

    fn csum(&self) -> bool {
        self.incompat & (feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3) != 0
    }

    fn v3(&self) -> bool {
        self.incompat & feature::INCOMPAT_CSUM_V3 != 0
    }

    fn is64(&self) -> bool {
        self.incompat & feature::INCOMPAT_64BIT != 0
    }

    fn tag_bytes(&self) -> usize {
        if self.v3() {
            16
        } else {
            let b = if self.incompat & feature::INCOMPAT_CSUM_V2 != 0 {
                14
            } else {
                12
            };
            if self.is64() {
                b
            } else {
                b - 4
            }
        }
    }

    fn tail(&self, b: &mut [u8]) {
        if self.csum() {
            put_be32(b, BS - 4, 0);
            let c = crc32c(self.seed, b);
            put_be32(b, BS - 4, c);
        }
    }

    /// A descriptor at `at` for transaction `seq` logging `data` (home, contents, flags)
    /// in the blocks after it; returns the block after the last.
    fn txn(&mut self, at: usize, seq: u32, data: &[(u64, Vec<u8>, u16)]) -> usize {
        let mut d = vec![0u8; BS];
        header(&mut d, blocktype::DESCRIPTOR, seq);
        let tb = self.tag_bytes();
        let mut off = 12;
        for (i, (home, content, flags)) in data.iter().enumerate() {
            let mut flags = *flags | 0x2; // SAME_UUID
            if i + 1 == data.len() {
                flags |= 0x8;
            }
            put_be32(&mut d, off, *home as u32);
            if self.v3() {
                put_be32(&mut d, off + 4, flags as u32);
                put_be32(&mut d, off + 8, (*home >> 32) as u32);
                let c = crc32c(crc32c(self.seed, &seq.to_be_bytes()), content);
                put_be32(&mut d, off + 12, c);
            } else {
                d[off + 6..off + 8].copy_from_slice(&flags.to_be_bytes());
                if self.csum() {
                    let c = crc32c(crc32c(self.seed, &seq.to_be_bytes()), content);
                    d[off + 4..off + 6].copy_from_slice(&(c as u16).to_be_bytes());
                }
                if self.is64() {
                    put_be32(&mut d, off + 8, (*home >> 32) as u32);
                }
            }
            off += tb;
        }
        self.tail(&mut d);
        let len = self.blocks.len();
        let wrap = |n: usize| if n >= len { n - (len - 1) } else { n };
        let mut pos = at;
        self.blocks[pos] = d;
        for (_, content, _) in data {
            pos = wrap(pos + 1);
            self.blocks[pos] = content.clone();
        }
        wrap(pos + 1)
    }

    fn commit(&mut self, at: usize, seq: u32, time: u64) {
        let mut c = vec![0u8; BS];
        header(&mut c, blocktype::COMMIT, seq);
        c[0x30..0x38].copy_from_slice(&time.to_be_bytes());
        if self.csum() {
            let s = crc32c(self.seed, &c);
            put_be32(&mut c, 0x10, s);
        }
        self.blocks[at] = c;
    }

    /// A checksum v1 commit: crc32_be over the transaction's descriptor and data blocks.
    fn commit_v1(&mut self, at: usize, seq: u32, covered: std::ops::Range<usize>) {
        let mut sum = !0;
        for b in &self.blocks[covered] {
            sum = crc32_be(sum, b);
        }
        let mut c = vec![0u8; BS];
        header(&mut c, blocktype::COMMIT, seq);
        c[0xC] = 1;
        c[0xD] = 4;
        put_be32(&mut c, 0x10, sum);
        self.blocks[at] = c;
    }

    fn revoke(&mut self, at: usize, seq: u32, homes: &[u64]) {
        let mut r = vec![0u8; BS];
        header(&mut r, blocktype::REVOKE, seq);
        let len = if self.is64() { 8 } else { 4 };
        let mut off = 16;
        for h in homes {
            if len == 8 {
                r[off..off + 8].copy_from_slice(&h.to_be_bytes());
            } else {
                put_be32(&mut r, off, *h as u32);
            }
            off += len;
        }
        put_be32(&mut r, 12, off as u32);
        self.tail(&mut r);
        self.blocks[at] = r;
    }

    fn bytes(&self) -> Vec<u8> {
        self.blocks.concat()
    }
}

fn fill(b: u8) -> Vec<u8> {
    vec![b; BS]
}

const V3_64: u32 = feature::INCOMPAT_CSUM_V3 | feature::INCOMPAT_64BIT | feature::INCOMPAT_REVOKE;

fn corrupt(r: Result<impl std::fmt::Debug, Error>, what: &str) {
    match r {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains(what), "{detail}"),
        other => panic!("expected Corrupt ({what}), got {other:?}"),
    }
}

#[test]
fn revoke_applies_to_earlier_transactions_only() {
    let mut j = J::new(64, 0, V3_64, 1, 10);
    let n = j.txn(1, 10, &[(100, fill(1), 0), (101, fill(2), 0)]);
    j.commit(n, 10, 1);
    j.revoke(n + 1, 11, &[101, 100]);
    j.commit(n + 2, 11, 2);
    let n = j.txn(n + 3, 12, &[(100, fill(3), 0)]);
    j.commit(n, 12, 3);
    // Transaction 13 is never committed.
    let n = j.txn(n + 1, 13, &[(102, fill(4), 0)]);
    let _ = n;
    let (o, w) = replay_bytes(&j.bytes(), 1000).unwrap();
    assert_eq!(o.first_transaction, 10);
    assert_eq!(o.end_transaction, 13);
    assert_eq!(w.len(), 1);
    assert_eq!(w[&100], fill(3));
    assert_eq!(o.revoked, 2);
    assert_eq!(o.revoke_records, 2);
}

#[test]
fn escaped_blocks_get_their_magic_back() {
    for incompat in [0, V3_64, feature::INCOMPAT_CSUM_V2] {
        let mut j = J::new(32, 0, incompat, 1, 1);
        let mut data = fill(7);
        data[..4].fill(0);
        let n = j.txn(1, 1, &[(5, data, 0x1)]);
        j.commit(n, 1, 1);
        let (_, w) = replay_bytes(&j.bytes(), 100).unwrap();
        assert_eq!(&w[&5][..4], &MAGIC.to_be_bytes());
        assert_eq!(&w[&5][4..], &fill(7)[4..]);
    }
}

#[test]
fn sequence_numbers_wrap() {
    let mut j = J::new(32, 0, V3_64, 1, u32::MAX);
    let n = j.txn(1, u32::MAX, &[(5, fill(1), 0)]);
    j.commit(n, u32::MAX, 1);
    let n = j.txn(n + 1, 0, &[(6, fill(2), 0)]);
    j.commit(n, 0, 2);
    let (o, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert_eq!(o.end_transaction, 1);
    assert_eq!(w.len(), 2);
}

#[test]
fn the_log_wraps_around_the_ring() {
    // Blocks 1..16 form the ring; the log starts at 14 and wraps to 1.
    let mut j = J::new(16, 0, V3_64, 14, 3);
    let n = j.txn(
        14,
        3,
        &[(9, fill(1), 0), (10, fill(2), 0), (11, fill(3), 0)],
    );
    assert_eq!(n, 3);
    j.commit(n, 3, 1);
    let (o, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert_eq!(o.replayed, 3);
    assert_eq!(w[&11], fill(3));
}

#[test]
fn checksum_v1_is_checked() {
    let async_v1 = feature::INCOMPAT_ASYNC_COMMIT;
    let mut j = J::new(32, feature::COMPAT_CHECKSUM, async_v1, 1, 1);
    let n = j.txn(1, 1, &[(5, fill(1), 0)]);
    j.commit_v1(n, 1, 1..n);
    let n2 = j.txn(n + 1, 2, &[(6, fill(2), 0)]);
    j.commit_v1(n2, 2, n + 1..n2);
    let (_, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert_eq!(w.len(), 2);
    // A data block that does not match its commit: with async commit, that transaction
    // was interrupted and the log ends before it.
    j.blocks[n2 - 1] = fill(9);
    let (o, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert_eq!(o.end_transaction, 2);
    assert_eq!(w.len(), 1);
    // Without async commit a bad commit is corruption, as the kernel refuses to mount.
    let mut j2 = J::new(32, feature::COMPAT_CHECKSUM, 0, 1, 1);
    j2.blocks = j.blocks.clone();
    j2.blocks[0] = J::new(32, feature::COMPAT_CHECKSUM, 0, 1, 1).blocks[0].clone();
    corrupt(
        replay_bytes(&j2.bytes(), 100),
        "commit block of transaction 2",
    );
}

#[test]
fn bad_checksums_inside_a_committed_transaction_are_corrupt() {
    let mut j = J::new(32, 0, V3_64, 1, 1);
    let n = j.txn(1, 1, &[(5, fill(1), 0)]);
    j.commit(n, 1, 1);
    let good = j.bytes();
    // A data block changed after its tag was written.
    j.blocks[2] = fill(2);
    corrupt(replay_bytes(&j.bytes(), 100), "checksum does not match");
    // A descriptor whose own checksum is wrong, followed by a newer commit.
    let mut j = J::new(32, 0, V3_64, 1, 1);
    j.blocks = good.chunks(BS).map(|c| c.to_vec()).collect();
    j.blocks[1][BS - 1] ^= 1;
    corrupt(replay_bytes(&j.bytes(), 100), "checksum does not match");
    // A commit block with a bad checksum (no async commit).
    let mut j = J::new(32, 0, V3_64, 1, 1);
    j.blocks = good.chunks(BS).map(|c| c.to_vec()).collect();
    j.blocks[n][0x40] ^= 1;
    corrupt(replay_bytes(&j.bytes(), 100), "bad checksum");
}

#[test]
fn hostile_journals_are_corrupt_not_panics() {
    let mut j = J::new(32, 0, V3_64, 1, 1);
    let n = j.txn(1, 1, &[(5, fill(1), 0)]);
    j.commit(n, 1, 1);
    let good = j.bytes();
    // Truncated: the log runs past the bytes given.
    corrupt(replay_bytes(&good[..3 * BS], 100), "maps only 3");
    corrupt(replay_bytes(&good[..100], 100), "journal");
    // Bad magic.
    let mut b = good.clone();
    b[0] ^= 0xFF;
    corrupt(replay_bytes(&b, 100), "bad magic");
    // The superblock's checksum.
    let mut b = good.clone();
    b[0x18] ^= 1;
    corrupt(replay_bytes(&b, 100), "checksum");
    // A home block past the filesystem.
    corrupt(replay_bytes(&good, 5), "past the filesystem");
    // A log head outside the log, a first block past the end.
    for (off, v) in [(0x1C, 40u32), (0x14, 32), (0x14, 0), (0x10, 33)] {
        let mut j2 = J::new(32, 0, 0, 1, 1);
        put_be32(&mut j2.blocks[0], off, v);
        corrupt(replay_bytes(&j2.bytes(), 100), "journal superblock");
    }
    // Revoke records claiming more than the block.
    let mut j = J::new(32, 0, V3_64, 1, 1);
    j.revoke(1, 1, &[5]);
    put_be32(&mut j.blocks[1], 12, 5000);
    j.tail_fix(1);
    j.commit(2, 1, 1);
    corrupt(replay_bytes(&j.bytes(), 100), "revoke block");
    // A descriptor full of tags without LAST_TAG, 32-bit without checksums: tags up to
    // the end of the block, then as many data blocks.
    let mut j = J::new(512, 0, 0, 1, 1);
    let mut d = vec![0u8; BS];
    header(&mut d, blocktype::DESCRIPTOR, 1);
    for off in (12..BS - 8).step_by(8) {
        put_be32(&mut d, off, 7);
        d[off + 6..off + 8].copy_from_slice(&2u16.to_be_bytes());
    }
    j.blocks[1] = d;
    let (o, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert_eq!((o.replayed, w.len()), (0, 0), "never committed");
}

impl J {
    fn tail_fix(&mut self, at: usize) {
        let mut b = std::mem::take(&mut self.blocks[at]);
        self.tail(&mut b);
        self.blocks[at] = b;
    }
}

#[test]
fn a_log_that_loops_is_corrupt() {
    // Every block of the ring is a revoke block of the same transaction: the walk would
    // go round for ever.
    let mut j = J::new(8, 0, feature::INCOMPAT_REVOKE, 1, 4);
    for at in 1..8 {
        j.revoke(at, 4, &[3]);
    }
    corrupt(replay_bytes(&j.bytes(), 100), "loops");
    // Descriptors whose tags skip onto further descriptors, also for ever.
    let mut j = J::new(9, 0, 0, 1, 4);
    for at in (1..9).step_by(2) {
        let mut d = vec![0u8; BS];
        header(&mut d, blocktype::DESCRIPTOR, 4);
        put_be32(&mut d, 12, 9);
        d[18..20].copy_from_slice(&0xAu16.to_be_bytes());
        j.blocks[at] = d;
    }
    corrupt(replay_bytes(&j.bytes(), 100), "loops");
}

#[test]
fn pending_fast_commits_are_refused() {
    let fc = feature::INCOMPAT_FAST_COMMIT | V3_64;
    let mut j = J::new(64, 0, fc, 1, 1);
    put_be32(&mut j.blocks[0], 0x54, 8);
    let c = {
        let mut sb = j.blocks[0].clone();
        put_be32(&mut sb, 0xFC, 0);
        crc32c(!0, &sb)
    };
    put_be32(&mut j.blocks[0], 0xFC, c);
    let n = j.txn(1, 1, &[(5, fill(1), 0)]);
    j.commit(n, 1, 1);
    // Fast-commit area: blocks 57.. (64 - 8 + 1); a head tag for transaction 2.
    let (_, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert_eq!(w.len(), 1, "stale or empty fast-commit area: replayed");
    let fc_block = &mut j.blocks[57];
    fc_block[0..2].copy_from_slice(&9u16.to_le_bytes());
    fc_block[2..4].copy_from_slice(&8u16.to_le_bytes());
    fc_block[8..12].copy_from_slice(&2u32.to_le_bytes());
    match replay_bytes(&j.bytes(), 100) {
        Err(Error::Unsupported { feature, .. }) => assert!(feature.contains("fast commit")),
        other => panic!("{other:?}"),
    }
    // A head for an older transaction is stale: ignored.
    j.blocks[57][8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(replay_bytes(&j.bytes(), 100).is_ok());
}

#[test]
fn an_empty_log_replays_nothing() {
    let j = J::new(32, 0, V3_64, 0, 5);
    let (o, w) = replay_bytes(&j.bytes(), 100).unwrap();
    assert!(w.is_empty());
    assert_eq!(o.replayed, 0);
}

/// Writes the journals above as a fuzzing corpus into `$JOURNAL_SEEDS` (run by hand:
/// `JOURNAL_SEEDS=fuzz/corpus/ext4_journal cargo test -p transplant-fs write_fuzz_seeds
/// -- --ignored`).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("JOURNAL_SEEDS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let feats = [
        (0, 0),
        (0, V3_64),
        (0, feature::INCOMPAT_CSUM_V2),
        (feature::COMPAT_CHECKSUM, feature::INCOMPAT_ASYNC_COMMIT),
        (0, V3_64 | feature::INCOMPAT_FAST_COMMIT),
    ];
    for (i, (compat, incompat)) in feats.into_iter().enumerate() {
        let mut j = J::new(12, compat, incompat, 1, 7);
        let n = j.txn(1, 7, &[(3, fill(1), 0x1), (4, fill(2), 0)]);
        if compat != 0 {
            j.commit_v1(n, 7, 1..n);
        } else {
            j.commit(n, 7, 1);
        }
        j.revoke(n + 1, 8, &[4]);
        j.commit(n + 2, 8, 2);
        std::fs::write(
            std::path::Path::new(&dir).join(format!("seed{i}")),
            j.bytes(),
        )
        .unwrap();
    }
}
