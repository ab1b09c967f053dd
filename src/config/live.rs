//! What a parameter change does while the node runs: head switches, rates and thresholds, and
//! the publishing switches. Read-only parameters never get here (the parameter store refuses
//! them).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::params::HEAD_SETTINGS;
use crate::heads::manifest::Task;
use crate::heads::HeadControl;
use crate::ros::params::{ParameterValue, SetAction};
use crate::ros::publish::LiveSettings;

/// The action the parameter services run for an accepted change.
pub fn set_action(
    controls: BTreeMap<Task, Arc<HeadControl>>,
    live: Arc<LiveSettings>,
) -> SetAction {
    Box::new(move |name: &str, value: &ParameterValue| {
        let control = |head: &str| {
            head.parse::<Task>()
                .ok()
                .and_then(|t| controls.get(&t).cloned())
                .ok_or_else(|| {
                    format!(
                        "head {head} is not loaded (loaded: {}); nothing to change",
                        controls
                            .keys()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        };
        match (name.split('.').collect::<Vec<_>>().as_slice(), value) {
            (["heads", head, "enabled"], ParameterValue::Boolean(on)) => {
                control(head)?.set_enabled(*on);
                Ok(())
            }
            (["heads", head, "rate_hz"], ParameterValue::Double(hz)) => {
                control(head)?.set_rate_hz(*hz)
            }
            ([head, setting], ParameterValue::Double(v))
                if HEAD_SETTINGS
                    .iter()
                    .any(|(t, s, _)| t.as_str() == *head && s == setting) =>
            {
                control(head)?.request_setting(setting, *v);
                Ok(())
            }
            (["debug_image"], ParameterValue::Boolean(on)) => {
                live.debug_image.store(*on, Ordering::Relaxed);
                Ok(())
            }
            (["points", "enabled"], ParameterValue::Boolean(on)) => {
                live.points_enabled.store(*on, Ordering::Relaxed);
                Ok(())
            }
            (["points", "rgb"], ParameterValue::Boolean(on)) => {
                live.points_rgb.store(*on, Ordering::Relaxed);
                Ok(())
            }
            (["points", "stride"], ParameterValue::Integer(n)) => {
                live.points_stride
                    .store((*n).max(1) as usize, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(format!(
                "parameter {name} cannot change while the node runs"
            )),
        }
    })
}
