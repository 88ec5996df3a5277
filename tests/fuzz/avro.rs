//! The Avro codec of every wire record, and the detector's admission check.
//!
//! In: records built from a [`Pool`] of generated values (boundary numbers, NaN and
//! infinities, empty, arbitrary and very long strings), encoded, then edited blindly,
//! given another record type's body behind their own header, or replaced by raw bytes.
//! Out: assertions that a valid record round-trips, that the header is judged exactly
//! (too short, bad magic, unknown fingerprint), that whatever decodes re-encodes to a
//! fixed point, and that nothing panics.

use std::collections::BTreeMap;
use std::fmt::Debug;

use augur::codec::*;
use augur::detect::validate;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{apply, config, edits, long_string, Edit};

/// Every record type's cases: decoding is fast, but a property builds eight records
/// and decodes five inputs per case; 256 cases take about two seconds in a debug build.
const CASES: u32 = 256;

/// Values to build any record of the contract from.
#[derive(Debug, Clone)]
pub struct Pool {
    s: Vec<String>,
    i: Vec<i64>,
    f: Vec<f64>,
    flag: bool,
    pick: usize,
    bytes: Vec<u8>,
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_-]{0,12}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => Just(long_string()),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 1_600_000_000_000i64..1_900_000_000_000,
        2 => any::<i64>(),
        1 => prop::sample::select(vec![0, -1, 1, i64::MIN, i64::MAX, i64::from(i32::MIN), i64::from(i32::MAX)]),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 0.0f64..1.0,
        2 => any::<f64>(),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::MAX, f64::MIN_POSITIVE, -1.0]),
    ]
}

pub fn pool() -> impl Strategy<Value = Pool> {
    (
        prop::collection::vec(string(), 8),
        prop::collection::vec(int(), 8),
        prop::collection::vec(float(), 8),
        any::<bool>(),
        any::<usize>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(s, i, f, flag, pick, bytes)| Pool { s, i, f, flag, pick, bytes })
}

impl Pool {
    /// A pool of plain values, for tests that need one record of each type.
    fn plain() -> Self {
        Pool { s: vec!["a".to_owned(); 8], i: vec![1; 8], f: vec![0.5; 8], flag: true, pick: 0, bytes: Vec::new() }
    }
    fn i32(&self, n: usize) -> i32 {
        self.i[n] as i32
    }
    fn opt_s(&self, n: usize) -> Option<String> {
        self.flag.then(|| self.s[n].clone())
    }
    fn opt_f(&self, n: usize) -> Option<f64> {
        (!self.flag).then_some(self.f[n])
    }
    fn one<T: Copy>(&self, of: &[T]) -> T {
        of[self.pick % of.len()]
    }
    /// Lists of up to eight items, their length from the pool.
    fn count(&self) -> usize {
        (self.pick >> 8) % 9
    }

    pub fn telemetry(&self) -> TelemetrySample {
        TelemetrySample {
            instance_id: self.s[0].clone(),
            app_type: self.s[1].clone(),
            function: self.s[2].clone(),
            seq: self.i[0],
            timestamp_ms: self.i[1],
            metrics: (0..self.count()).map(|k| Metric::new(self.s[k % 8].clone(), self.f[k % 8])).collect(),
            labels: (0..self.count()).map(|k| (self.s[(k + 3) % 8].clone(), self.s[k % 8].clone())).collect(),
        }
    }

    fn alert(&self) -> Alert {
        Alert {
            id: self.s[0].clone(),
            instance_id: self.s[1].clone(),
            app_type: self.s[2].clone(),
            function: self.s[3].clone(),
            kind: self.one(&[AlertKind::Signature, AlertKind::Anomaly, AlertKind::Offline, AlertKind::Recovered]),
            window_start_ms: self.i[0],
            window_end_ms: self.i[1],
            signature: self.opt_s(4),
            confidence: self.f[0],
            runner_up: self.opt_s(5),
            runner_up_confidence: self.f[1],
            explanation: (0..self.count())
                .map(|k| MetricContribution {
                    metric: self.s[k % 8].clone(),
                    distance: self.f[k % 8],
                    share: self.f[2],
                })
                .collect(),
            anomaly_score: self.opt_f(3),
            model_version: self.opt_s(6),
            source_partition: self.i32(2),
            source_offset: self.i[3],
        }
    }

