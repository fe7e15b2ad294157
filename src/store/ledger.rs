//! The evidence ledger: what every non-internal client did to every sensitive resource, and the
//! distinct set behind each alert's `distinct_resources`. Owns the key layout of its sled
//! trees and how a delta is added to them inside the store writer's transaction. Never opens a
//! transaction or flushes ([`super::db`] does, owned by the one store thread), never sees a raw
//! path (paths arrive pseudonymised, keys are hashes keyed with a secret).
//!
//! # Layout (all integers big-endian; times sign-flipped so byte order is time order)
//! - `ledger`: `client(16) ‖ path(16)` → [`Evidence`] (JSON): first/last seen, requests, 2xx
//!   requests and bytes, statuses, source, client kind and partner, the pseudonymised path,
//!   and its counts by hour (requests, 2xx requests, 2xx bytes). A time range [since, until)
//!   is exact to the hour; retention drops the hours before its cutoff.
//!   `client` is the IPv6-mapped address, or for a host name a keyed hash with the top bit
//!   set ([`crate::detect::worker::ledger_client_key`]); `path` the keyed hash of the raw
//!   normalised path (two spellings of a personnummer are two files, as in alerts).
//!   All resources of one client: a prefix scan of 16 bytes.
//! - `ledger_by_hour` (stores written before entries kept their hours): `hour(8) ‖ client(16)
//!   ‖ path(16)` → requests, 2xx requests, 2xx bytes (3 × u64). Folded into the entries when
//!   the store is opened ([`migrate_hour_rows`]), then dropped: a row for each (client,
//!   resource, hour) was one sled entry more per client of a mass fetch (~16 MiB of RSS per
//!   100 k clients, issue 13).
//! - `alert_paths`: the alert's distinct set beyond its first [`INLINE_PATHS`] keys, which its
//!   own record carries (`path_keys`; a record written before that has none, and its whole
//!   set is here): `alert id (its text) ‖ bucket(2)` → the bucket's path keys (16 bytes
//!   each, sorted; [`Spill::Buckets`]), or in records written before buckets `alert id ‖
//!   path(16)` → empty ([`Spill::Keys`]). Retention removes both by the id's prefix.
//!   `distinct_resources` grows by the keys a write adds that were not there.
//!
//! # Exactly once, by source position
//! The store writer adds every delta in the same sled transaction as the checkpoint of the
//! lines it came from (file offsets; see [`super::writer`]), and the lines between the
//! restart point and that checkpoint are read again flagged as re-reads, which make no delta.
//! So a line is in the ledger iff its position is before the durable checkpoint, whatever
//! the timestamps say. A write retried after a failed flush carries the same write id, and a
//! transaction that finds its id already stored adds nothing. Kafka sources keep their offsets
//! in the broker (committed after the write), so each Kafka barrier also carries the highest
//! offset per partition, written in the same transaction (`meta`: `kafka_counted\0source\0
//! topic\0partition` → offset): a message re-delivered at or below it is a re-read.

use sled::transaction::{ConflictableTransactionError, Transactional, TransactionalTree};

use super::{Counts, StoreError};
use crate::detect::evidence::{fold_hour, Evidence, HourCounts};

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Sign bit flipped: byte order is numeric order for negative times too (the time keys of the
/// ledger's old hour rows and of alerts, [`super::db`]).
pub(super) fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn entry_key(client: u128, path: u128) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&client.to_be_bytes());
    k[16..].copy_from_slice(&path.to_be_bytes());
    k
}

#[cfg(test)]
pub(super) fn hour_key(hour: i64, client: u128, path: u128) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&ordered(hour));
    k[8..].copy_from_slice(&entry_key(client, path));
    k
}

pub(super) fn alert_path_key(id: &str, path: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 16);
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&path.to_be_bytes());
    k
}

#[cfg(test)]
pub(super) fn encode_hour(c: &HourCounts) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&c.requests.to_be_bytes());
    v[8..16].copy_from_slice(&c.ok.to_be_bytes());
    v[16..].copy_from_slice(&c.bytes.to_be_bytes());
    v
}

fn decode_hour(v: &[u8]) -> HourCounts {
    let at = |i: usize| v.get(i..i + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
    HourCounts { requests: at(0), ok: at(8), bytes: at(16) }
}

/// A ledger entry as stored, or None when it is unreadable.
pub(super) fn decode_entry(bytes: &[u8]) -> Option<Evidence> {
    serde_json::from_slice(bytes).ok()
}

pub(super) fn encode_entry(e: &Evidence) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(e).map_err(|source| StoreError::Corrupt { id: "ledger entry".into(), source })
}

