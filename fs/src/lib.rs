//! Guest filesystems behind one trait. Arrives with the filesystems issue; the crate exists now so the workspace has its final shape.
