//! The fault suite's command: `faults [--seed N] [--members 3] [--seconds 60] [--clients 4]
//! [--lease-ms 0] [--forward-writes on] [--batches-in-flight 2] [--compact on] [--out DIR]`. Exits 1 when a run found anomalies; the evidence is kept under DIR.

use std::path::PathBuf;
use std::time::Duration;

use pg_paxos_tests::faults::{run, Settings};

fn main() {
    let mut settings = Settings {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        members: 3,
        duration: Duration::from_secs(60),
        clients_per_node: 4,
        out: PathBuf::from("/tmp/pg_paxos_faults"),
        lease: Duration::ZERO,
        forward_writes: true,
        batches_in_flight: 2,
        compact: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        let number = || -> u64 {
            value.parse().unwrap_or_else(|_| {
                eprintln!("{} needs a number, got {value:?}", pair[0]);
                std::process::exit(2)
            })
        };
        match pair[0].as_str() {
            "--seed" => settings.seed = number(),
            "--members" => settings.members = number() as usize,
            "--seconds" => settings.duration = Duration::from_secs(number()),
            "--clients" => settings.clients_per_node = number() as usize,
            "--lease-ms" => settings.lease = Duration::from_millis(number()),
            "--forward-writes" => settings.forward_writes = on_off(&pair[0], value),
            "--compact" => settings.compact = on_off(&pair[0], value),
            "--batches-in-flight" => settings.batches_in_flight = number(),
            "--out" => settings.out = PathBuf::from(value),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    let summary = runtime.block_on(run(&settings));
    print!("{}", summary.text);
    if !summary.anomalies.is_empty() {
        println!(
            "evidence kept in {}/seed-{}; replay the schedule with: scripts/faults.sh --seed {} --members {} --seconds {} --lease-ms {} --forward-writes {} --batches-in-flight {} --compact {}",
            settings.out.display(),
            settings.seed,
            settings.seed,
            settings.members,
            settings.duration.as_secs(),
            settings.lease.as_millis(),
            if settings.forward_writes { "on" } else { "off" },
            settings.batches_in_flight,
            if settings.compact { "on" } else { "off" }
        );
        std::process::exit(1);
    }
}

fn on_off(name: &str, value: &str) -> bool {
    match value {
        "on" => true,
        "off" => false,
        _ => {
            eprintln!("{name} needs on or off, got {value:?}");
            std::process::exit(2)
        }
    }
}