/// Adds one (client, resource) delta, hours included, to its entry (with [`Counts::Max`], a
/// replay's totals: each count becomes the larger of the stored one and the new one).
pub(super) fn add_evidence(ledger: &TransactionalTree, e: &Evidence, mode: Counts) -> TxResult<()> {
    let key = entry_key(e.key.0, e.key.1);
    let mut entry = match ledger.get(key)?.and_then(|b| decode_entry(&b)) {
        Some(stored) => stored,
        // New (or unreadable: the delta starts it again).
        None => Evidence { requests: 0, ok: 0, bytes: 0, statuses: Vec::new(), hours: Vec::new(), ..e.clone() },
    };
    match mode {
        Counts::Add => entry.fold(e),
        Counts::Max => entry.fold_max(e),
    }
    ledger.insert(&key[..], encode_entry(&entry).map_err(ConflictableTransactionError::Abort)?)?;
    Ok(())
}

/// Rows of `ledger_by_hour` folded per transaction by [`migrate_hour_rows`].
const MIGRATE_BATCH: usize = 4096;

/// Folds the rows of a store's `ledger_by_hour` tree (written before entries kept their hours)
/// into their entries, each batch in one transaction with the removal of its rows, flushed: a
/// crash in the middle leaves every row counted once, in the entry or still in the tree, and
/// the next start goes on from there (~55 k rows/s: millions of rows can outlast systemd's
/// start timeout). A row whose entry is gone or unreadable is dropped (no report could join
/// it). Returns the rows folded.
pub(super) fn migrate_hour_rows(ledger: &sled::Tree, hour_rows: &sled::Tree) -> Result<usize, StoreError> {
    let mut migrated = 0;
    loop {
        let batch: Vec<(sled::IVec, sled::IVec)> = hour_rows.iter().take(MIGRATE_BATCH).collect::<Result<_, _>>()?;
        if batch.is_empty() {
            return Ok(migrated);
        }
        (ledger, hour_rows).transaction(|(tx_ledger, tx_rows)| {
            for (key, value) in &batch {
                tx_rows.remove(key)?;
                let (Some(hour), Some(entry_key)) = (key.get(..8), key.get(8..)) else { continue };
                let hour = (u64::from_be_bytes(hour.try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
                let Some(mut entry) = tx_ledger.get(entry_key)?.and_then(|b| decode_entry(&b)) else { continue };
                fold_hour(&mut entry.hours, hour, &decode_hour(value), HourCounts::add);
                tx_ledger.insert(entry_key, encode_entry(&entry).map_err(ConflictableTransactionError::Abort)?)?;
            }
            Ok(())
        })?;
        ledger.flush()?;
        migrated += batch.len();
        if migrated % (MIGRATE_BATCH * 64) == 0 {
            tracing::info!(migrated, "moving ledger hours into their entries");
        }
    }
}

/// The first distinct path keys an alert record carries itself ([`InlinePaths`]); later ones go
/// to `alert_paths`. Most alerts of a mass fetch have one key: one sled entry each in
/// `alert_paths` cost ~19 MiB of the daemon's RSS per 100 k such alerts (sled's memory follows
/// its number of entries), and a third of the writer's time.
pub(super) const INLINE_PATHS: usize = 32;

/// The distinct path keys kept in an alert's own record (hex, at most [`INLINE_PATHS`]).
/// `None` in a record written before records carried keys: its whole set is in `alert_paths`.
pub(super) type InlinePaths = Option<Vec<String>>;

/// How an alert's keys past its inline ones are kept in `alert_paths`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Spill {
    /// One entry per bucket of keys (`id ‖ bucket(2)` → its keys, 16 bytes each, sorted): at
    /// most 2^[`BUCKET_BITS`] entries per alert, whatever its set. The set of a source-grouped alert
    /// grows with every recording fetched anonymously from its source: a mass fetch of 100 k
    /// files was 100 k entries.
    Buckets,
    /// One entry per key (`id ‖ path(16)` → empty): records written before buckets.
    Keys,
}

/// Path keys are keyed hashes, so their top bits spread them evenly over the buckets. 16 bits:
/// a source-grouped alert of 1 M distinct files holds ~15 keys (240 bytes) a bucket, read and
/// rewritten when one is added. With 12 bits (~250 keys, 4 KB a bucket) the rewrites cost more
/// memory than one entry per key did: mass fetch of 1 M clients, peak RSS 329 MiB against 276
/// (one entry per key) and 246 (16 bits).
const BUCKET_BITS: u32 = 16;

fn bucket_of(path: u128) -> u16 {
    (path >> (128 - BUCKET_BITS)) as u16
}

fn bucket_key(id: &str, bucket: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 2);
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// Merges sorted, distinct `keys` into a bucket's value; returns the new value and how many
/// of `keys` it did not hold. A value that is not whole keys keeps its whole ones.
fn merge_bucket(value: &[u8], keys: &[u128]) -> (Vec<u8>, u64) {
    let mut held = value.chunks_exact(16).map(|k| u128::from_be_bytes(k.try_into().expect("16 bytes"))).peekable();
    let mut out = Vec::with_capacity(value.len() + keys.len() * 16);
    let mut added = 0;
    for &key in keys {
        while let Some(h) = held.next_if(|&h| h < key) {
            out.extend_from_slice(&h.to_be_bytes());
        }
        if held.next_if_eq(&key).is_none() {
            added += 1;
        }
        out.extend_from_slice(&key.to_be_bytes());
    }
    held.for_each(|h| out.extend_from_slice(&h.to_be_bytes()));
    (out, added)
}

/// Adds `paths` to the distinct set of alert `id`: into its record's `inline` keys while they
/// have room, else into `alert_paths` as `spill` says. Returns how many were not in the set.
pub(super) fn add_alert_paths(
    alert_paths: &TransactionalTree,
    inline: &mut InlinePaths,
    spill: Spill,
    id: &str,
    paths: &[u128],
) -> TxResult<u64> {
    let mut added = 0;
    let mut spilled = Vec::new();
    for &p in paths {
        if let Some(keys) = inline.as_mut() {
            let hex = format!("{p:032x}");
            if keys.contains(&hex) {
                continue;
            }
            if keys.len() < INLINE_PATHS {
                keys.push(hex);
                added += 1;
                continue;
            }
        }
        spilled.push(p);
    }
    match spill {
        Spill::Keys => {
            for p in spilled {
                if alert_paths.insert(alert_path_key(id, p), &[][..])?.is_none() {
                    added += 1;
                }
            }
        }
        Spill::Buckets => {
            spilled.sort_unstable();
            spilled.dedup();
            for keys in spilled.chunk_by(|a, b| bucket_of(*a) == bucket_of(*b)) {
                let key = bucket_key(id, bucket_of(keys[0]));
                let old = alert_paths.get(&key)?;
                let (value, new) = merge_bucket(old.as_deref().unwrap_or_default(), keys);
                if new > 0 {
                    alert_paths.insert(key, value)?;
                    added += new;
                }
            }
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_hour_rows_decode_and_a_short_value_is_zeros() {
        let c = HourCounts { requests: 3, ok: 2, bytes: u64::MAX };
        assert_eq!(decode_hour(&encode_hour(&c)), c);
        assert_eq!(decode_hour(b"short"), HourCounts::default(), "a short value is zeros, not a panic");
        assert!(hour_key(-1, 5, 5) < hour_key(0, 0, 0), "rows sort by hour, negative ones first");
    }

    #[test]
    fn a_bucket_merges_keys_in_order_and_counts_only_new_ones() {
        let value = |keys: &[u128]| keys.iter().flat_map(|k| k.to_be_bytes()).collect::<Vec<u8>>();
        assert_eq!(merge_bucket(&[], &[3, 9]), (value(&[3, 9]), 2));
        assert_eq!(merge_bucket(&value(&[3, 9]), &[1, 3, 5, 12]), (value(&[1, 3, 5, 9, 12]), 3));
        assert_eq!(merge_bucket(&value(&[3, 9]), &[3, 9]), (value(&[3, 9]), 0));
        let mut torn = value(&[3, 9]);
        torn.extend_from_slice(b"short");
        assert_eq!(merge_bucket(&torn, &[4]), (value(&[3, 4, 9]), 1), "a torn tail is dropped");
        assert_eq!(u32::from(bucket_of(u128::MAX)), (1 << BUCKET_BITS) - 1);
        assert_eq!(bucket_of(u128::MAX >> BUCKET_BITS), 0);
    }
}
