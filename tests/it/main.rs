//! The integration tests: one binary, black-box over real HTTP on 127.0.0.1 against the Azure
//! emulator. The soak test is ignored by default: `SOAK_SECS=10 cargo test --test it soak -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod access_log;
mod audience_tables;
mod binary;
mod book;
mod book_config;
mod callers;
mod cli_explain_doctor;
mod connections;
mod dashboard;
mod diagnose_samples;
mod diagnosis;
mod faults;
mod fuzz_regressions;
mod identities;
mod infra;
mod issued_tokens;
mod limits;
mod metrics_text;
mod money;
mod obo;
mod properties;
mod realtime;
mod redis_tls;
mod refusals;
mod reload;
mod reservations;
mod services_cli;
mod services_links;
mod services_sdk;
mod services_speech;
mod services_translator_search;
mod soak;
mod status;
mod surfaces;
mod talk_around;
mod traces;
mod usage_faults;
mod v1_surfaces;
mod walking_skeleton;
mod ws_callers;
