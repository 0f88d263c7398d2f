//! Image preparation (in progress).
