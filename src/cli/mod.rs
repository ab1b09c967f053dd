//! The subcommands, one file each. `main.rs` parses the arguments and calls one `run` here;
//! [`CommandError`] and its exit codes are defined here and nowhere else.
//!
//! | subcommand      | file          |
//! |-----------------|---------------|
//! | `run` (the node; the composition root) | `run.rs` |
//! | `inspect MODEL` | `inspect.rs`  |
//! | `features`      | `features.rs` |
//! | `predict`       | `predict.rs`  |
//! | `bank build`    | `bank.rs`     |
//! | `dataset synthetic` | `dataset.rs` |
//! | `reindex DIR`   | `reindex.rs`  |

pub mod bank;
pub mod dataset;
mod error;
pub mod features;
pub mod inspect;
pub mod predict;
pub mod reindex;
pub mod run;

pub use error::{exit, CommandError};
