//! Fuzzes the Kafka payload decoder (raw lines or Vector/Filebeat JSON envelopes) in every
//! payload mode, with one reused Unwrapper as the consumer keeps it: any bytes give lines and
//! an origin, or a counted reason to skip, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recwatch_fuzz::kafka_envelope(data));
