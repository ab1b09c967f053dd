//! What a parameter change does while the node runs: head switches, rates and thresholds, and
//! the publishing switches. Read-only parameters never get here (the parameter store refuses
//! them).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::params::HEAD_SETTINGS;
use crate::heads::manifest::Task;
use crate::heads::HeadControl;
use crate::ros::params::{ApplyChange, ParameterValue, SetAction};
use crate::sink::outputs::LiveSettings;

/// The action the parameter services run for an accepted change. It only checks (is the head
/// loaded? is the rate valid?) and returns the change; the parameter store applies it once every
/// parameter of the request was accepted (all or nothing).
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
        let live = live.clone();
        let apply: ApplyChange = match (name.split('.').collect::<Vec<_>>().as_slice(), value) {
            (["heads", head, "enabled"], &ParameterValue::Boolean(on)) => {
                let control = control(head)?;
                Box::new(move || control.set_enabled(on))
            }
            (["heads", head, "rate_hz"], &ParameterValue::Double(hz)) => {
                let control = control(head)?;
                // The same check as the real control's, on a throwaway one: nothing changes yet.
                HeadControl::new().set_rate_hz(hz)?;
                // Cannot fail: `hz` passed that very check just above.
                Box::new(move || drop(control.set_rate_hz(hz)))
            }
            ([head, setting], &ParameterValue::Double(v))
                if HEAD_SETTINGS
                    .iter()
                    .any(|(t, s, _)| t.as_str() == *head && s == setting) =>
            {
                let (control, setting) = (control(head)?, setting.to_string());
                Box::new(move || control.request_setting(&setting, v))
            }
            (["debug_image"], &ParameterValue::Boolean(on)) => {
                Box::new(move || live.debug_image.store(on, Ordering::Relaxed))
            }
            (["points", "enabled"], &ParameterValue::Boolean(on)) => {
                Box::new(move || live.points_enabled.store(on, Ordering::Relaxed))
            }
            (["points", "rgb"], &ParameterValue::Boolean(on)) => {
                Box::new(move || live.points_rgb.store(on, Ordering::Relaxed))
            }
            (["points", "stride"], &ParameterValue::Integer(n)) => Box::new(move || {
                live.points_stride
                    .store(n.max(1) as usize, Ordering::Relaxed)
            }),
            _ => {
                return Err(format!(
                    "parameter {name} cannot change while the node runs"
                ))
            }
        };
        Ok(apply)
    })
}
