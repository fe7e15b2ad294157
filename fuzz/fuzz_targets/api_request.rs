//! Fuzzes what the alert API reads from a request: the query of `GET /api/v1/alerts`
//! (extracted exactly as the handler does, then validated into a store filter) and the
//! `since` parameter's time parser. Any bytes give a filter or a 400 message, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recwatch_fuzz::api_request(data));
