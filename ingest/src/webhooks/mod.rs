//! The webhook front door: provider deliveries, verified and mapped to events.
pub mod mapping;
pub mod verify;
