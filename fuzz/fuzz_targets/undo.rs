#![no_main]
//! The undo-file parser and the restore behind `transplant undo`, on hostile files: any
//! input gives an answer or an error, never a panic, a hang or a write outside the image.
use libfuzzer_sys::fuzz_target;
use transplant_formats::undo::{read_undo, undo_with, UndoOptions};
use transplant_formats::{BlockDev, MemDev};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("fuzz-undo-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(info) = read_undo(&path) {
        if info.image_size <= 4 << 20 {
            let dev = MemDev::writable("fuzz-image", vec![0u8; info.image_size as usize]);
            let _ = undo_with(&dev, &path, &UndoOptions { force: true });
            assert_eq!(dev.len(), info.image_size);
        }
    }
    let _ = std::fs::remove_file(&path);
});
