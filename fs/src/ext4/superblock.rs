//! The superblock as the writer needs it: geometry, feature flags, free counts and its own
//! checksum. The 1024 raw bytes are kept and only the fields we change are rewritten, so
//! fields this tool does not know survive untouched.

use super::csum::crc32c;
use super::le::*;

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const MAGIC: u16 = 0xEF53;

pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const SPARSE_SUPER2: u32 = 0x200;
}

pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}

pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    pub const HAS_SNAPSHOT: u32 = 0x80;
    pub const QUOTA: u32 = 0x100;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    pub const REPLICA: u32 = 0x800;
    pub const READONLY: u32 = 0x1000;
    pub const PROJECT: u32 = 0x2000;
    pub const SHARED_BLOCKS: u32 = 0x4000;
    pub const VERITY: u32 = 0x8000;
    pub const ORPHAN_PRESENT: u32 = 0x10000;
}

/// Incompatible features the writer handles (per-inode ones, like encryption, casefold and
/// inline data, are refused on the inodes that use them).
const INCOMPAT_WRITABLE: u32 = incompat::FILETYPE
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::FLEX_BG
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    | incompat::ENCRYPT
    | incompat::CASEFOLD;

const RO_COMPAT_WRITABLE: u32 = ro_compat::SPARSE_SUPER
    | ro_compat::LARGE_FILE
    | ro_compat::HUGE_FILE
    | ro_compat::GDT_CSUM
    | ro_compat::DIR_NLINK
    | ro_compat::EXTRA_ISIZE
    | ro_compat::METADATA_CSUM
    | ro_compat::VERITY;

/// mke2fs names, for messages.
const INCOMPAT_NAMES: [(u32, &str); 16] = [
    (incompat::COMPRESSION, "compression"),
    (incompat::FILETYPE, "filetype"),
    (incompat::RECOVER, "needs_recovery"),
    (incompat::JOURNAL_DEV, "journal_dev"),
    (incompat::META_BG, "meta_bg"),
    (incompat::EXTENTS, "extent"),
    (incompat::BIT64, "64bit"),
    (incompat::MMP, "mmp"),
    (incompat::FLEX_BG, "flex_bg"),
    (incompat::EA_INODE, "ea_inode"),
    (incompat::DIRDATA, "dirdata"),
    (incompat::CSUM_SEED, "metadata_csum_seed"),
    (incompat::LARGEDIR, "large_dir"),
    (incompat::INLINE_DATA, "inline_data"),
    (incompat::ENCRYPT, "encrypt"),
    (incompat::CASEFOLD, "casefold"),
];

const RO_COMPAT_NAMES: [(u32, &str); 17] = [
    (ro_compat::SPARSE_SUPER, "sparse_super"),
    (ro_compat::LARGE_FILE, "large_file"),
    (ro_compat::BTREE_DIR, "btree_dir"),
    (ro_compat::HUGE_FILE, "huge_file"),
    (ro_compat::GDT_CSUM, "uninit_bg"),
    (ro_compat::DIR_NLINK, "dir_nlink"),
    (ro_compat::EXTRA_ISIZE, "extra_isize"),
    (ro_compat::HAS_SNAPSHOT, "snapshot"),
    (ro_compat::QUOTA, "quota"),
    (ro_compat::BIGALLOC, "bigalloc"),
    (ro_compat::METADATA_CSUM, "metadata_csum"),
    (ro_compat::REPLICA, "replica"),
    (ro_compat::READONLY, "read-only"),
    (ro_compat::PROJECT, "project"),
    (ro_compat::SHARED_BLOCKS, "shared_blocks"),
    (ro_compat::VERITY, "verity"),
    (ro_compat::ORPHAN_PRESENT, "orphan_present"),
];

