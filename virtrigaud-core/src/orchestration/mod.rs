//! Lifecycle orchestration: reconfigure, snapshots, clones, image preparation, lifecycle actions and run strategies (in progress).
