//! The spec/status model (in progress).
