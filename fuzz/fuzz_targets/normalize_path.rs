//! Fuzzes the request-target normaliser: any bytes give a path that starts with `/`, fits
//! the length bound, and normalising that path again changes nothing (so a second decoding
//! pass, as a proxy might make, cannot reveal a different path).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recwatch_fuzz::path_normaliser(data));
