//! Classification of a parsed line: is the path a sensitive resource, and who is the client.
//! Owns the compiled prefix/extension and CIDR tables. Never keeps per-client state.

pub mod client;
pub mod path;
