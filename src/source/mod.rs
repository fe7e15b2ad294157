//! Sources: where raw log bytes come from, framed into complete lines.
//! Owns input handles and line framing. Never parses a line: emits raw line bytes.

pub mod framing;
pub mod kafka;
pub mod replay;
pub mod tail;
