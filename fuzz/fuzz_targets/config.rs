//! Fuzzes the config loader (TOML → validated Config) with arbitrary text: it answers with a
//! Config or a ConfigError whose message names file and key, never a panic. The file name is
//! in a directory that does not exist, so relative paths in the text resolve to nothing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recwatch_fuzz::config_loader(data));
