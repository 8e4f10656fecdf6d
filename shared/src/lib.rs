//! FoodSave Auth: phone login by one-time SMS code, for AWS Lambda.
//!
//! `domain` holds the rules, `ports` the traits they need, `adapters` the AWS
//! implementations, `http` the request/response edge and `api` one module per endpoint.
//! Each Lambda binary in `functions/` is a few lines around `runtime::serve`. `accounts`
//! is what is done to an account, shared by the endpoints and `admin`, the operator's
//! actions behind `foodsave-auth-admin` (`tools/admin`). `events` puts account and
//! session events on EventBridge, and relays those whose put failed.
//!
//! The `aws` feature (on by default) brings the AWS side: `adapters`, `api`, `runtime`,
//! `keys` and `rotation`. Without it the crate is the domain and the request edge
//! (`http`, whose `http::probe` is what `fuzz/` and the corpus replay test drive).

/// The release (the workspace's version, CHANGELOG.md), in every function's init line.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(feature = "aws")]
pub mod accounts;
#[cfg(feature = "aws")]
pub mod adapters;
#[cfg(feature = "aws")]
pub mod admin;
#[cfg(feature = "aws")]
pub mod api;
pub mod audit;
pub mod budget;
pub mod clock;
pub mod config;
pub mod domain;
#[cfg(feature = "aws")]
pub mod events;
pub mod http;
#[cfg(feature = "aws")]
pub mod keys;
pub mod ports;
#[cfg(feature = "aws")]
pub mod rotation;
#[cfg(feature = "aws")]
pub mod runtime;
pub mod telemetry;

#[cfg(feature = "devstack")]
pub mod devstack;
