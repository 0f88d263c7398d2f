//! Placement throughput (filled in by the fleet work).
fn main() {}
