//! The per-action bounds: what one adjustment may become, whatever came before it.
//!
//! In: an adjustment, the resources its backend read, the application type's
//! [`GuardrailSettings`] and whether its function is critical. Out: a [`Plan`] of
//! absolute targets within the floors and caps, or the reason nothing can be done.
//! Guarantee: a planned CPU or memory value is never above its cap nor below its
//! floor, and never moves against the adjustment's direction (a grow never shrinks
//! an instance that is already past its cap).

use crate::codec::{Action, Adjustment};
use crate::policy::file::{GuardrailSettings, Memory};
use crate::policy::plan::{Plan, Resources};

/// The plan for one adjustment, or the refusal's reason.
pub(super) fn plan(
    g: &GuardrailSettings,
    adjustment: &Adjustment,
    current: &Resources,
    critical: bool,
) -> Result<Plan, String> {
    match adjustment.action {
        Action::Resize => resize(g, adjustment, current),
        Action::ScaleOut => scale_out(g, adjustment, current),
        Action::Shed => {
            if critical {
                return Err(format!(
                    "critical function: {}/{} never sheds traffic",
                    adjustment.app_type, adjustment.function
                ));
            }
            fraction(Action::Shed, "shed", adjustment.shed_fraction, g.max_shed_fraction)
        }
        Action::Migrate => fraction(Action::Migrate, "migrate", adjustment.shed_fraction, g.max_migrate_fraction),
        // Notifications change no resource: no cap applies (they have their own rate).
        Action::Notify => Ok(Plan::unchanged(Action::Notify)),
        Action::None => Err("no action: an adjustment of action NONE changes nothing".to_owned()),
    }
}

fn resize(g: &GuardrailSettings, a: &Adjustment, current: &Resources) -> Result<Plan, String> {
    let mut plan = Plan::unchanged(Action::Resize);
    let mut notes = Vec::new();
    let cpu = Resource {
        name: "cpu",
        factor: a.cpu_factor,
        max_factor: g.max_cpu_factor,
        floor: g.cpu_floor.0,
        cap: g.cpu_cap.0,
        current: current.cpu_millis,
        show: |v| format!("{v}m"),
    }
    .bound(&mut notes)?;
    let memory = Resource {
        name: "memory",
        factor: a.memory_factor,
        max_factor: g.max_memory_factor,
        floor: g.memory_floor.0,
        cap: g.memory_cap.0,
        current: current.memory_bytes,
        show: |v| Memory(v).to_string(),
    }
    .bound(&mut notes)?;
    (plan.cpu_millis, plan.cpu_factor) = cpu;
    (plan.memory_bytes, plan.memory_factor) = memory;
    plan.note = notes.join("; ");
    if plan.cpu_factor == 1.0 && plan.memory_factor == 1.0 {
        return Err(if plan.note.is_empty() {
            "caps: nothing to change: cpu and memory factors are 1".to_owned()
        } else {
            format!("caps: nothing left to change ({})", plan.note)
        });
    }
    Ok(plan)
}

/// One resource of a resize.
struct Resource {
    name: &'static str,
    factor: f64,
    max_factor: f64,
    floor: u64,
    cap: u64,
    current: Option<u64>,
    show: fn(u64) -> String,
}

impl Resource {
    /// The target (None: leave as is) and the factor it amounts to.
    fn bound(&self, notes: &mut Vec<String>) -> Result<(Option<u64>, f64), String> {
        let (name, show) = (self.name, self.show);
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(format!("invalid {name} factor {}: must be a finite number above 0", self.factor));
        }
        // Shrinking is bounded like growing: by the same ratio.
        let (lo, hi) = (1.0 / self.max_factor, self.max_factor);
        let factor = self.factor.clamp(lo, hi);
        if factor != self.factor {
            notes.push(format!("{name} factor {:.3} clamped to {factor:.3} (max factor {hi:.3})", self.factor));
        }
        if factor == 1.0 {
            return Ok((None, 1.0));
        }
        let Some(now) = self.current else {
            notes.push(format!("{name} current value unknown: factor {factor:.3} only"));
            return Ok((None, factor));
        };
        // Rounded toward the current value, so a capped factor stays capped.
        let exact = now as f64 * factor;
        let wanted = if factor > 1.0 { exact.floor() } else { exact.ceil() }.clamp(0.0, u64::MAX as f64) as u64;
        let target = wanted.clamp(self.floor, self.cap);
        let grows = factor > 1.0;
        if (grows && target <= now) || (!grows && target >= now) {
            let bound = if grows { format!("cap {}", show(self.cap)) } else { format!("floor {}", show(self.floor)) };
            notes.push(format!("{name} stays at {}: at or past the {bound}", show(now)));
            return Ok((None, 1.0));
        }
        if target != wanted {
            let bound = if target == self.cap { "cap" } else { "floor" };
            notes.push(format!("{name} {} clamped to the {} {bound}", show(wanted), show(target)));
        }
        // A zero allocation (an unset limit) has no ratio; the asked factor stands for it.
        let effective = if now == 0 { factor } else { (target as f64 / now as f64).clamp(lo, hi) };
        Ok((Some(target), effective))
    }
}

fn scale_out(g: &GuardrailSettings, a: &Adjustment, current: &Resources) -> Result<Plan, String> {
    if a.replicas_delta <= 0 {
        return Err(format!("invalid replicas_delta {}: a scale-out adds at least one replica", a.replicas_delta));
    }
    let Some(now) = current.replicas else {
        return Err(format!(
            "max replicas: the workload's replica count is unknown, so the {} cap cannot be kept",
            g.max_replicas
        ));
    };
    let wanted = u64::from(now) + u64::from(a.replicas_delta.unsigned_abs());
    let target = wanted.min(u64::from(g.max_replicas)) as u32;
    if target <= now {
        return Err(format!("max replicas: the workload has {now} of at most {}", g.max_replicas));
    }
    let mut plan = Plan::unchanged(Action::ScaleOut);
    plan.replicas = Some(target);
    if u64::from(target) != wanted {
        plan.note = format!("replicas {wanted} clamped to the {} cap", g.max_replicas);
    }
    Ok(plan)
}

fn fraction(action: Action, name: &str, f: f64, max: f64) -> Result<Plan, String> {
    if !(f.is_finite() && f > 0.0 && f <= 1.0) {
        return Err(format!("invalid {name} fraction {f}: must be above 0 and at most 1"));
    }
    let mut plan = Plan::unchanged(action);
    plan.shed_fraction = f.min(max);
    if plan.shed_fraction == 0.0 {
        return Err(format!("caps: max {name} fraction is 0 for this application type"));
    }
    if plan.shed_fraction != f {
        plan.note = format!("{name} fraction {f:.3} clamped to the {max:.3} cap");
    }
    Ok(plan)
}
