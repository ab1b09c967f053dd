//! Test support shared by the integration tests (`mod support;`): a manual clock and, on the
//! platforms with V4L2, a fake camera.
//!
//! Each test crate compiles its own copy and uses only part of it, hence `dead_code` is allowed.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

pub mod clock;
pub mod fake_camera;
