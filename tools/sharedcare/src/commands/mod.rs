//! Client commands: one file per resource, each with its flags, the call
//! (reused by the demo) and how its answer is printed.

pub mod access_report;
pub mod audit;
pub mod care;
pub mod directive;
pub mod org;
pub mod patient;
pub mod principal;
pub mod record;
pub mod records_admin;
pub mod storage;
pub mod token;
pub mod transfer;
