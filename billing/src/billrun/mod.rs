//! The bill run's I/O around the ten pure stages of
//! [`aforo_core::billrun`] (re-exported here): which periods are due and
//! their inputs, settling and reconciliation ([`runner`]), replaying a
//! period ([`replay`]), delivering invoices ([`deliver`]) and exporting an
//! audit trail ([`audit`]).

pub use aforo_core::billrun::*;

pub mod audit;
pub mod deliver;
pub mod replay;
pub mod runner;
