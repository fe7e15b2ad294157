//! The floor under the daemon's memory in a mass fetch (issue 13): what sled 0.34.7 alone takes
//! to hold the store's two entries per client, and nothing else of recwatch. N clients, each
//! an alert record keyed by the time its alert opened (all in one second, as in
//! `scripts/bench --mass`, so within it they follow their ids' hashes) and a ledger entry keyed
//! by a hash of the client (clients arrive in no order), written as the store writes them: transactions of 512 alerts, each flushed, with
//! the store's page cache (8 MiB) and malloc's free pages given back after each.
//! Prints RSS and peak RSS every N/10 clients.
//!
//! Usage: cargo run --release --example sled_floor -- [CLIENTS] [RECORD_BYTES] [LEDGER_BYTES]
//! (defaults 100000, 560 and 180: the sizes of a one-fetch R1 record and ledger entry).
use std::time::Instant;

use sled::Transactional;

/// The store's page cache (`store::db`).
const CACHE_BYTES: u64 = 8 << 20;
const PER_WRITE: u64 = 512;

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args().nth(i).map_or(default, |a| a.parse().expect("a number"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (clients, record_len, ledger_len) = (arg(1, 100_000), arg(2, 560) as usize, arg(3, 180) as usize);
    let dir = tempfile::tempdir()?;
    println!("sled alone, {clients} clients: RSS at start {:.1} MiB", status_mib("VmRSS:"));
    let db = sled::Config::new().path(dir.path()).flush_every_ms(None).cache_capacity(CACHE_BYTES).open()?;
    let (alerts, ledger) = (db.open_tree("alerts")?, db.open_tree("ledger")?);
    let opened = ((1_764_000_000u64) | 1 << 63).to_be_bytes();
    let started = Instant::now();
    let mut written = 0;
    while written < clients {
        let end = (written + PER_WRITE).min(clients);
        (&alerts, &ledger)
            .transaction(|(alerts, ledger)| {
                for client in written..end {
                    let hash = client.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let mut key = opened.to_vec();
                    key.extend_from_slice(format!("{:08x}{hash:016x}", 1_764_000_000u32).as_bytes());
                    alerts.insert(key, vec![b'a'; record_len])?;
                    let mut key = u128::from(hash).wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes().to_vec();
                    key.extend_from_slice(&[7; 16]);
                    ledger.insert(key, vec![b'l'; ledger_len])?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| format!("{e:?}"))?;
        db.flush()?;
        // SAFETY: malloc_trim only returns free memory to the kernel; nothing else runs.
        unsafe { libc::malloc_trim(0) };
        written = end;
        if written % (clients / 10).max(1) == 0 || written == clients {
            println!(
                "{written:>9} clients  RSS {:7.1} MiB  peak {:7.1} MiB  {:6.1} s",
                status_mib("VmRSS:"),
                status_mib("VmHWM:"),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
