//! ROS 2 parameters: declarations (type, default, range, description), parameter YAML files
//! in ROS form, `-p NAME:=VALUE` overrides, and the run-time store the parameter services use.
//!
//! Start-up problems (unknown parameter, wrong type, out of range) are errors that name the
//! parameter and where it came from; a run-time set that fails the same checks is rejected with
//! the reason, as `ros2 param set` shows it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use ros2_client::ParameterValue;
use serde_yaml_ng::Value as Yaml;

/// Numeric range of a parameter (`rcl_interfaces/ParameterDescriptor` ranges).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// No range.
    None,
    /// Inclusive integer range.
    Integer {
        /// Lowest.
        from: i64,
        /// Highest.
        to: i64,
    },
    /// Inclusive floating-point range.
    Double {
        /// Lowest.
        from: f64,
        /// Highest.
        to: f64,
    },
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Dotted name, e.g. `heads.detection.enabled`.
    pub name: String,
    /// Default value; its type is the parameter's type.
    pub default: ParameterValue,
    /// One line for `ros2 param describe`.
    pub description: String,
    /// Constraints not expressed by the range.
    pub constraints: String,
    /// Allowed values for numbers.
    pub range: Range,
    /// Fixed once the node runs (changing it needs a restart).
    pub read_only: bool,
}

impl ParamSpec {
    /// A parameter that can change at run time.
    pub fn new(name: impl Into<String>, default: ParameterValue, description: &str) -> Self {
        ParamSpec {
            name: name.into(),
            default,
            description: description.to_string(),
            constraints: String::new(),
            range: Range::None,
            read_only: false,
        }
    }

    /// Mark as fixed after start-up.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Set an inclusive range.
    pub fn range(mut self, range: Range) -> Self {
        self.range = range;
        self
    }

    /// Describe extra constraints.
    pub fn constraints(mut self, text: &str) -> Self {
        self.constraints = text.to_string();
        self
    }
}

/// Errors in parameter files and overrides (all exit 2).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    /// A parameter file cannot be read or is not YAML.
    #[error("parameter file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and the fix.
        reason: String,
    },
    /// A parameter the node does not declare.
    #[error("unknown parameter {name:?} (from {origin}){hint}; `ros2 param list` or the README's parameter table shows the declared ones")]
    Unknown {
        /// Name.
        name: String,
        /// File or `-p`.
        origin: String,
        /// "; did you mean ..." or empty.
        hint: String,
    },
    /// A value that fails the parameter's checks.
    #[error("parameter {name} (from {origin}): {reason}")]
    Invalid {
        /// Name.
        name: String,
        /// File or `-p`.
        origin: String,
        /// Why, and what is accepted.
        reason: String,
    },
}

/// The declared parameters of a node.
#[derive(Debug, Clone, Default)]
pub struct ParamTable {
    specs: Vec<ParamSpec>,
}

fn type_name(v: &ParameterValue) -> &'static str {
    match v {
        ParameterValue::NotSet => "not set",
        ParameterValue::Boolean(_) => "bool",
        ParameterValue::Integer(_) => "integer",
        ParameterValue::Double(_) => "double",
        ParameterValue::String(_) => "string",
        ParameterValue::ByteArray(_) => "byte array",
        ParameterValue::BooleanArray(_) => "bool array",
        ParameterValue::IntegerArray(_) => "integer array",
        ParameterValue::DoubleArray(_) => "double array",
        ParameterValue::StringArray(_) => "string array",
    }
}

