use proptest::prelude::*;

use super::window;
use super::*;
use crate::policy::file::{Cpu, FunctionPolicy, Memory, PolicyFile};

const GI: u64 = 1 << 30;

fn web() -> PolicyFile {
    let mut p = PolicyFile::tiers_only("web");
    let g = &mut p.guardrails;
    g.cpu_floor = Cpu(250);
    g.cpu_cap = Cpu(4000);
    g.memory_floor = Memory(512 << 20);
    g.memory_cap = Memory(8 * GI);
    g.max_cpu_factor = 2.0;
    g.max_memory_factor = 1.5;
    g.max_replicas = 6;
    g.max_shed_fraction = 0.3;
    g.instance_cooldown_s = 300;
    g.workload_cooldown_s = 30;
    g.max_workload_percent = 50.0;
    p.functions.insert("frontend".into(), FunctionPolicy { critical: false, expected_instances: Some(4) });
    p.functions.insert("checkout".into(), FunctionPolicy { critical: true, expected_instances: Some(4) });
    p
}

fn rails(fleet: FleetLimits) -> Guardrails {
    Guardrails::new(&Policies::from_files([web()]), fleet)
}

fn adj(instance: &str, alert: &str, action: Action, t: i64) -> Adjustment {
    let name = format!("{action:?}").to_lowercase();
    Adjustment {
        id: format!("{alert}/{name}"),
        alert_id: alert.to_owned(),
        instance_id: instance.to_owned(),
        app_type: "web".to_owned(),
        function: "frontend".to_owned(),
        action,
        cpu_factor: 1.25,
        memory_factor: 1.15,
        replicas_delta: 2,
        shed_fraction: 0.2,
        tier: 2,
        reason: String::new(),
        dry_run: false,
        event_time_ms: t,
    }
}

fn known() -> Resources {
    Resources { cpu_millis: Some(1000), memory_bytes: Some(GI), replicas: Some(4) }
}

fn allow(v: Verdict) -> Plan {
    match v {
        Verdict::Allow(p) => p,
        Verdict::Refuse(r) => panic!("refused: {r}"),
    }
}

fn refuse(v: Verdict) -> String {
    match v {
        Verdict::Allow(p) => panic!("allowed: {p:?}"),
        Verdict::Refuse(r) => r,
    }
}

#[test]
fn a_resize_plans_absolute_targets() {
    let g = rails(FleetLimits::default());
    let p = allow(g.check(&adj("a", "x", Action::Resize, 0), &known()));
    assert_eq!(p.cpu_millis, Some(1250));
    assert_eq!(p.memory_bytes, Some((GI as f64 * 1.15).floor() as u64));
    assert_eq!(p.note, "");
    assert!(!p.dry_run);
}

#[test]
fn caps_clamp_with_a_note_and_refuse_when_nothing_is_left() {
    let g = rails(FleetLimits::default());
    let near_cap = Resources { cpu_millis: Some(3600), memory_bytes: Some(8 * GI), replicas: Some(4) };
    let p = allow(g.check(&adj("a", "x", Action::Resize, 0), &near_cap));
    assert_eq!(p.cpu_millis, Some(4000));
    assert_eq!(p.memory_bytes, None, "memory is at its cap");
    assert!(p.note.contains("cpu 4500m clamped to the 4000m cap"), "{}", p.note);
    assert!(p.note.contains("memory stays at 8Gi"), "{}", p.note);
    let at_cap = Resources { cpu_millis: Some(4000), ..near_cap };
    let r = refuse(g.check(&adj("a", "x", Action::Resize, 0), &at_cap));
    assert!(r.starts_with("caps: nothing left to change") && r.contains("4000m"), "{r}");
}

#[test]
fn a_resource_past_its_cap_is_never_shrunk_by_a_grow() {
    let g = rails(FleetLimits::default());
    let over = Resources { cpu_millis: Some(9000), memory_bytes: Some(GI), replicas: None };
    let p = allow(g.check(&adj("a", "x", Action::Resize, 0), &over));
    assert_eq!(p.cpu_millis, None);
    assert_eq!(p.cpu_factor, 1.0);
    assert!(p.memory_bytes.is_some());
}