    fn adjustment(&self) -> Adjustment {
        Adjustment {
            id: self.s[0].clone(),
            alert_id: self.s[1].clone(),
            instance_id: self.s[2].clone(),
            app_type: self.s[3].clone(),
            function: self.s[4].clone(),
            action: self.one(&[
                Action::Resize,
                Action::ScaleOut,
                Action::Shed,
                Action::Migrate,
                Action::Notify,
                Action::None,
            ]),
            cpu_factor: self.f[0],
            memory_factor: self.f[1],
            replicas_delta: self.i32(0),
            shed_fraction: self.f[2],
            tier: self.i32(1),
            reason: self.s[5].clone(),
            dry_run: self.flag,
            event_time_ms: self.i[2],
        }
    }

    fn actuation(&self) -> Actuation {
        use ActuationResult::*;
        Actuation {
            adjustment_id: self.s[0].clone(),
            instance_id: self.s[1].clone(),
            app_type: self.s[2].clone(),
            function: self.s[3].clone(),
            action: self.s[4].clone(),
            backend: self.s[5].clone(),
            result: self.one(&[Applied, Duplicate, Refused, Failed, DryRun]),
            detail: self.s[6].clone(),
            cpu_millis: self.flag.then_some(self.i[0]),
            memory_bytes: (!self.flag).then_some(self.i[1]),
            replicas: self.flag.then_some(self.i32(2)),
            attempts: self.i32(3),
            event_time_ms: self.i[4],
            applied_at_ms: self.i[5],
        }
    }

    pub fn signature(&self) -> FailureSignature {
        let n = self.count();
        FailureSignature {
            name: self.s[0].clone(),
            app_type: self.s[1].clone(),
            function: self.s[2].clone(),
            failure_kind: self.s[3].clone(),
            metrics: (0..n).map(|k| self.s[k % 8].clone()).collect(),
            normalisation: (0..n)
                .map(|k| [Normalisation::Level, Normalisation::Shape, Normalisation::Rise][(self.pick + k) % 3])
                .collect(),
            series: (0..n).map(|k| self.f[..(k % 8) + 1].to_vec()).collect(),
            interval_ms: self.i[0],
            threshold: self.f[0],
            lead_ms: self.i[1],
            source: self.s[4].clone(),
        }
    }

    fn feedback(&self) -> FeedbackOutcome {
        use Verdict::*;
        FeedbackOutcome {
            adjustment_id: self.s[0].clone(),
            instance_id: self.s[1].clone(),
            app_type: self.s[2].clone(),
            signature: self.opt_s(3),
            action: self.s[4].clone(),
            score_before: self.opt_f(0),
            score_after: self.opt_f(1),
            confidence_before: self.f[2],
            confidence_after: self.f[3],
            failed: self.flag,
            verdict: self.one(&[Helped, NoEffect, Worsened, FailedAnyway]),
            horizon_ms: self.i[0],
            event_time_ms: self.i[1],
        }
    }

    fn model(&self) -> ModelAnnouncement {
        ModelAnnouncement {
            app_type: self.s[0].clone(),
            version: self.s[1].clone(),
            uri: self.s[2].clone(),
            sha256: self.s[3].clone(),
            features: (0..self.count()).map(|k| self.s[k % 8].clone()).collect(),
            trained_from_ms: self.i[0],
            trained_to_ms: self.i[1],
            validation: (0..self.count()).map(|k| (self.s[k % 8].clone(), self.f[k % 8])).collect::<BTreeMap<_, _>>(),
            created_ms: self.i[2],
            effective_from_ms: self.i[3],
        }
    }

    fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            reason: self.s[0].clone(),
            stage: self.s[1].clone(),
            source_topic: self.s[2].clone(),
            source_partition: self.i32(0),
            source_offset: self.i[1],
            key: self.flag.then(|| self.s[3].as_bytes().to_vec()),
            payload: (!self.flag).then(|| self.bytes.clone()),
            event_time_ms: self.i[2],
        }
    }

    /// Every record type of the contract, encoded: bodies to put behind a foreign header.
    fn all_encoded(&self) -> Vec<Vec<u8>> {
        fn enc<T: Record>(r: &T) -> Vec<u8> {
            Codec::<T>::new().encode(r).expect("a record built from the pool encodes")
        }
        vec![
            enc(&self.telemetry()),
            enc(&self.alert()),
            enc(&self.adjustment()),
            enc(&self.actuation()),
            enc(&self.signature()),
            enc(&self.feedback()),
            enc(&self.model()),
            enc(&self.dead_letter()),
        ]
    }
}

/// What any input must get from a decoder: the header judged exactly, and whatever
/// decodes re-encodes to bytes that decode to themselves again.
fn check_decode<T: Record + Debug + PartialEq>(codec: &Codec<T>, bytes: &[u8]) -> Result<(), TestCaseError> {
    let decoded = codec.decode(bytes);
    if bytes.len() < HEADER_LEN {
        prop_assert!(matches!(decoded, Err(CodecError::TooShort { .. })), "{} bytes: {decoded:?}", bytes.len());
    } else if bytes[..2] != MAGIC {
        prop_assert!(matches!(decoded, Err(CodecError::BadMagic { .. })), "{decoded:?}");
    } else if peek_fingerprint(bytes)? != codec.fingerprint() {
        prop_assert!(matches!(decoded, Err(CodecError::UnknownFingerprint { .. })), "{decoded:?}");
    }
    match decoded {
        Ok(value) => {
            let again = codec.encode(&value)?;
            let twice = codec.encode(&codec.decode(&again)?)?;
            prop_assert_eq!(twice, again);
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

/// The whole property for one record type: valid round trip, then edited, foreign and
/// raw inputs.
fn fuzz_codec<T: Record + Debug + PartialEq>(
    record: &T,
    pool: &Pool,
    edits: &[Edit],
    foreign: usize,
    raw: &[u8],
) -> Result<(), TestCaseError> {
    let codec = Codec::<T>::new();
    let valid = codec.encode(record)?;
    // Bytes, not values, are compared: NaN != NaN, but it must come back as the same bits.
    prop_assert_eq!(codec.encode(&codec.decode(&valid)?)?, valid.clone());
    check_decode(&codec, &apply(&valid, edits))?;
    // Another record type's body behind this type's header: a schema mix-up on the wire.
    let other = &pool.all_encoded()[foreign % 8];
    let mut mixed = valid[..HEADER_LEN].to_vec();
    mixed.extend_from_slice(&other[HEADER_LEN..]);
    check_decode(&codec, &mixed)?;
    check_decode(&codec, &apply(&mixed, edits))?;
    let mut headed = valid[..HEADER_LEN].to_vec();
    headed.extend_from_slice(raw);
    check_decode(&codec, &headed)?;
    check_decode(&codec, raw)
}

macro_rules! codec_property {
    ($name:ident, $make:ident) => {
        proptest! {
            #![proptest_config(config(CASES))]
            #[test]
            fn $name(
                p in pool(),
                e in edits(),
                foreign in 0usize..8,
                raw in prop::collection::vec(any::<u8>(), 0..128),
            ) {
                fuzz_codec(&p.$make(), &p, &e, foreign, &raw)?;
            }
        }
    };
}

codec_property!(telemetry_decoder_never_panics_and_judges_every_input, telemetry);
codec_property!(alert_decoder_never_panics_and_judges_every_input, alert);
codec_property!(adjustment_decoder_never_panics_and_judges_every_input, adjustment);
codec_property!(actuation_decoder_never_panics_and_judges_every_input, actuation);
codec_property!(signature_decoder_never_panics_and_judges_every_input, signature);
codec_property!(feedback_decoder_never_panics_and_judges_every_input, feedback);
codec_property!(model_decoder_never_panics_and_judges_every_input, model);
codec_property!(dead_letter_decoder_never_panics_and_judges_every_input, dead_letter);

/// Values a metric of a decoded sample may carry, valid or absurd.
fn metric_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        2 => 0.0f64..1.0,
        1 => any::<f64>(),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, -1.0, 1.5, 1e300, -1e-300]),
    ]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => 1_600_000_000_000i64..1_900_000_000_000,
        1 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, -1, 0, 946_684_799_999, 946_684_800_000, i64::MAX]),
    ]
}

