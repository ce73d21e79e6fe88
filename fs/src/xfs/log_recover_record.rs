//! From log records to committed transactions. A record's data is a run of operations
//! (`xlog_op_header` + payload), each naming its transaction by id; a transaction's
//! payload is a transaction header followed by items, each item a counted list of
//! regions, and any region may be split across operations (and so across records) by
//! the CONTINUE / WAS_CONT flags. Only transactions whose COMMIT operation is in the log
//! are kept, in commit order, with the LSN of the record that started them, as
//! `xlog_recover_process_data` does. Errors are plain strings; the caller names the
//! record.

use super::bytes::be32;
use std::collections::HashMap;

const OP_HEADER: usize = 12;
const CLIENT_TRANSACTION: u8 = 0x69;
const CLIENT_LOG: u8 = 0xaa;
const START_TRANS: u8 = 0x01;
const COMMIT_TRANS: u8 = 0x02;
const CONTINUE_TRANS: u8 = 0x04;
const WAS_CONT_TRANS: u8 = 0x08;
const END_TRANS: u8 = 0x10;
const UNMOUNT_TRANS: u8 = 0x20;
/// `xfs_trans_header`: magic "TRAN" in the logging host's byte order, then three words.
const TRANS_HEADER_MAGIC: u32 = 0x5452_414e;
const TRANS_HEADER_LEN: usize = 16;
/// The most regions one item may have (`XLOG_MAX_REGIONS_IN_ITEM`).
const MAX_REGIONS: usize = 64 * 1024 / 128 / 2 + 1;

/// One log item: its regions, the first being its format structure (type and region
/// count in its first two 16-bit words).
#[derive(Debug, Default)]
pub(crate) struct Item {
    pub regions: Vec<Vec<u8>>,
    total: usize,
}

impl Item {
    /// The item type (`XFS_LI_*`), in the logging host's (little-endian) order.
    pub fn kind(&self) -> Option<u16> {
        let r = self.regions.first()?;
        Some(u16::from_le_bytes(r.get(..2)?.try_into().ok()?))
    }
}

#[derive(Debug)]
pub(crate) struct Trans {
    /// LSN of the record holding the transaction's start.
    pub lsn: u64,
    pub items: Vec<Item>,
    header: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct Parser {
    open: HashMap<u32, Trans>,
    pub committed: Vec<Trans>,
}

fn le32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

impl Parser {
    /// Takes the operations of one record: `data` is its unpacked data (`h_len` bytes),
    /// `ops` its operation count, `lsn` its LSN.
    pub fn record(&mut self, data: &[u8], ops: u32, lsn: u64) -> Result<(), String> {
        let end = data.len();
        let mut dp = 0usize;
        let mut left = ops;
        while dp < end && left > 0 {
            let head = data
                .get(dp..dp + OP_HEADER)
                .ok_or_else(|| format!("an operation header at byte {dp} runs past the record"))?;
            let tid = be32(head, 0).unwrap_or(0);
            let len = be32(head, 4).unwrap_or(0) as usize;
            let client = head[8];
            let flags = head[9];
            dp += OP_HEADER;
            if client != CLIENT_TRANSACTION && client != CLIENT_LOG {
                return Err(format!("operation at byte {dp} has client id {client:#x}"));
            }
            let body = dp
                .checked_add(len)
                .and_then(|e| data.get(dp..e))
                .ok_or_else(|| {
                    format!("operation at byte {dp} claims {len} bytes past the record")
                })?;
            self.op(tid, flags, body, lsn)?;
            dp += len;
            left -= 1;
        }
        Ok(())
    }

