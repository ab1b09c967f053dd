//! The ROS 2 command-line arguments `ros2 launch` / `ros2 run` pass to a node:
//! `--ros-args [-p NAME:=VALUE] [--params-file FILE] [-r FROM:=TO] [--log-level LEVEL] ... [--]`.
//!
//! Follows the ROS 2 "command line arguments" design: several `--ros-args` sections may appear,
//! each ends at `--` or at the end of the argv; `-p`/`-r` rules may target one node with a
//! `NODE:` prefix; `__node` / `__ns` remaps rename the node and move it to a namespace.

use std::path::PathBuf;

/// Errors in the ROS arguments.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RosArgsError {
    /// A flag without its value.
    #[error("--ros-args: {flag} needs a value ({usage})")]
    MissingValue {
        /// The flag.
        flag: String,
        /// What it takes.
        usage: &'static str,
    },
    /// A rule that is not `FROM:=TO` / `NAME:=VALUE`.
    #[error("--ros-args: {flag} {rule:?} is not of the form {usage}")]
    BadRule {
        /// The flag.
        flag: String,
        /// What was given.
        rule: String,
        /// The expected form.
        usage: &'static str,
    },
    /// A flag ROS 2 does not define (or that this node cannot honour).
    #[error("--ros-args: unknown argument {0:?}; supported: -p/--param NAME:=VALUE, --params-file FILE, -r/--remap FROM:=TO, --log-level LEVEL, -e/--enclave, --enable/--disable-{{rosout,stdout,external-lib}}-logs, --log-config-file FILE")]
    Unknown(String),
}

/// What the `--ros-args` sections said (rules for other nodes already filtered out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RosArgs {
    /// `--params-file` files, in order (later files win).
    pub params_files: Vec<PathBuf>,
    /// `-p NAME:=VALUE` overrides in order, the value still as YAML text.
    pub params: Vec<(String, String)>,
    /// `-r __node:=NAME`.
    pub node_name: Option<String>,
    /// `-r __ns:=/NS`.
    pub namespace: Option<String>,
    /// `-r FROM:=TO` topic remaps.
    pub remaps: Vec<(String, String)>,
    /// `--log-level LEVEL` (the global one).
    pub log_level: Option<String>,
}

/// Split a process argv into (ordinary arguments, ROS arguments). The ROS arguments are the
/// tokens inside `--ros-args ... [--]` sections, without the markers.
pub fn split_ros_args<I: IntoIterator<Item = String>>(argv: I) -> (Vec<String>, Vec<String>) {
    let mut plain = Vec::new();
    let mut ros = Vec::new();
    let mut inside = false;
    for a in argv {
        if a == "--ros-args" {
            inside = true;
        } else if inside && a == "--" {
            inside = false;
        } else if inside {
            ros.push(a);
        } else {
            plain.push(a);
        }
    }
    (plain, ros)
}

/// Split `FROM:=TO`, dropping rules that target another node (`OTHER:FROM:=TO`).
/// `Ok(None)` when the rule is for another node.
fn split_rule(
    flag: &str,
    rule: &str,
    node_name: &str,
    usage: &'static str,
) -> Result<Option<(String, String)>, RosArgsError> {
    let bad = || RosArgsError::BadRule {
        flag: flag.to_string(),
        rule: rule.to_string(),
        usage,
    };
    let (lhs, rhs) = rule.split_once(":=").ok_or_else(bad)?;
    // A node prefix is `NODE:` before the name (names themselves contain no ':').
    let lhs = match lhs.split_once(':') {
        Some((node, name)) => {
            if node != node_name {
                return Ok(None);
            }
            name
        }
        None => lhs,
    };
    if lhs.is_empty() {
        return Err(bad());
    }
    Ok(Some((lhs.to_string(), rhs.to_string())))
}

