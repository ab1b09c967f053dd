//! Process exit codes scripts can rely on: 0 ok, 2 bad input or configuration, 1 anything else.

/// Success.
pub const OK: i32 = 0;
/// A failure that is not the user's input.
pub const FAILURE: i32 = 1;
/// Bad input or configuration: the message says what to fix.
pub const BAD_INPUT: i32 = 2;
