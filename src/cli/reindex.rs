//! `reindex DIR`: rebuild a bag's file summaries and `metadata.yaml` after its recorder was
//! killed or ran out of disk (what `ros2 bag reindex` does).

use std::path::PathBuf;

use super::CommandError;
use crate::bag::reindex::reindex;

/// Arguments of `reindex`.
#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    /// The bag directory (holding `<name>_0.mcap`, ...).
    pub dir: PathBuf,
}

/// Reindex and print what was done.
pub fn run(args: &ReindexArgs) -> Result<(), CommandError> {
    let report = reindex(&args.dir)?;
    for f in &report.files {
        match (&f.stopped, f.rewritten) {
            (Some(why), true) => println!(
                "{}: rewritten with {} messages (the old file ended early: {why})",
                f.path.display(),
                f.messages
            ),
            (None, true) => println!(
                "{}: rewritten with {} messages (it had no summary)",
                f.path.display(),
                f.messages
            ),
            _ => println!("{}: complete, {} messages", f.path.display(), f.messages),
        }
    }
    println!(
        "{}: metadata.yaml rebuilt, {} messages in {} file(s)",
        args.dir.display(),
        report.messages,
        report.files.len()
    );
    Ok(())
}
