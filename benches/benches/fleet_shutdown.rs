//! Fleet shutdown on the simulator: library CPU per VM, memory per in-flight shutdown, and API
//! calls per graceful shutdown as the guest's own shutdown time grows.
//!
//! `cargo bench -p virtrigaud-benches --bench fleet_shutdown`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use virtrigaud_benches::{
    CountingAlloc, bytes_per_in_flight_shutdown, bytes_per_in_flight_shutdown_with,
    calls_per_graceful_shutdown, shut_down_fleet,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn fleet(c: &mut Criterion) {
    // Side measurements printed once (not timings).
    let bytes = bytes_per_in_flight_shutdown(10_000);
    println!("memory per in-flight shutdown (10,000 in flight, push): {bytes:.0} bytes");
    let bytes = bytes_per_in_flight_shutdown_with(10_000, false);
    println!("memory per in-flight shutdown (10,000 in flight, polling): {bytes:.0} bytes");
    for secs in [1u64, 10, 30, 60, 120] {
        let guest = Duration::from_secs(secs);
        println!(
            "API calls per graceful shutdown, guest stops in {secs:>3} s: push {:>3}, polling {:>3}",
            calls_per_graceful_shutdown(guest, true),
            calls_per_graceful_shutdown(guest, false)
        );
    }

    let mut group = c.benchmark_group("fleet_shutdown");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("graceful_all_in_flight", n),
            &n,
            |b, &n| {
                b.iter(|| {
                    let off = shut_down_fleet(n, Duration::from_secs(5), n);
                    assert_eq!(off, n);
                });
            },
        );
    }
    group.bench_function("graceful_10000_concurrency_256", |b| {
        b.iter(|| {
            let off = shut_down_fleet(10_000, Duration::from_secs(5), 256);
            assert_eq!(off, 10_000);
        });
    });
    group.finish();
}

criterion_group!(benches, fleet);
criterion_main!(benches);