#[test]
fn factor_caps_hold_and_unknown_resources_plan_none() {
    let g = rails(FleetLimits::default());
    let mut a = adj("a", "x", Action::Resize, 0);
    a.cpu_factor = 5.0;
    a.memory_factor = 3.0;
    let p = allow(g.check(&a, &Resources::default()));
    assert_eq!((p.cpu_millis, p.memory_bytes), (None, None));
    assert_eq!((p.cpu_factor, p.memory_factor), (2.0, 1.5));
    assert!(p.note.contains("cpu factor 5.000 clamped to 2.000"), "{}", p.note);
    a.cpu_factor = 1.0;
    a.memory_factor = 1.0;
    assert_eq!(refuse(g.check(&a, &known())), "caps: nothing to change: cpu and memory factors are 1");
    a.cpu_factor = f64::NAN;
    assert!(refuse(g.check(&a, &known())).contains("invalid cpu factor NaN"));
}

#[test]
fn scale_out_stops_at_max_replicas_and_needs_the_count() {
    let g = rails(FleetLimits::default());
    let a = adj("a", "x", Action::ScaleOut, 0);
    assert_eq!(allow(g.check(&a, &known())).replicas, Some(6));
    let five = Resources { replicas: Some(5), ..known() };
    let p = allow(g.check(&a, &five));
    assert_eq!(p.replicas, Some(6));
    assert!(p.note.contains("replicas 7 clamped to the 6 cap"), "{}", p.note);
    let six = Resources { replicas: Some(6), ..known() };
    assert_eq!(refuse(g.check(&a, &six)), "max replicas: the workload has 6 of at most 6");
    assert!(refuse(g.check(&a, &Resources::default())).contains("replica count is unknown"));
}

#[test]
fn shedding_is_capped_and_never_for_critical_functions() {
    let g = rails(FleetLimits::default());
    let mut a = adj("a", "x", Action::Shed, 0);
    a.shed_fraction = 0.9;
    let p = allow(g.check(&a, &known()));
    assert_eq!(p.shed_fraction, 0.3);
    a.function = "checkout".into();
    assert!(refuse(g.check(&a, &known())).starts_with("critical function: web/checkout"));
}

#[test]
fn instance_cooldown_refuses_other_alerts_but_not_the_same_one() {
    let mut g = rails(FleetLimits::default());
    let first = adj("a", "x", Action::Resize, 1_000_000);
    let plan = allow(g.check(&first, &known()));
    g.remember(&first, &plan);
    // The same alert's scale-out acts with its resize.
    allow(g.check(&adj("a", "x", Action::ScaleOut, 1_000_000), &known()));
    let r = refuse(g.check(&adj("a", "y", Action::Resize, 1_040_000), &known()));
    assert_eq!(r, "instance cooldown: a was acted on 40 s before (alert x); cooldown 300 s");
    // Out of order: an earlier event time is judged against the later action too.
    let r = refuse(g.check(&adj("a", "z", Action::Resize, 960_000), &known()));
    assert!(r.contains("40 s after (out of order)"), "{r}");
    allow(g.check(&adj("a", "y", Action::Resize, 1_300_000), &known()));
}

#[test]
fn a_higher_tier_acts_within_the_instance_cooldown_of_a_lower_one_but_not_before_it() {
    let mut g = rails(FleetLimits::default());
    let mild = Adjustment { tier: 1, ..adj("a", "x", Action::Resize, 1_000_000) };
    let plan = allow(g.check(&mild, &known()));
    g.remember(&mild, &plan);
    let worse = Adjustment { tier: 3, ..adj("a", "y", Action::Resize, 1_060_000) };
    allow(g.check(&worse, &known()));
    let same = Adjustment { tier: 1, ..adj("a", "z", Action::Resize, 1_060_000) };
    assert!(refuse(g.check(&same, &known())).starts_with("instance cooldown"));
    // A higher tier earlier than the mild step is no escalation of it.
    let before = Adjustment { tier: 3, ..adj("a", "w", Action::Resize, 940_000) };
    assert!(refuse(g.check(&before, &known())).starts_with("instance cooldown"));
    // Once the escalation is remembered, a tier between the two is refused after it.
    g.remember(&worse, &allow(g.check(&worse, &known())));
    let between = Adjustment { tier: 2, ..adj("a", "v", Action::Resize, 1_120_000) };
    assert!(refuse(g.check(&between, &known())).contains("alert y"));
}

