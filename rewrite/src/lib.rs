//! Guest inspection and rewriting. Arrives with the rewriter issue; the crate exists now so the workspace has its final shape.