/// The admission check runs on every record the detector decodes: 512 cases of a check
/// that does no I/O take about a second.
const ADMISSION_CASES: u32 = 512;

proptest! {
    #![proptest_config(config(ADMISSION_CASES))]
    #[test]
    fn admission_check_refuses_absurd_samples_with_a_reason_and_never_panics(
        p in pool(),
        names in prop::collection::vec(prop::sample::select(metric_names::ALL), 0..6),
        values in prop::collection::vec(metric_value(), 6),
        ts in timestamp(),
        clock in prop::option::of(timestamp()),
        max_future_ms in prop_oneof![Just(3_600_000i64), any::<i64>(), Just(i64::MAX), Just(i64::MIN)],
        keyed in any::<bool>(),
    ) {
        let mut sample = p.telemetry();
        sample.timestamp_ms = ts;
        sample.metrics = names.iter().zip(&values).map(|(n, v)| Metric::new(*n, *v)).collect();
        // As the detector sees it: after a trip through the codec.
        let codec = Codec::<TelemetrySample>::new();
        let sample = codec.decode(&codec.encode(&sample)?)?;
        let key = keyed.then(|| sample.instance_id.clone().into_bytes());
        let verdict = validate::check(&sample, key.as_deref(), clock, max_future_ms);
        let absurd = sample.metrics.iter().find(|m| !m.value.is_finite() || m.value < 0.0);
        if let Some(m) = absurd {
            // Only an earlier check may have spoken first; a refusal always has a reason.
            prop_assert!(verdict.is_err(), "{} = {} admitted", m.name, m.value);
        }
        if sample.timestamp_ms < 946_684_800_000 || sample.instance_id.trim().is_empty() || sample.seq < 0 {
            prop_assert!(verdict.is_err(), "admitted {sample:?}");
        }
        if let Err(reason) = verdict {
            prop_assert!(!reason.is_empty());
        }
    }
}

/// Found by the property above: a clock far in the past overflowed the difference the
/// refusal reports (`timestamp - clock`) and panicked instead of refusing.
#[test]
fn a_clock_far_in_the_past_gives_a_reason_not_an_overflow() {
    let sample = TelemetrySample {
        instance_id: "a".to_owned(),
        app_type: String::new(),
        function: String::new(),
        seq: 1_600_000_000_000,
        timestamp_ms: 1_600_000_000_000,
        metrics: Vec::new(),
        labels: BTreeMap::new(),
    };
    let reason = validate::check(&sample, None, Some(i64::MIN), 3_600_000).expect_err("ahead of the clock");
    assert!(reason.contains("ahead of the partition's event time"), "{reason}");
}

/// A header and a sample whose metric list claims half a billion entries in 15 bytes:
/// refused at the end of the input, not by reserving memory for the claim first.
#[test]
fn a_huge_block_count_is_refused_not_allocated() {
    let codec = Codec::<TelemetrySample>::new();
    let mut bytes = codec.encode(&Pool::plain().telemetry()).expect("encodes")[..HEADER_LEN].to_vec();
    // Three empty strings, seq 0, timestamp 0, then a block count of 2^29 (zig-zag).
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x04]);
    let e = codec.decode(&bytes).expect_err("truncated").to_string();
    assert!(e.contains("TelemetrySample body does not decode"), "{e}");
}
