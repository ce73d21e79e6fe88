//! What the three sparse extent kinds (hosted "KDMV", ESX "COWD", ESXi seSparse) have in
//! common once their headers are read: a grain directory pointing at grain tables pointing at
//! grains. Each header module fills this in; one grain map reads them all, so the bounds
//! checks and the cache exist once.

/// How grain directory and grain table entries are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// 32-bit sector numbers; a grain table entry of 1 means "zeroed grain".
    Hosted { zero_grain: bool },
    /// 32-bit sector numbers, no special values.
    Cowd,
    /// 64-bit entries with a type in the top nibble; table and grain numbers are relative
    /// to these byte offsets.
    SeSparse { tables: u64, grains: u64 },
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub style: Style,
    pub compressed: bool,
    pub markers: bool,
    pub grain_sectors: u64,
    pub gtes_per_gt: u64,
    /// Bytes per directory and table entry: 4 or 8.
    pub entry_size: u64,
    pub capacity_sectors: u64,
    /// Byte offset of the grain directory.
    pub gd_offset: u64,
    /// Entries the header says the directory holds, where it says (COWD, seSparse).
    pub gd_entries: Option<u64>,
    /// Byte offset of the redundant grain directory, if the header says there is one.
    pub rgd_offset: Option<u64>,
    /// The directory's name in messages.
    pub structure: &'static str,
}
