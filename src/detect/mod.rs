//! Detection: data-driven rules evaluated over per-group sliding windows.
//! Owns rule definitions, per-client/per-source state and alert episodes. State is owned by
//! one worker thread each (events are routed by group hash); nothing here locks or does I/O.

pub mod alert;
pub mod event;
pub mod rule;
pub mod window;
pub mod worker;