#[test]
fn workload_cooldown_and_share() {
    let mut g = rails(FleetLimits::default());
    let a = adj("a", "x", Action::Resize, 0);
    g.remember(&a, &allow(g.check(&a, &known())));
    let r = refuse(g.check(&adj("b", "y", Action::Resize, 10_000), &known()));
    assert!(r.starts_with("workload cooldown: web/frontend was acted on 10 s before (instance a, alert x)"), "{r}");
    // Past the workload cooldown a second instance of four may go (50%), a third may not.
    let b = adj("b", "y", Action::Resize, 40_000);
    g.remember(&b, &allow(g.check(&b, &known())));
    let r = refuse(g.check(&adj("c", "z", Action::Resize, 80_000), &known()));
    assert!(r.starts_with("workload share: 3 of 4 instances of web/frontend"), "{r}");
    assert!(r.contains("at most 50% (2)"), "{r}");
    // With eight replicas, four may be within their cooldown at once.
    allow(g.check(&adj("c", "z", Action::Resize, 80_000), &Resources { replicas: Some(8), ..known() }));
    // Once a's cooldown is over, c may go.
    allow(g.check(&adj("c", "z", Action::Resize, 300_000), &known()));
}

#[test]
fn fleet_rate_limit_counts_a_rolling_minute() {
    let mut g = rails(FleetLimits { max_actions_per_minute: 2, ..FleetLimits::default() });
    for (i, t) in [0, 30_000].into_iter().enumerate() {
        let mut a = adj(&format!("i{i}"), &format!("x{i}"), Action::Resize, t);
        a.function = format!("f{i}");
        g.remember(&a, &allow(g.check(&a, &known())));
    }
    let mut third = adj("i2", "x2", Action::Resize, 59_999);
    third.function = "f2".into();
    let r = refuse(g.check(&third, &known()));
    assert_eq!(r, "fleet rate limit: 3 actions within a minute of event time 59999; at most 2 per minute");
    third.event_time_ms = 60_000;
    allow(g.check(&third, &known()));
}

#[test]
fn notifications_bypass_caps_and_cooldowns_but_have_their_own_rate() {
    let mut g = rails(FleetLimits { max_notifications_per_minute: 1, ..FleetLimits::default() });
    let r = adj("a", "x", Action::Resize, 0);
    g.remember(&r, &allow(g.check(&r, &known())));
    let n = adj("a", "y", Action::Notify, 1000);
    let p = allow(g.check(&n, &Resources { cpu_millis: Some(99_000), ..known() }));
    assert_eq!(p.action, Action::Notify);
    g.remember(&n, &p);
    let r = refuse(g.check(&adj("b", "z", Action::Notify, 2000), &known()));
    assert!(r.starts_with("notification rate limit: 2 notifications"), "{r}");
}

#[test]
fn dry_run_allows_with_the_flag_and_still_counts() {
    let mut g = rails(FleetLimits { dry_run: true, ..FleetLimits::default() });
    let a = adj("a", "x", Action::Resize, 0);
    let p = allow(g.check(&a, &known()));
    assert!(p.dry_run && p.note.contains("dry run (fleet)"), "{p:?}");
    g.remember(&a, &p);
    assert!(refuse(g.check(&adj("a", "y", Action::Resize, 1000), &known())).starts_with("instance cooldown"));
    let mut file = web();
    file.dry_run = true;
    let g = Guardrails::new(&Policies::from_files([file]), FleetLimits::default());
    assert!(allow(g.check(&a, &known())).dry_run);
}

#[test]
fn late_adjustments_are_refused_once_their_state_is_forgotten() {
    let mut g = rails(FleetLimits { history_ms: 0, ..FleetLimits::default() });
    for i in 0..20i64 {
        let a = adj(&format!("i{i}"), &format!("x{i}"), Action::Notify, i * 600_000);
        g.remember(&a, &allow(g.check(&a, &known())));
    }
    let r = refuse(g.check(&adj("z", "late", Action::Resize, 0), &known()));
    assert!(r.starts_with("late: event time 0"), "{r}");
}