impl RosArgs {
    /// Parse the ROS argument tokens (from [`split_ros_args`]). `default_node_name` is the name
    /// node-targeted rules are matched against (the original name, as rcl does).
    pub fn parse(tokens: &[String], default_node_name: &str) -> Result<RosArgs, RosArgsError> {
        let mut out = RosArgs::default();
        let mut it = tokens.iter();
        while let Some(flag) = it.next() {
            let mut value = |usage: &'static str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| RosArgsError::MissingValue {
                        flag: flag.clone(),
                        usage,
                    })
            };
            match flag.as_str() {
                "-p" | "--param" => {
                    let v = value("NAME:=VALUE")?;
                    if let Some((name, val)) =
                        split_rule(flag, &v, default_node_name, "NAME:=VALUE")?
                    {
                        out.params.push((name, val));
                    }
                }
                "--params-file" => out.params_files.push(PathBuf::from(value("FILE")?)),
                "-r" | "--remap" => {
                    let v = value("FROM:=TO")?;
                    if let Some((from, to)) = split_rule(flag, &v, default_node_name, "FROM:=TO")? {
                        match from.as_str() {
                            "__node" | "__name" => out.node_name = Some(to),
                            "__ns" => out.namespace = Some(to),
                            _ => out.remaps.push((from, to)),
                        }
                    }
                }
                "--log-level" => {
                    let v = value("LEVEL or LOGGER:=LEVEL")?;
                    // A per-logger level (`name:=level`) is accepted; only the global one is used.
                    if !v.contains(":=") {
                        out.log_level = Some(v);
                    }
                }
                // Accepted and not needed by this node: security enclaves (no DDS security
                // here), log sinks (we log to stderr), external log configuration.
                "-e" | "--enclave" | "--log-config-file" => {
                    value("VALUE")?;
                }
                "--enable-rosout-logs"
                | "--disable-rosout-logs"
                | "--enable-stdout-logs"
                | "--disable-stdout-logs"
                | "--enable-external-lib-logs"
                | "--disable-external-lib-logs" => {}
                other => return Err(RosArgsError::Unknown(other.to_string())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_sections_and_end_markers() {
        let (plain, ros) = split_ros_args(s(&[
            "run",
            "--ros-args",
            "-p",
            "a:=1",
            "--",
            "--max-frames",
            "3",
            "--ros-args",
            "-r",
            "__ns:=/x",
        ]));
        assert_eq!(plain, s(&["run", "--max-frames", "3"]));
        assert_eq!(ros, s(&["-p", "a:=1", "-r", "__ns:=/x"]));
    }

    #[test]
    fn parses_what_launch_passes() {
        let a = RosArgs::parse(
            &s(&[
                "-r",
                "__node:=cam0",
                "-r",
                "__ns:=/robot1",
                "--params-file",
                "/a.yaml",
                "--params-file",
                "/tmp/launch_params_x",
                "-p",
                "heads.detection.enabled:=false",
                "-p",
                "other_node:source:=x",
                "-r",
                "dinov3/detections:=objects",
                "-r",
                "dinov3_perception:dinov3/depth:=d",
                "--log-level",
                "debug",
            ]),
            "dinov3_perception",
        )
        .unwrap();
        assert_eq!(a.node_name.as_deref(), Some("cam0"));
        assert_eq!(a.namespace.as_deref(), Some("/robot1"));
        assert_eq!(a.params_files.len(), 2);
        assert_eq!(
            a.params,
            vec![("heads.detection.enabled".into(), "false".into())]
        );
        assert_eq!(
            a.remaps,
            vec![
                ("dinov3/detections".into(), "objects".into()),
                ("dinov3/depth".into(), "d".into())
            ]
        );
        assert_eq!(a.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn rejects_bad_rules_and_unknown_flags() {
        let e = RosArgs::parse(&s(&["-p", "noequals"]), "n").unwrap_err();
        assert!(e.to_string().contains("NAME:=VALUE"), "{e}");
        let e = RosArgs::parse(&s(&["-p"]), "n").unwrap_err();
        assert!(e.to_string().contains("needs a value"), "{e}");
        let e = RosArgs::parse(&s(&["--bogus"]), "n").unwrap_err();
        assert!(e.to_string().contains("--bogus"), "{e}");
    }
}
