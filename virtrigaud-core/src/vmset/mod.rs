//! VM sets with rolling updates (in progress).