fn names(bits: u32, table: &[(u32, &str)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut left = bits;
    for &(b, n) in table {
        if bits & b != 0 {
            out.push(n.to_string());
            left &= !b;
        }
    }
    if left != 0 {
        out.push(format!("unknown bits {left:#x}"));
    }
    out.join(", ")
}

#[derive(Debug, Clone)]
pub struct Superblock {
    pub raw: Vec<u8>,
    pub block_size: u64,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub first_data_block: u64,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: usize,
    pub first_ino: u32,
    pub desc_size: usize,
    pub group_count: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub hash_seed: [u32; 4],
    pub flags: u32,
    /// Seed of every metadata_csum checksum.
    pub csum_seed: u32,
    pub want_extra_isize: u16,
}

/// Why a superblock cannot be used at all.
pub type Problem = String;

impl Superblock {
    /// Parses and checks the geometry of a superblock; `dev_len` bounds the filesystem.
    pub fn parse(raw: &[u8], dev_len: u64) -> Result<Superblock, Problem> {
        if raw.len() < 1024 {
            return Err("superblock: short read".into());
        }
        let raw = raw[..1024].to_vec();
        if u16_at(&raw, 0x38) != MAGIC {
            return Err("superblock at 0x400: bad magic (not ext2/3/4)".into());
        }
        let log = u32_at(&raw, 0x18);
        if log > 6 {
            return Err(format!("superblock: block size 2^(10+{log}) is invalid"));
        }
        let block_size = 1024u64 << log;
        let incompat_f = u32_at(&raw, 0x60);
        let is64 = incompat_f & incompat::BIT64 != 0;
        let hi = |o: usize| if is64 { Some(o) } else { None };
        let blocks_count = lo_hi_32(&raw, 0x4, hi(0x150));
        let inodes_count = u32_at(&raw, 0x0);
        let first_data_block = u32_at(&raw, 0x14) as u64;
        let blocks_per_group = u32_at(&raw, 0x20);
        let inodes_per_group = u32_at(&raw, 0x28);
        let rev = u32_at(&raw, 0x4C);
        let (inode_size, first_ino) = if rev == 0 {
            (128, 11)
        } else {
            (u16_at(&raw, 0x58) as usize, u32_at(&raw, 0x54))
        };
        let bigalloc = u32_at(&raw, 0x64) & ro_compat::BIGALLOC != 0;
        // mke2fs never makes groups under 256 blocks; fewer would make the group table huge.
        if blocks_per_group < 256 || (!bigalloc && blocks_per_group as u64 > 8 * block_size) {
            return Err(format!(
                "superblock: {blocks_per_group} blocks per group is invalid"
            ));
        }
        if inodes_per_group == 0 || inodes_per_group as u64 > 8 * block_size {
            return Err(format!(
                "superblock: {inodes_per_group} inodes per group is invalid"
            ));
        }
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size as u64 > block_size {
            return Err(format!("superblock: inode size {inode_size} is invalid"));
        }
        if first_data_block > 1 || first_data_block >= blocks_count {
            return Err(format!(
                "superblock: first data block {first_data_block} is invalid"
            ));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group as u64);
        if groups == 0 || groups > u32::MAX as u64 {
            return Err(format!("superblock: {groups} block groups is invalid"));
        }
        if groups * inodes_per_group as u64 != inodes_count as u64 {
            return Err(format!(
                "superblock: {inodes_count} inodes is not {groups} groups of {inodes_per_group}"
            ));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return Err(format!("superblock: first inode {first_ino} is invalid"));
        }
        let desc_size = if is64 {
            let d = u16_at(&raw, 0xFE) as usize;
            if d < 64 || !d.is_power_of_two() || d as u64 > block_size {
                return Err(format!("superblock: group descriptor size {d} is invalid"));
            }
            d
        } else {
            32
        };
        let fs_bytes = blocks_count
            .checked_mul(block_size)
            .ok_or("superblock: block count overflows")?;
        if fs_bytes > dev_len {
            return Err(format!(
                "the filesystem ({fs_bytes} bytes) is larger than its device ({dev_len} bytes); the image looks truncated"
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&raw[0x68..0x78]);
        let hash_seed = [
            u32_at(&raw, 0xEC),
            u32_at(&raw, 0xF0),
            u32_at(&raw, 0xF4),
            u32_at(&raw, 0xF8),
        ];
        let csum_seed = if incompat_f & incompat::CSUM_SEED != 0 {
            u32_at(&raw, 0x270)
        } else {
            crc32c(!0, &uuid)
        };
        Ok(Superblock {
            block_size,
            blocks_count,
            inodes_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            first_ino,
            desc_size,
            group_count: groups as u32,
            compat: u32_at(&raw, 0x5C),
            incompat: incompat_f,
            ro_compat: u32_at(&raw, 0x64),
            uuid,
            hash_seed,
            flags: u32_at(&raw, 0x160),
            csum_seed,
            want_extra_isize: u16_at(&raw, 0x15E),
            raw,
        })
    }

    fn hi(&self, o: usize) -> Option<usize> {
        self.is_64bit().then_some(o)
    }

    pub fn is_64bit(&self) -> bool {
        self.incompat & incompat::BIT64 != 0
    }
    pub fn metadata_csum(&self) -> bool {
        self.ro_compat & ro_compat::METADATA_CSUM != 0
    }
    pub fn gdt_csum(&self) -> bool {
        self.ro_compat & ro_compat::GDT_CSUM != 0
    }
    /// Whether group descriptors carry a checksum and the UNINIT flags mean anything.
    pub fn group_csum(&self) -> bool {
        self.metadata_csum() || self.gdt_csum()
    }
    pub fn extents(&self) -> bool {
        self.incompat & incompat::EXTENTS != 0
    }
    pub fn filetype(&self) -> bool {
        self.incompat & incompat::FILETYPE != 0
    }
    pub fn huge_file(&self) -> bool {
        self.ro_compat & ro_compat::HUGE_FILE != 0
    }
    pub fn large_file(&self) -> bool {
        self.ro_compat & ro_compat::LARGE_FILE != 0
    }
    pub fn dir_nlink(&self) -> bool {
        self.ro_compat & ro_compat::DIR_NLINK != 0
    }
    pub fn sparse_super(&self) -> bool {
        self.ro_compat & ro_compat::SPARSE_SUPER != 0
    }
    pub fn sparse_super2(&self) -> bool {
        self.compat & compat::SPARSE_SUPER2 != 0
    }
    pub fn has_journal(&self) -> bool {
        self.compat & compat::HAS_JOURNAL != 0
    }
    pub fn journal_inum(&self) -> u32 {
        u32_at(&self.raw, 0xE0)
    }
    pub fn reserved_gdt_blocks(&self) -> u64 {
        u16_at(&self.raw, 0xCE) as u64
    }
    pub fn backup_bgs(&self) -> [u32; 2] {
        [u32_at(&self.raw, 0x24C), u32_at(&self.raw, 0x250)]
    }
    pub fn state(&self) -> u16 {
        u16_at(&self.raw, 0x3A)
    }
    pub fn error_count(&self) -> u32 {
        u32_at(&self.raw, 0x194)
    }
    pub fn last_orphan(&self) -> u32 {
        u32_at(&self.raw, 0xE8)
    }
    pub fn label(&self) -> Option<String> {
        let l = &self.raw[0x78..0x88];
        let end = l.iter().position(|&c| c == 0).unwrap_or(l.len());
        let s = String::from_utf8_lossy(&l[..end]).into_owned();
        (!s.is_empty()).then_some(s)
    }
    pub fn uuid_string(&self) -> String {
        let u = &self.uuid;
        let hex = |r: std::ops::Range<usize>| -> String {
            u[r].iter().map(|b| format!("{b:02x}")).collect()
        };
        format!(
            "{}-{}-{}-{}-{}",
            hex(0..4),
            hex(4..6),
            hex(6..8),
            hex(8..10),
            hex(10..16)
        )
    }

    pub fn free_blocks(&self) -> u64 {
        lo_hi_32(&self.raw, 0xC, self.hi(0x158))
    }
    pub fn set_free_blocks(&mut self, v: u64) {
        let hi = self.hi(0x158);
        put_lo_hi_32(&mut self.raw, 0xC, hi, v);
    }
    pub fn free_inodes(&self) -> u32 {
        u32_at(&self.raw, 0x10)
    }
    pub fn set_free_inodes(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x10, v);
    }

    /// The 1024 bytes to write, checksum updated.
    pub fn with_checksum(&mut self) -> &[u8] {
        if self.metadata_csum() {
            let c = crc32c(!0, &self.raw[..0x3FC]);
            put_u32(&mut self.raw, 0x3FC, c);
        }
        &self.raw
    }

    /// Whether the stored checksum matches (always true without metadata_csum).
    pub fn checksum_ok(&self) -> bool {
        !self.metadata_csum() || crc32c(!0, &self.raw[..0x3FC]) == u32_at(&self.raw, 0x3FC)
    }

    /// Features that make writing unsafe, as (is_policy, message): a policy refusal (the
    /// state must change first) or a feature this writer does not handle.
    /// Why the engine cannot even read this filesystem (it is used for reading where
    /// ext4-view cannot): a journal to replay first, or an incompatible feature it does
    /// not know. Read-only-compatible features do not matter for reading.
    pub fn read_blockers(&self) -> Option<String> {
        if self.incompat & incompat::RECOVER != 0 {
            return Some(
                "reading a filesystem whose journal needs recovery without replaying it (this tool's own reader, used for inline_data, does not replay journals); boot the guest once and shut it down, or run `e2fsck` on a copy, then retry".into(),
            );
        }
        self.layout_blockers()
    }

    /// Incompatible features the engine cannot find its way around with (meta_bg, ...),
    /// whatever the state: also what stops a journal replay, which reads the journal
    /// inode through the engine.
    pub fn layout_blockers(&self) -> Option<String> {
        let bad = self.incompat & !(INCOMPAT_WRITABLE | incompat::MMP | incompat::RECOVER);
        if bad != 0 {
            return Some(format!(
                "reading incompatible feature(s) {} with this tool's own reader",
                names(bad, &INCOMPAT_NAMES)
            ));
        }
        None
    }

    pub fn write_blockers(&self) -> Option<(bool, String)> {
        if self.incompat & incompat::RECOVER != 0 {
            return Some((
                true,
                "the journal needs recovery (the guest was not shut down cleanly); boot the guest once and shut it down, or run `e2fsck` on the filesystem, then retry".into(),
            ));
        }
        if self.state() & 0x2 != 0 || self.error_count() != 0 {
            return Some((
                true,
                "the filesystem has errors recorded; run `e2fsck -f` on it, then retry".into(),
            ));
        }
        if self.state() & 0x1 == 0 {
            return Some((
                true,
                "the filesystem was not cleanly unmounted (or is mounted now); shut the guest down cleanly or run `e2fsck -f`, then retry".into(),
            ));
        }
        if self.last_orphan() != 0 || self.ro_compat & ro_compat::ORPHAN_PRESENT != 0 {
            return Some((
                true,
                "deleted-but-open inodes are waiting on the orphan list; boot the guest once or run `e2fsck`, then retry".into(),
            ));
        }
        if self.incompat & incompat::MMP != 0 {
            return Some((
                true,
                "multi-mount protection (mmp) is on: another host may have this filesystem mounted; clear it with `tune2fs -O ^mmp` when it is certainly unused".into(),
            ));
        }
        let bad_in = self.incompat & !INCOMPAT_WRITABLE;
        if bad_in != 0 {
            return Some((
                false,
                format!(
                    "writing with incompatible feature(s) {}",
                    names(bad_in, &INCOMPAT_NAMES)
                ),
            ));
        }
        let bad_ro = self.ro_compat & !RO_COMPAT_WRITABLE;
        if bad_ro != 0 {
            return Some((
                false,
                format!(
                    "writing with read-only-compatible feature(s) {}",
                    names(bad_ro, &RO_COMPAT_NAMES)
                ),
            ));
        }
        if !self.checksum_ok() {
            return Some((
                true,
                "the superblock checksum does not match; run `e2fsck -f`, then retry".into(),
            ));
        }
        None
    }

    /// Whether group `g` holds a superblock backup (and group descriptor copies).
    pub fn has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.sparse_super2() {
            return self.backup_bgs().contains(&g);
        }
        if g <= 1 || !self.sparse_super() {
            return true;
        }
        if g.is_multiple_of(2) {
            return false;
        }
        let is_pow = |mut n: u32, b: u32| {
            while n.is_multiple_of(b) {
                n /= b;
            }
            n == 1
        };
        is_pow(g, 3) || is_pow(g, 5) || is_pow(g, 7)
    }

    /// Blocks of group descriptors.
    pub fn gdt_blocks(&self) -> u64 {
        (self.group_count as u64 * self.desc_size as u64).div_ceil(self.block_size)
    }

    pub fn group_first_block(&self, g: u32) -> u64 {
        self.first_data_block + g as u64 * self.blocks_per_group as u64
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn blocks_in_group(&self, g: u32) -> u64 {
        let start = self.group_first_block(g);
        (self.blocks_count - start).min(self.blocks_per_group as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_follow_sparse_super() {
        let mut raw = vec![0u8; 1024];
        put_u16(&mut raw, 0x38, MAGIC);
        put_u32(&mut raw, 0x4, 8192 * 30);
        put_u32(&mut raw, 0x0, 30 * 128);
        put_u32(&mut raw, 0x20, 8192);
        put_u32(&mut raw, 0x28, 128);
        put_u32(&mut raw, 0x14, 1);
        put_u32(&mut raw, 0x4C, 1);
        put_u16(&mut raw, 0x58, 128);
        put_u32(&mut raw, 0x54, 11);
        put_u32(&mut raw, 0x64, ro_compat::SPARSE_SUPER);
        put_u32(&mut raw, 0x4, 8192 * 30 + 1);
        let sb = Superblock::parse(&raw, 1 << 40).unwrap();
        let with: Vec<u32> = (0..30).filter(|&g| sb.has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Superblock::parse(&[0u8; 1024], 1 << 30).is_err());
        assert!(Superblock::parse(&[0u8; 10], 1 << 30).is_err());
    }
}
