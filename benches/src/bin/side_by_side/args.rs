//! The command line of `side_by_side`.

/// What the run was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    /// Tiny sizes, harness checks only.
    pub smoke: bool,
    /// Where to write the report (nothing is written without it).
    pub out: Option<String>,
    /// Latency rounds on real guests.
    pub runs: usize,
    /// Fleet size on real guests.
    pub fleet: usize,
    /// Criterion's output directory (placement results).
    pub criterion: Option<String>,
    /// Run the real-guest comparisons when the libvirt environment is set.
    pub libvirt: bool,
    /// `--fleet-only N`: only comparison 2, with N guests.
    pub fleet_only: Option<usize>,
    /// virtrigaud rounds of the fleet comparison.
    pub fleet_rounds: usize,
}

/// Parses `std::env::args()`; exits with status 2 on an unknown argument.
pub(crate) fn parse() -> Args {
    let mut a = Args {
        smoke: false,
        out: None,
        runs: 10,
        fleet: 6,
        criterion: None,
        libvirt: true,
        fleet_only: None,
        fleet_rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--out" => a.out = it.next(),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--fleet" => a.fleet = it.next().and_then(|v| v.parse().ok()).unwrap_or(6),
            "--criterion" => a.criterion = it.next(),
            "--no-libvirt" => a.libvirt = false,
            "--fleet-rounds" => {
                a.fleet_rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(1)
            }
            "--fleet-only" => a.fleet_only = it.next().and_then(|v| v.parse().ok()).or(Some(6)),
            other => {
                eprintln!("side_by_side: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}
