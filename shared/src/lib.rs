//! FoodSave Auth: phone login by one-time SMS code, for AWS Lambda.
//!
//! `domain` holds the rules, `ports` the traits they need, `adapters` the AWS
//! implementations, `http` the request/response edge and `api` one module per endpoint.
//! Each Lambda binary in `functions/` is a few lines around [`runtime::serve`].

pub mod adapters;
pub mod api;
pub mod audit;
pub mod budget;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod keys;
pub mod ports;
pub mod rotation;
pub mod runtime;
pub mod telemetry;

#[cfg(feature = "devstack")]
pub mod devstack;