#[test]
fn remembering_twice_counts_once() {
    let mut g = rails(FleetLimits { max_actions_per_minute: 1, ..FleetLimits::default() });
    let a = adj("a", "x", Action::Resize, 0);
    let p = allow(g.check(&a, &known()));
    g.remember(&a, &p);
    g.remember(&a, &p);
    // The same adjustment, re-checked, does not count against itself.
    allow(g.check(&a, &known()));
}

#[test]
fn an_app_type_without_a_file_gets_the_default_guardrails() {
    let g = rails(FleetLimits::default());
    let mut a = adj("batch-0", "x", Action::Resize, 0);
    a.app_type = "batch".into();
    let current = Resources { cpu_millis: Some(15_000), memory_bytes: None, replicas: None };
    let p = allow(g.check(&a, &current));
    assert_eq!(p.cpu_millis, Some(16_000), "the default 16-core cap");
    assert!(p.note.contains("clamped to the 16000m cap"), "{}", p.note);
    // Its unlisted function is critical: no shedding.
    a.action = Action::Shed;
    assert!(refuse(g.check(&a, &current)).starts_with("critical function: batch/frontend"));
}

#[test]
fn none_is_refused_with_a_reason() {
    let g = rails(FleetLimits::default());
    assert!(refuse(g.check(&adj("a", "x", Action::None, 0), &known())).contains("NONE"));
}

// A flood of random adjustments against the guarantees in the module docs.

#[derive(Debug, Clone)]
struct Flood {
    instance: u8,
    alert: u8,
    action: Action,
    /// A second action decided from the same alert.
    also: Option<Action>,
    cpu_factor: f64,
    memory_factor: f64,
    replicas_delta: i32,
    fraction: f64,
    t: i64,
    cpu: Option<u64>,
    memory: Option<u64>,
}

fn flood_item() -> impl Strategy<Value = Flood> {
    let action = || {
        prop_oneof![
            4 => Just(Action::Resize),
            1 => Just(Action::ScaleOut),
            1 => Just(Action::Shed),
            1 => Just(Action::Migrate),
            1 => Just(Action::Notify),
        ]
    };
    (
        (0u8..12, 0u8..40, action(), proptest::option::of(action())),
        (0.01f64..6.0, 0.01f64..6.0, -2i32..6, 0.0f64..1.2),
        (
            0i64..1_800_000,
            proptest::option::weighted(0.8, 1u64..20_000),
            proptest::option::weighted(0.8, 1u64..(64 * GI)),
        ),
    )
        .prop_map(
            |(
                (instance, alert, action, also),
                (cpu_factor, memory_factor, replicas_delta, fraction),
                (t, cpu, memory),
            )| {
                Flood {
                    instance,
                    alert,
                    action,
                    also,
                    cpu_factor,
                    memory_factor,
                    replicas_delta,
                    fraction,
                    t,
                    cpu,
                    memory,
                }
            },
        )
}

const REPLICAS: [u32; 3] = [2, 4, 10];