    fn op(&mut self, tid: u32, flags: u8, body: &[u8], lsn: u64) -> Result<(), String> {
        let Some(trans) = self.open.get_mut(&tid) else {
            // Not a transaction we saw start: slack before the next one, or one that
            // started before the tail. A start opens a new one (its body is empty).
            if flags & START_TRANS != 0 {
                self.open.insert(
                    tid,
                    Trans {
                        lsn,
                        items: Vec::new(),
                        header: Vec::new(),
                    },
                );
            }
            return Ok(());
        };
        let mut f = flags & !END_TRANS;
        if f & WAS_CONT_TRANS != 0 {
            f &= !CONTINUE_TRANS;
        }
        match f {
            0 | CONTINUE_TRANS => add(trans, body),
            WAS_CONT_TRANS => add_cont(trans, body),
            COMMIT_TRANS => {
                if let Some(t) = self.open.remove(&tid) {
                    self.committed.push(t);
                }
                Ok(())
            }
            UNMOUNT_TRANS => {
                self.open.remove(&tid);
                Ok(())
            }
            _ => Err(format!(
                "operation of transaction {tid:#x} has flags {flags:#x}"
            )),
        }
    }
}

/// A new region (or the transaction header, first).
fn add(t: &mut Trans, body: &[u8]) -> Result<(), String> {
    if body.is_empty() {
        return Ok(());
    }
    if t.items.is_empty() {
        if le32(body, 0) != Some(TRANS_HEADER_MAGIC) {
            return Err("a transaction does not start with a transaction header".into());
        }
        if body.len() > TRANS_HEADER_LEN {
            return Err(format!("a transaction header of {} bytes", body.len()));
        }
        t.header = body.to_vec();
        if body.len() == TRANS_HEADER_LEN {
            t.items.push(Item::default());
        }
        return Ok(());
    }
    let need_new = t
        .items
        .last()
        .is_some_and(|i| i.total != 0 && i.regions.len() == i.total);
    if need_new {
        t.items.push(Item::default());
    }
    let Some(item) = t.items.last_mut() else {
        return Err("no item to add a region to".into());
    };
    if item.total == 0 {
        let n = body
            .get(2..4)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or("a log item format region shorter than 4 bytes")?;
        if n == 0 || n > MAX_REGIONS {
            return Err(format!("a log item claims {n} regions"));
        }
        item.total = n;
    }
    if item.regions.len() >= item.total {
        return Err("a log item has more regions than it claims".into());
    }
    item.regions.push(body.to_vec());
    Ok(())
}

/// The rest of the region the previous operation split.
fn add_cont(t: &mut Trans, body: &[u8]) -> Result<(), String> {
    if t.items.is_empty() {
        t.header.extend_from_slice(body);
        if t.header.len() != TRANS_HEADER_LEN {
            return Err(format!(
                "a split transaction header of {} bytes",
                t.header.len()
            ));
        }
        t.items.push(Item::default());
        return Ok(());
    }
    let last = t
        .items
        .last_mut()
        .and_then(|i| i.regions.last_mut())
        .ok_or("a continued region with nothing to continue")?;
    last.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn op(tid: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tid.to_be_bytes());
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.push(CLIENT_TRANSACTION);
        v.push(flags);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(body);
        v
    }

    pub fn trans_header() -> Vec<u8> {
        let mut h = TRANS_HEADER_MAGIC.to_le_bytes().to_vec();
        h.resize(TRANS_HEADER_LEN, 0);
        h
    }

    #[test]
    fn transactions_are_split_by_tid_and_regions_rejoined() {
        let mut region = vec![0x3c, 0x12, 2, 0];
        region.resize(24, 7);
        let mut data = op(5, START_TRANS, &[]);
        data.extend(op(9, START_TRANS, &[]));
        data.extend(op(5, 0, &trans_header()));
        data.extend(op(5, CONTINUE_TRANS, &region[..10]));
        data.extend(op(9, 0, &trans_header()));
        let mut p = Parser::default();
        p.record(&data, 5, 1 << 32).unwrap();
        let mut data = op(5, WAS_CONT_TRANS | END_TRANS, &region[10..]);
        data.extend(op(5, 0, b"second region"));
        data.extend(op(5, COMMIT_TRANS, &[]));
        p.record(&data, 3, (1 << 32) | 8).unwrap();
        assert_eq!(p.committed.len(), 1, "9 never committed");
        let t = &p.committed[0];
        assert_eq!(t.lsn, 1 << 32);
        assert_eq!(t.items.len(), 1);
        assert_eq!(t.items[0].regions, vec![region, b"second region".to_vec()]);
        assert_eq!(t.items[0].kind(), Some(0x123c));
    }

    #[test]
    fn hostile_operations_are_errors() {
        let mut p = Parser::default();
        assert!(p.record(&[0; 5], 1, 0).is_err());
        let mut d = op(1, START_TRANS, &[]);
        d.extend(op(1, 0, b"XXXXnot a header"));
        assert!(Parser::default().record(&d, 2, 0).is_err());
        let mut d = op(1, START_TRANS, &[]);
        d.extend(op(1, 0, &trans_header()));
        d.extend(op(1, 0, &[0x3c, 0x12, 0, 0]));
        assert!(Parser::default().record(&d, 3, 0).is_err());
        let mut d = op(1, START_TRANS, &[]);
        let mut long = op(1, 0, &trans_header());
        long[4..8].copy_from_slice(&1000u32.to_be_bytes());
        d.extend(long);
        assert!(Parser::default().record(&d, 2, 0).is_err());
        let mut d = op(1, START_TRANS, &[]);
        d.extend(op(1, START_TRANS, &[]));
        assert!(Parser::default().record(&d, 2, 0).is_err());
    }
}
