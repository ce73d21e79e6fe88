//! Applying a planned conversion to the guest. Writes go through [`GuestFilesMut`], which
//! on a real guest is the filesystem writer over an overlay: a failure part way leaves
//! the input image untouched, and the caller discards the overlay.

use super::{Conversion, V2vError};
use crate::guest_files::GuestFilesMut;
use crate::patch::Action;

/// Applies every change in order. New files get their parent directories created.
pub fn apply(guest: &dyn GuestFilesMut, conv: &Conversion) -> Result<(), V2vError> {
    for c in &conv.changes {
        let err = |detail: String| V2vError::Write {
            file: c.path.clone(),
            detail,
        };
        match &c.action {
            Action::Replace(data) => {
                if let Some((dir, _)) = c.path.rsplit_once('/') {
                    if !dir.is_empty() && !guest.exists(dir) {
                        guest.mkdir_p(dir).map_err(err)?;
                    }
                }
                guest.write(&c.path, data).map_err(err)?;
            }
            Action::Remove | Action::RemoveLink => {
                // Already gone is what was wanted.
                if guest.exists(&c.path) || guest.read_link(&c.path).is_some() {
                    guest.remove(&c.path).map_err(err)?;
                }
            }
        }
    }
    Ok(())
}