/// A parameter value as text (for logs and messages).
pub fn value_text(v: &ParameterValue) -> String {
    match v {
        ParameterValue::NotSet => "<not set>".into(),
        ParameterValue::Boolean(b) => b.to_string(),
        ParameterValue::Integer(i) => i.to_string(),
        ParameterValue::Double(d) => format!("{d:?}"),
        ParameterValue::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

impl ParamTable {
    /// A table of declarations (names must be unique; a duplicate is a programming error and
    /// the later one is dropped).
    pub fn new(specs: Vec<ParamSpec>) -> Self {
        let mut out: Vec<ParamSpec> = Vec::with_capacity(specs.len());
        for s in specs {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
        ParamTable { specs: out }
    }

    /// The declarations, in declaration order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// One declaration.
    pub fn spec(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// Replace a default (e.g. a threshold read from a head manifest).
    pub fn set_default(&mut self, name: &str, value: ParameterValue) {
        if let Some(s) = self.specs.iter_mut().find(|s| s.name == name) {
            s.default = value;
        }
    }

    fn unknown(&self, name: &str, origin: &str) -> ParamError {
        // Suggest the declared name sharing the longest prefix or suffix.
        let best = self
            .specs
            .iter()
            .map(|s| {
                let pre = s
                    .name
                    .chars()
                    .zip(name.chars())
                    .take_while(|(a, b)| a == b)
                    .count();
                let suf = s
                    .name
                    .chars()
                    .rev()
                    .zip(name.chars().rev())
                    .take_while(|(a, b)| a == b)
                    .count();
                (pre.max(suf), &s.name)
            })
            .max_by_key(|(n, _)| *n);
        let hint = match best {
            Some((n, s)) if n >= 3 => format!("; did you mean {s:?}?"),
            _ => String::new(),
        };
        ParamError::Unknown {
            name: name.to_string(),
            origin: origin.to_string(),
            hint,
        }
    }

    /// Check `value` for parameter `name`: declared, same type (an integer is accepted for a
    /// double), inside the range. Returns the value as stored (coerced), or the reason.
    pub fn check(&self, name: &str, value: ParameterValue) -> Result<ParameterValue, String> {
        let spec = self
            .spec(name)
            .ok_or_else(|| format!("parameter {name:?} is not declared by this node"))?;
        let value = match (&spec.default, value) {
            (ParameterValue::Double(_), ParameterValue::Integer(i)) => {
                ParameterValue::Double(i as f64)
            }
            (d, v) if std::mem::discriminant(d) == std::mem::discriminant(&v) => v,
            (d, v) => {
                return Err(format!(
                    "wrong type: {} {} given, {} expected",
                    type_name(&v),
                    value_text(&v),
                    type_name(d)
                ))
            }
        };
        match (spec.range, &value) {
            (Range::Integer { from, to }, ParameterValue::Integer(i))
                if !(from..=to).contains(i) =>
            {
                Err(format!("{i} is out of range [{from}, {to}]"))
            }
            (Range::Double { from, to }, ParameterValue::Double(d))
                if !(d.is_finite() && (from..=to).contains(d)) =>
            {
                Err(format!("{d} is out of range [{from}, {to}]"))
            }
            _ => Ok(value),
        }
    }

    /// Resolve the start-up values: defaults, then every parameter file in order, then the
    /// `-p` overrides. `node_name` and `namespace` select the file sections that apply
    /// (`/**`, `NAME`, `/NS/NAME`, `/**/NAME`).
    pub fn resolve(
        &self,
        files: &[PathBuf],
        overrides: &[(String, String)],
        node_name: &str,
        namespace: &str,
    ) -> Result<BTreeMap<String, ParameterValue>, ParamError> {
        let mut values: BTreeMap<String, ParameterValue> = self
            .specs
            .iter()
            .map(|s| (s.name.clone(), s.default.clone()))
            .collect();
        for file in files {
            for (name, value) in load_params_file(file, node_name, namespace)? {
                let origin = file.display().to_string();
                self.put(&mut values, &name, value, &origin)?;
            }
        }
        for (name, text) in overrides {
            let origin = format!("-p {name}:={text}");
            let yaml: Yaml = serde_yaml_ng::from_str(text).unwrap_or(Yaml::String(text.clone()));
            let value = yaml_to_value(&yaml).map_err(|reason| ParamError::Invalid {
                name: name.clone(),
                origin: origin.clone(),
                reason,
            })?;
            self.put(&mut values, name, value, &origin)?;
        }
        Ok(values)
    }

    fn put(
        &self,
        values: &mut BTreeMap<String, ParameterValue>,
        name: &str,
        value: ParameterValue,
        origin: &str,
    ) -> Result<(), ParamError> {
        if self.spec(name).is_none() {
            return Err(self.unknown(name, origin));
        }
        let v = self
            .check(name, value)
            .map_err(|reason| ParamError::Invalid {
                name: name.to_string(),
                origin: origin.to_string(),
                reason,
            })?;
        values.insert(name.to_string(), v);
        Ok(())
    }
}

/// A YAML scalar or list as a ROS parameter value (the rules of rcl_yaml_param_parser).
fn yaml_to_value(y: &Yaml) -> Result<ParameterValue, String> {
    Ok(match y {
        Yaml::Bool(b) => ParameterValue::Boolean(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                ParameterValue::Integer(i)
            } else {
                ParameterValue::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Yaml::String(s) => ParameterValue::String(s.clone()),
        Yaml::Sequence(items) => {
            if items.is_empty() {
                return Err("an empty list has no type; give at least one element".into());
            }
            if items.iter().all(|i| matches!(i, Yaml::Bool(_))) {
                ParameterValue::BooleanArray(items.iter().filter_map(Yaml::as_bool).collect())
            } else if items.iter().all(|i| i.as_i64().is_some()) {
                ParameterValue::IntegerArray(items.iter().filter_map(Yaml::as_i64).collect())
            } else if items.iter().all(|i| i.as_f64().is_some()) {
                ParameterValue::DoubleArray(items.iter().filter_map(Yaml::as_f64).collect())
            } else if items.iter().all(|i| i.as_str().is_some()) {
                ParameterValue::StringArray(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                )
            } else {
                return Err("a list must hold elements of one type".into());
            }
        }
        Yaml::Null => return Err("no value given (null)".into()),
        Yaml::Mapping(_) => return Err("a map is not a parameter value".into()),
        Yaml::Tagged(t) => return yaml_to_value(&t.value),
    })
}

fn flatten(prefix: &str, y: &Yaml, out: &mut Vec<(String, Yaml)>) -> Result<(), String> {
    match y {
        Yaml::Mapping(m) => {
            for (k, v) in m {
                let k = k
                    .as_str()
                    .ok_or_else(|| format!("key {k:?} under {prefix:?} is not a string"))?;
                let name = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out)?;
            }
            Ok(())
        }
        other => {
            out.push((prefix.to_string(), other.clone()));
            Ok(())
        }
    }
}

fn key_matches(key: &str, node_name: &str, namespace: &str) -> bool {
    let ns = namespace.trim_end_matches('/');
    let fqn = format!("{ns}/{node_name}");
    key == "/**"
        || key == node_name
        || key == fqn
        || key == fqn.trim_start_matches('/')
        || key == format!("/**/{node_name}")
        || (key.ends_with("/*") && key.trim_end_matches("/*") == ns)
}

/// An error in the parameter file at `path`.
fn file_error(path: &Path, reason: String) -> ParamError {
    ParamError::File {
        path: path.to_path_buf(),
        reason,
    }
}

/// Read a ROS 2 parameter file and return the flattened parameters of the sections that apply
/// to the node (in file order).
pub fn load_params_file(
    path: &Path,
    node_name: &str,
    namespace: &str,
) -> Result<Vec<(String, ParameterValue)>, ParamError> {
    let bytes = std::fs::read(path)
        .map_err(|e| file_error(path, format!("cannot read it ({e}); check the path")))?;
    parse_params_file(&bytes, path, node_name, namespace)
}

/// [`load_params_file`] on a file's bytes already read; `path` names it in errors and logs.
/// The fuzz target `params_yaml` feeds this.
pub fn parse_params_file(
    bytes: &[u8],
    path: &Path,
    node_name: &str,
    namespace: &str,
) -> Result<Vec<(String, ParameterValue)>, ParamError> {
    let err = |reason: String| file_error(path, reason);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        err(format!(
            "not text ({e}): the file is damaged or not a parameter file"
        ))
    })?;
    let doc: Yaml =
        serde_yaml_ng::from_str(text).map_err(|e| err(format!("not valid YAML: {e}")))?;
    let top = match doc {
        Yaml::Mapping(m) => m,
        // An empty file is a copy cut short far more often than a choice: refuse it.
        Yaml::Null => {
            return Err(err(
                "it is empty; give it a `dinov3_perception: {ros__parameters: {...}}` section, or drop --params-file".into(),
            ))
        }
        _ => {
            return Err(err(
                "the top level must map node names to `ros__parameters:` (e.g. `dinov3_perception: {ros__parameters: {...}}`)".into(),
            ))
        }
    };
    let mut out = Vec::new();
    let mut matched = false;
    for (key, section) in &top {
        let key = key
            .as_str()
            .ok_or_else(|| err(format!("top-level key {key:?} is not a node name")))?;
        let section = section.as_mapping().ok_or_else(|| {
            err(format!(
                "{key}: expected a map with `ros__parameters:` under it"
            ))
        })?;
        for k in section.keys() {
            if k.as_str() != Some("ros__parameters") {
                return Err(err(format!(
                    "{key}: unexpected key {k:?}; parameters go under `{key}: ros__parameters:`"
                )));
            }
        }
        if !key_matches(key, node_name, namespace) {
            continue;
        }
        matched = true;
        if let Some(params) = section.get("ros__parameters") {
            let mut flat = Vec::new();
            flatten("", params, &mut flat).map_err(err)?;
            for (name, y) in flat {
                let v = yaml_to_value(&y).map_err(|r| err(format!("{key}: {name}: {r}")))?;
                out.push((name, v));
            }
        }
    }
    if !matched {
        log::warn!(
            "parameter file {} has no section for node {node_name} in namespace {namespace} (keys: /**, {node_name}, {namespace}/{node_name}); nothing taken from it",
            path.display()
        );
    }
    Ok(out)
}

/// A checked parameter change, ready to take effect; applying it cannot fail.
pub type ApplyChange = Box<dyn FnOnce() + Send>;

/// What a parameter change does at run time, in two steps so that a set of changes is
/// all-or-nothing: called with the checked value, the action decides whether the change can
/// be applied now (e.g. the head it controls is loaded) WITHOUT changing anything, and returns
/// either the change to apply or why it is rejected. [`ParamStore`] applies the returned
/// changes only once every parameter of a request was accepted.
pub type SetAction =
    Box<dyn Fn(&str, &ParameterValue) -> Result<ApplyChange, String> + Send + Sync>;

/// The node's parameters at run time: declarations, current values, and the action that applies
/// a change. Shared by the parameter services.
pub struct ParamStore {
    table: ParamTable,
    values: Mutex<BTreeMap<String, ParameterValue>>,
    action: SetAction,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl ParamStore {
    /// A store with the resolved start-up values.
    pub fn new(
        table: ParamTable,
        values: BTreeMap<String, ParameterValue>,
        action: SetAction,
    ) -> Self {
        ParamStore {
            table,
            values: Mutex::new(values),
            action,
        }
    }

    /// The declarations.
    pub fn table(&self) -> &ParamTable {
        &self.table
    }

    /// Current value (`NotSet` for an undeclared name).
    pub fn get(&self, name: &str) -> ParameterValue {
        self.values
            .lock()
            .ok()
            .and_then(|v| v.get(name).cloned())
            .unwrap_or(ParameterValue::NotSet)
    }

    /// Declared names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.values
            .lock()
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `value` may be set at run time: declared, not read-only, right type, in range.
    /// Returns the value as it would be stored, or the reason.
    pub fn check(&self, name: &str, value: ParameterValue) -> Result<ParameterValue, String> {
        let spec = self
            .table
            .spec(name)
            .ok_or_else(|| format!("parameter {name:?} is not declared by this node"))?;
        if spec.read_only {
            return Err(format!(
                "parameter {name} is read-only while the node runs; restart it with -p {name}:=VALUE"
            ));
        }
        self.table.check(name, value)
    }

    /// Change one parameter: checks type, range and read-only, then applies it. `Err` is the
    /// reason the set is rejected (the value stays as it was).
    pub fn set(&self, name: &str, value: ParameterValue) -> Result<(), String> {
        self.set_all(vec![(name.to_string(), value)])
    }

    /// Change several parameters at once, all or nothing: every value is checked (type, range,
    /// read-only) and every action asked whether it can apply the change before any change is
    /// applied. `Err` is the reason of the first rejected parameter, prefixed with its name when
    /// there are several; then nothing changed.
    pub fn set_all(&self, changes: Vec<(String, ParameterValue)>) -> Result<(), String> {
        // Held from the checks to the last store, so that concurrent sets cannot interleave.
        let mut values = self.values.lock().map_err(|_| {
            "the parameter store is unusable after a panic; restart the node".to_string()
        })?;
        let several = changes.len() > 1;
        let mut ready = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            let checked = self
                .check(&name, value)
                .and_then(|value| (self.action)(&name, &value).map(|apply| (value, apply)));
            match checked {
                Ok((value, apply)) => ready.push((name, value, apply)),
                Err(reason) if several => return Err(format!("{name}: {reason}")),
                Err(reason) => return Err(reason),
            }
        }
        for (name, value, apply) in ready {
            apply();
            values.insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ParamTable {
        ParamTable::new(vec![
            ParamSpec::new("source", ParameterValue::String("synthetic".into()), "src").read_only(),
            ParamSpec::new(
                "heads.detection.enabled",
                ParameterValue::Boolean(true),
                "on",
            ),
            ParamSpec::new(
                "detection.score_threshold",
                ParameterValue::Double(0.3),
                "t",
            )
            .range(Range::Double { from: 0.0, to: 1.0 }),
            ParamSpec::new("points.stride", ParameterValue::Integer(4), "s")
                .range(Range::Integer { from: 1, to: 64 }),
        ])
    }

    #[test]
    fn files_then_overrides_with_nesting_and_wildcards() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(
            &a,
            "dinov3_perception:\n  ros__parameters:\n    heads:\n      detection:\n        enabled: false\n    points.stride: 2\nother_node:\n  ros__parameters:\n    bogus: 1\n",
        )
        .unwrap();
        let b = dir.path().join("b.yaml");
        std::fs::write(
            &b,
            "/**:\n  ros__parameters:\n    detection.score_threshold: 1\n",
        )
        .unwrap();
        let v = table()
            .resolve(
                &[a, b],
                &[("points.stride".into(), "8".into())],
                "dinov3_perception",
                "/",
            )
            .unwrap();
        assert_eq!(v["heads.detection.enabled"], ParameterValue::Boolean(false));
        assert_eq!(v["detection.score_threshold"], ParameterValue::Double(1.0));
        assert_eq!(v["points.stride"], ParameterValue::Integer(8));
        assert_eq!(v["source"], ParameterValue::String("synthetic".into()));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let t = table();
        let e = t
            .resolve(&[], &[("points.strid".into(), "2".into())], "n", "/")
            .unwrap_err();
        assert!(
            e.to_string().contains("points.strid") && e.to_string().contains("points.stride"),
            "{e}"
        );
        let e = t
            .resolve(&[], &[("points.stride".into(), "abc".into())], "n", "/")
            .unwrap_err();
        assert!(e.to_string().contains("wrong type"), "{e}");
        let e = t
            .resolve(
                &[],
                &[("detection.score_threshold".into(), "1.5".into())],
                "n",
                "/",
            )
            .unwrap_err();
        assert!(e.to_string().contains("out of range [0, 1]"), "{e}");
        let e = t
            .resolve(&[], &[("points.stride".into(), "0".into())], "n", "/")
            .unwrap_err();
        assert!(e.to_string().contains("points.stride"), "{e}");
    }

    #[test]
    fn store_rejects_read_only_and_applies_live() {
        let t = table();
        let v = t.resolve(&[], &[], "n", "/").unwrap();
        let store = ParamStore::new(
            t,
            v,
            Box::new(|name, _| {
                if name == "heads.detection.enabled" {
                    Ok(Box::new(|| {}))
                } else {
                    Err("nope".into())
                }
            }),
        );
        assert!(store
            .set("source", ParameterValue::String("x".into()))
            .unwrap_err()
            .contains("read-only"));
        store
            .set("heads.detection.enabled", ParameterValue::Boolean(false))
            .unwrap();
        assert_eq!(
            store.get("heads.detection.enabled"),
            ParameterValue::Boolean(false)
        );
        assert!(store
            .set("points.stride", ParameterValue::Integer(2))
            .is_err());
        assert_eq!(store.get("points.stride"), ParameterValue::Integer(4));
        assert!(store.set("nope", ParameterValue::Integer(2)).is_err());
    }
}
