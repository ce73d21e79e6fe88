//! Applies a debugfs-style script to an ext2/3/4 image through this crate's writer, in one
//! process, the way `debugfs -w -f SCRIPT IMAGE` does: lines `write HOSTFILE GUESTPATH`
//! (create or replace), `rm GUESTPATH`, `mkdir GUESTPATH`. Changes collect in an overlay
//! and are committed at the end. Used by bench/ext4_write.py.
//!
//! Usage: ext4_script IMAGE SCRIPT

use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{Filesystem, NewNode, SetAttrs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, image, script] = &args[..] else {
        return Err("usage: ext4_script IMAGE SCRIPT".into());
    };
    let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(image.as_ref(), true)?);
    let ov = Arc::new(Overlay::new(base));
    let fs = Ext4Fs::open_rw(ov.clone(), "ext4")?;
    for line in std::fs::read_to_string(script)?.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[..] {
            ["write", host, guest] => {
                let data = std::fs::read(host)?;
                match fs.write_file(guest.as_bytes(), &data) {
                    Err(transplant_fs::Error::NotFound(_)) => {
                        fs.create(guest.as_bytes(), NewNode::File(&data), &SetAttrs::default())?
                    }
                    r => r?,
                }
            }
            ["rm", guest] => fs.remove(guest.as_bytes())?,
            ["mkdir", guest] => fs.create(guest.as_bytes(), NewNode::Dir, &SetAttrs::default())?,
            [] => {}
            _ => return Err(format!("bad line: {line}").into()),
        }
    }
    fs.sync()?;
    ov.commit()?;
    Ok(())
}
