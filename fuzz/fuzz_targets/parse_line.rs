//! Fuzzes the access-log line parser in every format, and the lazy accessors a matching line
//! is asked for (bytes, referer, user agent, time, client address, Kafka key). Never panics
//! on any bytes; a parsed line's fields borrow from the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recwatch_fuzz::line_parser(data));