fn flood_policy() -> PolicyFile {
    let mut p = web();
    for (w, n) in REPLICAS.iter().enumerate() {
        p.functions.insert(format!("w{w}"), FunctionPolicy { critical: w == 0, expected_instances: Some(*n) });
    }
    p.guardrails.workload_cooldown_s = 20;
    p.guardrails.instance_cooldown_s = 120;
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_flood_never_breaks_a_guardrail(mut items in proptest::collection::vec(flood_item(), 1..300), sorted in any::<bool>()) {
        if sorted {
            items.sort_by_key(|i| i.t);
        }
        let policy = flood_policy();
        let g_set = policy.guardrails.clone();
        let k = 5u32;
        let mut g = Guardrails::new(&Policies::from_files([policy]), FleetLimits { max_actions_per_minute: k, max_notifications_per_minute: 3, ..FleetLimits::default() });
        // Every instance belongs to one workload, as in a real fleet.
        let mut allowed: Vec<(Adjustment, Plan)> = Vec::new();
        for it in &items {
            let w = usize::from(it.instance % 3);
            // Alert ids carry their event time, as the detector's do.
            let alert_id = format!("al{}-{}/{}", it.alert, it.instance, it.t);
            for action in [Some(it.action), it.also].into_iter().flatten() {
                let a = Adjustment {
                    id: format!("{alert_id}/{action:?}"),
                    alert_id: alert_id.clone(),
                    instance_id: format!("i{}", it.instance),
                    app_type: "web".into(),
                    function: format!("w{w}"),
                    action,
                    cpu_factor: it.cpu_factor,
                    memory_factor: it.memory_factor,
                    replicas_delta: it.replicas_delta,
                    shed_fraction: it.fraction,
                    tier: i32::from(it.alert % 4),
                    reason: String::new(),
                    dry_run: false,
                    event_time_ms: it.t,
                };
                let current = Resources { cpu_millis: it.cpu, memory_bytes: it.memory, replicas: Some(REPLICAS[w]) };
                match g.check(&a, &current) {
                    Verdict::Refuse(reason) => prop_assert!(!reason.trim().is_empty()),
                    Verdict::Allow(plan) => {
                        if let Some(c) = plan.cpu_millis {
                            prop_assert!((g_set.cpu_floor.0..=g_set.cpu_cap.0).contains(&c), "cpu {c}");
                        }
                        if let Some(m) = plan.memory_bytes {
                            prop_assert!((g_set.memory_floor.0..=g_set.memory_cap.0).contains(&m), "memory {m}");
                        }
                        let (lo_c, lo_m) = (1.0 / g_set.max_cpu_factor, 1.0 / g_set.max_memory_factor);
                        prop_assert!((lo_c..=g_set.max_cpu_factor).contains(&plan.cpu_factor), "cpu factor {}", plan.cpu_factor);
                        prop_assert!((lo_m..=g_set.max_memory_factor).contains(&plan.memory_factor), "memory factor {}", plan.memory_factor);
                        if let Some(r) = plan.replicas {
                            prop_assert!(r <= g_set.max_replicas);
                        }
                        prop_assert!(plan.shed_fraction <= 1.0);
                        if plan.action == Action::Shed {
                            prop_assert!(w != 0, "critical workload shed");
                            prop_assert!(plan.shed_fraction <= g_set.max_shed_fraction);
                        }
                        g.remember(&a, &plan);
                        allowed.push((a, plan));
                    }
                }
            }
        }
        // An id seen twice is one adjustment delivered twice: one action.
        let mut seen = std::collections::HashSet::new();
        allowed.retain(|(a, _)| seen.insert(a.id.clone()));
        let ic = secs_ms(g_set.instance_cooldown_s);
        let wc = secs_ms(g_set.workload_cooldown_s);
        let actions: Vec<&Adjustment> = allowed.iter().map(|(a, _)| a).filter(|a| a.action != Action::Notify).collect();
        for (i, a) in actions.iter().enumerate() {
            for b in &actions[i + 1..] {
                let d = (a.event_time_ms - b.event_time_ms).abs();
                if a.alert_id != b.alert_id {
                    let escalation = window::escalates((a.event_time_ms, a.tier), (b.event_time_ms, b.tier));
                    prop_assert!(!(a.instance_id == b.instance_id && d > 0 && d < ic && !escalation), "instance cooldown broken: {a:?} {b:?}");
                    prop_assert!(!(a.function == b.function && a.instance_id != b.instance_id && d < wc), "workload cooldown broken: {a:?} {b:?}");
                }
            }
            // Rolling minute starting at each action: at most K.
            let in_minute = actions.iter().filter(|b| b.event_time_ms >= a.event_time_ms && b.event_time_ms < a.event_time_ms + MINUTE_MS).count();
            prop_assert!(in_minute <= k as usize, "{in_minute} actions in the minute from {}", a.event_time_ms);
            // At the moment of each action: distinct instances of its workload within their cooldown.
            let mut active: Vec<&str> = actions.iter()
                .filter(|b| b.function == a.function && b.event_time_ms > a.event_time_ms - ic && b.event_time_ms <= a.event_time_ms)
                .map(|b| b.instance_id.as_str()).collect();
            active.sort_unstable();
            active.dedup();
            let w = REPLICAS[a.function[1..].parse::<usize>().unwrap_or(0)];
            prop_assert!(active.len() <= allowed_instances(w, g_set.max_workload_percent), "{} of {w} instances at once", active.len());
        }
        let notes: Vec<i64> = allowed.iter().filter(|(a, _)| a.action == Action::Notify).map(|(a, _)| a.event_time_ms).collect();
        for &t in &notes {
            prop_assert!(notes.iter().filter(|&&x| x >= t && x < t + MINUTE_MS).count() <= 3);
        }
    }
}
