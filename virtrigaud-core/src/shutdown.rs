//! Graceful-shutdown engine (in progress).
