//! The billing role. Today: the owner of the catalog, and of the business
//! data it prices (customers and subscriptions).
//!
//! Manifests (from `aforo apply`, the manifests folder or the operator) come
//! in through the catalog API as resources; [`catalog::CatalogApi`] compiles
//! them (`aforo_crds::compile`) against the version in force and stores a new
//! immutable version when the content changed. Customers and subscriptions
//! come in through the admin API, the CLI and CSV import.
//!
//! [`pricing`] is the pure pricing math the RevenueEstimator and the bill run
//! share; [`billrun`] turns usage into invoices and [`invoices`] serves them.

pub mod billrun;
pub mod catalog;
pub mod customers;
mod errors;
pub mod grpc;
pub mod invoices;
pub mod metrics;
pub mod rest;
pub mod usage;

/// The pure parts, from `aforo-core`, where they are defined.
pub use aforo_core::{period, pricing, resolve};
