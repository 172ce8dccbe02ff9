#![allow(clippy::field_reassign_with_default, dead_code)]
//! brand-idp's end-to-end tests: one binary, modules per area, a real server on port 0 and
//! a fresh database (SQLite file or PostgreSQL database) for every test.

mod browser;
mod flows;
mod foundation;
mod hostile;
mod liveengage;
mod operating;
mod props;
mod resilience;
mod serve;
mod support;
mod webdriver;
