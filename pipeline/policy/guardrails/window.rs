//! Event-time windows over remembered actions, checked on both sides of a new one.
//!
//! In: the sets of remembered actions, sorted by event time, and a new action at `t`.
//! Out: the conflicting action or the busiest count of any window the new action would
//! fall in. Guarantee: the counts are exact for any arrival order, because every window
//! that contains `t`, not only the one ending at `t`, is considered.

use std::collections::BTreeSet;
use std::ops::Bound::{Excluded, Unbounded};

use super::MINUTE_MS;

/// The remembered action of another alert closer than `cooldown` to `t`, the nearest
/// first, unless one of the two escalates the other: the later is of a strictly higher
/// tier. Actions at the same event time come from one window of the instance (a
/// signature match and its anomaly tier) and act together. The rule looks at both
/// actions' times, not at which arrived first, so it holds for any arrival order.
pub(super) fn cooldown_conflict<'a>(
    set: Option<&'a BTreeSet<(i64, String, i32)>>,
    t: i64,
    cooldown: i64,
    alert: &str,
    tier: i32,
) -> Option<(i64, &'a str)> {
    set?.iter()
        .filter(|(x, a, x_tier)| {
            a != alert && *x != t && distance(*x, t) < i128::from(cooldown) && !escalates((*x, *x_tier), (t, tier))
        })
        .map(|(x, a, _)| (*x, a.as_str()))
        .min_by_key(|(x, _)| distance(*x, t))
}

/// Whether, of two actions `(event time, tier)`, the later is of a higher tier.
pub(super) fn escalates(a: (i64, i32), b: (i64, i32)) -> bool {
    let (early, late) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    early.0 < late.0 && late.1 > early.1
}

/// The remembered action of another alert on another instance of the workload closer
/// than `cooldown` to `t`, the nearest first (one instance's own actions are the
/// instance cooldown's to judge).
pub(super) fn workload_conflict<'a>(
    set: Option<&'a BTreeSet<(i64, String, String)>>,
    t: i64,
    cooldown: i64,
    instance: &str,
    alert: &str,
) -> Option<(i64, &'a str, &'a str)> {
    let set = set?;
    set.iter()
        .filter(|(x, i, a)| a != alert && i != instance && distance(*x, t) < i128::from(cooldown))
        .map(|(x, i, a)| (*x, i.as_str(), a.as_str()))
        .min_by_key(|(x, _, _)| distance(*x, t))
}

/// With the new action at `t` added: the most actions in any minute `[s, s + 60 s)`
/// containing `t`. `id` is the new action's; an entry with it is the same action.
pub(super) fn busiest_minute(set: &BTreeSet<(i64, String)>, t: i64, id: &str) -> usize {
    let lo = t.saturating_sub(MINUTE_MS - 1);
    let hi = t.saturating_add(MINUTE_MS - 1);
    let others: Vec<i64> = set
        .range((lo, String::new())..)
        .take_while(|(x, _)| *x <= hi)
        .filter(|(_, i)| i != id)
        .map(|(x, _)| *x)
        .collect();
    // The busiest window can be slid right until its start meets an action or `t`.
    let starts = others.iter().copied().filter(|&x| x <= t).chain([t]);
    starts
        .map(|s| {
            1 + others.iter().filter(|&&x| x >= s && i128::from(x) < i128::from(s) + i128::from(MINUTE_MS)).count()
        })
        .max()
        .unwrap_or(1)
}

/// With `instance` acted on at `t`: the most distinct instances of the workload within
/// their cooldown at any moment `τ` while this one is, i.e. with an action in
/// `(τ − cooldown, τ]`, for `τ` in `[t, t + cooldown)`.
pub(super) fn busiest_share(
    set: Option<&BTreeSet<(i64, String, String)>>,
    t: i64,
    cooldown: i64,
    instance: &str,
) -> usize {
    let Some(set) = set else { return 1 };
    let lo = t.saturating_sub(cooldown);
    let others: Vec<(i64, &str)> = set
        .range((Excluded((lo, String::new(), String::new())), Unbounded))
        .take_while(|(x, _, _)| i128::from(*x) < i128::from(t) + i128::from(cooldown))
        .filter(|(_, i, _)| i != instance)
        .map(|(x, i, _)| (*x, i.as_str()))
        .collect();
    // The busiest moment can be slid left until it meets an action or `t`.
    let moments = others.iter().map(|(x, _)| *x).filter(|&x| x >= t).chain([t]);
    moments
        .map(|m| {
            let mut active: Vec<&str> = others
                .iter()
                .filter(|(x, _)| i128::from(*x) > i128::from(m) - i128::from(cooldown) && *x <= m)
                .map(|(_, i)| *i)
                .collect();
            active.sort_unstable();
            active.dedup();
            1 + active.len()
        })
        .max()
        .unwrap_or(1)
}

fn distance(x: i64, t: i64) -> i128 {
    (i128::from(x) - i128::from(t)).abs()
}
